"""Issue 19, hardening: every bad input is refused up front, in one line, exit 2, and the store is left as it was.

The corpus below runs the real CLI in-process (`lorasec.cli.main`), on tiny models; a tripwire on the engine makes
any case that would reach training fail, so validation is shown never to train.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY_CFG
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lorasec.audit
from lorasec.cli import main
from lorasec.config import parse_yaml
from lorasec.errors import Diverged, InputError
from lorasec.store import check_store, open_store, results, save
from lorasec.tasks import parse_config

TINY = TINY_CFG  # read only: cases copy what they change

WORDS = "the whale ship sea captain ahab white hunt boat crew long voyage ocean storm harpoon deck".split()


def memo(corpus: Path, **parts: object) -> dict:
    """A memorization cell on tiny-gpt2 (xs) and a small JSON-lines corpus."""
    base = {"task": "memorization", "model": {"name": "tiny-gpt2", "size": "xs"},
            "corpus": {"name": "jsonl", "path": str(corpus)}, "method": {"kind": "lora", "rank": 4},
            "records": {"record_tokens": 16, "n_members": 8, "n_held_out": 8},
            "duplication": {"counts": [1, 2], "per_count": 2},
            "canaries": {"digits": 2, "counts": [1, 2], "exact_max": 100},
            "extraction": {"prefix_tokens": 8, "new_tokens": 8}, "train": {"steps": 2, "max_length": 32}}
    for k, v in parts.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base


def edit(**parts: object) -> dict:
    """TINY with some parts changed: fields merge into a part, unless the part's name or kind changes."""
    out = json.loads(json.dumps(TINY))
    for k, v in parts.items():
        old = out.get(k)
        same = isinstance(v, dict) and isinstance(old, dict) and all(v.get(t, old.get(t)) == old.get(t)
                                                                     for t in ("name", "kind"))
        out[k] = {**old, **v} if same else v
    return out


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Every file a case points at: data files, model directories (good and broken), corpora, stores."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from lorasec.models.weights import minilm_dir

    d = tmp_path_factory.mktemp("inputs")
    f: dict[str, Path] = {}

    def text(name: str, body: str | bytes) -> Path:
        p = d / name
        p.write_bytes(body if isinstance(body, bytes) else body.encode())
        f[name] = p
        return p

    text("empty.csv", "text,label\n")
    text("cols.csv", "sentence,label\nhello,0\nworld,1\n")
    text("range.jsonl", "\n".join(json.dumps({"text": f"t{i}", "label": lbl}) for i, lbl in enumerate([0, 1, 3, -1])))
    text("latin.csv", "text,label\ncaf\xe9 ok,0\nbad,1\n".encode("latin-1"))
    text("badline.jsonl", '{"text": "a", "label": 0}\n{not json\n')
    text("tiny.csv", "text,label\na,0\nb,1\nc,0\n")
    text("onelabel.csv", "text,label\n" + "".join(f"row {i},1\n" for i in range(40)))
    (d / "adir.csv").mkdir()
    f["adir.csv"] = d / "adir.csv"

    # a valid local classifier: tiny BERT weights (safetensors), config.json and the MiniLM tokenizer
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    good = d / "good_model"
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    BertForSequenceClassification(cfg).save_pretrained(good)
    tok.save_pretrained(good)
    f["good_model"] = good

    def variant(name: str, change: Callable[[Path], None]) -> None:
        p = d / name
        shutil.copytree(good, p)
        change(p)
        f[name] = p

    weights = "model.safetensors"
    variant("no_tokenizer", lambda p: [q.unlink() for q in p.iterdir() if q.name.startswith(("tokenizer", "vocab",
                                                                                             "special"))])
    variant("garbage_weights", lambda p: (p / weights).write_bytes(b"this is not a safetensors file at all"))
    variant("truncated_weights", lambda p: (p / weights).write_bytes((good / weights).read_bytes()[:-100]))
    variant("no_config", lambda p: (p / "config.json").unlink())
    variant("bad_config_json", lambda p: (p / "config.json").write_text("{not json"))
    variant("pickle_only", lambda p: [(p / weights).unlink(), (p / "pytorch_model.bin").write_bytes(b"x")])

    def wrong_shape(p: Path) -> None:
        save_file({"bert.embeddings.word_embeddings.weight": torch.zeros(len(tok), 48)}, p / weights)

    def other_model(p: Path) -> None:
        save_file({"transformer.h.0.mlp.c_fc.weight": torch.zeros(4, 4)}, p / weights)

    def missing_shard(p: Path) -> None:
        (p / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "model-00002.safetensors"}}))

    variant("wrong_shape", wrong_shape)
    variant("other_model", other_model)
    variant("missing_shard", missing_shard)
    f["model.bin"] = text("model.bin", "pickle")

    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(WORDS, size=120)) for _ in range(6)]
    text("corpus.jsonl", "\n".join(json.dumps({"text": t}) for t in docs))
    text("small_corpus.jsonl", json.dumps({"text": "the whale"}))

    # stores that are not lorasec stores
    text("zero.db", b"")
    text("text.db", "id,result\n1,ok\n")
    def sqlite_file(name: str, schema: str) -> None:  # a real SQLite file of another schema
        con = sqlite3.connect(d / name)
        con.execute(schema)
        con.commit()
        con.close()
        f[name] = d / name

    sqlite_file("other.db", "CREATE TABLE users (name TEXT)")
    sqlite_file("runs_other.db", "CREATE TABLE runs (id INTEGER, blob BLOB)")
    text("corrupt.db", b"SQLite format 3\x00" + b"\x00\xff" * 300)
    (d / "store_dir").mkdir()
    f["store_dir"] = d / "store_dir"
    text("a_file", "x")
    return f


