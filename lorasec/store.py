"""Results store: one SQLite file, one row per experiment, keyed by a hash of the validated config.

One writer (the CLI or a sweep's driver process) saves whole rows in one transaction, so a killed run
leaves either the complete row or nothing. Beside `runs` a store keeps `failures` (cells that raised, with
their error; a later success replaces them) and `claims` (which sweep is computing which cell, until when),
so two sweeps on one store never compute the same cell twice and a dead sweep's claims lapse.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from lorasec import faults

SCHEMA = """CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    label TEXT NOT NULL,
    config TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    key TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    label TEXT NOT NULL,
    config TEXT NOT NULL,
    error TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires REAL NOT NULL
)"""


def config_key(cfg: BaseModel) -> str:
    """sha256 of the canonical JSON of the validated config: a stated default and an omitted one hash alike.

    Fields marked `json_schema_extra={"key": False}` (options that never change a number, such as
    `train.checkpointing`) are left out, in nested configs too, so they leave every key as it was. Fields marked
    `json_schema_extra={"key": "if_set"}` (added after results were stored, such as `defense.scoring`) are left out
    while they hold their default, so the configs that predate them keep their keys."""
    canon = json.dumps(_keyed(cfg, cfg.model_dump(mode="json")), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def _keyed(cfg: object, dumped: object) -> object:
    """`dumped` (the JSON dump of `cfg`) without the fields of `cfg` and its nested configs marked key=False."""
    if isinstance(cfg, BaseModel) and isinstance(dumped, dict):
        out = dict(dumped)
        for name, f in type(cfg).model_fields.items():
            extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
            if extra.get("key") is False or (extra.get("key") == "if_set" and getattr(cfg, name) == f.default):
                out.pop(name, None)
            elif name in out:
                out[name] = _keyed(getattr(cfg, name), out[name])
        return out
    if isinstance(cfg, (list, tuple)) and isinstance(dumped, list) and len(cfg) == len(dumped):
        return [_keyed(c, d) for c, d in zip(cfg, dumped, strict=True)]
    return dumped


def artifacts_dir(store: Path, key: str) -> Path:
    """Where a cell's files (a trained adapter) live: `<store stem>.artifacts/<key>/` beside the store."""
    store = Path(store)
    return store.with_name(f"{store.stem}.artifacts") / key


