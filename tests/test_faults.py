"""Faults that cannot flake: a sweep killed at named points (lorasec.faults) and at random moments placed on the
store's observed progress, never on the clock; leases expiring and renewed; one worker dying. Each asserts on
what happened: 0 rows lost, 0 duplicated, metrics identical to an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import SWEEP_CELL

from lorasec import faults
from lorasec.grid import expand
from lorasec.store import claim, failures, open_store, release, renew, results
from lorasec.sweep import sweep

TINY = SWEEP_CELL
SPEC = {"base": TINY, "axes": {"seed": 3, "method": [{"kind": "full"}, {"kind": "lora", "rank": 4}]}}  # 6 + 6


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict]:
    """The uninterrupted run's metrics, key -> metrics."""
    store = tmp_path_factory.mktemp("reference") / "reference.db"
    summary = sweep(expand(SPEC), store, workers=2, threads=1, progress=False)
    assert not summary.failed and len(summary.computed) == 12
    return rows(store)


def rows(store: Path) -> dict[str, dict]:
    con = open_store(store)
    try:
        return {r["key"]: r["metrics"] for r in results(con)}
    finally:
        con.close()


def counts(store: Path) -> tuple[int, int]:
    con = sqlite3.connect(store)
    try:
        return con.execute("SELECT count(*), count(DISTINCT key) FROM runs").fetchone()
    finally:
        con.close()


