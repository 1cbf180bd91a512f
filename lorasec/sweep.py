"""Sweeps: every cell of a grid, computed by parallel workers (a local process pool or a Ray cluster).

The driver is the only writer: workers get a cell's config, run it with `lorasec.audit.execute` under their
own thread budget and hand the record back; the driver saves each row in one transaction as it arrives,
so a crash loses at most the cells in flight, and rerunning the same command computes only what is missing.
Clean baselines run before the attacked cells that are read against them. Before computing a cell the
driver claims it in the store (a lease with an expiry, renewed while it runs; a dead driver's lease lapses),
so two sweeps on one store never compute the same cell twice. A cell that raises is stored as failed with
its one-line error and the sweep goes on.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorasec import faults
from lorasec import store as db
from lorasec.audit import attach_baseline, baseline_of
from lorasec.config import TaskConfig
from lorasec.errors import InputError
from lorasec.tasks import SHIPPED, TASKS, Task, parse_config

EXECUTORS = ("local", "ray")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
PASSED_ENV = ("LORASEC_CACHE", "LORASEC_NETWORK_TESTS", "HF_HUB_OFFLINE", "OMP_WAIT_POLICY",
              "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE", faults.ENV, faults.DIR_ENV)


@dataclass(frozen=True)
class Cell:
    cfg: TaskConfig
    key: str
    label: str
    needs: str | None  # the key of the clean baseline this cell is read against


def _label(cfg: TaskConfig) -> str:
    return f"{cfg.label()} seed {cfg.seed}"  # type: ignore[attr-defined]


def plan(cfgs: Sequence[TaskConfig]) -> list[Cell]:
    """Every cell once, with the clean baselines the attacked ones need, baselines first."""
    cells: dict[str, Cell] = {}
    for cfg in cfgs:
        base = baseline_of(cfg)
        if base is not None:
            key = db.config_key(base)
            cells.setdefault(key, Cell(base, key, _label(base), None))
        key = db.config_key(cfg)
        cells.setdefault(key, Cell(cfg, key, _label(cfg), db.config_key(base) if base is not None else None))
    return sorted(cells.values(), key=lambda c: c.needs is not None)


@dataclass
class Status:
    cells: list[Cell]
    done: set[str]
    failed: set[str]

    @property
    def todo(self) -> list[Cell]:
        return [c for c in self.cells if c.key not in self.done]

    def line(self) -> str:
        todo = self.todo
        failed = sum(c.key in self.failed for c in todo)
        return (f"{len(self.cells)} cells: {len(self.cells) - len(todo)} done, {len(todo)} to do"
                f" ({failed} of them failed before)")


def status(cfgs: Sequence[TaskConfig], store: Path) -> Status:
    """What a sweep would do: its cells, which are stored and which failed before. Never creates the store."""
    cells = plan(cfgs)
    if not Path(store).exists():
        return Status(cells, set(), set())
    con = db.open_store(store)
    try:
        return Status(cells, db.stored_keys(con), db.failed_keys(con))
    finally:
        con.close()


# ---- the worker side: runs in a pool process or a Ray worker; never touches the store ----

def limit_threads(threads: int) -> None:
    """Give this process `threads` cores for torch, OpenMP and BLAS. Before torch is imported the environment
    decides; after, torch.set_num_threads does. Two processes each using every core slow each other 10x."""
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep instead of spinning
    import torch

    torch.set_num_threads(threads)


RuntimeTasks = dict[str, tuple[Any, Any, tuple[str, ...]]]  # name -> (config class, pipeline, stages)


def runtime_tasks() -> RuntimeTasks:
    """Tasks registered at run time (not by importing lorasec.tasks): a worker registers them too. Only what
    running a cell needs travels; baselines, checks and tables stay with the driver."""
    return {n: (t.config, t.pipeline, t.stages) for n in TASKS.names() if n not in SHIPPED for t in [TASKS.get(n)]}


def _no_table(rows: list[dict]) -> Any:
    raise NotImplementedError("a worker only runs cells")


def _error(e: Exception) -> dict:
    """A cell's failure as its stored outcome: the exception's type and message on one line."""
    return {"error": f"{type(e).__name__}: {' '.join(str(e).split())}"[:2000]}


def work(raw: dict, threads: int, env: dict[str, str], tasks: RuntimeTasks | None = None,
         store: str | None = None) -> dict:
    """Run one cell from its config dump; returns {"record": ...} or {"error": one line}. The worker never opens
    the store; `store` only says where the cell's files (an exported adapter) go, beside it."""
    os.environ.update(env)
    limit_threads(threads)
    for name, (config, pipeline, stages) in (tasks or {}).items():
        if name not in TASKS:
            TASKS.add(name, Task(name=name, config=config, pipeline=pipeline, stages=stages, table=_no_table))
    import transformers

    from lorasec.audit import execute

    transformers.utils.logging.disable_progress_bar()  # a worker's bars would interleave in the driver's log

    try:
        record = execute(parse_config(raw), progress=False, store=Path(store) if store else None).record
    except Exception as e:  # noqa: BLE001  (any failure of one cell is recorded; the sweep goes on)
        return _error(e)
    faults.hit("worker_done")
    return {"record": record}


