"""DP-SGD (method.dp, Opacus) and the one-run epsilon audit (issue 34), on real tiny models.

- noise 0 with no clipping, on the non-DP loop's own batches, reproduces non-DP training step for step;
- Opacus's per-sample gradients equal one backward pass per row (position ids per sample included);
- the step-1 check fails a run whose optimizer does not hold the model's parameters (Opacus issue 820);
- the audit's bound equals a brute-force binomial computation, and recomputes from a stored cell's rows;
- bad input is one line, exit 2, nothing stored.
"""

from __future__ import annotations

import copy
import json
import math
import sqlite3
from fractions import Fraction

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_CFG
from test_memorization import tiny_mem_cfg
from typer.testing import CliRunner

import lorasec
from lorasec.cli import app
from lorasec.config import DPConfig, TrainConfig
from lorasec.metrics import audit as audit_mod
from lorasec.optimizers import OPTIMIZERS, Optimizer
from lorasec.optimizers.dp import make_private
from lorasec.tasks import parse_config
from lorasec.train import Encoded, FrozenTraining, train_encoded

runner = CliRunner()
NO_DP = {"noise_multiplier": 0.0, "max_grad_norm": 1e12, "sampling": "batches"}


def _cls(method: dict, **over) -> dict:
    raw = copy.deepcopy(TINY_CFG)
    raw["method"] = method
    raw["attack"] = {"kind": "none"}
    return raw | over


def _trained(raw: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    ran = lorasec.run(parse_config(raw), progress=False, keep_model=True)
    params = {n: p.detach().clone() for n, p in ran.model.named_parameters() if p.requires_grad}
    return ran.record, params


@pytest.mark.parametrize("method", [{"kind": "full"}, {"kind": "lora", "rank": 4}, {"kind": "head_only"}])
def test_noise_zero_and_no_clip_reproduce_non_dp_training_step_for_step(method):
    plain, p0 = _trained(_cls(method))
    dp, p1 = _trained(_cls(method | {"dp": NO_DP}))
    assert np.allclose(plain["train"]["losses"], dp["train"]["losses"], rtol=1e-5, atol=1e-6)
    assert p0.keys() == p1.keys() and p0
    for n in p0:
        assert torch.allclose(p0[n], p1[n], rtol=1e-4, atol=1e-6), n
    assert dp["train"]["dp"]["epsilon"] is None and dp["train"]["dp"]["clipped_share"] == 0.0
    # and DP with real noise is a different run, with the accountant's epsilon stored
    noisy, _ = _trained(_cls(method | {"dp": {"noise_multiplier": 1.0, "delta": 1e-3}}))
    assert not np.allclose(noisy["train"]["losses"], plain["train"]["losses"])
    assert 0 < noisy["train"]["dp"]["epsilon"] < math.inf


def test_causal_lm_noise_zero_reproduces_non_dp_training():
    """The LM loss under DP is a mean of per-row means; on rows of equal length it is the usual token mean."""
    from lorasec.config import TinyLlamaConfig
    from lorasec.methods import adapt
    from lorasec.models.causal import load_causal_lm

    rng = np.random.default_rng(0)
    ids = [list(map(int, rng.integers(5, 500, size=12))) for _ in range(24)]
    cfg = TrainConfig(steps=4, batch_size=6, max_length=16, lr=1e-3)
    out = []
    for dp in (None, DPConfig(**NO_DP)):
        lm = load_causal_lm(TinyLlamaConfig(size="xs"))
        adapted = adapt(lm.model, parse_config(tiny_mem_cfg()).method, seed=0)
        log = train_encoded(adapted, Encoded(ids, 0), None, lm.tokenizer.pad_token_id, cfg, 1e-3, seed=1,
                            progress=False, dp=dp)
        out.append((log.losses, {n: p.detach().clone() for n, p in adapted.model.named_parameters()}))
    assert np.allclose(out[0][0], out[1][0], rtol=1e-5)
    # AdamW divides by the root of the gradient's square, so float rounding of a near-zero gradient entry (a
    # per-sample sum against a batched one) moves a weight by up to ~2e-6 here, against updates of ~1e-3 a step
    for n, p in out[0][1].items():
        assert torch.allclose(p, out[1][1][n], rtol=1e-4, atol=2e-5), n


def test_per_sample_gradients_equal_one_backward_per_row():
    """Opacus's grad_sample of every tensor of a fully trained tiny BERT (embeddings, position embeddings,
    LayerNorm, attention, head) against the gradient of each row's loss alone."""
    from lorasec.methods import adapt
    from lorasec.models.classifier import load_classifier

    raw = _cls({"kind": "full"})
    cfg = parse_config(raw)
    clf = load_classifier(cfg.model, 2, seed=0)
    adapted = adapt(clf.model, cfg.method, seed=0)
    model = adapted.model.train()  # Opacus records activations in training mode only
    for m in model.modules():  # no dropout (BERT's attention dropout reads nn.Dropout.p too): one network
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    enc = clf.tokenizer(["a good plot", "bad actor and a slow long scene", "fun"], padding=True, return_tensors="pt")
    labels = torch.tensor([1, 0, 1])
    b, t = enc["input_ids"].shape
    pos = torch.arange(t).expand(b, t)
    reference = []
    for i in range(b):
        model.zero_grad()
        model(input_ids=enc["input_ids"][i:i + 1], attention_mask=enc["attention_mask"][i:i + 1],
              position_ids=pos[i:i + 1], labels=labels[i:i + 1]).loss.backward()
        reference.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    model.zero_grad()
    private = make_private(model, lambda ps: torch.optim.SGD(ps, lr=0.1), DPConfig(**NO_DP), 100, 3, 1, seed=0)
    private.module(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], position_ids=pos,
                   labels=labels).loss.backward()
    checked = 0
    for n, p in model.named_parameters():
        if n in reference[0]:
            for i in range(b):
                assert torch.allclose(p.grad_sample[i], reference[i][n], atol=1e-5, rtol=1e-4), (n, i)
            checked += 1
    assert checked == len(adapted.trainable)
    private.close()


