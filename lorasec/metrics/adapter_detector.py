"""Is a LoRA adapter backdoored, from its weights alone? A detector over lorasec.metrics.adapter_weights' feature
vector, fitted on a bank of adapters with known labels, and its honest evaluation (issue 33).

The detector is data: feature names, the standardisation, logistic-regression coefficients and the score at 1%
false positives on the clean adapters it was fitted on (`Detector.to_json`); scoring needs numpy only. Features
pass through sign(x)·log1p(|x|) first (norms and singular values grow with rank and span decades).

Evaluation (arXiv 2604.08844: detectors near AUC 1 on the attack they were trained on fall to chance on another):
besides a stratified random split, leave-one-attack-type-out (train on clean adapters and every other attack, test
on the held-out attack against clean adapters never trained on), leave-one-dataset-out and unseen-rank splits;
ROC AUC and TPR at 1% FPR with stratified bootstrap intervals, and each single statistic alone as a baseline
(oriented on the training side of the split).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

CLEAN = "none"
NOT_BACKDOORS = ("none", "label_flip")  # label flip is poisoning, not a backdoor: left out of the bank's labels


@dataclass
class Bank:
    x: np.ndarray  # (n, features)
    y: np.ndarray  # 1 = backdoored
    names: list[str]
    attack: np.ndarray  # attack kind per adapter
    dataset: np.ndarray
    rank: np.ndarray
    keys: list[str]

    def without(self, attacks: Sequence[str]) -> Bank:
        """The bank less the adapters of these attack kinds."""
        keep = ~np.isin(self.attack, list(attacks))
        return Bank(self.x[keep], self.y[keep], self.names, self.attack[keep], self.dataset[keep], self.rank[keep],
                    [k for k, m in zip(self.keys, keep, strict=True) if m])


def bank(rows: Sequence[dict]) -> Bank:
    """The adapters of stored classification cells that ran `adapter_features` (clean and backdoored)."""
    keep = [r for r in rows if (r.get("analyses") or {}).get("adapter_features", {}).get("vector")
            and (r["config"]["attack"]["kind"] == CLEAN or r["config"]["attack"]["kind"] not in NOT_BACKDOORS)]
    if not keep:
        return Bank(np.zeros((0, 0)), np.zeros(0, int), [], np.array([]), np.array([]), np.array([]), [])
    names = sorted(keep[0]["analyses"]["adapter_features"]["vector"])
    x = np.array([[r["analyses"]["adapter_features"]["vector"][n] for n in names] for r in keep], dtype=float)
    attack = np.array([r["config"]["attack"]["kind"] for r in keep])
    return Bank(x, (attack != CLEAN).astype(int), names, attack,
                np.array([r["config"]["data"]["name"] for r in keep]),
                np.array([r["config"]["method"].get("rank", 0) for r in keep]), [r["key"] for r in keep])


def squash(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass
class Detector:
    names: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    threshold: float  # probability at 1% false positives on the clean adapters it was fitted on
    fitted_on: dict  # how many adapters of each attack, datasets, ranks

    def probability(self, vector: dict[str, float]) -> float:
        missing = [n for n in self.names if n not in vector]
        if missing:
            raise ValueError(f"the adapter's features lack {missing[:3]}")
        z = (squash(np.array([vector[n] for n in self.names])) - np.array(self.mean)) / np.array(self.scale)
        return float(1.0 / (1.0 + np.exp(-(z @ np.array(self.coef) + self.intercept))))

    def contributions(self, vector: dict[str, float]) -> dict[str, float]:
        """Each feature's term in the logit: what drove the score."""
        z = (squash(np.array([vector[n] for n in self.names])) - np.array(self.mean)) / np.array(self.scale)
        return dict(zip(self.names, (z * np.array(self.coef)).tolist(), strict=True))

    def to_json(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def from_json(cls, path: Path) -> Detector:
        return cls(**json.loads(Path(path).read_text()))


def _model(seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000,
                                                              random_state=seed))


def fit(b: Bank, seed: int = 0) -> Detector:
    if len(set(b.y.tolist())) < 2:
        raise ValueError("a detector needs clean and backdoored adapters in the bank")
    m = _model(seed).fit(squash(b.x), b.y)
    scaler, lr = m[0], m[1]
    clean_p = m.predict_proba(squash(b.x[b.y == 0]))[:, 1]
    fitted = {"attacks": {a: int((b.attack == a).sum()) for a in sorted(set(b.attack.tolist()))},
              "datasets": sorted(set(b.dataset.tolist())), "ranks": sorted({int(r) for r in b.rank})}
    return Detector(b.names, scaler.mean_.tolist(), scaler.scale_.tolist(), lr.coef_[0].tolist(),
                    float(lr.intercept_[0]), float(np.quantile(clean_p, 0.99)), fitted)