# ---------------------------------------------------------------------------------------------------- the corpus
@dataclass(frozen=True)
class Case:
    name: str
    needle: str  # what the one line must name (the field or the file)
    config: dict | str | None = None  # dict -> YAML; str -> raw YAML text; None -> no config file
    argv: tuple[str, ...] = ("run", "{config}", "--store", "{store}")
    store: str | None = None  # a key of `files`: a store that exists before the command; None: results.db, absent


def classification_values() -> list[Case]:
    c = Case
    return [
        c("unknown method", "method.kind: unknown method 'lorra'", edit(method={"kind": "lorra"})),
        c("unknown attack", "attack.kind: unknown attack 'badnet'", edit(attack={"kind": "badnet", "rate": 0.1})),
        c("unknown model", "model.name: unknown model 'bert-huge'", {**TINY, "model": {"name": "bert-huge"}}),
        c("unknown dataset", "data.name: unknown dataset 'sst3'", edit(data={"name": "sst3"})),
        c("rank 0", "method.rank", edit(method={"rank": 0})),
        c("rank negative", "method.rank", edit(method={"rank": -4})),
        c("rank 50000000", "method.rank: 50000000 is more than min(d_in, d_out)", edit(method={"rank": 50_000_000})),
        c("rank 1.0e+9", "method.rank", "method: {kind: lora, rank: 1.0e+9}\nmodel: {name: tiny-bert}\n"),
        c("rank '1e9' string", "method.rank", edit(method={"rank": "1e9"})),
        c("rank 33 > width 32", "method.rank: 33 is more than", edit(method={"rank": 33})),
        c("alpha inf", "method.alpha", "method: {kind: lora, alpha: .inf}\nmodel: {name: tiny-bert}\n"),
        c("alpha nan", "method.alpha", "method: {kind: lora, alpha: .nan}\nmodel: {name: tiny-bert}\n"),
        c("alpha 0", "method.alpha", edit(method={"alpha": 0})),
        c("alpha negative", "method.alpha", edit(method={"alpha": -16})),
        c("alpha 1e400", "method.alpha", "method: {kind: lora, alpha: 1.0e+400}\nmodel: {name: tiny-bert}\n"),
        c("lr inf", "train.lr", "train: {lr: .inf, steps: 2}\nmodel: {name: tiny-bert}\n"),
        c("lr 'inf' string", "train.lr", edit(train={"lr": "inf"})),
        c("lr nan", "train.lr", "train: {lr: .nan, steps: 2}\nmodel: {name: tiny-bert}\n"),
        c("lr 0", "train.lr", edit(train={"lr": 0})),
        c("lr negative", "train.lr", edit(train={"lr": -1e-3})),
        c("lr not a number", "train.lr", edit(train={"lr": "fast"})),
        c("dropout 1", "method.dropout", edit(method={"dropout": 1.0})),
        c("init_scale 0", "method.init_scale", edit(method={"init_scale": 0})),
        c("init_scale inf", "method.init_scale", edit(method={"init_scale": "inf"})),
        c("unknown target module", "method.targets: 'bogus' matches no linear layer", edit(method={"targets": [
            "bogus"]})),
        c("one unknown target among known", "method.targets: 'q_proj' matches no linear layer",
          edit(method={"targets": ["query", "q_proj"]})),
        c("targets a number", "method.targets: expected", edit(method={"targets": 5})),
        c("targets unknown set", "method.targets: expected", edit(method={"targets": "everything"})),
        c("head unknown", "method.head", edit(method={"head": "random"})),
        c("rate above 1", "attack.rate", edit(attack={"kind": "label_flip", "rate": 1.5})),
        c("rate negative", "attack.rate", edit(attack={"rate": -0.1})),
        c("rate nan", "attack.rate", "attack: {kind: label_flip, rate: .nan}\nmodel: {name: tiny-bert}\n"),
        c("rate missing", "attack.rate: Field required", edit(attack={"kind": "rare_word", "rate": None}) | {
            "attack": {"kind": "rare_word"}}),
        c("empty trigger", "attack.trigger", edit(attack={"trigger": ""})),
        c("no triggers", "attack.triggers", edit(attack={"kind": "multi_trigger", "rate": 0.1, "triggers": []})),
        c("target out of range", "attack.target: 7 is out of range", edit(attack={"target": 7})),
        c("style without placeholder", "attack: template must contain exactly one {text}",
          {**TINY, "attack": {"kind": "style", "rate": 0.1, "template": "no placeholder"}}),
        c("max_length above positions", "train.max_length: 4096 is more than the 512 positions",
          edit(train={"max_length": 4096})),
        c("eval max_length above positions", "eval.max_length: 1024", edit(eval={"max_length": 1024})),
        c("max_length too small", "train.max_length", edit(train={"max_length": 4})),
        c("steps 0", "train.steps", edit(train={"steps": 0})),
        c("steps and epochs", "train: set exactly one of steps and epochs", edit(train={"epochs": 1})),
        c("batch_size 0", "train.batch_size", edit(train={"batch_size": 0})),
        c("warmup_ratio 1", "train.warmup_ratio", edit(train={"warmup_ratio": 1})),
        c("unknown schedule", "train.schedule", edit(train={"schedule": "exp"})),
        c("weight_decay negative", "train.weight_decay", edit(train={"weight_decay": -1})),
        c("grad_accum 0", "train.grad_accum", edit(train={"grad_accum": 0})),
        c("seed negative", "seed", edit(seed=-1)),
        c("seed 2**40", "seed: Input should be less than or equal to 4294967295", edit(seed=2**40)),
        c("unknown field", "epochs_typo: Extra inputs are not permitted", edit(epochs_typo=3)),
        c("heads do not divide width", "model: hidden_size 30 is not a multiple of heads 4",
          edit(model={"hidden_size": 30, "heads": 4})),
        c("tiny-bert too wide", "model.hidden_size", edit(model={"hidden_size": 100_000})),
        c("fractions leave no training rows", "data: val_fraction + test_fraction must be < 1",
          edit(data={"val_fraction": 0.5, "test_fraction": 0.5})),
        c("test_fraction 0", "data.test_fraction", edit(data={"test_fraction": 0})),
        c("max_train 0", "data.max_train", edit(data={"max_train": 0})),
        c("unknown task", "task: unknown task 'vision'", edit(task="vision")),
        c("eval batch 0", "eval.batch_size", edit(eval={"batch_size": 0})),
        c("schema_version 1 (older)", "schema_version", edit(schema_version=1)),
        c("schema_version 3", "schema_version", edit(schema_version=3)),
        c("model a mapping expected", "model: Input should be a valid dictionary", edit(model=3)),
    ]


