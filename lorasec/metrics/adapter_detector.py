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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

CLEAN = "none"
NOT_BACKDOORS = ("none", "label_flip")  # label flip is poisoning, not a backdoor: left out of the bank's labels
LEARNED = 0.9  # an ASR at which a backdoor counts as learned (for the learned-only split)


@dataclass
class Bank:
    x: np.ndarray  # (n, features)
    y: np.ndarray  # 1 = backdoored
    names: list[str]
    attack: np.ndarray  # attack kind per adapter
    dataset: np.ndarray
    rank: np.ndarray
    keys: list[str]
    asr: np.ndarray | None = None  # the backdoor's attack success rate on the cell's test rows (nan: clean)
    base: np.ndarray | None = None  # the base model's name
    modules: np.ndarray | None = None  # the LoRA target set (all-linear, attention, ...)

    def without(self, attacks: Sequence[str]) -> Bank:
        """The bank less the adapters of these attack kinds."""
        keep = ~np.isin(self.attack, list(attacks))
        return Bank(self.x[keep], self.y[keep], self.names, self.attack[keep], self.dataset[keep], self.rank[keep],
                    [k for k, m in zip(self.keys, keep, strict=True) if m],
                    *(None if a is None else a[keep] for a in (self.asr, self.base, self.modules)))


def bank(rows: Sequence[dict]) -> Bank:
    """The adapters of stored classification cells that ran `adapter_features` (clean and backdoored)."""
    keep = [r for r in rows if (r.get("analyses") or {}).get("adapter_features", {}).get("vector")
            and (r["config"]["attack"]["kind"] == CLEAN or r["config"]["attack"]["kind"] not in NOT_BACKDOORS)]
    if not keep:
        return Bank(np.zeros((0, 0)), np.zeros(0, int), [], np.array([]), np.array([]), np.array([]), [])
    names = sorted(keep[0]["analyses"]["adapter_features"]["vector"])
    x = np.array([[r["analyses"]["adapter_features"]["vector"][n] for n in names] for r in keep], dtype=float)
    attack = np.array([r["config"]["attack"]["kind"] for r in keep])
    asr = [((r.get("metrics") or {}).get("backdoor") or {}).get("asr") for r in keep]
    return Bank(x, (attack != CLEAN).astype(int), names, attack,
                np.array([r["config"]["data"]["name"] for r in keep]),
                np.array([r["config"]["method"].get("rank", 0) for r in keep]), [r["key"] for r in keep],
                np.array([np.nan if a is None else a for a in asr], dtype=float),
                np.array([r["config"]["model"]["name"] for r in keep]),
                np.array([str(r["config"]["method"].get("targets", "?")) for r in keep]))


