"""Results store: one SQLite file, one row per experiment, keyed by a hash of the validated config.

One writer (the CLI or a sweep's parent process) saves whole rows in one transaction, so a killed run
leaves either the complete row or nothing.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

SCHEMA = """CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    label TEXT NOT NULL,
    config TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL
)"""


def config_key(cfg: BaseModel) -> str:
    """sha256 of the canonical JSON of the validated config: a stated default and an omitted one hash alike."""
    canon = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def open_store(path: Path) -> sqlite3.Connection:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30)
    con.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; synchronous stays FULL
    con.execute(SCHEMA)
    return con


def save(con: sqlite3.Connection, result: dict, replace: bool = False) -> bool:
    """Insert one result row (dumped with allow_nan=False); returns False if the key was already there."""
    body = json.dumps(result, allow_nan=False, separators=(",", ":"))
    verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
    with con:
        cur = con.execute(f"{verb} INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                          (result["key"], result["config"]["task"], result["label"],
                           json.dumps(result["config"], sort_keys=True), body, time.time()))
    return cur.rowcount == 1


def load(con: sqlite3.Connection, key: str) -> dict | None:
    row = con.execute("SELECT result FROM runs WHERE key = ?", (key,)).fetchone()
    return json.loads(row[0]) if row else None


def results(con: sqlite3.Connection, task: str | None = None) -> Iterator[dict]:
    sql, args = "SELECT result FROM runs", ()
    if task:
        sql, args = sql + " WHERE task = ?", (task,)
    for (body,) in con.execute(sql + " ORDER BY created", args):
        yield json.loads(body)