def file_cases() -> list[Case]:
    c = Case
    local = "{files}/"
    return [
        c("config missing", "does not exist", None, ("run", "{tmp}/nope.yaml", "--store", "{store}")),
        c("config is a directory", "is a directory", None, ("run", "{tmp}", "--store", "{store}")),
        c("YAML syntax error keeps line:column", "exp.yaml:2:5:", "model: {name: tiny-bert\nseed: [1,\n"),
        c("YAML tab", "exp.yaml:1:1:", "\tseed: 1\n"),
        c("duplicate key", "exp.yaml:3:1: duplicate key 'seed' (first on line 1)", "seed: 1\nmodel: {name: tiny-bert}"
                                                                                   "\nseed: 2\n"),
        c("duplicate nested key", "duplicate key 'rank'", "method: {kind: lora, rank: 4, rank: 8}\n"),
        c("config not UTF-8", "exp.yaml is not UTF-8", "seed: caf\udce9\n"),
        c("config a list", "expected a mapping of fields, got list", "- a\n- b\n"),
        c("config empty", "expected a mapping of fields, got NoneType", ""),
        c("python tag refused", "exp.yaml:1:7:", "seed: !!python/object/apply:os.system [ls]\n"),
        c("bad timestamp", "exp.yaml: invalid YAML value", "seed: 2001-13-01\n"),
        c("csv empty", "the dataset is empty", edit(data={"name": "csv", "path": local + "empty.csv"})),
        c("text column missing", "data.text_column: column 'text' not found",
          edit(data={"name": "csv", "path": local + "cols.csv"})),
        c("label column missing", "data.label_column", edit(data={"name": "csv", "path": local + "cols.csv",
                                                                  "text_column": "sentence", "label_column": "y"})),
        c("labels out of range", "out of range", edit(data={"name": "jsonl", "path": local + "range.jsonl"})),
        c("data not UTF-8", "not UTF-8", edit(data={"name": "csv", "path": local + "latin.csv"})),
        c("data missing", "data.path", edit(data={"name": "csv", "path": local + "missing.csv"})),
        c("data a directory", "data.path", edit(data={"name": "csv", "path": local + "adir.csv"})),
        c("jsonl bad line", "data.path: line 2", edit(data={"name": "jsonl", "path": local + "badline.jsonl"})),
        c("too few rows to split", "data: cannot split", edit(data={"name": "csv", "path": local + "tiny.csv"})),
        c("one class only", "every class present", edit(data={"name": "csv", "path": local + "onelabel.csv"})),
        c("pickle-only model dir", "pickle", edit(model={"name": "local", "path": local + "pickle_only"})),
        c("pickle file as model", "pickle checkpoint", edit(model={"name": "local", "path": local + "model.bin"})),
        c("model path missing", "model.path", edit(model={"name": "local", "path": "/nonexistent/model"})),
        c("model dir without config.json", "has no config.json", edit(model={"name": "local",
                                                                             "path": local + "no_config"})),
        c("config.json not JSON", "config.json", edit(model={"name": "local", "path": local + "bad_config_json"})),
        c("model dir without tokenizer", "has no tokenizer", edit(model={"name": "local",
                                                                         "path": local + "no_tokenizer"})),
        c("corrupt safetensors", "model.safetensors is not a valid safetensors file",
          edit(model={"name": "local", "path": local + "garbage_weights"})),
        c("truncated safetensors", "model.safetensors is not a valid safetensors file",
          edit(model={"name": "local", "path": local + "truncated_weights"})),
        c("tensor of the wrong shape", "has shape [30522, 48]", edit(model={"name": "local",
                                                                            "path": local + "wrong_shape"})),
        c("weights of another model", "none of the 1 tensors", edit(model={"name": "local",
                                                                           "path": local + "other_model"})),
        c("index names a missing shard", "names missing shards", edit(model={"name": "local",
                                                                             "path": local + "missing_shard"})),
        c("local model max_length above its 64 positions", "train.max_length: 128 is more than the 64 positions",
          edit(model={"name": "local", "path": local + "good_model"}, train={"max_length": 128})),
    ]


