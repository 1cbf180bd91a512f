"""`lorasec report`: a store of results turned into evidence a reviewer can read.

Reads the store only (never trains, never imports the training stack). Each task contributes its own sections
through its registry entry (`Task.report`, "module:function" over the task's stored rows); this module never
names a task. It adds an overview, the failed cells and the rules every number follows, then writes
`report.md`, a self-contained `index.html`, `figures/*.png|svg` and `tables/*.csv`.
"""

from __future__ import annotations

import datetime as dt
import importlib
import inspect
import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from lorasec.config import SCHEMA_VERSION
from lorasec.errors import InputError
from lorasec.store import check_store, failures, open_store, results, schema_counts
from lorasec.tasks import TASKS
from lorasec.tasks.base import Section
from lorasec.tasks.evidence import RULES, config_fields, margins, parse_value

FORMATS = ("md", "html")


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    fs = tuple(dict.fromkeys(f.strip().lower() for f in formats if f.strip()))
    bad = [f for f in fs if f not in FORMATS]
    if bad or not fs:
        raise InputError(f"--format: unknown format {bad[0]!r}. Known: {', '.join(FORMATS)}" if bad else
                         f"--format: give at least one of {', '.join(FORMATS)}")
    return fs


def load(store: Path) -> tuple[list[dict], list[dict], int]:
    """Stored results of this schema, failed cells and the number of rows of an older schema; an InputError in one
    line when there is nothing to report."""
    store = Path(store)
    if not store.exists():
        raise InputError(f"STORE: {str(store)!r} does not exist (run `lorasec run` or `lorasec grid` first)")
    check_store(store, write=False)  # a directory, an empty or foreign file: one line, and nothing modified
    con = open_store(store)
    try:
        rows, failed = list(results(con, schema=SCHEMA_VERSION)), list(failures(con))
        older = sum(n for v, n in schema_counts(con).items() if v != SCHEMA_VERSION)
    finally:
        con.close()
    if not rows and not failed:
        what = f" of schema {SCHEMA_VERSION} ({older} rows of an older schema are never reported)" if older else ""
        raise InputError(f"STORE: {str(store)!r} holds no results{what} and no failed cells: nothing to report")
    return rows, failed, older


Compare = tuple[tuple[tuple[str, object], ...], ...]  # one tuple of (field, reference value) per --compare


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def parse_compare(specs: Iterable[str], rows: list[dict]) -> Compare:
    """`--compare FIELD=REFERENCE[,FIELD=REFERENCE...]` (dotted config fields and their reference values, JSON when
    it parses): a study's own comparison beside the tasks' declared ones; several fields move together as one
    treatment (`train.precision=fp32,train.optimizer=adamw`: a recipe against today's). Each field must be one
    some stored config has."""
    known = sorted({k for r in rows for k in config_fields(r["config"])} - {"seed"})
    out = []
    for spec in specs:
        pairs = []
        for part in re.split(r",(?=[A-Za-z_][\w.]*=)", spec):  # a comma inside a JSON value is not a separator
            name, eq, text = part.partition("=")
            if not eq or not name or not text or ("," in text and not _is_json(text)):
                raise InputError(f"--compare: {spec!r} is not FIELD=REFERENCE[,FIELD=REFERENCE] "
                                 "(e.g. train.precision=fp32)")
            if name not in known:
                raise InputError(f"--compare: {name!r} is in no stored config; fields: {', '.join(known)}")
            pairs.append((name, parse_value(text)))
        out.append(tuple(pairs))
    return tuple(out)


def task_sections(name: str, rows: list[dict], compare: Compare = ()) -> list[Section]:
    task = TASKS.get(name)
    if not task.report:
        return [Section(f"{name}: {len(rows)} cells", f"Task `{name}` contributes no report section.")]
    module, _, attr = task.report.partition(":")
    fn = getattr(importlib.import_module(module), attr)
    # a task's report that reads declared comparisons takes the study's own as `compare`
    return fn(rows, compare) if compare and "compare" in inspect.signature(fn).parameters else fn(rows)


