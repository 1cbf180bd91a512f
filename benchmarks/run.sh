#!/usr/bin/env bash
# Run every benchmark and write BENCHMARKS.md.   bash benchmarks/run.sh [--quick]
# --quick: reduced sizes (< 15 min on 2 cores). Run on a quiet machine: other jobs on the cores change the figures.
# A benchmark that fails (an "identical" assertion, a crash) is reported and the run exits 1 after the others.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python
export OMP_WAIT_POLICY=PASSIVE
failed=()
for b in step padding extraction mia exposure memory flops scaling cli sweep report_500 ntk precision onion dp_step; do
    echo "== benchmarks/$b.py $*" >&2
    start=$SECONDS
    if ! "$PY" "benchmarks/$b.py" "$@" > /dev/null; then
        failed+=("$b")
    fi
    echo "   $b: $((SECONDS - start)) s" >&2
done
"$PY" benchmarks/assemble.py
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
