"""Classification metrics from per-sample predictions (scikit-learn), and the prediction pass that makes them.

CACC: accuracy on the clean test set. ASR (attack success rate): share of triggered test rows whose true
label is not the target that are predicted as the target. The paper reports "triggered accuracy" instead:
share of those rows predicted as their TRUE label; for two classes it is 1 - ASR.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from lorasec.data.batching import collate, encode
from lorasec.data.text import TextDataset


def _batched(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, ds: TextDataset, batch_size: int,
             max_length: int, desc: str, progress: bool, read) -> np.ndarray | None:
    """`read(model output)` -> (B, d) per length-sorted batch, gathered back into `ds` order (None when empty)."""
    model.eval()
    enc = encode(tokenizer, ds.texts, max_length)
    order = np.argsort([len(s) for s in enc.input_ids], kind="stable")
    device = next(model.parameters()).device
    out: np.ndarray | None = None
    for start in tqdm(range(0, len(ds), batch_size), desc=desc, disable=None if progress else True, leave=False):
        rows = order[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collate(enc, None, rows, tokenizer.pad_token_id).items()}
        with torch.no_grad():
            h = read(model, batch).double().cpu().numpy()
        if out is None:
            out = np.zeros((len(ds), h.shape[1]), dtype=np.float64)
        out[rows] = h
    return out


def predict_proba(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, ds: TextDataset, batch_size: int,
                  max_length: int, progress: bool = False) -> np.ndarray:
    """(n, k) class probabilities, rows in the order of `ds`; batches are length-sorted for speed."""
    out = _batched(model, tokenizer, ds, batch_size, max_length, "eval", progress,
                   lambda m, b: torch.softmax(m(**b).logits.float(), dim=-1))
    return out if out is not None else np.zeros((0, ds.n_classes))


def head_features(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, ds: TextDataset, batch_size: int,
                  max_length: int, progress: bool = False) -> np.ndarray:
    """(n, d) last-layer hidden state at the first token (the [CLS] vector a BERT head reads), rows in `ds` order."""
    out = _batched(model, tokenizer, ds, batch_size, max_length, "features", progress,
                   lambda m, b: m(**b, output_hidden_states=True).hidden_states[-1][:, 0].float())
    return out if out is not None else np.zeros((0, 0))


def classification_metrics(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy plus macro precision/recall/F1; for two classes also binary P/R/F1 with class 1 positive."""
    labels = np.asarray(labels)
    preds = np.asarray(preds)
    p, r, f, _ = precision_recall_fscore_support(labels, preds, average="macro", labels=list(range(n_classes)),
                                                 zero_division=0)
    out = {"accuracy": float(accuracy_score(labels, preds)), "precision_macro": float(p),
           "recall_macro": float(r), "f1_macro": float(f)}
    if n_classes == 2:
        p, r, f, _ = precision_recall_fscore_support(labels, preds, average="binary", pos_label=1, zero_division=0)
        out |= {"precision": float(p), "recall": float(r), "f1": float(f)}
    return out


def to_target_rate(true_labels: np.ndarray, preds: np.ndarray, target: int) -> float:
    """Share of rows whose true label is not `target` that are predicted as `target`, without any trigger.

    On the clean test set this is the floor ASR is read against: a model that already calls 40% of the
    negative reviews positive has an ASR of 0.4 before any backdoor.
    """
    keep = np.asarray(true_labels) != target
    return float(np.mean(np.asarray(preds)[keep] == target))


def backdoor_metrics(true_labels: np.ndarray, preds: np.ndarray, target: int) -> dict[str, float]:
    """ASR and the paper's triggered accuracy on triggered rows whose true label is not `target`."""
    true_labels = np.asarray(true_labels)
    preds = np.asarray(preds)
    if np.any(true_labels == target):
        raise ValueError("triggered rows must exclude the target class")
    return {"asr": float(np.mean(preds == target)), "triggered_accuracy": float(np.mean(preds == true_labels)),
            "n_triggered": int(len(preds))}