def test_step_one_check_fails_an_optimizer_that_does_not_hold_the_models_parameters():
    """Opacus issue 820's failure (the optimizer holds other tensors than the model trains) is loud, not silent."""
    def stale(params, lr, weight_decay):  # the optimizer of a model that was moved after it was built
        return torch.optim.AdamW([p.detach().clone().requires_grad_(True) for p in params], lr=lr)

    if "stale_copies_for_test" not in OPTIMIZERS:
        OPTIMIZERS.add("stale_copies_for_test", Optimizer("test only: steps copies of the parameters", stale))
    for dp in (None, {"noise_multiplier": 1.0, "delta": 1e-3}):
        method = {"kind": "lora", "rank": 4} | ({"dp": dp} if dp else {})
        raw = _cls(method)
        raw["train"] = raw["train"] | {"optimizer": "stale_copies_for_test"}
        with pytest.raises(FrozenTraining, match="step [0-9]+ left|does not update the model's parameters"):
            lorasec.run(parse_config(raw), progress=False)


def test_step_one_check_passes_when_lora_b_trains():
    rec, params = _trained(_cls({"kind": "lora", "rank": 4, "dp": {"noise_multiplier": 0.5, "delta": 1e-3}}))
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in params.items())  # B starts at 0 and moved


def _brute_tail(r: int, v: int, eps: float) -> Fraction:
    p = Fraction(1) / (1 + Fraction(math.exp(-eps)))
    return sum((Fraction(math.comb(r, i)) * p**i * (1 - p) ** (r - i) for i in range(v, r + 1)), Fraction(0))