def store_cases() -> list[Case]:
    c = Case
    return [
        c("store is a directory", "is a directory", TINY, store="store_dir"),
        c("store 0 bytes", "is an empty file", TINY, store="zero.db"),
        c("store a text file", "not a SQLite file", TINY, store="text.db"),
        c("store of another schema", "another schema (tables users)", TINY, store="other.db"),
        c("store with a foreign runs table", "another schema", TINY, store="runs_other.db"),
        c("store corrupt SQLite", "not a readable SQLite store", TINY, store="corrupt.db"),
        c("store under a file", "is not a directory", TINY, ("run", "{config}", "--store", "{files}/a_file/r.db")),
        c("store unwritable", "not writable", TINY, ("run", "{config}", "--store", "/proc/lorasec-test.db")),
    ]


def cli_cases() -> list[Case]:
    c = Case
    return [
        c("run without a config", "run: Missing argument 'config'", None, ("run",)),
        c("run with an extra argument", "run: Got unexpected extra argument", TINY,
          ("run", "{config}", "extra", "--store", "{store}")),
        c("run with an unknown option", "run: No such option: --stor", TINY, ("run", "{config}", "--stor", "x.db")),
        c("unknown command", "No such command 'train'", None, ("train", "x.yaml")),
        c("--store without a value", "--store", TINY, ("run", "{config}", "--store")),
        c("demo unknown arm", "arm: unknown demo 'nope'", None, ("demo", "nope", "--store", "{store}")),
        c("demo extra argument", "demo: Got unexpected extra argument", None, ("demo", "a", "b")),
        c("demo store is text", "not a SQLite file", None, ("demo", "classification", "--store", "{store}"),
          store="text.db"),
        c("validate missing config", "does not exist", None, ("validate", "{tmp}/nope.yaml")),
        c("show a 0-byte store", "is an empty file", None, ("show", "--store", "{store}"), store="zero.db"),
        c("show a text store", "not a SQLite file", None, ("show", "--store", "{store}"), store="text.db"),
        c("show a directory", "is a directory", None, ("show", "--store", "{store}"), store="store_dir"),
        c("show another schema", "another schema", None, ("show", "--store", "{store}"), store="other.db"),
    ]


