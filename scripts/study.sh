#!/usr/bin/env bash
# Run or resume issue 31's study: every grid under configs/study/ into one store, in priority order (the
# full-vs-LoRA cells of paper 1 first), then its report. Rerun to resume: stored cells are never recomputed.
#   bash scripts/study.sh                 # LORASEC_WORKERS (default 1) x LORASEC_THREADS (default 1)
# Issue 32's defense study: LORASEC_STUDY_GRIDS="defenses_a defenses_b" LORASEC_STUDY_STORE=study/defenses.sqlite
# One worker of one thread leaves the other core free; on a quiet machine use 2 x 1.
# docs/STUDY.md is regenerated from the store with: lorasec report study/study.sqlite --out study/report
set -uo pipefail
cd "$(dirname "$0")/.."
LORASEC="${LORASEC:-.venv/bin/lorasec}"
[ -x "$LORASEC" ] || LORASEC=lorasec
STORE="${LORASEC_STUDY_STORE:-study/study.sqlite}"
mkdir -p "$(dirname "$STORE")"
failed=0
GRIDS="${LORASEC_STUDY_GRIDS:-p1_paper_movie p1_paper_bbc p1_lr_grid p1_tuned p2_matched p1_rank p1_init_freeze p2_scale p1_head_only}"
for grid in $GRIDS; do
    echo "== configs/study/$grid.yaml" >&2
    "$LORASEC" sweep "configs/study/$grid.yaml" --store "$STORE" --workers "${LORASEC_WORKERS:-1}" \
        --threads-per-worker "${LORASEC_THREADS:-1}" || failed=1
done
exit $failed