@pytest.mark.parametrize(("r", "v"), [(10, 10), (20, 17), (64, 50), (128, 100), (30, 14), (0, 0)])
def test_audit_bound_equals_a_brute_force_binomial_search(r, v):
    got = audit_mod.epsilon_lower_bound(r, v, 0.95)
    if r == 0 or _brute_tail(r, v, 0.0) >= Fraction(5, 100):
        assert got == 0.0
        return
    # brute force: the tail, summed exactly, is below 5% just under the bound and not just above it
    assert _brute_tail(r, v, got - 1e-6) < Fraction(5, 100) <= _brute_tail(r, v, got + 1e-6)
    if v == r:  # closed form: p^r = 0.05
        p = 0.05 ** (1 / r)
        assert got == pytest.approx(math.log(p / (1 - p)), abs=1e-6)


def test_audit_guesses_by_brute_force_and_ties_by_index():
    rng = np.random.default_rng(3)
    included = rng.random(40) < 0.5
    scores = np.round(rng.normal(size=40) + included, 1)  # rounded: ties happen
    r, v = audit_mod.guess(included, scores, 7)
    ranked = sorted(range(40), key=lambda i: (-scores[i], i))
    assert r == 14 and v == sum(included[i] for i in ranked[:7]) + sum(not included[i] for i in ranked[-7:])


def test_memorization_audit_and_accountant_recompute_from_the_stored_cell(tmp_path):
    raw = tiny_mem_cfg(method={"kind": "lora", "rank": 4, "dp": {"target_epsilon": 6.0, "delta": 1e-3}},
                       audit={"canaries": 40, "tokens": 8, "guesses": 10})
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump(raw))
    store = tmp_path / "r.db"
    res = runner.invoke(app, ["run", str(p), "--store", str(store)])
    assert res.exit_code == 0, res.output
    row = json.loads(sqlite3.connect(store).execute(
        "SELECT result FROM runs WHERE label LIKE '%dp(eps=6)%'").fetchone()[0])
    rows = row["outputs"]["audit"]
    included = np.array([x["included"] for x in rows])
    again = audit_mod.audit(included, np.array([x["score"] for x in rows]), 10, 0.95)
    m = row["metrics"]["audit"]
    assert (again.guesses, again.correct, again.epsilon) == (m["guesses"], m["correct"], m["epsilon_lower_bound"])
    # the coins are the ones trained on: exactly the included canaries are in the training sources
    trained = {s for s in row["poisoned"]["training_sources"] if s.startswith("audit:")}
    assert trained == {f"audit:{x['index']}" for x in rows if x["included"]}
    d = row["train"]["dp"]
    assert 5.9 <= d["epsilon"] <= 6.0 and d["sampling"] == "poisson" and d["noise_multiplier"] > 0
    from opacus.accountants import RDPAccountant

    from lorasec.optimizers.dp import ALPHAS

    acc = RDPAccountant()
    acc.history = [(d["noise_multiplier"], d["sample_rate"], d["steps"])]
    assert acc.get_epsilon(d["delta"], alphas=ALPHAS) == pytest.approx(d["epsilon"])
    assert acc.get_epsilon(d["delta"]) >= d["epsilon"] - 1e-9  # Opacus's default orders can only be looser


def _refused(tmp_path, raw: dict, expected: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(raw))
    store = tmp_path / "bad.db"
    res = runner.invoke(app, ["run", str(p), "--store", str(store)])
    assert res.exit_code == 2, res.output
    assert len(res.stderr.strip().splitlines()) == 1 and expected in res.stderr, res.stderr
    if store.exists():
        assert sqlite3.connect(store).execute("SELECT count(*) FROM runs").fetchone()[0] == 0


