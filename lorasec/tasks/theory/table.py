"""Side-by-side table of theory cells: measured robustness beside each predictor (no torch: `show` and the report
read it)."""

from __future__ import annotations

from rich.table import Table


def _get(d: dict | None, *path: str) -> float | None:
    for p in path:
        if not isinstance(d, dict) or d.get(p) is None:
            return None
        d = d[p]
    return d  # type: ignore[return-value]


def method_label(method: dict) -> str:
    if method["kind"] != "lora":
        return method["kind"]
    extra = "".join([f" s={method['init_scale']:g}" if method.get("init_scale") is not None else "",
                     " freeze-A" if method.get("freeze_a") else ""])
    return f"lora r={method['rank']}{extra}"


# predictor name -> path into a theory result's metrics; the report's study reads the same list
PREDICTORS: dict[str, tuple[str, ...]] = {
    "M (params)": ("m_params",),
    "M (eff. weights)": ("m_weights",),
    "M (test logits)": ("m_function",),
    "M' init": ("kernel", "init", "m_prime"),
    "M' rel init": ("kernel", "init", "m_prime_rel"),
    "M' trained": ("kernel", "poisoned", "m_prime"),
    "M' rel trained": ("kernel", "poisoned", "m_prime_rel"),
    "K trace init": ("kernel", "init", "trace_per_input"),
    "eff. rank init": ("kernel", "init", "effective_rank"),
    "eff. rank trained": ("kernel", "poisoned", "effective_rank"),
    "Renyi init": ("kernel", "init", "renyi"),
    "Renyi trained": ("kernel", "poisoned", "renyi"),
    "H1'": ("proxies", "h1"),
    "H2'": ("proxies", "h2"),
    "M_delta max init": ("m_delta", "init", "max"),
    "M_delta mean init": ("m_delta", "init", "mean"),
}
OUTCOMES: dict[str, tuple[str, ...]] = {"ASR": ("asr",), "ΔCACC": ("delta_cacc",)}


def row(result: dict) -> dict:
    """Flat numbers of one theory result: configuration, outcomes, predictors."""
    cfg = result["config"]["cell"]
    m = result["metrics"]
    attack = cfg["attack"]["kind"] + (f" {cfg['attack']['rate']:g}" if "rate" in cfg["attack"] else "")
    out = {"method": method_label(cfg["method"]), "attack": attack, "seed": result["config"]["seed"],
           "params": result["kernels"]["params"]}
    out |= {k: _get(m, *p) for k, p in OUTCOMES.items()}
    out |= {k: _get(m, *p) for k, p in PREDICTORS.items()}
    return out


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


SHOWN = ("ASR", "ΔCACC", "M (eff. weights)", "M (test logits)", "M' rel init", "M' rel trained", "eff. rank init",
         "Renyi init", "H1'", "H2'", "M_delta max init")


def theory_table(results: list[dict], title: str = "lorasec: theory arm (eNTK, M_Δ, proxies)") -> Table:
    t = Table(title=title)
    for col in ("method", "attack", "seed", *SHOWN):
        t.add_column(col, justify="left" if col in ("method", "attack") else "right")
    for r in sorted((row(x) for x in results), key=lambda r: (r["attack"], r["method"], r["seed"])):
        t.add_row(r["method"], r["attack"], str(r["seed"]), *(_fmt(r[c]) for c in SHOWN))
    return t
