"""The theory arm: eNTK against a brute-force autograd loop, tiling, M_Δ on constructed and real A matrices,
the theory task cell end to end (recomputable from what it stores), and the predictor study."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import scipy.stats
import torch
from conftest import TINY_CFG

import lorasec
from lorasec.config import FullMethod, LoraMethod, TinyBert
from lorasec.data import load_splits
from lorasec.errors import InputError
from lorasec.methods import adapt, lora_a_matrices
from lorasec.metrics.ntk import Probes, encode_probes, entk, entk_loop, flat, length_tiles, param_names, plan_chunks
from lorasec.metrics.spectra import (
    effective_rank,
    eigenvalues,
    m_delta_spectrum,
    m_delta_summary,
    normalised,
    proxies,
    renyi_entropy,
)
from lorasec.models.classifier import load_classifier
from lorasec.tasks import parse_config
from lorasec.tasks.theory.report import config_spearman_ci, config_study, sections, spearman_ci, study

TINY = TinyBert(name="tiny-bert", hidden_size=32, layers=2, heads=2)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def probe_texts() -> list[str]:
    """Eight real tweets of different lengths (so padding and masking are exercised)."""
    from lorasec.config import ShippedData

    texts = load_splits(ShippedData(name="tweets", max_train=40, max_test=10), 1).train.texts
    return sorted(texts[:8], key=len)


def lora_model(rank: int = 4):
    clf = load_classifier(TINY, 2, 0)
    model = adapt(clf.model, LoraMethod(kind="lora", rank=rank), 0).model
    with torch.no_grad():  # B = 0 at init makes every A-gradient zero; give B values so the A columns count
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(n)))
    return model.eval(), clf.tokenizer


# ------------------------------------------------------------------ eNTK


@pytest.mark.parametrize("which", ["lora", "lora_head", "all"])
def test_entk_equals_per_sample_autograd_loop(which, probe_texts):
    model, tok = lora_model()
    probes = encode_probes(tok, probe_texts, 48)
    names = param_names(model, which)
    k = entk(model, probes, names)
    ref = entk_loop(model, probes, names)
    assert k.shape == (8, 8, 2, 2)
    assert rel(k, ref) < 1e-5
    assert torch.allclose(k, k.permute(1, 0, 3, 2), atol=1e-9 * float(k.abs().max()))  # K(x, x') = K(x', x)ᵀ
    assert float(eigenvalues(flat(k).numpy()).min()) > -1e-6 * float(k.abs().max())  # a Gram matrix is PSD


def test_full_finetuning_kernel_equals_loop_and_tiling_changes_nothing(probe_texts):
    clf = load_classifier(TINY, 2, 0)
    model = adapt(clf.model, FullMethod(kind="full"), 0).model.eval()
    probes = encode_probes(clf.tokenizer, probe_texts, 48)
    names = param_names(model, "trainable")
    assert names == [n for n, _ in model.named_parameters()]
    untiled = entk(model, probes, names, tile_inputs=None, tile_tokens=None, budget_mb=1e6, embed_rows=False)
    assert len(plan_chunks(model, names, probes, 16, 1e6, embed_rows=False)) == 1
    # 3 probes per vmap call, 0.02 MB per Jacobian chunk: the 977k-parameter embedding is cut by rows
    budget = 0.02
    chunks = plan_chunks(model, names, probes, 16, budget, embed_rows=True)
    cols = int(budget * 2**20 // (4 * 16))
    params = dict(model.named_parameters())
    assert len(chunks) > 20 and all(c.numel(params) <= max(cols, 128) for c in chunks)
    tiled = entk(model, probes, names, tile_inputs=3, budget_mb=budget, embed_rows=True)
    assert rel(tiled, untiled) < 1e-6
    by_tokens = entk(model, probes, names, tile_inputs=None, tile_tokens=40, budget_mb=1.0)
    assert len(length_tiles(probes, len(probes), 40)) >= 3 and rel(by_tokens, untiled) < 1e-6
    assert rel(untiled, entk_loop(model, probes, names)) < 1e-5


def test_length_tiles_cover_every_probe_once_within_both_limits():
    lengths = [9, 30, 12, 52, 9, 17, 41, 13, 70, 20]
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    probes = Probes(torch.ones_like(mask), mask)
    for tile_inputs, tile_tokens in [(3, None), (10, 60), (4, 100), (10, None)]:
        tiles = length_tiles(probes, tile_inputs, tile_tokens)
        assert sorted(torch.cat(tiles).tolist()) == list(range(len(lengths)))
        order = [lengths[i] for t in tiles for i in t.tolist()]
        assert order == sorted(lengths)  # shortest first, so a tile pads only to its own longest
        for t in tiles:
            padded = len(t) * max(lengths[i] for i in t.tolist())
            assert len(t) <= tile_inputs and (tile_tokens is None or padded <= tile_tokens or len(t) == 1)
    # greedy: a probe joins the tile unless a limit says no
    assert [len(t) for t in length_tiles(probes, 10, 60)] == [4, 2, 1, 1, 1, 1]
    assert len(length_tiles(probes, 10, None)) == 1


def test_embedding_rows_outside_the_probes_add_nothing(probe_texts):
    """Restricting the word embedding to the probes' tokens is exact: the other rows' gradients are zero."""
    clf = load_classifier(TINY, 2, 0)
    model = adapt(clf.model, FullMethod(kind="full"), 0).model.eval()
    probes = encode_probes(clf.tokenizer, probe_texts, 48)
    emb = ["bert.embeddings.word_embeddings.weight"]
    a = entk(model, probes, emb, embed_rows=True)
    b = entk(model, probes, emb, embed_rows=False)
    # equal up to float32 rounding: the contraction sums float32 blocks of columns, grouped differently here
    assert float(b.norm()) > 0 and rel(a, b) < 1e-6


def test_parameter_sets():
    model, _ = lora_model()
    lora = param_names(model, "lora")
    assert lora and all(".lora_A." in n or ".lora_B." in n for n in lora)
    head = set(param_names(model, "lora_head")) - set(lora)
    assert head and all("modules_to_save" in n for n in head)
    assert set(param_names(model, "trainable")) == set(lora) | head
    clf = load_classifier(TINY, 2, 0)
    with pytest.raises(InputError, match="params"):
        param_names(clf.model, "lora")


# ------------------------------------------------------------------ M_Δ and the spectral numbers


def draws(r: int, n: int, sigma2: float, k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, np.sqrt(sigma2), size=(k, r, n))


def test_m_delta_spectrum_is_the_eigenvalues_of_ata_minus_i():
    for r, n in ((3, 10), (10, 10), (12, 10)):
        a = draws(r, n, 0.05, 1)[0]
        want = np.sort(np.linalg.eigvalsh(a.T @ a - np.eye(n)))[::-1]
        assert np.allclose(m_delta_spectrum(a), want, atol=1e-10)
        assert np.allclose(m_delta_spectrum(a, 2.0), np.sort(np.linalg.eigvalsh(4 * a.T @ a - np.eye(n)))[::-1])
        s = m_delta_summary(a, 2.0)
        assert s["max"] == pytest.approx(want[0]) and s["mean"] == pytest.approx(want.mean())
        assert len(s["sv2"]) == min(r, n) and s["nsd"] == (want[0] <= 0)


@pytest.mark.parametrize(("r", "n"), [(2, 16), (8, 16), (16, 16), (4, 64), (64, 64)])
@pytest.mark.parametrize("frac", [0.1, 0.5, 0.9])
def test_m_delta_is_nsd_in_expectation_for_r_le_n_and_sigma2_below_1_over_n(r, n, frac):
    """E[M_Δ] = (r σ² − 1) I: negative definite when r ≤ n and σ² = frac / n < 1/n. Checked by Monte Carlo:
    the mean of 4000 draws has its largest eigenvalue within Monte Carlo error of r σ² − 1 < 0."""
    sigma2 = frac / n
    a = draws(r, n, sigma2, 4000)
    mean = np.einsum("kri,krj->ij", a, a) / len(a) - np.eye(n)
    lam = np.linalg.eigvalsh(mean)
    expected = r * sigma2 - 1
    assert expected < 0
    # entries of AᵀA have std <= sigma2 sqrt(r); the mean's eigenvalues move by about that x sqrt(n / draws)
    tol = 6 * sigma2 * np.sqrt(r) * np.sqrt(n) / np.sqrt(len(a))
    assert lam.max() <= expected + tol and lam.max() < 0
    assert np.allclose(lam, expected, atol=tol)


def test_m_delta_vanishes_in_expectation_at_r_equal_n_and_sigma2_one_over_n():
    n = 32
    norms = []
    for k in (100, 1600):
        a = draws(n, n, 1 / n, k, seed=k)
        mean = np.einsum("kri,krj->ij", a, a) / k - np.eye(n)
        norms.append(np.abs(np.linalg.eigvalsh(mean)).max())
    # the mean's spectral norm shrinks like 1/sqrt(draws): 16x the draws, about 4x smaller, towards 0
    assert norms[1] < norms[0] / 2.5 and norms[1] < 0.2


def test_single_draws_are_nsd_only_below_the_bai_yin_edge():
    """Per draw, M_Δ is NSD iff ‖A‖₂ ≤ 1. Below σ(√n + √r) = 0.8 every draw is NSD; at r = n, σ² = 0.9/n
    (so σ² < 1/n) every draw has a positive eigenvalue near 4 · 0.9 − 1: the paper's NSD holds in expectation,
    not for each draw, once σ² approaches 1/n."""
    for r, n in ((4, 64), (16, 64), (64, 64)):
        sigma = 0.8 / (np.sqrt(n) + np.sqrt(r))
        assert all(m_delta_spectrum(a)[0] <= 0 for a in draws(r, n, sigma**2, 200))
    tops = np.array([m_delta_spectrum(a)[0] for a in draws(64, 64, 0.9 / 64, 50)])
    assert np.all(tops > 0) and abs(np.median(tops) - (4 * 0.9 - 1)) < 0.6


@pytest.mark.parametrize("rank", [4, 8, 32])
def test_peft_default_a_matrices_spectrum(rank):
    """peft's default A (kaiming-uniform on ±1/√n, Var = 1/(3n)) on the tiny BERT: each layer's measured M_Δ has
    mean eigenvalue r σ² − 1 = r/(3n) − 1, and a top eigenvalue inside the 0.1%–99.9% range of 1000 independent
    uniform draws of the same shape (Bai–Yin's edge (1 + √(r/n))²/3 − 1 is only its large-n limit)."""
    clf = load_classifier(TINY, 2, 0)
    model = adapt(clf.model, LoraMethod(kind="lora", rank=rank), 0).model
    rng = np.random.default_rng(0)
    refs: dict[tuple[int, int], np.ndarray] = {}
    report = []
    for name, a in lora_a_matrices(model).items():
        s = m_delta_summary(a.detach().double().numpy())
        r, n = s["r"], s["n"]
        assert s["mean"] == pytest.approx(r / (3 * n) - 1, abs=0.15 * r / (3 * n))
        if (r, n) not in refs:
            refs[r, n] = np.array([m_delta_spectrum(rng.uniform(-1, 1, (r, n)) / np.sqrt(n))[0] for _ in range(1000)])
        lo, hi = np.quantile(refs[r, n], [0.001, 0.999])
        assert lo <= s["max"] <= hi, (name, s["max"], lo, hi)
        report.append((name.split("model.")[-1][:40], r, n, round(s["max"], 3), round(s["mean"], 3), s["nsd"]))
    print(f"\npeft default A, r={rank}: (layer, r, n, max eig M_Δ, mean eig, NSD)", *report, sep="\n  ")  # noqa: T201
    if rank <= 8:  # top eigenvalue about (1 + √(r/n))²/3 − 1 <= −0.25: every layer NSD
        assert all(x[5] for x in report)


def test_spectral_numbers_against_hand_cases():
    assert effective_rank(np.array([1.0, 1.0, 1.0, 1.0])) == pytest.approx(4)
    assert effective_rank(np.array([5.0, 0, 0])) == pytest.approx(1)
    k = np.eye(6) * 3.0  # orthogonal features: A = I/6, Rényi-2 = log2 6 bits, von Neumann too
    assert renyi_entropy(k, 2) == pytest.approx(np.log2(6))
    assert renyi_entropy(k, 1) == pytest.approx(np.log2(6))
    assert renyi_entropy(np.ones((5, 5)), 2) == pytest.approx(0, abs=1e-12)  # identical features: 0 bits
    x = np.random.default_rng(0).normal(size=(7, 3))
    a = normalised(x @ x.T)
    assert np.trace(a) == pytest.approx(1) and renyi_entropy(x @ x.T) <= np.log2(3) + 1e-9  # rank 3
    assert proxies(8, 1 / 3, 384) == pytest.approx({"h1": np.log(8 / 3), "h2": np.log((1 / 3) ** 2 * 80 / 384)})


# ------------------------------------------------------------------ the task


def tiny_theory(**over) -> dict:
    cell = {k: copy.deepcopy(v) for k, v in TINY_CFG.items() if k != "seed"}
    cell |= over.pop("cell", {})
    return {"task": "theory", "seed": 3, "cell": cell, "probes": {"n_pairs": 4, "n_clean_train": 4, "n_test": 4}} | over


@pytest.fixture(scope="module")
def theory_result() -> dict:
    return lorasec.run(parse_config(tiny_theory()), progress=False).record


def test_theory_cell_is_strict_json_and_matches_the_classification_cell(theory_result):
    r = theory_result
    json.loads(json.dumps(r, allow_nan=False))
    # the embedded poisoned run is the classification cell of the same seed, number for number
    cfg = parse_config(tiny_theory())
    direct = lorasec.run(cfg.cell, progress=False).record
    assert r["cells"]["poisoned"]["metrics"] == direct["metrics"]
    assert r["cells"]["poisoned"]["key"] == direct["key"]
    m = r["metrics"]
    assert m["asr"] == direct["metrics"]["backdoor"]["asr"]
    assert m["delta_cacc"] == pytest.approx(m["cacc"] - m["cacc_clean"])
    assert m["m_params"] > 0 and m["m_weights"] > 0 and m["m_function"] > 0
    g = r["probes"]["groups"]
    assert [len(g[k]) for k in ("pairs_clean", "pairs_poisoned", "clean_train", "test_clean", "test_triggered")] == \
        [4, 4, 4, 4, 4]
    texts = r["probes"]["texts"]
    assert all(texts[p] == "cf " + texts[c] for c, p in zip(g["pairs_clean"], g["pairs_poisoned"], strict=True))
    assert set(r["probes"]["ids"][i] for i in g["pairs_clean"]) <= set(r["cells"]["poisoned"]["poisoned_ids"])


def test_theory_numbers_recompute_from_the_stored_kernels(theory_result):
    r = theory_result
    g = r["probes"]["groups"]
    for which in ("init", "clean", "poisoned"):
        k = np.array(r["kernels"][which])
        assert k.shape == tuple(r["kernels"]["shape"]) == (20, 20, 2, 2)
        mine = r["metrics"]["kernel"][which]
        cross = np.mean([k[c, p] for c, p in zip(g["pairs_clean"], g["pairs_poisoned"], strict=True)], axis=0)
        assert mine["m_prime"] == pytest.approx(np.linalg.norm(cross), rel=1e-5)
        train = g["pairs_clean"] + g["clean_train"]
        block = k[np.ix_(train, train)].transpose(0, 2, 1, 3).reshape(16, 16)
        lam = np.linalg.eigvalsh(block)
        assert np.allclose(sorted(r["spectra"][which], reverse=True), lam[::-1], rtol=1e-4, atol=1e-6 * lam.max())
        assert mine["effective_rank"] == pytest.approx(effective_rank(lam), rel=1e-4)
        d = np.sqrt(np.diag(block))
        p = np.linalg.eigvalsh(block / np.outer(d, d) / 16)
        assert mine["renyi"] == pytest.approx(-np.log2((p**2).sum()), rel=1e-4)
    # M_Δ per layer from the stored squared singular values, at init: the cell's mean of the layers' maxima
    layers = r["m_delta"]["init"]
    assert len(layers) == 13  # 6 linears x 2 layers + the pooler
    assert r["metrics"]["m_delta"]["init"]["max"] == pytest.approx(np.mean([x["sv2"][0] - 1 for x in layers.values()]),
                                                                   rel=1e-5)
    assert r["metrics"]["proxies"] == pytest.approx({"h1": np.log(4 / 3), "h2": np.log((1 / 3) ** 2 * 24 / 32),
                                                     "d": 32, "init_scale": 1 / 3})


def test_init_kernel_is_the_kernel_of_the_rebuilt_initialisation(theory_result):
    cfg = parse_config(tiny_theory())
    from lorasec.seeds import stage_seeds
    from lorasec.tasks import task_of

    seeds = stage_seeds(cfg.seed, task_of(cfg).stages)
    clf = load_classifier(cfg.cell.model, 2, seeds["head"])
    init = adapt(clf.model, cfg.cell.method, seeds["adapt"]).model
    probes = encode_probes(clf.tokenizer, theory_result["probes"]["texts"], 48)
    ref = entk_loop(init, probes, param_names(init, "trainable"))
    assert rel(torch.tensor(theory_result["kernels"]["init"], dtype=torch.float64), ref) < 1e-5


def test_an_attack_that_changes_nothing_gives_m_zero():
    r = lorasec.run(parse_config(tiny_theory(cell={"attack": {"kind": "label_flip", "rate": 0.0}},
                                             probes={"n_pairs": 2, "n_clean_train": 4, "n_test": 2})),
                    progress=False).record
    assert r["metrics"]["m_params"] == 0 and r["metrics"]["m_weights"] == 0 and r["metrics"]["m_function"] == 0
    assert r["metrics"]["delta_cacc"] == 0 and r["metrics"]["asr"] is None
    assert r["kernels"]["clean"] == r["kernels"]["poisoned"]
    assert r["metrics"]["kernel"]["init"]["m_prime"] is None  # no poisoned rows, no pairs
    json.dumps(r, allow_nan=False)


def test_theory_config_errors_name_the_field():
    with pytest.raises(InputError, match="cell.seed"):
        parse_config(tiny_theory(cell={"seed": 5}))
    with pytest.raises(InputError, match="cell.attack"):
        parse_config(tiny_theory(cell={"attack": {"kind": "none"}}))
    with pytest.raises(InputError, match="params"):
        parse_config(tiny_theory(cell={"method": {"kind": "full"}}, params="lora"))
    with pytest.raises(InputError, match="probes.n_pairs"):
        parse_config(tiny_theory(probes={"n_pairs": 0}))
    cfg = parse_config(tiny_theory(seed=7))
    assert cfg.cell.seed == 7 and cfg.label() == "theory: lora(r=4) / prefix(0.05)"
    assert parse_config(tiny_theory()).task == "theory"


# ------------------------------------------------------------------ the predictor study


def test_spearman_with_bootstrap_ci():
    x = np.arange(12.0)
    assert spearman_ci(x, 3 * x + 1) == pytest.approx((1.0, 1.0, 1.0))
    assert spearman_ci(x, -np.exp(x))[0] == pytest.approx(-1)
    rng = np.random.default_rng(1)
    y = x + rng.normal(0, 4, 12)
    rho, lo, hi = spearman_ci(x, y)
    ranks = np.argsort(np.argsort(y))  # no ties: Spearman is the Pearson correlation of ranks
    assert rho == pytest.approx(np.corrcoef(x, ranks)[0, 1])
    assert lo <= rho <= hi and lo < hi
    assert spearman_ci(x, np.ones(12)) == (None, None, None)  # a constant predictor: "undefined", not 0


def _fake_theory_result(rank: int, seed: int, asr: float, m: float) -> dict:
    """The fields of a stored theory result the study reads (fixed numbers for checking its arithmetic)."""
    return {"config": {"task": "theory", "seed": seed,
                       "cell": {"method": {"kind": "lora", "rank": rank}, "seed": seed,
                                "attack": {"kind": "prefix", "rate": 0.03}}},
            "kernels": {"params": "trainable"},
            "metrics": {"asr": asr, "delta_cacc": -asr / 10, "m_params": m}}


def test_config_level_spearman_uses_seed_means_and_resamples_seeds_within_configurations():
    rng = np.random.default_rng(3)
    ranks, seeds = [4, 8, 16, 64, 256], [1, 2, 3]
    results, per_cfg = [], {}
    for k, r in enumerate(ranks):
        for s_ in seeds:
            asr, m = float(k + rng.normal(0, 0.3)), float(-k + rng.normal(0, 0.3))
            results.append(_fake_theory_result(r, s_, asr, m))
            per_cfg.setdefault(r, []).append((m, asr))
    rows = {(t["predictor"], t["outcome"]): t for t in config_study(results)}
    t = rows[("M (params)", "ASR")]
    means = np.array([np.mean(v, axis=0) for v in per_cfg.values()])  # independent recomputation
    assert t["configurations"] == 5 and t["seeds"] == "3"
    assert t["rho"] == pytest.approx(round(float(scipy.stats.spearmanr(means[:, 0], means[:, 1]).statistic), 4))
    assert t["rho"] == pytest.approx(-1.0) and t["ci_high"] < 0  # seed noise small against the spread
    # with seed noise as large as the spread the interval must widen to cover 0
    noisy = [(np.arange(3.0) + rng.normal(0, 50, 3), np.arange(3.0) + rng.normal(0, 50, 3)) for _ in range(5)]
    rho, lo, hi = config_spearman_ci(noisy)
    assert lo < 0 < hi and lo <= rho <= hi
    # fewer than 4 configurations: no row; the section carries both tables
    assert config_study([r for r in results if r["config"]["cell"]["method"]["rank"] < 16]) == []
    (sec,) = sections(results)
    assert "Across configurations" in sec.text and "after Holm's adjustment over the table" in sec.text
    assert len(sec.tables["theory_predictors_by_configuration"]) == len(sec.tables["theory_predictors"])


def test_report_section_from_real_cells(theory_result):
    second = lorasec.run(parse_config(tiny_theory(seed=4)), progress=False).record
    full = lorasec.run(parse_config(tiny_theory(cell={"method": {"kind": "full"}})), progress=False).record
    rows = [theory_result, second, full, lorasec.run(parse_config(tiny_theory(seed=5)), progress=False).record]
    table = study(rows)
    assert table and {t["outcome"] for t in table} == {"ASR", "ΔCACC"}
    assert all(t["n"] == 4 and t["ci_low"] <= t["rho"] <= t["ci_high"] for t in table if t["rho"] is not None)
    (sec,) = sections(rows)
    assert "Spearman" in sec.text and sec.tables["theory_cells"][2]["method"] == "full"
    assert set(sec.figures) == {"theory_prefix_asr", "theory_prefix_dcacc"}
    json.dumps(sec.tables, allow_nan=False)
    from rich.console import Console

    from lorasec.tasks.theory.table import theory_table

    console = Console(width=300, record=True)
    console.print(theory_table(rows))
    text = console.export_text()
    assert "lora r=4" in text and "full" in text and text.count("prefix 0.05") == 4