@pytest.mark.parametrize(("dp", "train", "expected"), [
    ({"noise_multiplier": -1.0}, {}, "method.dp.noise_multiplier"),
    ({"noise_multiplier": 1.0, "target_epsilon": 2.0}, {}, "exactly one of noise_multiplier and target_epsilon"),
    ({"noise_multiplier": 1.0, "delta": 0.5}, {}, "method.dp.delta: 0.5 must be below 1 / training rows"),
    ({"target_epsilon": 1e-4, "delta": 1e-4}, {}, "method.dp.target_epsilon: 0.0001 is out of reach"),
    ({"noise_multiplier": 1.0, "max_grad_norm": 0}, {}, "method.dp.max_grad_norm"),
    ({"noise_multiplier": 1.0, "delta": 1e-3}, {"grad_accum": 2}, "method.dp: train.grad_accum must be 1"),
    ({"noise_multiplier": 1.0, "delta": 1e-3}, {"precision": "bf16"}, "method.dp: train.precision must be fp32"),
])
def test_bad_dp_input_is_one_line_exit_2_nothing_stored(tmp_path, dp, train, expected):
    raw = _cls({"kind": "lora", "rank": 4, "dp": dp})
    raw["train"] = raw["train"] | train
    _refused(tmp_path, raw, expected)


def test_bad_audit_input_is_one_line(tmp_path):
    _refused(tmp_path, tiny_mem_cfg(audit={"canaries": 10, "guesses": 6}), "audit.guesses")
    _refused(tmp_path, tiny_mem_cfg(audit={"canaries": 1}), "audit.canaries")


def test_configs_without_dp_or_audit_keep_their_keys():
    """dp and audit enter the key only when set, so every result stored before them is still found."""
    from lorasec.store import config_key

    cls = parse_config(_cls({"kind": "lora", "rank": 4}))
    mem = parse_config(tiny_mem_cfg())
    assert "dp" not in json.dumps(cls.model_dump(mode="json")["method"]) or cls.method.dp is None
    assert config_key(cls) != config_key(parse_config(_cls({"kind": "lora", "rank": 4, "dp": NO_DP})))
    assert config_key(mem) != config_key(parse_config(tiny_mem_cfg(audit={"canaries": 8, "guesses": 2})))
    # the study's stored cells: their keys are pinned in test_store's key tests; here, the key has no dp field
    from lorasec.store import _keyed

    assert "dp" not in _keyed(cls, cls.model_dump(mode="json"))["method"]
    assert "audit" not in _keyed(mem, mem.model_dump(mode="json"))


def test_report_pairs_dp_with_its_non_dp_twin_and_shows_both_epsilons(tmp_path):
    """Two seeds of LoRA with and without DP, audited: the privacy table holds the accountant's epsilon and the
    recomputed audit bound per configuration; the DP-SGD rows pair each DP cell with its non-DP twin by seed."""
    from lorasec.audit import audit as run_and_store
    from lorasec.report import build

    store = tmp_path / "p.db"
    for seed in (1, 2):
        for dp in (None, {"noise_multiplier": 2.0, "delta": 1e-3}):
            method = {"kind": "lora", "rank": 4} | ({"dp": dp} if dp else {})
            run_and_store(parse_config(tiny_mem_cfg(seed=seed, method=method,
                                                    audit={"canaries": 24, "tokens": 6, "guesses": 6})),
                          store, progress=False)
    sections = build(store)
    priv = next(s for s in sections if s.title.startswith("Privacy"))
    rows = priv.tables["privacy"]
    assert len(rows) == 2 and all(r["n"] == 2 for r in rows)
    dp_row = next(r for r in rows if r["accountant epsilon mean"] is not None)
    assert "DP (noise_multiplier=2)" in dp_row["method"] and dp_row["accountant epsilon mean"] > 0
    assert all(r["audited epsilon mean"] is not None for r in rows)
    assert priv.figures["privacy_vs_utility"] is not None
    findings = next(s for s in sections if s.title == "Memorization: verdicts").tables["findings"]
    dp_findings = [f for f in findings if "DP (noise_multiplier=2)" in json.dumps(f)]
    assert dp_findings and all(f.get("n") == 2 for f in dp_findings if "n" in f)
