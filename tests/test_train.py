"""The training loop: epoch coverage with bucketing, schedules against transformers', accumulation = a large
batch, step counts. Independent references: brute-force counting, transformers' schedulers, plain torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from lorasec.config import FullMethod, TrainConfig
from lorasec.data.batching import Encoded, batches, pad
from lorasec.methods import adapt
from lorasec.train import lr_factor, total_steps, train_encoded


@pytest.mark.parametrize("bucket", [True, False])
@pytest.mark.parametrize("n,batch_size", [(1, 4), (7, 3), (100, 8), (1234, 16)])
def test_an_epoch_yields_every_row_exactly_once(n, batch_size, bucket):
    lengths = np.random.default_rng(n).integers(1, 60, size=n)
    rng = np.random.default_rng(0)
    for _ in range(3):  # three epochs in a row from one generator, as the loop draws them
        epoch = list(batches(lengths, batch_size, bucket, rng))
        rows = np.concatenate(epoch)
        assert sorted(rows.tolist()) == list(range(n))
        assert all(1 <= len(b) <= batch_size for b in epoch)
        assert sum(len(b) < batch_size for b in epoch) <= math.ceil(n / (batch_size * 50))  # one short batch per chunk


def test_bucketing_pads_less_than_random_batches():
    lengths = np.random.default_rng(1).integers(1, 120, size=2000)

    def padded(bucket: bool) -> int:
        return sum(len(b) * lengths[b].max() for b in batches(lengths, 16, bucket, np.random.default_rng(2)))

    assert padded(True) < 0.75 * padded(False)


def test_padding_right_and_left():
    out = pad([[5, 6, 7], [8]], 0, "right")
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]] and out["attention_mask"].tolist() == [[1, 1, 1],
                                                                                                        [1, 0, 0]]
    out = pad([[5, 6, 7], [8], []], 0, "left")
    assert out["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8], [0, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("steps,warmup", [(10, 0), (10, 3), (37, 5), (1, 0)])
def test_decaying_schedules_match_transformers(schedule, steps, warmup):
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    make = {"linear": get_linear_schedule_with_warmup, "cosine": get_cosine_schedule_with_warmup}[schedule]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = make(opt, num_warmup_steps=warmup, num_training_steps=steps)
    for s in range(steps):
        assert lr_factor(s, steps, warmup, schedule) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12), s
        opt.step()
        ref.step()


def test_constant_schedule_by_hand():
    assert [lr_factor(s, 10, 4, "constant") for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [lr_factor(s, 10, 0, "constant") for s in range(3)] == [1.0, 1.0, 1.0]


def test_total_steps_for_steps_and_fractional_epochs():
    assert total_steps(TrainConfig(steps=7), 1000) == 7
    assert total_steps(TrainConfig(epochs=1.5, batch_size=8, grad_accum=2), 100) == 10  # ceil(150 / 16)
    assert total_steps(TrainConfig(epochs=0.01, batch_size=8), 100) == 1


def tiny_classifier(seed: int = 0) -> torch.nn.Module:
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=64, num_labels=2, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    return BertForSequenceClassification(cfg)


def run_loop(seqs, labels, **train):
    adapted = adapt(tiny_classifier(), FullMethod(kind="full"), seed=0)
    cfg = TrainConfig(lr=1e-2, bucket=False, **train)
    log = train_encoded(adapted, Encoded(seqs, 0), np.asarray(labels), 0, cfg, cfg.lr, seed=3, progress=False)
    return adapted.model, log


def test_gradient_accumulation_equals_one_large_batch():
    rng = np.random.default_rng(5)
    seqs = [rng.integers(1, 50, size=int(k)).tolist() for k in rng.integers(3, 12, size=8)]
    labels = rng.integers(0, 2, size=8)
    # one optimizer step over all 8 rows: one batch of 8, or 2 micro-batches of 4 accumulated
    big, log_big = run_loop(seqs, labels, batch_size=8, grad_accum=1, steps=1)
    acc, log_acc = run_loop(seqs, labels, batch_size=4, grad_accum=2, steps=1)
    assert log_acc.losses[0] == pytest.approx(log_big.losses[0], abs=1e-6)
    init = tiny_classifier().state_dict()
    moved = 0
    for (name, p), q in zip(big.named_parameters(), acc.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name
        moved += int(not torch.allclose(p, init[name]))
    assert moved > 0  # the step changed the weights


def test_the_loop_uses_the_scheduled_learning_rate_each_step():
    seqs = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [3, 3]]
    _, log = run_loop(seqs, [0, 1, 0, 1], batch_size=2, steps=6, warmup_ratio=0.34, schedule="linear")
    assert log.lrs == pytest.approx([1e-2 * lr_factor(s, 6, 2, "linear") for s in range(6)])
    assert log.lrs[0] == 0.0 and log.lrs[2] == pytest.approx(1e-2) and len(log.losses) == 6
