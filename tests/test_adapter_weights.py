"""Weight-only adapter statistics (issue 33, part 3) against an independent computation on the formed ΔW, and
PEFT's directory layout read back (part 1): features from the stored analysis equal those read from disk."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from lorasec.errors import InputError
from lorasec.metrics import adapter_weights as aw


@pytest.mark.parametrize(("d_out", "d_in", "r", "scale"), [(40, 30, 4, 2.0), (2500, 70, 8, 0.5), (16, 16, 16, 1.0)])
def test_module_statistics_equal_numpy_svd_and_scipy_kurtosis_of_the_formed_update(d_out, d_in, r, scale):
    rng = np.random.default_rng(d_out)
    a, b = rng.normal(size=(r, d_in)), rng.standard_t(3, size=(d_out, r))  # heavy-tailed B: kurtosis far from 0
    dw = scale * b @ a
    s = np.linalg.svd(dw, compute_uv=False)[:r]
    got = aw.module_stats(a, b, scale)
    np.testing.assert_allclose(aw.singular_values(a, b, scale), s, rtol=1e-9)
    assert got["sigma_1"] == pytest.approx(s[0], rel=1e-9)
    assert got["frobenius"] == pytest.approx(np.linalg.norm(dw), rel=1e-9)
    p = s**2 / (s**2).sum()
    assert got["energy_concentration"] == pytest.approx(p[0], rel=1e-9)
    assert got["spectral_entropy"] == pytest.approx(scipy.stats.entropy(p), rel=1e-9)
    assert got["kurtosis"] == pytest.approx(scipy.stats.kurtosis(dw.ravel(), fisher=True), rel=1e-7)
    assert got["normalised_frobenius"] == pytest.approx(np.linalg.norm(dw) / math.sqrt(d_out * d_in), rel=1e-9)


def test_an_untrained_adapter_has_zero_update_and_defined_statistics():
    a = np.random.default_rng(0).normal(size=(4, 10))
    got = aw.module_stats(a, np.zeros((12, 4)), 2.0)
    assert got["frobenius"] == 0 and got["kurtosis"] == 0 and got["energy_concentration"] == 0


def test_spread_and_types_over_modules():
    rng = np.random.default_rng(1)
    mods = {f"bert.encoder.layer.{i}.attention.self.{t}": (rng.normal(size=(2, 8)), (i + 1) * rng.normal(size=(8, 2)))
            for i in range(3) for t in ("query", "value")}
    f = aw.features(mods, 1.0)
    assert set(f["by_type"]) == {"attention.self.query", "attention.self.value"}
    norms = np.array([m["normalised_frobenius"] for m in f["modules"].values()])
    assert f["frobenius_spread"] == pytest.approx(norms.std() / norms.mean())
    assert set(aw.vector(f)) >= {"mean_sigma_1", "max_kurtosis", "frobenius_spread"}


def test_a_stored_cells_features_equal_those_read_from_its_peft_directory(tiny_cfg, tmp_path):
    from lorasec.audit import audit
    from lorasec.store import artifacts_dir
    from lorasec.tasks import parse_config

    store = tmp_path / "r.db"
    cfg = parse_config(tiny_cfg | {"attack": {"kind": "none"}, "train": {"steps": 4},
                                   "analyses": [{"kind": "adapter_export"}, {"kind": "adapter_features"}]})
    result = audit(cfg, store, progress=False)
    stored = result["analyses"]["adapter_features"]
    pairs, scale, peft_cfg = aw.read_peft_dir(artifacts_dir(store, result["key"]) / "adapter")
    assert scale == pytest.approx(cfg.method.alpha / cfg.method.rank) and peft_cfg["r"] == cfg.method.rank
    again = aw.features(pairs, scale)
    assert set(again["modules"]) == set(stored["modules"]) and stored["n_modules"] > 0
    for name, st in again["modules"].items():
        for k in aw.STATS:
            assert st[k] == pytest.approx(stored["modules"][name][k], rel=1e-6, abs=1e-12), (name, k)


def test_a_pickle_adapter_is_refused_and_never_loaded(tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"r": 4, "lora_alpha": 8, "peft_type": "LORA"}')
    (tmp_path / "adapter_model.bin").write_bytes(b"not loaded")
    with pytest.raises(InputError, match="pickle file"):
        aw.read_peft_dir(tmp_path)
    with pytest.raises(InputError, match="not a directory"):
        aw.read_peft_dir(tmp_path / "missing")
