"""CLI latency (issue 20, row 9): wall time of `lorasec --help`, `lorasec validate` and `lorasec sweep --dry-run`,
each a fresh process as the user starts it.

    python benchmarks/cli.py [--quick] [--repeats R] [--out FILE]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Fragment, arguments, spread  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def wall(args: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lorasec.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"lorasec {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    args = arguments(__doc__.splitlines()[0]).parse_args()
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        commands = {
            "`lorasec --help`": ["--help"],
            "`lorasec validate configs/example.yaml`": ["validate", "configs/example.yaml"],
            "`lorasec sweep configs/demo_seeds.yaml --dry-run` (27 cells, new store)":
                ["sweep", "configs/demo_seeds.yaml", "--dry-run", "--store", str(Path(tmp) / "new.db")],
        }
        times = {name: [wall(cmd, args.threads) for _ in range(repeats)] for name, cmd in commands.items()}
    frag = Fragment("cli", "CLI latency (issue 20, row 9)", f"python benchmarks/cli.py --repeats {repeats}",
                    quick=args.quick)
    frag.table(["command", "wall s, median (min-max)"], [[n, spread(t, 2)] for n, t in times.items()])
    frag.text("No target is set. `validate` builds the real model on the meta device (issue 19), so it imports torch "
              "and transformers and checks every cell: most of its time is those imports. `--help` and `--dry-run` "
              "import neither.")
    frag.write(args.out)


if __name__ == "__main__":
    main()