def _die_with(driver: int) -> None:
    """Make this worker die with its driver. A driver stopped by a signal (SIGTERM, SIGKILL) runs no cleanup, and
    its daemon workers would go on computing cells nobody will store, taking the cores from the next sweep. On
    Linux the kernel is asked to SIGKILL the worker when the driver goes (PR_SET_PDEATHSIG); a driver already gone
    by then is caught by its pid."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != driver:
        os._exit(0)


def _serve(conn: Any, threads: int, driver: int | None = None) -> None:
    """A local worker's loop: one cell's arguments in, its outcome out, until the driver closes the pipe."""
    if driver is not None:
        _die_with(driver)
    limit_threads(threads)
    while True:
        try:
            args = conn.recv()
        except (EOFError, OSError):
            return
        outcome = work(*args)
        try:
            conn.send(outcome)
        except (BrokenPipeError, OSError):
            return  # the driver is gone


@dataclass(eq=False)  # a slot is itself: compared by identity
class _Slot:
    process: Any
    conn: Any
    handle: int | None = None  # the cell it runs now
    outcome: dict | None = None  # an outcome known without running (the cell could not be sent)


class LocalPool:
    """`workers` spawned processes (nothing inherited from the driver), each holding `threads` cores and a pipe
    of its own. A worker that dies (killed, out of memory) fails only the cell it was running: it is replaced
    and the other workers' cells go on."""

    def __init__(self, workers: int, threads: int) -> None:
        self.threads, self._handles = threads, 0
        self._ctx = multiprocessing.get_context("spawn")
        self.slots = [self._start() for _ in range(workers)]

    def _start(self) -> _Slot:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_serve, args=(child, self.threads, os.getpid()), daemon=True)
        process.start()
        child.close()
        return _Slot(process, parent)

    def submit(self, raw: dict, env: dict[str, str], tasks: RuntimeTasks, store: str | None = None) -> int:
        slot = next(s for s in self.slots if s.handle is None)
        self._handles += 1
        slot.handle = self._handles
        try:
            slot.conn.send((raw, self.threads, env, tasks, store))
        except Exception as e:  # noqa: BLE001  (e.g. a runtime task whose pipeline cannot be pickled)
            slot.outcome = _error(e)
        return slot.handle

    def wait(self, handles: list[Any], timeout: float) -> list[tuple[Any, dict]]:
        busy = [s for s in self.slots if s.handle in handles]
        if not any(s.outcome for s in busy):
            from multiprocessing.connection import wait

            wait([s.conn for s in busy] + [s.process.sentinel for s in busy], timeout)
        out = []
        for s in busy:
            outcome = s.outcome
            if outcome is None and s.conn.poll():
                with contextlib.suppress(EOFError, OSError):  # EOF: the worker died; is_alive below says so
                    outcome = s.conn.recv()
            if outcome is None and not s.process.is_alive():
                s.process.join()
                outcome = {"error": f"worker process died (exit code {s.process.exitcode}: killed or out of memory)"}
                s.conn.close()
                self.slots[self.slots.index(s)] = self._start()
            if outcome is not None:
                out.append((s.handle, outcome))
                s.handle, s.outcome = None, None
        return out

    def close(self) -> None:
        for s in self.slots:
            s.conn.close()  # the worker's recv ends; it exits
        for s in self.slots:
            s.process.join(timeout=10)
            if s.process.is_alive():
                s.process.kill()
                s.process.join()


