"""`train.precision` (issue 31, part 1): bf16 autocast really runs the matmuls in bfloat16 while weights, gradients
and optimizer state stay fp32; it is part of the result's key; fp32 runs are untouched by it; a bad value is one
line. And fused AdamW follows unfused AdamW step for step (to float rounding), which is why the study may swap it
in without an equivalence sweep of its own."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lorasec.config import FullMethod, TinyBert, TrainConfig
from lorasec.data.batching import encode
from lorasec.errors import InputError
from lorasec.methods import adapt
from lorasec.models.classifier import load_classifier
from lorasec.store import config_key
from lorasec.tasks import parse_config
from lorasec.train import train_encoded

TEXTS = ["a fine film", "a dull film with no end", "good", "bad acting and a worse plot"] * 8
LABELS = np.array([1, 0, 1, 0] * 8)


def _tiny():
    clf = load_classifier(TinyBert(name="tiny-bert"), 2, 0)
    return adapt(clf.model, FullMethod(kind="full"), 0), clf.tokenizer


def _train(adapted, tok, **train):
    cfg = TrainConfig(steps=3, batch_size=8, **train)
    return train_encoded(adapted, encode(tok, TEXTS, 32), LABELS, tok.pad_token_id, cfg, 1e-3, 0, progress=False)


def test_bf16_runs_linears_in_bfloat16_on_fp32_weights():
    adapted, tok = _tiny()
    seen: dict[str, set] = {"fp32": set(), "bf16": set()}
    mode = ["fp32"]
    for m in adapted.model.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(lambda mod, i, o: seen[mode[0]].add(o.dtype))
    ref = copy.deepcopy(adapted)
    a = _train(adapted, tok, precision="fp32")
    mode[0] = "bf16"
    b = _train(ref, tok, precision="bf16")
    assert seen == {"fp32": {torch.float32}, "bf16": {torch.bfloat16}}
    assert {p.dtype for p in ref.model.parameters()} == {torch.float32}
    # same start, same batches: close but not identical losses (bf16 rounds)
    assert a.losses[0] != b.losses[0] and a.losses[0] == pytest.approx(b.losses[0], abs=0.05)
    # evaluation after training is fp32 again
    mode[0] = "fp32"
    with torch.no_grad():
        ref.model(**{k: torch.as_tensor(v) for k, v in tok(["a film"], return_tensors="pt").items()})
    assert seen["fp32"] == {torch.float32}


def test_precision_is_part_of_the_key_and_fp32_is_the_default():
    base = {"model": {"name": "tiny-bert"}, "data": {"name": "movie-reviews"}}
    fp32, bf16 = parse_config(base), parse_config(base | {"train": {"precision": "bf16"}})
    assert fp32.train.precision == "fp32"
    assert config_key(fp32) == config_key(parse_config(base | {"train": {"precision": "fp32"}}))
    assert config_key(fp32) != config_key(bf16)


def test_a_bad_precision_is_one_line_naming_the_field():
    with pytest.raises(InputError, match=r"train\.precision.*'fp32'.*'bf16'"):
        parse_config({"model": {"name": "tiny-bert"}, "train": {"precision": "fp16"}})


def test_fused_adamw_follows_adamw_step_for_step():
    a, tok = _tiny()
    b = copy.deepcopy(a)
    la = _train(a, tok, optimizer="adamw")
    lb = _train(b, tok, optimizer="adamw_fused")
    assert la.losses == pytest.approx(lb.losses, abs=1e-5)
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5), n


def test_bf16_on_a_cpu_without_native_bf16_warns_and_the_record_says_which_cpu(tiny_cfg):
    import warnings
    from pathlib import Path

    import lorasec
    import lorasec.audit
    from lorasec.environment import native_bf16

    flags = Path("/proc/cpuinfo").read_text().split()  # the independent reading: the kernel's own flag list
    assert native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)
    for precision in ("fp32", "bf16"):
        lorasec.audit._warn_emulated_bf16.cache_clear()  # once per process: another test may have had it
        cfg = parse_config(tiny_cfg | {"train": tiny_cfg["train"] | {"precision": precision}})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            record = lorasec.run(cfg, progress=False).record
        emulated = [w for w in caught if "is emulated" in str(w.message)]
        assert len(emulated) == (1 if precision == "bf16" and not native_bf16() else 0), precision
        assert record["environment"]["native_bf16"] == native_bf16()
        assert record["environment"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