def tpr_at(y: np.ndarray, score: np.ndarray, fpr: float = 0.01) -> float:
    """The largest TPR whose FPR is at most `fpr` (0 false positives when there are fewer than 1/fpr negatives)."""
    from sklearn.metrics import roc_curve

    f, t, _ = roc_curve(y, score)
    return float(t[f <= fpr + 1e-12].max())


def with_intervals(y: np.ndarray, score: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """ROC AUC and TPR at 1% FPR, each with a stratified bootstrap 95% interval."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    aucs, tprs = [], []
    for _ in range(n_boot):
        i = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        aucs.append(roc_auc_score(y[i], score[i]))
        tprs.append(tpr_at(y[i], score[i]))
    return {"auc": float(roc_auc_score(y, score)), "auc_lo": float(np.quantile(aucs, 0.025)),
            "auc_hi": float(np.quantile(aucs, 0.975)), "tpr_1pct": tpr_at(y, score),
            "tpr_1pct_lo": float(np.quantile(tprs, 0.025)), "tpr_1pct_hi": float(np.quantile(tprs, 0.975)),
            "n_backdoored": int(len(pos)), "n_clean": int(len(neg))}


def splits(b: Bank, seed: int = 0) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """name -> list of (train rows, test rows). Every test row is scored by a model that never saw it."""
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(seed)
    idx = np.arange(len(b.y))
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    k = min(5, int(min(np.bincount(b.y, minlength=2))))
    if k >= 2:
        out["random (stratified 5-fold)"] = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(b.x, b.y))
    clean = idx[b.y == 0]
    halves = np.array_split(rng.permutation(clean), 2)
    for a in sorted(set(b.attack[b.y == 1].tolist())):
        held = idx[b.attack == a]
        folds = []
        for h in (0, 1):  # the clean adapters tested are never trained on: two halves, swapped
            train = np.concatenate([idx[(b.y == 1) & (b.attack != a)], halves[1 - h]])
            folds.append((train, np.concatenate([held, halves[h]])))
        out[f"leave attack out: {a}"] = folds
    for key, values in (("leave dataset out", b.dataset), ("unseen rank", b.rank)):
        for v in sorted(set(values.tolist())):
            test, train = idx[values == v], idx[values != v]
            if len(set(b.y[test].tolist())) == 2 and len(set(b.y[train].tolist())) == 2:
                out[f"{key}: {v}"] = [(train, test)]
    return out


def evaluate(b: Bank, seed: int = 0, n_boot: int = 1000) -> list[dict]:
    """One row per split: the detector's AUC / TPR@1%FPR with intervals, and the best single statistic's AUC (each
    statistic oriented by the sign of its mean difference on the training rows)."""
    from sklearn.metrics import roc_auc_score

    rows = []
    for name, folds in splits(b, seed).items():
        test_all, score_all, single = [], [], {n: [] for n in b.names}
        for train, test in folds:
            if len(set(b.y[train].tolist())) < 2:
                continue
            m = _model(seed).fit(squash(b.x[train]), b.y[train])
            test_all.append(test)
            score_all.append(m.predict_proba(squash(b.x[test]))[:, 1])
            for j, n in enumerate(b.names):
                d = b.x[train][b.y[train] == 1, j].mean() - b.x[train][b.y[train] == 0, j].mean()
                single[n].append(b.x[test, j] * (1 if d >= 0 else -1))
        if not test_all:
            continue
        t = np.concatenate(test_all)
        s = np.concatenate(score_all)
        row = {"split": name, **with_intervals(b.y[t], s, n_boot, seed)}
        aucs = {n: float(roc_auc_score(b.y[t], np.concatenate(v))) for n, v in single.items()}
        best = max(aucs, key=aucs.get)
        row |= {"best single statistic": best, "its AUC": aucs[best]}
        rows.append(row)
    return rows


def single_statistics(b: Bank) -> list[dict]:
    """Each statistic alone on the whole bank (in-sample, oriented): the baseline table."""
    from sklearn.metrics import roc_auc_score

    out = []
    for j, n in enumerate(b.names):
        auc = float(roc_auc_score(b.y, b.x[:, j]))
        out.append({"statistic": n, "AUC (oriented)": max(auc, 1 - auc), "higher means backdoored": auc >= 0.5})
    return sorted(out, key=lambda r: -r["AUC (oriented)"])