def squash(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass
class Detector:
    names: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    threshold: float  # probability at 1% false positives on the clean adapters, scored out of fold
    fitted_on: dict  # how many adapters of each attack, datasets, ranks
    calibration: tuple[float, float] = (1.0, 0.0)  # Platt (a, b): probability = sigmoid(a * logit + b)
    card: dict = field(default_factory=dict)  # what it was trained on, how it did on held-out splits, where it fails

    def _z(self, vector: dict[str, float]) -> np.ndarray:
        """The standardised, squashed feature vector the coefficients multiply."""
        missing = [n for n in self.names if n not in vector]
        if missing:
            raise ValueError(f"the adapter's features lack {missing[:3]}")
        return (squash(np.array([vector[n] for n in self.names])) - np.array(self.mean)) / np.array(self.scale)

    def logit(self, vector: dict[str, float]) -> float:
        return float(self._z(vector) @ np.array(self.coef) + self.intercept)

    def probability(self, vector: dict[str, float]) -> float:
        """Calibrated (Platt, on out-of-fold logits of the bank) at even prior odds: the chance that an adapter
        with these weights is backdoored if half the adapters one meets were."""
        a, b = self.calibration
        return float(1.0 / (1.0 + np.exp(-(a * self.logit(vector) + b))))

    def contributions(self, vector: dict[str, float]) -> dict[str, float]:
        """Each feature's term in the logit: what drove the score."""
        return dict(zip(self.names, (self._z(vector) * np.array(self.coef)).tolist(), strict=True))

    def to_json(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def from_json(cls, path: Path) -> Detector:
        raw = json.loads(Path(path).read_text())
        raw["calibration"] = tuple(raw.get("calibration", (1.0, 0.0)))
        return cls(**raw)


def _model(seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000,
                                                              random_state=seed))


def _out_of_fold_logits(b: Bank, seed: int) -> np.ndarray:
    """Each adapter's logit from a model fitted on the other folds (stratified 5-fold): honest scores to
    calibrate and set the threshold on."""
    from sklearn.model_selection import StratifiedKFold

    k = max(2, min(5, int(min(np.bincount(b.y, minlength=2)))))
    out = np.zeros(len(b.y))
    for train, test in StratifiedKFold(k, shuffle=True, random_state=seed).split(b.x, b.y):
        m = _model(seed).fit(squash(b.x[train]), b.y[train])
        out[test] = m.decision_function(squash(b.x[test]))
    return out


def fit(b: Bank, seed: int = 0, evaluation: list[dict] | None = None) -> Detector:
    """Logistic regression on the whole bank; Platt calibration (class-balanced, so even prior odds) and the 1%-FPR
    threshold from out-of-fold logits, not from scores of adapters the model was fitted on."""
    from sklearn.linear_model import LogisticRegression

    if len(set(b.y.tolist())) < 2:
        raise ValueError("a detector needs clean and backdoored adapters in the bank")
    m = _model(seed).fit(squash(b.x), b.y)
    scaler, lr = m[0], m[1]
    oof = _out_of_fold_logits(b, seed)
    platt = LogisticRegression(C=1e6, class_weight="balanced", max_iter=5000).fit(oof[:, None], b.y)
    a, c = float(platt.coef_[0][0]), float(platt.intercept_[0])
    prob = 1.0 / (1.0 + np.exp(-(a * oof + c)))
    fitted = {"attacks": {k: int((b.attack == k).sum()) for k in sorted(set(b.attack.tolist()))},
              "datasets": sorted(set(b.dataset.tolist())), "ranks": sorted({int(r) for r in b.rank})}
    if b.base is not None:
        fitted["base_models"] = sorted(set(b.base.tolist()))
    card = {"features": "weights only: spectral statistics of each LoRA module's ΔW, by module type, and the "
                        "spread of normalised Frobenius norms (lorasec.metrics.adapter_weights)",
            "probability": "Platt-calibrated on out-of-fold logits, at even prior odds",
            "out_of_fold": {"brier": float(np.mean((prob - b.y) ** 2)),
                            "true_positive_rate_at_threshold": float(np.mean(prob[b.y == 1] >=
                                                                             np.quantile(prob[b.y == 0], 0.99)))}}
    if evaluation:
        card["held_out"] = {r["split"]: {"auc": round(r["auc"], 3), "tpr_1pct": round(r["tpr_1pct"], 3)}
                            for r in evaluation}
        card["known_to_fail"] = [r["split"] for r in evaluation if r["auc"] < 0.7]
    return Detector(b.names, scaler.mean_.tolist(), scaler.scale_.tolist(), lr.coef_[0].tolist(),
                    float(lr.intercept_[0]), float(np.quantile(prob[b.y == 0], 0.99)), fitted, (a, c), card)


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
    if b.asr is not None and k >= 2:  # a backdoor the adapter did not learn is not one its weights can show
        sub = idx[(b.y == 0) | (np.nan_to_num(b.asr) >= LEARNED)]
        if min(np.bincount(b.y[sub], minlength=2)) >= k:
            out[f"random, learned backdoors only (ASR >= {LEARNED:g})"] = [
                (sub[tr], sub[te]) for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(
                    b.x[sub], b.y[sub])]
    clean = idx[b.y == 0]
    halves = np.array_split(rng.permutation(clean), 2)
    for a in sorted(set(b.attack[b.y == 1].tolist())):
        held = idx[b.attack == a]
        folds = []
        for h in (0, 1):  # the clean adapters tested are never trained on: two halves, swapped
            train = np.concatenate([idx[(b.y == 1) & (b.attack != a)], halves[1 - h]])
            folds.append((train, np.concatenate([held, halves[h]])))
        out[f"leave attack out: {a}"] = folds
    groups = [("leave dataset out", b.dataset), ("unseen rank", b.rank)]
    if b.modules is not None:
        groups.append(("leave module set out", b.modules))
    for key, values in groups:
        for v in sorted(set(values.tolist())):
            test, train = idx[values == v], idx[values != v]
            if len(set(b.y[test].tolist())) == 2 and len(set(b.y[train].tolist())) == 2:
                out[f"{key}: {v}"] = [(train, test)]
    return out


def evaluate(b: Bank, seed: int = 0, n_boot: int = 1000) -> list[dict]:
    """One row per split: the detector's AUC / TPR@1%FPR with intervals, and the single-statistic baseline: in each
    fold, the statistic with the best AUC on the fold's training rows (oriented there), scored on its test rows —
    chosen without looking at the test rows, as the detector is."""
    from sklearn.metrics import roc_auc_score

    rows = []
    for name, folds in splits(b, seed).items():
        test_all, score_all, single, chosen = [], [], [], []
        for train, test in folds:
            if len(set(b.y[train].tolist())) < 2:
                continue
            m = _model(seed).fit(squash(b.x[train]), b.y[train])
            test_all.append(test)
            score_all.append(m.predict_proba(squash(b.x[test]))[:, 1])
            train_auc = [roc_auc_score(b.y[train], b.x[train, j]) for j in range(len(b.names))]
            j = int(np.argmax([max(a, 1 - a) for a in train_auc]))
            chosen.append(b.names[j])
            single.append(b.x[test, j] * (1 if train_auc[j] >= 0.5 else -1))
        if not test_all:
            continue
        t = np.concatenate(test_all)
        s = np.concatenate(score_all)
        row = {"split": name, **with_intervals(b.y[t], s, n_boot, seed)}
        row |= {"best single statistic": "/".join(sorted(set(chosen))),
                "its AUC": float(roc_auc_score(b.y[t], np.concatenate(single)))}
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


def composition(b: Bank) -> list[dict]:
    """The bank per attack kind: how many adapters, over what, and how well each backdoor took (a backdoor the
    adapter did not learn is one no detector should be expected to see)."""
    out = []
    for a in sorted(set(b.attack.tolist()), key=lambda k: (k != CLEAN, k)):
        m = b.attack == a
        asr = b.asr[m] if b.asr is not None else np.array([np.nan])
        row = {"attack": a, "adapters": int(m.sum()), "datasets": len(set(b.dataset[m].tolist())),
               "ranks": sorted({int(r) for r in b.rank[m]})}
        if a != CLEAN and np.isfinite(asr).any():
            row |= {"median ASR": float(np.nanmedian(asr)), "min ASR": float(np.nanmin(asr)),
                    "share ASR >= 0.5": float(np.nanmean(asr >= 0.5))}
        out.append(row)
    return out


def markdown(store: str, b: Bank, det: Detector, evaluation: list[dict], singles: list[dict]) -> str:
    """docs/SCAN.md: the bank, the held-out splits with intervals beside the best single statistic, each statistic
    alone, and the detector's card. Every number is read from the store by `lorasec scan-fit`."""
    lines = ["# Is this LoRA adapter backdoored? A weight-only detector, tested on held-out attacks (issue 33)", "",
             f"Generated by `lorasec scan-fit {store} --detector DETECTOR --table TABLE` from the store; do not "
             "edit by hand.", "",
             "Every adapter below is a LoRA adapter trained by lorasec with a known label (clean, or the backdoor "
             "its cell planted). The detector sees only the adapter's weights: per module ΔW = scale·B·A through "
             "its singular values (leading singular value, Frobenius norm, energy concentration, spectral entropy, "
             "kurtosis of the entries), averaged by module type, and the spread of normalised Frobenius norms "
             "across modules; a logistic regression on them. Each split scores every test adapter with a model "
             "that never saw it; leave-attack-out also keeps the clean adapters tested out of training.", "",
             *_reading(evaluation), "## The bank", "",
             "| attack | adapters | datasets | ranks | median ASR | min ASR | share with ASR >= 0.5 |",
             "|---|---|---|---|---|---|---|"]
    for r in composition(b):
        asr = (f"{r['median ASR']:.2f} | {r['min ASR']:.2f} | {r['share ASR >= 0.5']:.2f}" if "median ASR" in r
               else "– | – | –")
        lines.append(f"| {r['attack']} | {r['adapters']} | {r['datasets']} | {', '.join(map(str, r['ranks']))} | "
                     f"{asr} |")
    lines += ["", "## Held-out evaluation", "",
              "ROC AUC and TPR at 1% FPR with stratified bootstrap 95% intervals (1,000 resamples). The baseline is "
              "one statistic alone: in each fold the one with the best AUC on the training rows (oriented there), "
              "scored on the test rows, so it is chosen as blind to the test adapters as the detector is.", "",
              "| split | backdoored / clean tested | ROC AUC [95% bootstrap] | TPR at 1% FPR [95% bootstrap] | "
              "single statistic chosen on training (its test AUC) |", "|---|---|---|---|---|"]
    for r in evaluation:
        lines.append(f"| {r['split']} | {r['n_backdoored']} / {r['n_clean']} | {r['auc']:.3f} [{r['auc_lo']:.3f}, "
                     f"{r['auc_hi']:.3f}] | {r['tpr_1pct']:.3f} [{r['tpr_1pct_lo']:.3f}, {r['tpr_1pct_hi']:.3f}] | "
                     f"{r['best single statistic']} ({r['its AUC']:.3f}) |")
    lines += ["", "## Each statistic alone", "", "On the whole bank, in-sample, oriented (an upper bound for the "
              "statistic used alone):", "", "| statistic | AUC | higher means backdoored |", "|---|---|---|"]
    lines += [f"| {r['statistic']} | {r['AUC (oriented)']:.3f} | {r['higher means backdoored']} |" for r in singles]
    fails = det.card.get("known_to_fail", [])
    oof = det.card.get("out_of_fold", {})
    weak = [r["split"] for r in evaluation if r["tpr_1pct"] < 0.2]
    beaten = [r["split"] for r in evaluation if r["its AUC"] >= r["auc"]]  # the baseline chosen on training
    lines += ["", "## The detector's card", "",
              f"- Fitted on {len(b.y)} adapters: {det.fitted_on['attacks']}; datasets "
              f"{', '.join(det.fitted_on['datasets'])}; ranks {det.fitted_on['ranks']}; base models "
              f"{', '.join(det.fitted_on.get('base_models', ['?']))}. It knows nothing of other base models, "
              "other module sets or adapters trained far longer than these short runs.",
              f"- Probability: {det.card.get('probability', 'logistic')}; out-of-fold Brier score "
              f"{oof.get('brier', float('nan')):.3f}. Threshold {det.threshold:.3f}: the 99th percentile of clean "
              "adapters' out-of-fold probabilities (1% false positives on the bank; out-of-fold TPR there "
              f"{oof.get('true_positive_rate_at_threshold', float('nan')):.2f}).",
              f"- Known to fail (held-out ROC AUC below 0.7): {', '.join(fails) if fails else 'no split'}.",
              f"- Catches less than 20% at 1% FPR: {', '.join(weak) if weak else 'no split'}.",
              f"- A single statistic does as well or better: {', '.join(beaten) if beaten else 'no split'}."]
    return "\n".join(lines) + "\n"


def _reading(evaluation: list[dict]) -> list[str]:
    """The headline, read off the evaluation rows."""
    by = {r["split"]: r for r in evaluation}
    rnd = next((r for n, r in by.items() if n.startswith("random (")), None)
    learned = next((r for n, r in by.items() if n.startswith("random, learned")), None)
    lao = [r for n, r in by.items() if n.startswith("leave attack out")]
    if rnd is None:
        return []
    out = [f"**Reading.** On a random split the detector reaches ROC AUC {rnd['auc']:.3f} [{rnd['auc_lo']:.3f}, "
           f"{rnd['auc_hi']:.3f}] and catches {rnd['tpr_1pct']:.1%} of backdoored adapters at 1% false positives"]
    if learned:
        out[0] += (f"; on backdoors the adapter learned ({learned['split'].split('(')[-1].rstrip(')')}), AUC "
                   f"{learned['auc']:.3f} [{learned['auc_lo']:.3f}, {learned['auc_hi']:.3f}]")
    if lao:
        lo, hi = min(lao, key=lambda r: r["auc"]), max(lao, key=lambda r: r["auc"])
        out[0] += (f"; on an attack type held out of training, AUC from {lo['auc']:.3f} "
                   f"({lo['split'].removeprefix('leave attack out: ')}) to {hi['auc']:.3f} "
                   f"({hi['split'].removeprefix('leave attack out: ')})")
    out[0] += (". Published weight-only detectors report near-perfect detection on their own benchmarks "
               "(arXiv 2602.15195: 97% accuracy under 2% false positives; PEFTGuard near 100%); these numbers are "
               "what the same kind of statistics give on this bank of short runs (40 steps of batch 16).")
    return [*out, ""]