def memorization_cases() -> list[Case]:
    c = Case
    corpus = "{files}/corpus.jsonl"
    return [
        c("corpus too small for the records", "records.n_members: the corpus gives",
          memo(Path("{files}/small_corpus.jsonl"))),
        c("more records than the corpus has", "records.n_members", memo(Path(corpus), records={"n_members": 200})),
        c("max_length below record_tokens", "train.max_length: 12 is less than records.record_tokens",
          memo(Path(corpus), train={"max_length": 12}, extraction={"prefix_tokens": 4, "new_tokens": 4})),
        c("rank above the causal LM's width", "method.rank: 65 is more than", memo(Path(corpus),
                                                                                 method={"rank": 65})),
        c("LM target module unknown", "method.targets: 'query' matches no linear layer",
          memo(Path(corpus), method={"targets": ["query"]})),
        c("lora_on_random on an LM", "method.head", memo(Path(corpus), method={"head": "lora_on_random"})),
        c("LM max_length above positions", "train.max_length: 4096 is more than the 1024 positions",
          memo(Path(corpus), train={"max_length": 4096})),
        c("corpus missing", "corpus.path", memo(Path("{files}/none.jsonl"))),
        c("more canaries than secrets", "canaries: 11 canaries need distinct secrets",
          memo(Path(corpus), canaries={"digits": 1, "counts": [1] * 11})),
        c("canary sample above the space", "canaries: sample 2000 is more than the 100 candidates",
          memo(Path(corpus), canaries={"digits": 2, "exact_max": 10})),
        c("duplication count huge", "duplication", memo(Path(corpus), duplication={"counts": [1, 10**9]})),
        c("prefix + new tokens above record", "extraction.prefix_tokens + new_tokens",
          memo(Path(corpus), extraction={"prefix_tokens": 12, "new_tokens": 8})),
        c("lr inf memorization", "train.lr", json.loads(json.dumps(memo(Path(corpus)))) | {"train": {"lr": "inf"}}),
    ]