def failure_section(failed: list[dict]) -> Section:
    rows = [{"task": f["task"], "cell": f["label"], "error": f["error"],
             "failed at (UTC)": dt.datetime.fromtimestamp(f["created"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
             "cells": [f["key"]]} for f in failed]
    return Section("Failed cells", f"{len(failed)} cell{'s' * (len(failed) != 1)} raised and stored no result; "
                   "they are left out of every number above. A later successful run of the same config replaces "
                   "its failure.", tables={"failed": rows})


def overview(store: Path, rows: list[dict], failed: list[dict], known: list[str], older: int = 0) -> Section:
    by_task = Counter(r["config"]["task"] for r in rows)
    lines = [f"- `{t}`: {n} cell{'s' * (n != 1)}" + ("" if t in known else " (a task this lorasec does not know: "
                                                                          "not reported)")
             for t, n in sorted(by_task.items())]
    if failed:
        lines.append(f"- failed: {len(failed)} cell{'s' * (len(failed) != 1)} (see *Failed cells*)")
    if older:
        lines.append(f"- {older} row{'s' * (older != 1)} of an older config schema (before {SCHEMA_VERSION}): "
                     "kept in the store, never reused and left out of this report")
    text = (f"Store `{store.name}`: {len(rows)} stored cell{'s' * (len(rows) != 1)}.\n\n" + "\n".join(lines) +
            "\n\nHow to read the numbers: " + RULES + "\n\n"
            "Every row lists the cells behind it (expand *cells*); `lorasec show KEY` prints one cell.")
    return Section("Overview", text)


def parse_margins(specs: Iterable[str]) -> dict[str, float]:
    """`--margin NAME=VALUE`: the equivalence margin of every metric whose name contains NAME (case-insensitive),
    in the metric's own units; VALUE > 0."""
    out: dict[str, float] = {}
    for spec in specs:
        name, eq, text = spec.partition("=")
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not eq or not name.strip() or not value > 0 or value == float("inf"):
            raise InputError(f"--margin: {spec!r} is not NAME=VALUE with VALUE > 0 (e.g. --margin ASR=0.1)")
        out[name.strip()] = value
    return out


def build(store: Path, compare: Iterable[str] = (), margin: Iterable[str] = ()) -> list[Section]:
    """Every section of the report of `store`, in order; `compare` adds FIELD=REFERENCE comparisons, `margin`
    sets equivalence margins (NAME=VALUE)."""
    overrides = parse_margins(margin)
    rows, failed, older = load(store)
    extra = parse_compare(compare, rows)
    known = TASKS.names()
    with margins(overrides) as matched:
        secs = [overview(Path(store), rows, failed, known, older)]
        for name in known:
            task_rows = [r for r in rows if r["config"]["task"] == name]
            if task_rows:
                secs += task_sections(name, task_rows, extra)
    unmatched = [n for n in overrides if n not in matched]
    if unmatched:
        raise InputError(f"--margin: {unmatched[0]!r} names no metric this report tests (a part of a metric's "
                         "name, as in the verdict tables' metric column: e.g. ASR, CACC, held-out NLL)")
    if overrides:
        secs[0].text += "\n\nEquivalence margins set for this report: " + ", ".join(
            f"metrics containing {n!r}: ±{v:g}" for n, v in overrides.items()) + "."
    if failed:
        secs.append(failure_section(failed))
    return secs


def check_out(out: Path) -> None:
    """`out` is a directory, or can be made one: else one line naming --out, before anything is read or written."""
    where = out
    while not where.exists() and where != where.parent:
        where = where.parent
    if where == out and not out.is_dir():
        raise InputError(f"--out: {str(out)!r} is a file, not a directory (the report writes several files there)")
    if where != out and not where.is_dir():
        raise InputError(f"--out: {str(out)!r} cannot be made: {str(where)!r} is a file, not a directory")
    if not os.access(where, os.W_OK | os.X_OK):
        raise InputError(f"--out: {str(where)!r} is not writable")


def report(store: Path, out: Path, formats: Iterable[str] = FORMATS, compare: Iterable[str] = (),
           margin: Iterable[str] = ()) -> Path:
    """Write the report of `store` under `out`: report.md, index.html (self-contained), figures/, tables/.
    Returns the main file (index.html when asked for, else report.md)."""
    from lorasec.report.render import write

    fs = check_formats(formats)
    check_out(Path(out))
    secs = build(store, compare, margin)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return write(secs, Path(out), fs, f"lorasec report: {Path(store).name}",
                 f"Generated {stamp} from the store only (no training). Figures and tables are also in figures/ "
                 "and tables/ beside this file.")


__all__ = ["FORMATS", "build", "report"]