def start(tmp_path: Path, store: Path, fault: str | None = None) -> subprocess.Popen:
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(SPEC))
    env = {k: v for k, v in os.environ.items() if k not in (faults.ENV, faults.DIR_ENV)}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    if fault:
        env |= {faults.ENV: fault, faults.DIR_ENV: str(tmp_path / "passes")}
    return subprocess.Popen([sys.executable, "-m", "lorasec.cli", "sweep", str(grid), "--store", str(store),
                             "--workers", "2", "--threads-per-worker", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # its own process group: driver and workers die together


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def resume_and_check(tmp_path: Path, store: Path, reference: dict[str, dict]) -> subprocess.CompletedProcess:
    """Run the sweep again, unfaulted: every cell stored once, numbers identical to the uninterrupted run."""
    proc = start(tmp_path, store)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert counts(store) == (12, 12)
    assert rows(store) == reference
    con = sqlite3.connect(store)
    assert con.execute("SELECT count(*) FROM claims").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM failures").fetchone() == (0,)
    con.close()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_bad_fault_spec_names_the_variable_and_the_points(monkeypatch):
    monkeypatch.setenv(faults.ENV, "in_save:0")
    with pytest.raises(ValueError, match="LORASEC_FAULT: 'in_save:0' is not POINT:N"):
        faults.armed()
    monkeypatch.setenv(faults.ENV, "nowhere:1")
    with pytest.raises(ValueError, match="claim_held, worker_done, result_received, in_save"):
        faults.armed()


def test_passes_are_counted_once_across_processes(tmp_path):
    env = {**os.environ, faults.DIR_ENV: str(tmp_path), faults.ENV: "in_save:1000"}
    code = "from lorasec import faults\nfor _ in range(25): faults.hit('in_save')"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    assert sorted(int(p.suffix[1:]) for p in tmp_path.iterdir()) == list(range(1, 101))


@pytest.mark.parametrize(("point", "saved"), [
    ("in_save", 2),          # killed inside the 3rd save's transaction: that row must not exist
    ("result_received", 2),  # killed holding the 3rd finished result, before saving it
    ("claim_held", None),    # killed holding the 3rd claim, before handing it to a worker
])
def test_a_driver_killed_at_a_named_point_loses_nothing_and_resumes_to_the_same_numbers(tmp_path, reference,
                                                                                        point, saved):
    store = tmp_path / "r.db"
    proc = start(tmp_path, store, f"{point}:3")
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL  # it died at the point, not by finishing
    stored, distinct = counts(store)
    assert stored == distinct
    if saved is not None:
        assert stored == saved
    else:
        assert 1 <= stored <= 2  # the 3rd claim comes once a worker is free, after at least one save
        con = sqlite3.connect(store)
        (held,) = con.execute("SELECT count(*) FROM claims").fetchone()
        con.close()
        assert held >= 1  # the dead driver's claims are still there; the resume must take them over at once
    assert all(reference[k] == m for k, m in rows(store).items())  # what was saved is what an unkilled run saves
    resume_and_check(tmp_path, store, reference)


def test_one_worker_dying_fails_only_its_cell_and_the_other_workers_go_on(tmp_path, reference):
    store = tmp_path / "r.db"
    proc = start(tmp_path, store, "worker_done:2")  # the 2nd cell any worker finishes: that worker dies
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err  # the sweep finished, with failures
    con = open_store(store)
    failed = {f["key"]: f["error"] for f in failures(con)}
    con.close()
    died = [k for k, e in failed.items() if e.startswith("worker process died")]
    assert len(died) == 1, failed  # exactly the dead worker's cell, not every cell in flight
    assert "exit code -9" in failed[died[0]]
    assert all(e.startswith("its clean baseline failed: worker process died") for k, e in failed.items()
               if k not in died)
    stored = rows(store)
    assert len(stored) == 12 - len(failed) and all(reference[k] == m for k, m in stored.items())
    resume_and_check(tmp_path, store, reference)


def test_sigkills_placed_on_observed_progress_lose_nothing_and_resume_to_the_same_numbers(tmp_path, reference):
    """Each kill waits until the store shows k rows *and* a claim of the running sweep (a cell in flight), then
    kills driver and workers at once. Targets are random but placed on progress, so no machine is too fast or
    too slow for them: every kill lands while a cell is computing."""
    store = tmp_path / "killed.db"
    rng = random.Random(0)
    targets = sorted(rng.sample(range(0, 11), 5))
    landed = []
    for k in targets:
        proc = start(tmp_path, store)
        seen = None
        while proc.poll() is None:
            if store.exists():
                con = sqlite3.connect(store, timeout=30)
                try:
                    n, mine = con.execute("SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM claims "
                                          "WHERE owner LIKE ?)", (f"%:{proc.pid}:%",)).fetchone()
                except sqlite3.OperationalError:  # the schema is still being created
                    n, mine = 0, 0
                finally:
                    con.close()
                if n >= k and mine >= 1:
                    seen = (n, mine)
                    break
            time.sleep(0.02)
        alive = proc.poll() is None
        kill_group(proc)
        assert alive and seen is not None, f"the sweep ended before reaching {k} rows"
        landed.append(seen)
        stored, distinct = counts(store)
        assert stored == distinct and stored >= seen[0]
        assert all(reference[key] == m for key, m in rows(store).items())
    assert len(landed) == 5 and all(mine >= 1 for _, mine in landed)
    resume_and_check(tmp_path, store, reference)


def test_workers_die_with_a_driver_stopped_by_sigterm(tmp_path):
    """A driver stopped by a signal runs no cleanup: its workers must not go on computing orphaned cells (they took
    a core each from the next sweep on a 2-core machine). SIGTERM goes to the driver alone, while a cell is in
    flight; every worker it spawned is gone within seconds."""
    import psutil

    store = tmp_path / "term.db"
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(SPEC))
    proc = subprocess.Popen([sys.executable, "-m", "lorasec.cli", "sweep", str(grid), "--store", str(store),
                             "--workers", "2", "--threads-per-worker", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        workers: list = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            kids = psutil.Process(proc.pid).children()
            workers = [k for k in kids if "multiprocessing.spawn" in " ".join(k.cmdline())]
            if len(workers) == 2 and store.exists():
                break
            time.sleep(0.05)
        assert proc.poll() is None and len(workers) == 2, "the sweep ended before its workers were seen"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        gone, alive = psutil.wait_procs(workers, timeout=15)
        assert not alive, [p.pid for p in alive]
    finally:
        kill_group(proc)


# ---- leases, without sleeping: an expiry in the past is an expired lease ----

def test_a_live_lease_blocks_other_owners_until_it_expires_and_a_renewal_extends_it(tmp_path):
    con = open_store(tmp_path / "r.db")
    a, b = "elsewhere:1:aaaa", "elsewhere:2:bbbb"  # another host: only the expiry can free their leases
    assert claim(con, "k", a, ttl=3600)
    assert not claim(con, "k", b, ttl=3600)  # held and unexpired
    assert claim(con, "k", a, ttl=3600)  # the holder may claim again
    renew(con, a, ttl=-1)  # a renewal sets the expiry: now in the past
    assert claim(con, "k", b, ttl=-1)  # an expired lease is taken over
    renew(con, b, ttl=3600)  # renewed in time: held again
    assert not claim(con, "k", a, ttl=3600)
    release(con, b)
    assert claim(con, "k", a, ttl=3600)
    con.close()


def test_a_lease_of_a_dead_process_on_this_host_lapses_at_once(tmp_path):
    con = open_store(tmp_path / "r.db")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    import socket

    dead = f"{socket.gethostname()}:{gone.pid}:dead"
    assert claim(con, "k", dead, ttl=3600)
    assert claim(con, "k", "elsewhere:3:cccc", ttl=3600)  # unexpired, but its owner is gone
    con.close()
