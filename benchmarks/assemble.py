"""Write BENCHMARKS.md from the fragments in benchmarks/results/ (one per question), in a fixed order.

    python benchmarks/assemble.py

`bash benchmarks/run.sh [--quick]` runs the benchmarks (each writes its fragment) and then this. A fragment that is
missing gets a line naming the script that makes it, so a row never silently disappears.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# (fragment, what makes it): issue 20's rows in order, then the rows other issues measured
ORDER = [
    ("step", "python benchmarks/step.py (issue 20, row 1)"),
    ("padding", "python benchmarks/padding.py (issue 20, row 2)"),
    ("extraction", "python benchmarks/extraction.py (issue 20, row 3)"),
    ("mia", "python benchmarks/mia.py (issue 20, row 4)"),
    ("exposure", "python benchmarks/exposure.py (issue 20, row 5)"),
    ("memory", "python benchmarks/memory.py (issue 20, row 6)"),
    ("flops", "python benchmarks/flops.py (issue 20, row 7)"),
    ("scaling", "python benchmarks/scaling.py (issue 20, row 8)"),
    ("cli", "python benchmarks/cli.py (issue 20, row 9)"),
    ("sweep", "python benchmarks/sweep.py (issue 16)"),
    ("report", "python benchmarks/report_500.py (issue 17)"),
    ("ntk", "python benchmarks/ntk.py (issue 18)"),
    ("theory_study", "the prediction study, a sweep (issue 18; not rerun by run.sh)"),
    ("memory_cell", "python benchmarks/memory_cell.py (issue 15; 25 min per cell, not rerun by run.sh)"),
    ("precision", "python benchmarks/precision.py (issue 31, part 1)"),
    ("precision_equivalence", "python benchmarks/precision_equivalence.py (issue 31, part 1; reads the store of "
     "configs/study/precision.yaml, a sweep not rerun by run.sh)"),
    ("onion", "python benchmarks/onion.py (issue 32)"),
    ("dp_step", "python benchmarks/dp_step.py (issue 34)"),
]

HEADER = """# lorasec benchmarks

Every figure here comes from a script in `benchmarks/`; each section names its machine and command. Speed claims are
ratios of two variants measured in the same run, alternating, as medians over repeats with their range (absolute
times on a shared machine drift); memory is resident set size. Every "identical" claim (tokens, scores, kernels) is
asserted by the script that makes it, so a fast but wrong variant fails instead of reporting.

Regenerate: `bash benchmarks/run.sh` (the full run, whose figures are committed) or `bash benchmarks/run.sh --quick`
(reduced sizes, < 15 min on 2 cores). Run either on a quiet machine: another job on the cores changes every figure.
Benchmarks are not part of the test suite.
"""


def assemble(out: Path = HERE.parent / "BENCHMARKS.md") -> Path:
    parts = [HEADER]
    for name, maker in ORDER:
        frag = RESULTS / f"{name}.md"
        parts.append(frag.read_text() if frag.exists() else f"## {name}\n\nNot measured yet: `{maker}`.\n")
    out.write_text("\n".join(parts))
    return out


if __name__ == "__main__":
    print(assemble())  # noqa: T201