CORPUS = classification_values() + file_cases() + store_cases() + cli_cases() + memorization_cases()


def materialise(case: Case, tmp: Path, files: dict[str, Path]) -> tuple[list[str], Path | None]:
    """argv for the case (config written under tmp) and the store path it names."""
    config = tmp / "exp.yaml"
    subst = {"files": str(next(iter(files.values())).parent), "tmp": str(tmp)}
    if isinstance(case.config, str):
        config.write_bytes(case.config.encode("utf-8", "surrogateescape"))
    elif case.config is not None:
        config.write_text(yaml.safe_dump(case.config).replace("{files}", subst["files"]))
    store = files[case.store] if case.store else tmp / "results.db"
    argv = [a.format(config=config, store=store, **subst) for a in case.argv]
    named = next((Path(argv[i + 1]) for i, a in enumerate(argv[:-1]) if a == "--store"), None)
    return argv, named


def snapshot(path: Path | None) -> object:
    if path is None or not path.exists():
        return None
    if path.is_dir():
        return sorted(p.name for p in path.iterdir())
    return path.read_bytes()


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def no_training(monkeypatch):
    """A tripwire: a refused input must never get as far as running a cell."""
    def tripped(*a, **k):
        raise AssertionError("validation reached the engine: a cell would have trained")
    monkeypatch.setattr(lorasec.audit, "execute", tripped)


