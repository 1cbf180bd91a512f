"""Sweeps: axes expand as written, workers compute each cell once, a killed sweep resumes to the same numbers."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import SWEEP_CELL

from lorasec.grid import expand
from lorasec.store import config_key, failures, open_store, results
from lorasec.sweep import plan, status, sweep

TINY = SWEEP_CELL


def grid_file(tmp_path: Path, spec: dict, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run([sys.executable, "-m", "lorasec.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def metrics_by_key(store: Path) -> dict[str, dict]:
    con = open_store(store)
    try:
        return {r["key"]: r["metrics"] for r in results(con)}
    finally:
        con.close()


# ---- expansion ----

def test_dotted_axes_seed_shorthand_and_zipped_groups_expand_to_the_product():
    spec = {
        "base": TINY,
        "axes": {"seed": 3, "attack.rate": [0.1, 0.3]},
        "zip": {"per_method_lr": [{"method": {"kind": "full"}, "train.lr": 3.0e-6},
                                  {"method": {"kind": "lora", "rank": 8}, "train.lr": 3.0e-5}]},
    }
    cells = expand(spec)
    assert len(cells) == 3 * 2 * 2
    got = [(c.seed, c.attack.rate, c.method.kind, c.train.lr) for c in cells]
    # written order, the last dimension varying fastest; the zip group's fields move together
    assert got[:4] == [(1, 0.1, "full", 3.0e-6), (1, 0.1, "lora", 3.0e-5), (1, 0.3, "full", 3.0e-6),
                       (1, 0.3, "lora", 3.0e-5)]
    assert sorted({c.seed for c in cells}) == [1, 2, 3]
    for c in cells:
        assert (c.method.kind, c.train.lr) in {("full", 3.0e-6), ("lora", 3.0e-5)}
        assert c.train.steps == 3 and c.data.max_train == 96  # the rest of the base is kept
        if c.method.kind == "lora":
            assert c.method.rank == 8
    assert len({config_key(c) for c in cells}) == len(cells)


def test_a_dotted_field_keeps_its_siblings_and_composes_with_a_whole_mapping():
    cells = expand({"base": TINY, "axes": {"method.rank": [2, 16], "method.alpha": [4.0]}})
    assert [(c.method.kind, c.method.rank, c.method.alpha) for c in cells] == [("lora", 2, 4.0), ("lora", 16, 4.0)]
    # a mapping axis replaces the field, and a deeper axis is applied after it whatever the written order
    cells = expand({"base": TINY, "axes": {"method.rank": [2], "method": [{"kind": "lora", "dropout": 0.1}]}})
    assert (cells[0].method.rank, cells[0].method.dropout) == (2, 0.1)
    # a list-valued seed axis is taken as written
    assert [c.seed for c in expand({"base": TINY, "axes": {"seed": [7, 3]}})] == [7, 3]


def test_plan_adds_each_clean_baseline_once_and_first():
    cells = plan(expand({"base": TINY, "axes": {"attack.rate": [0.1, 0.2, 0.3]}}))
    assert len(cells) == 4
    assert cells[0].needs is None and cells[0].cfg.attack.kind == "none"
    assert all(c.needs == cells[0].key for c in cells[1:])


@pytest.mark.parametrize(("axes", "fragment"), [
    ({"axes": {"method.rnak": [4, 8]}}, "method.rnak"),
    ({"axes": {"attack.rate": []}}, "axes.attack.rate: must be a non-empty list"),
    ({"axes": {"seed": 0}}, "axes.seed: a count of seeds must be >= 1"),
    ({"axes": {"train.lr": 0.1}}, "axes.train.lr: must be a non-empty list"),
    ({"zip": {"m": [{"method.kind": "full", "train.lr": 1e-5}, {"method.kind": "lora"}]}},
     "zip.m: member 2 sets ['method.kind'] but member 1 sets ['method.kind', 'train.lr']"),
    ({"zip": {"m": []}}, "zip.m: must be a non-empty list of mappings"),
    ({"axes": {"train.lr": [1e-5]}, "zip": {"m": [{"train.lr": 1e-4}]}}, "train.lr set by more than one"),
    ({"axes": {"attack.rate": [0.1, 1.5]}}, "attack.rate"),
    ({"axes": {"model.name.x": [1]}}, "model.name is 'tiny-bert', not a mapping"),
    ({"axez": {}}, "unknown key(s) ['axez']"),
])
def test_a_bad_axis_is_one_line_exit_2_and_nothing_written(tmp_path, axes, fragment):
    store = tmp_path / "r.db"
    proc = cli("sweep", str(grid_file(tmp_path, {"base": TINY, **axes})), "--store", str(store))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert lines[0].startswith("lorasec: grid.yaml")
    assert not store.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "grid.yaml"]


# ---- running ----

def test_sweep_computes_each_cell_once_records_failures_and_resumes(tmp_path):
    """Two workers; a diverging cell is stored as failed with its error while the others complete; a rerun
    has nothing to do; the non-terminal log stays small."""
    spec = {"base": TINY, "axes": {"seed": 2}, "zip": {"lr": [{"train.lr": 1.0e-4}, {"train.lr": 1.0e30}]}}
    path, store = grid_file(tmp_path, spec), tmp_path / "r.db"
    proc = cli("sweep", str(path), "--store", str(store), "--workers", "2", "--threads-per-worker", "1")
    assert proc.returncode == 1, proc.stderr  # some cells failed
    cells = plan(expand(spec))
    good = [c for c in cells if c.cfg.train.lr < 1]
    bad = [c for c in cells if c.cfg.train.lr > 1]
    assert len(good) == 4 and len(bad) == 4
    stored = metrics_by_key(store)
    assert set(stored) == {c.key for c in good}
    con = open_store(store)
    failed = {f["key"]: f["error"] for f in failures(con)}
    con.close()
    assert set(failed) == {c.key for c in bad}
    assert all("diverged" in e or "baseline failed" in e for e in failed.values())
    assert "4 computed here" in proc.stdout and "4 failed" in proc.stdout
    assert len(proc.stdout.encode()) + len(proc.stderr.encode()) < 20_000
    assert "failed:" in cli("show", "--store", str(store)).stdout
    # a rerun retries only the failed cells and leaves the stored ones alone
    before = store.stat().st_size
    dry = cli("sweep", str(path), "--store", str(store), "--dry-run")
    assert dry.returncode == 0 and "8 cells: 4 done, 4 to do (4 of them failed before)" in dry.stdout
    assert store.stat().st_size == before
    good_only = grid_file(tmp_path, {"base": TINY, "axes": {"seed": 2, "train.lr": [1.0e-4]}}, "good.yaml")
    again = cli("sweep", str(good_only), "--store", str(store))
    assert again.returncode == 0 and "0 computed here, 4 already stored" in again.stdout


def test_two_sweeps_on_one_new_store_compute_every_cell_once_in_total(tmp_path):
    spec = {"base": TINY, "axes": {"seed": 3, "method": [{"kind": "full"}, {"kind": "lora", "rank": 4}]}}
    path, store = grid_file(tmp_path, spec), tmp_path / "new.db"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    args = [sys.executable, "-m", "lorasec.cli", "sweep", str(path), "--store", str(store),
            "--workers", "1", "--threads-per-worker", "1"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    computed = [int(o[0].split(" computed here")[0].rsplit(" ", 1)[-1]) for o in outs]
    assert sum(computed) == 12, [o[0][-400:] for o in outs]
    con = sqlite3.connect(store)
    assert con.execute("SELECT count(*), count(DISTINCT key) FROM runs").fetchone() == (12, 12)
    assert con.execute("SELECT count(*) FROM claims").fetchone() == (0,)


def test_concurrent_creation_of_a_new_store_never_fails(tmp_path):
    store = tmp_path / "fresh.db"
    code = ("import sys; from lorasec.store import open_store; c = open_store(sys.argv[1]); "
            "c.execute('SELECT count(*) FROM runs').fetchone(); c.close()")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(store)], stderr=subprocess.PIPE, text=True)
             for _ in range(12)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 12, errs
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# Kills and faults (named points, kills placed on the store's progress, a dying worker, leases): tests/test_faults.py


def test_a_swept_cell_keeps_its_exported_adapter_beside_the_store_like_a_run(tmp_path):
    import hashlib

    from lorasec.store import artifacts_dir

    cfgs = expand({"base": TINY | {"attack": {"kind": "none"}, "analyses": [{"kind": "adapter_export"}]},
                   "axes": {"seed": 1}})
    store = tmp_path / "r.db"
    assert not sweep(cfgs, store, workers=1, threads=1, progress=False).failed
    (row,) = list(results(open_store(store)))
    export = row["analyses"]["adapter_export"]
    assert export["saved"] is True
    where = artifacts_dir(store, row["key"])
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= set(export["files"])
    for rel, digest in export["files"].items():
        assert hashlib.sha256((where / rel).read_bytes()).hexdigest() == digest


def test_dry_run_and_status_read_without_creating_the_store(tmp_path):
    cells = expand({"base": TINY, "axes": {"seed": 2}})
    st = status(cells, tmp_path / "absent.db")
    assert st.line() == "4 cells: 0 done, 4 to do (0 of them failed before)"
    assert not (tmp_path / "absent.db").exists()
    proc = cli("sweep", str(grid_file(tmp_path, {"base": TINY, "axes": {"seed": 2}})), "--store",
               str(tmp_path / "absent.db"), "--dry-run")
    assert proc.returncode == 0 and "0 done, 4 to do" in proc.stdout
    assert not (tmp_path / "absent.db").exists()


def test_ray_executor_stores_the_same_metrics_as_the_local_pool(tmp_path):
    pytest.importorskip("ray")
    spec = {"base": TINY, "axes": {"method": [{"kind": "full"}, {"kind": "lora", "rank": 4}]}}
    cfgs = expand(spec)
    local, remote = tmp_path / "local.db", tmp_path / "ray.db"
    s1 = sweep(cfgs, local, workers=2, threads=1, progress=False)
    s2 = sweep(cfgs, remote, workers=2, threads=1, executor="ray", progress=False)
    assert not s1.failed and not s2.failed and len(s2.computed) == 4
    assert metrics_by_key(local) == metrics_by_key(remote)
    con = open_store(remote)
    rows = list(results(con))
    con.close()
    assert all(r["environment"]["torch_threads"] == 1 for r in rows)


@pytest.mark.parametrize(("flags", "fragment"), [
    (("--workers", "0"), "--workers: must be >= 1, got 0"),
    (("--threads-per-worker", "0"), "--threads-per-worker: must be >= 1, got 0"),
    (("--executor", "slurm"), "--executor: unknown executor 'slurm'. Known: local, ray"),
])
def test_a_bad_sweep_option_is_one_line_exit_2_and_nothing_written(tmp_path, flags, fragment):
    store = tmp_path / "r.db"
    proc = cli("sweep", str(grid_file(tmp_path, {"base": TINY, "axes": {"seed": 2}})), "--store", str(store), *flags)
    assert proc.returncode == 2 and proc.stderr.strip() == f"lorasec: {fragment}", proc.stderr
    assert not store.exists()
