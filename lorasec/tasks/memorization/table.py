"""Side-by-side table of memorization results: utility, extraction, exposure and MIA per method."""

from __future__ import annotations

from rich.table import Table


def _f(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else f"{x:{spec}}"


def row(result: dict) -> dict:
    """Flat numbers for one memorization result: what the table and the tests read."""
    m = result["metrics"]
    cfg = result["config"]
    method = cfg["method"]["kind"] + (f" r={cfg['method']['rank']}" if cfg["method"]["kind"] == "lora" else "")
    dp = cfg["method"].get("dp")
    if dp:
        method += f" +dp(eps={dp['target_epsilon']:g})" if dp.get("target_epsilon") else \
            f" +dp(sigma={dp['noise_multiplier']:g})"
    by_dup = m["extraction_by_duplication"]
    counts = sorted(by_dup, key=int)
    mia = m["mia"]
    return {
        "method": method,
        "model": cfg["model"]["name"],
        "seed": cfg["seed"],
        "trainable_params": result["model"]["trainable_params"],
        "held_out_ppl": m["utility"]["held_out_ppl"],
        "base_held_out_ppl": m["utility"]["base_held_out_ppl"],
        "member_ppl": m["utility"]["member_ppl"],
        "exact_rate": m["extraction"]["exact_rate"],
        "relaxed_rate": m["extraction"]["relaxed_rate"],
        "rouge_l": m["extraction"]["mean_rouge_l"],
        "relaxed_by_dup": {c: by_dup[c]["relaxed_rate"] for c in counts},
        "exact_by_dup": {c: by_dup[c]["exact_rate"] for c in counts},
        "exposure": {str(c["count"]): c["exposure"] for c in m["exposure"]},
        "auc": {k: v["auc"] for k, v in mia.items()},
        "tpr_1pct": {k: v["tpr_at_fpr"]["0.01"] if "0.01" in v["tpr_at_fpr"] else v["tpr_at_fpr"][0.01]
                     for k, v in mia.items()},
        "seconds": result["timings"]["total_s"],
        "accountant_epsilon": (result["train"].get("dp") or {}).get("epsilon"),
        "audited_epsilon": (m.get("audit") or {}).get("epsilon_lower_bound"),
    }


def memorization_table(results: list[dict], title: str = "lorasec: memorization by fine-tuning method") -> Table:
    """Metrics as rows, one column per result (there are more metrics than methods)."""
    rows = [row(x) for x in results]
    # weights' provenance, e.g. that smollm2-135m is Q4_1 GGUF dequantised: perplexities depend on it
    origins = sorted({f"{x['config']['model']['name']}: {x['model']['origin']}" for x in results
                      if x["model"].get("origin")})
    t = Table(title=title, caption="; ".join(origins) or None)
    t.add_column("metric")
    for r in rows:
        t.add_column(f"{r['method']} ({r['model']}, seed {r['seed']})", justify="right")
    counts = sorted({c for r in rows for c in r["relaxed_by_dup"]}, key=int)
    canary_counts = sorted({c for r in rows for c in r["exposure"]}, key=int)
    lines: list[tuple[str, list[str]]] = [
        ("trainable params", [f"{r['trainable_params']:,}" for r in rows]),
        ("held-out ppl (base model)", [f"{r['held_out_ppl']:.1f} ({r['base_held_out_ppl']:.1f})" for r in rows]),
        ("member ppl", [f"{r['member_ppl']:.2f}" for r in rows]),
        ("exact extraction rate", [_f(r["exact_rate"]) for r in rows]),
        ("relaxed rate (cosine >= 0.8)", [_f(r["relaxed_rate"]) for r in rows]),
        ("mean ROUGE-L", [_f(r["rouge_l"]) for r in rows]),
    ]
    lines += [(f"  relaxed / exact, records x{c}",
               [f"{_f(r['relaxed_by_dup'].get(c))} / {_f(r['exact_by_dup'].get(c))}" for r in rows]) for c in counts]
    lines += [(f"exposure, canary x{c} (bits)", [_f(r["exposure"].get(c), ".2f") for r in rows])
              for c in canary_counts]
    for k in ("loss", "reference", "zlib", "min_k", "min_k_plus_plus"):
        lines.append((f"MIA {k}: AUC / TPR@1%FPR", [f"{r['auc'][k]:.3f} / {r['tpr_1pct'][k]:.2f}" for r in rows]))
    if any(r["accountant_epsilon"] is not None or r["audited_epsilon"] is not None for r in rows):
        lines.append(("epsilon: accountant / audited", [f"{_f(r['accountant_epsilon'], '.2f')} / "
                                                          f"{_f(r['audited_epsilon'], '.2f')}" for r in rows]))
    lines.append(("time (s)", [f"{r['seconds']:.0f}" for r in rows]))
    for name, cells in lines:
        t.add_row(name, *cells)
    return t