def test_the_corpus_covers_every_class():
    assert len(CORPUS) >= 80, len(CORPUS)
    assert len({c.name for c in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_bad_input_is_one_line_exit_2_and_the_store_is_untouched(case, files, tmp_path, capsys, no_training):
    argv, store = materialise(case, tmp_path, files)
    before = snapshot(store)
    code, _, err = cli(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("lorasec: ")
    assert case.needle in lines[0], lines[0]
    for leak in ("Value error,", "literal[", "function-after", "Traceback", "tiny-bert.", "lora."):
        assert leak not in lines[0], lines[0]
    assert snapshot(store) == before  # byte-identical, or still absent
    if store is not None and before is None:
        assert not Path(str(store) + "-wal").exists()


RUN_CASES = [c for c in CORPUS if c.argv[0] == "run"]


@pytest.mark.parametrize("case", RUN_CASES, ids=[c.name for c in RUN_CASES])
def test_what_run_refuses_validate_refuses(case, files, tmp_path, capsys, no_training):
    """validate is the contract: the same arguments given to `validate` are refused too (exit 2, one line)."""
    argv, _ = materialise(case, tmp_path, files)
    code, _, err = cli(["validate", *argv[1:]], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err


def test_the_good_inputs_beside_the_corpus_are_accepted(files, tmp_path, capsys):
    """The controls: the cases above differ from these valid inputs by the one thing they break."""
    good = tmp_path / "good.yaml"
    for raw in (TINY, edit(model={"name": "local", "path": str(files["good_model"])}),
                memo(files["corpus.jsonl"])):
        good.write_text(yaml.safe_dump(raw))
        code, out, err = cli(["validate", str(good), "--store", str(tmp_path / "new.db")], capsys)
        assert code == 0 and out.startswith("ok: "), err
    assert not (tmp_path / "new.db").exists()  # checking a store never creates it


# ---------------------------------------------------------------------------------------------------- stores
def test_check_store_accepts_real_stores_and_never_modifies(tmp_path, files):
    s = tmp_path / "r.db"
    open_store(s).close()
    before = s.read_bytes()
    assert check_store(s) == s and s.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.db"]  # no -wal or -shm left behind
    assert check_store(tmp_path / "sub" / "new.db") and not (tmp_path / "sub").exists()
    for name in ("zero.db", "text.db", "other.db", "runs_other.db", "corrupt.db", "store_dir"):
        before = snapshot(files[name])
        with pytest.raises(InputError, match="--store"):
            check_store(files[name])
        assert snapshot(files[name]) == before


@pytest.mark.parametrize("kind", ["zero.db", "text.db", "store_dir"])
def test_show_on_a_non_store_exits_2_and_leaves_it_byte_identical(kind, files, capsys):
    before = snapshot(files[kind])
    code, _, err = cli(["show", "--store", str(files[kind])], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert snapshot(files[kind]) == before


# ---------------------------------------------------------------------------------------------------- divergence
def test_lr_1e30_stops_within_the_first_steps_in_one_line_and_stores_nothing(tmp_path, capsys):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(edit(attack={"kind": "none"}, train={"lr": 1.0e30, "steps": 50}) | {
        "method": {"kind": "full"}}))
    store = tmp_path / "r.db"
    code, _, err = cli(["run", str(cfg), "--store", str(store)], capsys)
    # the progress bar (stderr, cleared with \r on a terminal) is the only other output; the error is one line
    parts = [p.strip() for p in err.replace("\r", "\n").splitlines() if p.strip()]
    lines = [p for p in parts if not p.startswith("train:")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("lorasec: "), err
    assert "cell 'full / none' diverged at step" in lines[0]
    step = int(lines[0].split("diverged at step ")[1].split()[0])
    assert 1 <= step <= 3, lines[0]
    assert not store.exists()


def test_divergence_is_raised_at_the_step_for_lora_alpha_too():
    """A LoRA alpha of 1e30 scales the update by 1e30 / r: the loss goes non-finite at once; `Diverged` carries
    the step and is an InputError (exit 2)."""
    from lorasec.audit import execute

    cfg = parse_config(edit(attack={"kind": "none"}, method={"alpha": 1e30}, train={"lr": 1.0, "steps": 50}))
    with pytest.raises(Diverged) as e:
        execute(cfg, progress=False)
    assert isinstance(e.value, InputError) and 1 <= e.value.step <= 3
    assert "lora(r=4) / none" in str(e.value) and "\n" not in str(e.value)


def test_a_finite_run_is_not_flagged(tmp_path):
    from lorasec.audit import audit

    out = audit(parse_config(edit(attack={"kind": "none"}, train={"steps": 3})), tmp_path / "r.db", progress=False)
    assert len(out["train"]["losses"]) == 3 and all(np.isfinite(out["train"]["losses"]))
    assert [r["key"] for r in results(open_store(tmp_path / "r.db"))] == [out["key"]]
    with pytest.raises(ValueError):  # and the store itself refuses a NaN
        save(open_store(tmp_path / "r.db"), {**out, "key": "x", "metrics": {"a": float("nan")}})


# ---------------------------------------------------------------------------------------------------- properties
FIELDS = ["task", "seed", "model", "data", "method", "attack", "train", "eval", "name", "kind", "rank", "alpha",
          "lr", "steps", "rate", "targets", "path", "max_length", "corpus", "records", "canaries", "epochs"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                    st.sampled_from(["lora", "full", "tiny-bert", "memorization", "classification", "local", "csv",
                                     "none", "prefix", "label_flip", "inf", "nan", "all-linear", "tweets"]))
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=8), st.integers())
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(keys, inner, max_size=5)), max_leaves=20)


def parsed_or_one_line(raw: object) -> None:
    try:
        parse_config(raw)
    except InputError as e:
        assert "\n" not in str(e) and str(e), repr(str(e))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, values, max_size=6))
def test_random_mappings_give_a_config_or_one_line(raw):
    parsed_or_one_line(raw)


YAML_BITS = st.sampled_from(["a", "seed", "method", ":", " ", "\n", "  ", "-", "[", "]", "{", "}", ",", "&x", "*x",
                             "!!int", "!!python/object", "'", '"', "#", "?", "|", ">", "\t", "1.0e+30", ".inf",
                             "2001-13-01", "<<", "rank", "kind: lora", "\udce9", "%YAML 1.1", "---", "..."])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=60), st.lists(YAML_BITS, max_size=25).map("".join)))
def test_random_yaml_gives_a_config_or_one_line(text):
    try:
        raw = parse_yaml(text, "exp.yaml")
    except InputError as e:
        assert "\n" not in str(e) and str(e).startswith("exp.yaml")
        return
    parsed_or_one_line(raw)