class RayPool:
    """Ray tasks asking for `threads` CPUs (and `gpus` GPUs) each; results come back to the driver."""

    def __init__(self, workers: int, threads: int, address: str | None, gpus: float) -> None:
        try:
            import ray
        except ImportError:
            raise InputError("--executor: ray is not installed (pip install -e '.[ray]')") from None
        self.ray = ray
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = workers * threads
            ray.init(**kwargs)
        self.threads = threads
        self._remote = ray.remote(num_cpus=threads, num_gpus=gpus, max_retries=0)(work)

    def submit(self, raw: dict, env: dict[str, str], tasks: RuntimeTasks, store: str | None = None) -> Any:
        return self._remote.remote(raw, self.threads, env, tasks, store)

    def wait(self, handles: list[Any], timeout: float) -> list[tuple[Any, dict]]:
        ready, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        out = []
        for h in ready:
            try:
                out.append((h, self.ray.get(h)))
            except Exception as e:  # noqa: BLE001  (a worker that died: the cell is failed, the sweep goes on)
                out.append((h, {"error": f"ray worker failed: {type(e).__name__}"}))
        return out

    def close(self) -> None:
        self.ray.shutdown()


# ---- the driver ----

@dataclass
class Summary:
    total: int
    computed: list[str] = field(default_factory=list)
    reused: int = 0
    elsewhere: list[str] = field(default_factory=list)  # stored meanwhile by another sweep on the same store
    failed: dict[str, str] = field(default_factory=dict)  # key -> error

    def line(self) -> str:
        return (f"{self.total} cells: {len(self.computed)} computed here, {self.reused} already stored, "
                f"{len(self.elsewhere)} by another sweep, {len(self.failed)} failed")


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_workers(workers: int | None, threads: int | None) -> tuple[int, int]:
    """Workers x threads fits the cores unless both are given."""
    n = cores()
    if workers is not None and workers < 1:
        raise InputError(f"--workers: must be >= 1, got {workers}")
    if threads is not None and threads < 1:
        raise InputError(f"--threads-per-worker: must be >= 1, got {threads}")
    if workers is None and threads is None:
        workers = 1
    if threads is None:
        threads = max(1, n // workers)  # type: ignore[operator]
    if workers is None:
        workers = max(1, n // threads)
    return workers, threads


def check_options(workers: int | None, threads: int | None, executor: str, gpus: float = 0.0) -> tuple[int, int]:
    """The sweep's own options, refused before any cell is read or checked; returns (workers, threads)."""
    if executor not in EXECUTORS:
        raise InputError(f"--executor: unknown executor {executor!r}. Known: {', '.join(EXECUTORS)}")
    if not gpus >= 0:  # NaN too
        raise InputError(f"--gpus: must be >= 0 (GPUs each Ray task asks for), got {gpus}")
    if gpus and executor != "ray":
        raise InputError(f"--gpus: only the ray executor places cells on GPUs, got --gpus {gpus} with "
                         f"--executor {executor}")
    return resolve_workers(workers, threads)


class Reporter:
    """One overall bar on a terminal; otherwise a plain line per finished cell (a log stays small)."""

    def __init__(self, total: int, done: int, show: bool | None) -> None:
        self.total, self.done, self.first, self.t0 = total, done, done, time.monotonic()
        self.tty = sys.stdout.isatty() if show is None else show
        self.bar = None
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TimeRemainingColumn())
            self.bar.start()
            self.task = self.bar.add_task("sweep", total=total, completed=done)

    def cell(self, label: str, outcome: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, description=f"sweep: {label[:40]}")
            if outcome != "ok":
                self.bar.console.print(f"{outcome}: {label}")
            return
        elapsed = time.monotonic() - self.t0
        eta = elapsed / (self.done - self.first) * (self.total - self.done)
        sys.stdout.write(f"[{self.done}/{self.total}] {outcome} {label}  elapsed {elapsed:.0f}s eta {eta:.0f}s\n")
        sys.stdout.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def sweep(cfgs: Sequence[TaskConfig], store: Path, workers: int | None = None, threads: int | None = None,
          executor: str = "local", address: str | None = None, gpus: float = 0.0, progress: bool | None = None,
          lease_s: float = 600.0, poll_s: float = 0.5,
          on_result: Callable[[dict], None] | None = None) -> Summary:
    """Compute every missing cell of `cfgs` (and their clean baselines) into `store`; see the module doc."""
    workers, threads = check_options(workers, threads, executor, gpus)
    cells = plan(cfgs)
    summary = Summary(total=len(cells))
    con = db.open_store(store)
    owner = db.new_owner()
    pool: LocalPool | RayPool | None = None
    reporter: Reporter | None = None

    def fail(c: Cell, error: str) -> None:
        db.save_failure(con, c.key, c.cfg.task, c.label, c.cfg.model_dump(mode="json"), error)  # type: ignore[attr-defined]
        summary.failed[c.key] = error
        if reporter is not None:
            reporter.cell(c.label, "failed")
    try:
        done = db.stored_keys(con)
        pending = [c for c in cells if c.key not in done]
        summary.reused = len(cells) - len(pending)
        if not pending:
            return summary
        reporter = Reporter(len(cells), summary.reused, progress)
        env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
        tasks = runtime_tasks()
        in_flight: dict[Any, Cell] = {}
        failed_here: set[str] = set()
        last_renew = time.monotonic()
        while pending or in_flight:
            done = db.stored_keys(con)
            for c in [c for c in pending if c.key in done]:  # stored meanwhile by another sweep
                pending.remove(c)
                summary.elsewhere.append(c.key)
                reporter.cell(c.label, "stored by another sweep")
            for c in [c for c in pending if c.needs in failed_here]:
                pending.remove(c)
                fail(c, f"its clean baseline failed: {summary.failed[c.needs]}")  # type: ignore[index]
            slots = workers - len(in_flight)
            held = db.held_elsewhere(con, owner) if slots > 0 else set()
            for c in list(pending):
                if slots <= 0:
                    break
                if c.key in held or (c.needs is not None and c.needs not in done):
                    continue  # another sweep computes it, or its baseline is still to come
                if not db.claim(con, c.key, owner, lease_s):
                    continue  # another sweep holds it; look again later
                if pool is None:
                    pool = LocalPool(workers, threads) if executor == "local" else RayPool(workers, threads,
                                                                                            address, gpus)
                faults.hit("claim_held")
                in_flight[pool.submit(c.cfg.model_dump(mode="json"), env, tasks, str(store))] = c
                pending.remove(c)
                slots -= 1
            if not in_flight:
                if pending and not _waiting_on_others(con, owner, pending, done):
                    for c in pending:  # a baseline nobody will compute: should not happen, but never hang
                        fail(c, "its clean baseline was never computed")
                    break
                time.sleep(poll_s)
                continue
            for handle, outcome in pool.wait(list(in_flight), timeout=poll_s):  # type: ignore[union-attr]
                c = in_flight.pop(handle)
                if "record" in outcome:
                    faults.hit("result_received")
                    record = outcome["record"]
                    if c.needs is not None:
                        attach_baseline(record, db.load(con, c.needs), c.cfg)
                    db.save(con, record)
                    summary.computed.append(c.key)
                    if on_result:
                        on_result(record)
                    reporter.cell(c.label, "ok")
                else:
                    fail(c, outcome["error"])
                    failed_here.add(c.key)
            if time.monotonic() - last_renew > lease_s / 4:
                db.renew(con, owner, lease_s)
                last_renew = time.monotonic()
        return summary
    finally:
        if reporter is not None:
            reporter.close()
        if pool is not None:
            pool.close()
        db.release(con, owner)
        con.close()


def _waiting_on_others(con: Any, owner: str, pending: list[Cell], done: set[str]) -> bool:
    """Whether some pending cell waits for work another live sweep holds (itself or its baseline)."""
    held = db.held_elsewhere(con, owner)
    return any(c.key in held or (c.needs is not None and c.needs not in done and c.needs in held) for c in pending)
