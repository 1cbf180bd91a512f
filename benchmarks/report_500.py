"""Time `lorasec report` on a store of synthetic classification cells (default 500).

    python benchmarks/report_500.py [--cells N] [--quick] [--repeats R] [--out FILE]

The cells are real configs (validated, keyed like stored ones) with random metrics, baselines, poisoned rows and
300-step loss curves: 2 methods x 3 ranks-or-none x attacks (clean, label flip at 3 rates, prefix at 3 rates) x
seeds. tests/test_report.py uses `synthetic_rows` too, to check the arithmetic on numbers that vary.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lorasec.store import config_key, open_store, save
from lorasec.tasks import parse_config

BASE = {"model": {"name": "tiny-bert"}, "data": {"name": "tweets", "max_train": 160, "max_test": 80},
        "train": {"steps": 300}}
METHODS = [{"kind": "full"}, {"kind": "lora", "rank": 4}, {"kind": "lora", "rank": 16}, {"kind": "head_only"}]
ATTACKS = [{"kind": "none"}] + [{"kind": "label_flip", "rate": r} for r in (0.1, 0.2, 0.3)] + \
    [{"kind": "prefix", "rate": r, "trigger": "cf", "target": 1} for r in (0.01, 0.02, 0.05)]


def synthetic_rows(n_cells: int, seed: int = 0) -> list[dict]:
    """n_cells stored-result dicts (whole seeds of every method x attack, then cut to n_cells)."""
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    clean: dict[tuple, dict] = {}
    s = 0
    while len(rows) < n_cells:
        s += 1
        for m in METHODS:
            for a in ATTACKS:
                cfg = parse_config(BASE | {"seed": s, "method": m, "attack": a})
                acc = float(rng.uniform(0.6, 0.9))
                metrics: dict = {"clean": {"accuracy": acc, "f1": acc}}
                if a["kind"] == "prefix":
                    metrics["backdoor"] = {"asr": float(rng.uniform(0, 1)), "triggered_accuracy": float(rng.uniform())}
                row = {"key": config_key(cfg), "label": cfg.label(), "config": cfg.model_dump(mode="json"),
                       "metrics": metrics, "model": {"trainable_params": 1000, "total_params": 5000},
                       "train": {"lr": 1e-3, "losses": np.round(rng.uniform(0.3, 0.7, 300), 4).tolist()},
                       "poisoned": {"ids": [f"r{i}" for i in range(3)], "original_labels": [0, 0, 0],
                                    "trained_labels": [1, 1, 1], "trained_texts": {"r0": "cf a poisoned row"}},
                       "data": {"label_names": ["negative", "positive"]}, "timings": {"total_s": 1.0}}
                if a["kind"] == "none":
                    clean[(s, str(m))] = row
                else:
                    base = clean[(s, str(m))]
                    row["baseline"] = {"key": base["key"], "clean": base["metrics"]["clean"]}
                    if "backdoor" in metrics:
                        row["baseline"]["clean_to_target"] = float(rng.uniform(0, 0.3))
                rows.append(row)
    return rows[:n_cells]


def write_store(path: Path, rows: list[dict]) -> Path:
    con = open_store(path)
    try:
        for r in rows:
            save(con, r)
    finally:
        con.close()
    return path


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import Fragment, arguments, met, set_threads, spread

    from lorasec.report import report

    ap = arguments(__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=500)
    args = ap.parse_args()
    set_threads(args.threads)
    n, repeats = (100, 1) if args.quick else (args.cells, args.repeats)
    times, figs = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        store = write_store(Path(tmp) / "synthetic.db", synthetic_rows(n))
        for r in range(repeats):
            t0 = time.perf_counter()
            main_file = report(store, Path(tmp) / f"report{r}")
            times.append(time.perf_counter() - t0)
            figs = len(list((main_file.parent / "figures").glob("*.png")))
    frag = Fragment("report", "Report time (issue 17)", f"python benchmarks/report_500.py --cells {n}",
                    quick=args.quick)
    frag.text(f"`lorasec report` (md + html + {figs} figures as png and svg) on a store of {n} synthetic "
              "classification cells: real configs keyed like stored ones, random metrics, baselines, poisoned rows "
              "and 300-step loss curves (2 methods x ranks x clean / label flip at 3 rates / prefix at 3 rates x "
              "seeds).")
    frag.table(["cells", "median s (min-max)", "target", "met"],
               [[n, spread(times), "< 30 s at 500 cells", met(max(times), 30, higher_is_better=False)]])
    frag.write(args.out)


if __name__ == "__main__":
    main()