def _create(path: Path) -> None:
    """Make a new store atomically: build it beside `path`, then hard-link it into place. Two processes creating
    one store at once both succeed (the loser's copy is dropped); switching a shared file to WAL would race."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        con = sqlite3.connect(tmp)
        con.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; synchronous stays FULL
        con.executescript(SCHEMA)
        con.close()
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def open_store(path: Path) -> sqlite3.Connection:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _create(path)
    con = sqlite3.connect(path, timeout=60)
    if con.execute("SELECT count(*) FROM sqlite_master WHERE name IN ('failures', 'claims')").fetchone()[0] < 2:
        con.executescript(SCHEMA)  # a store from before sweeps gains the two tables
    return con


def save(con: sqlite3.Connection, result: dict, replace: bool = False) -> bool:
    """Insert one result row (dumped with allow_nan=False); returns False if the key was already there."""
    body = json.dumps(result, allow_nan=False, separators=(",", ":"))
    verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
    with con:
        cur = con.execute(f"{verb} INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                          (result["key"], result["config"]["task"], result["label"],
                           json.dumps(result["config"], sort_keys=True), body, time.time()))
        con.execute("DELETE FROM failures WHERE key = ?", (result["key"],))
        con.execute("DELETE FROM claims WHERE key = ?", (result["key"],))
        faults.hit("in_save")  # a test's kill here must leave no row: the transaction is not committed
    return cur.rowcount == 1


def save_failure(con: sqlite3.Connection, key: str, task: str, label: str, config: dict, error: str) -> None:
    """Record that a cell raised (one line of error); its claim ends. A stored result is never replaced."""
    with con:
        if con.execute("SELECT 1 FROM runs WHERE key = ?", (key,)).fetchone() is None:
            con.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?, ?)",
                        (key, task, label, json.dumps(config, sort_keys=True), error, time.time()))
        con.execute("DELETE FROM claims WHERE key = ?", (key,))


FAILURE_COLUMNS = "key, task, label, config, error, created"


def _failure(row: tuple) -> dict:
    key, task, label, config, error, created = row
    return {"key": key, "task": task, "label": label, "config": json.loads(config), "error": error,
            "created": created}


def failures(con: sqlite3.Connection) -> Iterator[dict]:
    """Failed cells, oldest first: {key, task, label, config, error, created}."""
    for row in con.execute(f"SELECT {FAILURE_COLUMNS} FROM failures ORDER BY created"):
        yield _failure(row)


def stored_keys(con: sqlite3.Connection) -> set[str]:
    return {k for (k,) in con.execute("SELECT key FROM runs")}


def failed_keys(con: sqlite3.Connection) -> set[str]:
    return {k for (k,) in con.execute("SELECT key FROM failures")}


def new_owner() -> str:
    """Who holds a claim: host, pid and a nonce (a reused pid is not the same owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


def _dead(owner: str) -> bool:
    """A claim whose owner ran on this host and whose process is gone lapses at once, not at its expiry."""
    host, _, rest = owner.partition(":")
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(rest.partition(":")[0]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


def claim(con: sqlite3.Connection, key: str, owner: str, ttl: float) -> bool:
    """Take the lease on computing `key` for `ttl` seconds unless it is stored or held (unexpired, alive) by
    another owner. One IMMEDIATE transaction, so two sweeps never both win."""
    now = time.time()
    with con:
        con.execute("BEGIN IMMEDIATE")
        if con.execute("SELECT 1 FROM runs WHERE key = ?", (key,)).fetchone():
            return False
        row = con.execute("SELECT owner, expires FROM claims WHERE key = ?", (key,)).fetchone()
        if row and row[0] != owner and row[1] > now and not _dead(row[0]):
            return False
        con.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", (key, owner, now + ttl))
    return True


def renew(con: sqlite3.Connection, owner: str, ttl: float) -> None:
    with con:
        con.execute("UPDATE claims SET expires = ? WHERE owner = ?", (time.time() + ttl, owner))


def release(con: sqlite3.Connection, owner: str, key: str | None = None) -> None:
    with con:
        if key is None:
            con.execute("DELETE FROM claims WHERE owner = ?", (owner,))
        else:
            con.execute("DELETE FROM claims WHERE owner = ? AND key = ?", (owner, key))


def held_elsewhere(con: sqlite3.Connection, owner: str) -> set[str]:
    """Keys another live sweep is computing now."""
    now = time.time()
    return {k for k, o, exp in con.execute("SELECT key, owner, expires FROM claims")
            if o != owner and exp > now and not _dead(o)}


def find(con: sqlite3.Connection, prefix: str, limit: int = 2) -> list[dict]:
    """Stored results and failed cells whose key starts with `prefix` (at most `limit`): a range on the key's
    index, so only those rows are read. A result comes whole; a failure as `failures` gives it."""
    if not prefix:
        raise ValueError("a key prefix is at least one character")
    span = (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1))  # every string that starts with `prefix`, in order
    hits = [json.loads(r) for (r,) in con.execute(
        "SELECT result FROM runs WHERE key >= ? AND key < ? LIMIT ?", (*span, limit))]
    hits += [_failure(row) for row in con.execute(
        f"SELECT {FAILURE_COLUMNS} FROM failures WHERE key >= ? AND key < ? LIMIT ?", (*span, limit))]
    return hits[:limit]


def load(con: sqlite3.Connection, key: str) -> dict | None:
    row = con.execute("SELECT result FROM runs WHERE key = ?", (key,)).fetchone()
    return json.loads(row[0]) if row else None


def results(con: sqlite3.Connection, task: str | None = None, schema: int | None = None) -> Iterator[dict]:
    """Stored results, oldest first; of one task, and of one config schema version, when given."""
    where, args = [], []
    if task:
        where.append("task = ?")
        args.append(task)
    if schema is not None:
        where.append("json_extract(config, '$.schema_version') = ?")
        args.append(schema)
    sql = "SELECT result FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
    for (body,) in con.execute(sql + " ORDER BY created", args):
        yield json.loads(body)


def schema_counts(con: sqlite3.Connection) -> dict[int | None, int]:
    """Stored rows per config schema version: rows of an older schema are kept but never reused or reported."""
    return {v: n for v, n in con.execute(
        "SELECT json_extract(config, '$.schema_version'), count(*) FROM runs GROUP BY 1 ORDER BY 1")}


STORE_COLUMNS = ("key", "task", "label", "config", "result", "created")  # of `runs`: what makes a lorasec store


def check_store(path: Path, write: bool = True) -> Path:
    """`path` if it is absent (and could be created) or a lorasec SQLite store; else an InputError in one line.

    Refused: a directory, an empty or non-SQLite file, a SQLite file of another schema (tables but no `runs`
    with lorasec's columns), and, with `write`, a place this process cannot write (the file or its directory:
    WAL mode needs both). Never modifies anything: the file is read through SQLite's immutable mode, or
    read-only when a write-ahead log beside it may hold the newest schema.
    """
    from lorasec.errors import InputError

    path = Path(path).expanduser()
    shown = repr(str(path))
    if path.is_dir():
        raise InputError(f"--store: {shown} is a directory, not a results file")
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), Path("."))
        if not parent.is_dir():
            raise InputError(f"--store: cannot create {shown}: {str(parent)!r} is not a directory")
        if write and not _writable_dir(parent):
            raise InputError(f"--store: cannot create {shown}: {str(parent)!r} is not writable")
        return path
    if not path.is_file():
        raise InputError(f"--store: {shown} is not a regular file")
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as e:
        raise InputError(f"--store: cannot read {shown} ({e.strerror or type(e).__name__})") from None
    if not head:
        raise InputError(f"--store: {shown} is an empty file, not a lorasec results store")
    if head != b"SQLite format 3\x00":
        raise InputError(f"--store: {shown} is not a lorasec results store (not a SQLite file)")
    wal = path.with_name(path.name + "-wal").exists()
    uri = f"{path.resolve().as_uri()}?{'mode=ro' if wal else 'immutable=1'}"
    try:
        con = sqlite3.connect(uri, uri=True)
        try:
            tables = {n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            columns = tuple(r[1] for r in con.execute("PRAGMA table_info(runs)"))
        finally:
            con.close()
    except sqlite3.Error as e:
        raise InputError(f"--store: {shown} is not a readable SQLite store ({' '.join(str(e).split())})") from None
    if tables and columns != STORE_COLUMNS:
        what = "a 'runs' table of other columns" if columns else f"tables {', '.join(sorted(tables)[:4])}"
        raise InputError(f"--store: {shown} is a SQLite file of another schema ({what}), not a lorasec store")
    if write and not (os.access(path, os.W_OK) and _writable_dir(path.parent)):
        raise InputError(f"--store: {shown} is not writable (the file and its directory must be)")
    return path


def _writable_dir(d: Path) -> bool:
    """Whether a file can be created in `d` (tried, not guessed from permission bits: root, read-only mounts)."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=d):
            return True
    except OSError:
        return False
