"""`lorasec` command line: a thin typer layer over the Python API. Exit 0 ok, 2 bad input."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from lorasec.errors import InputError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False, add_completion=False,
                  help="Audit the training-time security of fine-tuning methods.")
# piped output (CI logs, `| tee`) would otherwise be cut to 80 columns and the tables truncated
console = Console(width=None if sys.stdout.isatty() else 160)
DEFAULT_STORE = Path("results.db")
StoreOpt = Annotated[Path, typer.Option("--store", help="SQLite results file (created on first save)")]
DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"
DEMOS = {"classification": DEMO_CONFIG, "memorization": Path(__file__).parent / "configs" / "demo_memorization.yaml"}


def one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except InputError as e:  # config, data, model path: the user's to fix
            if os.environ.get("LORASEC_DEBUG") == "1":
                traceback.print_exc()
            typer.echo(f"lorasec: {' '.join(str(e).split())}", err=True)  # one line, whatever the message held
            raise typer.Exit(code=2) from None

    return wrapper


def _print_results(results: list[dict], store: Path) -> None:
    from lorasec.tasks import TASKS

    for name in TASKS.names():  # each task shows its own rows
        rows = [r for r in results if r["config"]["task"] == name]
        if rows:
            console.print(TASKS.get(name).table(rows))
    unknown = sorted({r["config"]["task"] for r in results} - set(TASKS.names()))
    if unknown:
        console.print(f"({sum(r['config']['task'] in unknown for r in results)} rows of tasks this lorasec does not "
                      f"know: {', '.join(unknown)})")
    cached = sum(bool(r.get("cached")) for r in results)
    note = f" ({cached} reused from the store)" if cached else ""
    console.print(f"results stored in {store.resolve()}{note}")
    from lorasec.store import artifacts_dir

    for r in results:  # where `adapter_export` put the trained weights (a PEFT directory for LoRA: `lorasec scan`)
        if ((r.get("analyses") or {}).get("adapter_export") or {}).get("saved"):
            for what, key in ((r["label"], r["key"]), ("its clean baseline", (r.get("baseline") or {}).get("key"))):
                where = artifacts_dir(store.resolve(), key) if key else None
                if where is not None and where.is_dir():
                    where = where / "adapter" if (where / "adapter").is_dir() else where
                    console.print(f"{what}: weights saved in {where}")


@app.command()
@one_line_errors
def run(config: Annotated[Path, typer.Argument(help="experiment YAML")], store: StoreOpt = DEFAULT_STORE,
        force: Annotated[bool, typer.Option(help="rerun even if the store holds this config")] = False) -> None:
    """Run one experiment (and its clean baseline) and store the result."""
    from lorasec.audit import audit
    from lorasec.store import check_store
    from lorasec.tasks import load_config, task_of

    cfg = load_config(config)
    check_store(store)
    task_of(cfg).check(cfg)  # everything `validate` refuses is refused here, before any training
    _print_results([audit(cfg, store, force=force)], store)


def _sweep(spec: Path, store: Path, workers: int | None, threads: int | None, executor: str, address: str | None,
           gpus: float, dry_run: bool, show_rows: bool = True) -> None:
    from lorasec.grid import load_grid
    from lorasec.store import check_store, failures, load, open_store, stored_keys
    from lorasec.sweep import check_options, status, sweep

    if not dry_run:
        check_options(workers, threads, executor, gpus)
    cells = load_grid(spec)
    check_store(store, write=not dry_run)
    if dry_run:
        st = status(cells, store)
        typer.echo(f"{spec.name}: {st.line()}")
        for c in st.todo[:20]:
            typer.echo(f"  {'failed before' if c.key in st.failed else 'to do'}: {c.label} {c.key[:12]}")
        if len(st.todo) > 20:
            typer.echo(f"  ... and {len(st.todo) - 20} more")
        return
    from lorasec.tasks import task_of

    st = status(cells, store)
    for c in st.todo:  # what validate refuses, a sweep refuses before computing anything
        task_of(c.cfg).check(c.cfg)  # per cell: a check may read the seed (memorization draws its canaries)
    summary = sweep(cells, store, workers=workers, threads=threads, executor=executor, address=address, gpus=gpus)
    con = open_store(store)
    try:
        done = stored_keys(con)
        keys = [c.key for c in st.cells if c.key in done]
        if show_rows and len(keys) <= 60:  # only the rows shown are read: a row holds every per-sample output
            _print_results([load(con, k) for k in keys], store)
        elif show_rows:
            console.print(f"{len(keys)} results stored in {store.resolve()}: `lorasec show` or `lorasec report`")
        failed = [f for f in failures(con) if f["key"] in summary.failed]
    finally:
        con.close()
    console.print(summary.line())
    for f in failed:
        console.print(f"failed: {f['label']} (seed {f['config'].get('seed')}) {f['key'][:12]}: {f['error']}")
    if failed:
        raise typer.Exit(code=1)


WorkersOpt = Annotated[int | None, typer.Option("--workers", help="cells computed at once (default: cores / threads)")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads-per-worker",
                                                 help="torch/OpenMP threads per worker (default: cores / workers)")]


@app.command()
@one_line_errors
def sweep(spec: Annotated[Path, typer.Argument(help="grid YAML: base, axes (dotted fields, seed: N), zip groups")],
          store: StoreOpt = DEFAULT_STORE, workers: WorkersOpt = None, threads_per_worker: ThreadsOpt = None,
          executor: Annotated[str, typer.Option(help="local (a process pool) or ray")] = "local",
          address: Annotated[str | None, typer.Option(help="Ray cluster to join: auto or ray://host:port "
                                                           "(default: start a local one)")] = None,
          gpus: Annotated[float, typer.Option(help="GPUs each Ray task asks for")] = 0.0,
          dry_run: Annotated[bool, typer.Option("--dry-run", help="print cells done / to do / failed")] = False,
          ) -> None:
    """Compute every missing cell of a grid with parallel workers; rerun to resume. Exit 1 if a cell failed."""
    _sweep(spec, store, workers, threads_per_worker, executor, address, gpus, dry_run)


@app.command()
@one_line_errors
def grid(spec: Annotated[Path, typer.Argument(help="grid YAML: base, axes, zip groups")],
         store: StoreOpt = DEFAULT_STORE) -> None:
    """`lorasec sweep` with one worker (kept as an alias)."""
    _sweep(spec, store, 1, None, "local", None, 0.0, False)


def _print_findings(rows: list[dict]) -> None:
    """Each task's paired differences over seeds and their verdicts (what `lorasec report` writes), for `rows`."""
    import importlib

    from rich.table import Table

    from lorasec.tasks import TASKS

    for name in TASKS.names():
        mine, task = [r for r in rows if r["config"]["task"] == name], TASKS.get(name)
        compare = getattr(importlib.import_module(task.report.partition(":")[0]), "comparison_rows", None) \
            if task.report and mine else None
        if compare is None:
            continue
        found, _ = compare(mine)
        table = Table(title=f"{name}: paired differences over seeds, treated − reference, and verdicts")
        for col in ("setting", "comparison", "metric", "n", "mean [95% t CI]", "p (Holm)", "verdict", "paper's claim"):
            table.add_column(col)
        for f in found:
            diff = (f"{f['difference mean']:+.3f} [{f['difference CI low']:+.3f}, {f['difference CI high']:+.3f}]"
                    if f["n"] >= 2 else f"{f['difference mean']:+.3f}")
            p = f"{f['p (Holm)']:.3g}" if f.get("p (Holm)") is not None else ""
            table.add_row(f["setting"], f["comparison"], f["metric"], str(f["n"]), diff, p, f["verdict"], f["claim"])
        console.print(table)


@app.command()
@one_line_errors
def demo(arm: Annotated[str, typer.Argument(help="classification (the main job) or memorization")] = "classification",
         store: StoreOpt = DEFAULT_STORE) -> None:
    """Full vs LoRA r=8 (3 seeds) vs head-only. classification: MiniLM + movie reviews under clean, label flip 0.3
    and a prefix backdoor, ending with paired differences and verdicts. memorization: SmolLM2-135M on State of
    the Union text with canaries and duplicates. Computed by the sweep engine (2 workers x 1 thread); rerun to
    resume."""
    from lorasec.grid import load_grid
    from lorasec.store import config_key, load, open_store

    if arm not in DEMOS:
        raise InputError(f"arm: unknown demo {arm!r}. Known: {', '.join(DEMOS)}")
    cells = load_grid(DEMOS[arm])
    seeds = sorted({c.seed for c in cells})
    console.print(f"lorasec demo {arm}: {len(cells)} cells, seeds {', '.join(map(str, seeds))}; cells already in "
                  "the store are reused")
    workers, threads = (2, 1) if len(cells) > 1 else (1, None)
    _sweep(DEMOS[arm], store, workers, threads, "local", None, 0.0, False, show_rows=False)
    con = open_store(store)
    try:
        rows = [r for r in (load(con, config_key(c)) for c in cells) if r is not None]
    finally:
        con.close()
    _print_results(rows, store)
    _print_findings(rows)


@app.command()
@one_line_errors
def validate(config: Annotated[Path, typer.Argument(help="experiment YAML, or a grid YAML (every cell checked)")],
             store: Annotated[Path | None, typer.Option("--store", help="also check this results file")] = None,
             ) -> None:
    """Check a config, or every cell of a grid, against its data and real model without training: what this
    accepts, `run` and `sweep` do not refuse."""
    from lorasec.config import load_yaml
    from lorasec.grid import expand, is_grid
    from lorasec.store import check_store
    from lorasec.tasks import parse_config, task_of

    raw = load_yaml(config)  # read once: a grid or one experiment
    grid = is_grid(raw)
    cells = expand(raw, config.name) if grid else [parse_config(raw, source=config.name)]
    if store is not None:
        check_store(store)
    if not grid:
        typer.echo(f"ok: {task_of(cells[0]).check(cells[0])}")
        return
    for i, c in enumerate(cells, 1):
        try:
            task_of(c).check(c)
        except InputError as e:
            raise InputError(f"cell {i} of {len(cells)} ({c.label()}, seed {c.seed}): {e}") from None
    typer.echo(f"ok: {len(cells)} cells of {config.name} checked")


def _listing(noun: str) -> None:
    from lorasec.config import choices
    from lorasec.tasks import TASKS

    for name in TASKS.names():
        task = TASKS.get(name)
        if noun in task.listing:
            for value, description in choices(task.config, task.listing[noun]):
                typer.echo(f"{value:16} {name:15} {description}")


@app.command()
def models() -> None:
    """List the model names a config may use, with the task that takes each."""
    _listing("models")


@app.command()
def datasets() -> None:
    """List the dataset and corpus names a config may use, with the task that takes each."""
    _listing("datasets")


@app.command()
@one_line_errors
def show(key: Annotated[str | None, typer.Argument(help="one cell: its key or a unique prefix of it")] = None,
         store: StoreOpt = DEFAULT_STORE) -> None:
    """Print the tables of every result in the store and its failed cells, or one cell in full."""
    import json

    from lorasec.store import check_store, failures, find, open_store, results

    if not store.exists():
        raise InputError(f"--store: {str(store)!r} does not exist")
    check_store(store, write=False)
    con = open_store(store)
    try:
        if key is not None:
            if not key or any(ch not in "0123456789abcdef" for ch in key):
                raise InputError(f"key: {key!r} is not a key or its prefix (lowercase hex, as `show` prints them)")
            hits = find(con, key)
            if len(hits) != 1:
                many = "more than one cell" if hits else "no cell"
                raise InputError(f"key: {key!r} matches {many} in {store}; give more of the key")
        else:
            rows, failed = list(results(con)), list(failures(con))
    finally:
        con.close()
    if key is not None:
        cell = hits[0]
        if "error" in cell:  # a failed cell
            typer.echo(json.dumps(cell, indent=1))
            return
        _print_results([cell], store)
        body = {k: v for k, v in cell.items() if k not in ("outputs", "data", "poisoned")}
        typer.echo(json.dumps(body, indent=1))
        typer.echo("(outputs, data and poisoned rows are stored too: lorasec.store.load(con, key))")
        return
    from lorasec.config import SCHEMA_VERSION

    current = [r for r in rows if r["config"].get("schema_version") == SCHEMA_VERSION]
    _print_results(current, store)
    if older := len(rows) - len(current):
        console.print(f"{older} row{'s' * (older != 1)} of an older config schema (before {SCHEMA_VERSION}): kept, "
                      "never reused and not shown (`lorasec show KEY` prints one)")
    for f in failed:
        console.print(f"failed: {f['label']} (seed {f['config'].get('seed')}) {f['key'][:12]}: {f['error']}")


@app.command()
@one_line_errors
def report(store_arg: Annotated[Path | None, typer.Argument(metavar="[STORE]", help="the store, as --store "
                                                                               "(kept as an alias)")] = None,
           store: Annotated[Path | None, typer.Option("--store", help="SQLite results file to report on "
                                                                      f"(default {DEFAULT_STORE})")] = None,
           out: Annotated[Path, typer.Option("--out", help="directory for report.md, index.html, figures/, "
                                             "tables/")] = Path("report"),
           fmt: Annotated[str, typer.Option("--format", help="comma-separated: md, html")] = "md,html",
           compare: Annotated[list[str] | None, typer.Option(
               "--compare", help="FIELD=REFERENCE: also compare this config field against its reference value "
                                 "(repeatable), e.g. train.precision=fp32")] = None,
           margin: Annotated[list[str] | None, typer.Option(
               "--margin", help="NAME=VALUE: the equivalence margin (TOST) of every metric whose name contains NAME, "
                                "in its own units (repeatable), e.g. ASR=0.1")] = None) -> None:
    """Findings with uncertainty: paired method differences over seeds, verdicts against the papers, figures,
    Markdown and one self-contained HTML page. Reads the store only."""
    from lorasec.report import check_formats
    from lorasec.report import report as write_report

    if store_arg is not None and store is not None and store_arg != store:
        raise InputError(f"--store: given twice ({str(store_arg)!r} and {str(store)!r}); give it once")
    main_file = write_report(store or store_arg or DEFAULT_STORE, out, check_formats(fmt.split(",")), compare or (),
                             margin or ())
    typer.echo(f"report written: {main_file}")


SHIPPED_DETECTOR = Path(__file__).parent / "configs" / "scan_detector.json"


def _base_modules(base: str) -> dict[str, tuple[int, int]]:
    """Linear module name -> (out, in) of the base model: `minilm`, or a local directory of safetensors weights."""
    import torch
    from pydantic import TypeAdapter, ValidationError

    from lorasec.config import ModelConfig
    from lorasec.models.classifier import load_classifier

    try:
        cfg = TypeAdapter(ModelConfig).validate_python({"name": "local", "path": base} if Path(base).exists()
                                                       else {"name": base})
    except ValidationError:
        raise InputError(f"base: {base!r} is neither a shipped classifier (minilm) nor a model directory") from None
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a verdict is one screen; the weight-loading bar is noise (and not one line)
    try:
        model = load_classifier(cfg, 2, 0).model
    finally:
        if was_on:  # off already when piped (quiet_when_piped): turning it on again only warns
            hf_logging.enable_progress_bar()

    return {n: tuple(m.weight.shape) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


@app.command()
@one_line_errors
def scan(base: Annotated[str, typer.Argument(help="the base model the adapter was trained on: minilm, or a local "
                                                  "model directory")],
         adapter: Annotated[Path, typer.Argument(help="a PEFT LoRA directory (adapter_config.json + "
                                                      "adapter_model.safetensors)")],
         detector: Annotated[Path | None, typer.Option("--detector", help="detector JSON (lorasec scan-fit); "
                                                       "default: the one shipped with lorasec")] = None,
         as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False) -> None:
    """Is this LoRA adapter backdoored? A verdict from its weights alone: score, probability, and the per-module
    statistics that drove it."""
    import json

    from lorasec.metrics.adapter_detector import Detector
    from lorasec.metrics.adapter_weights import features, read_peft_dir, vector

    pairs, scale, _ = read_peft_dir(adapter)
    shapes = _base_modules(base)
    for name, (a, b) in pairs.items():
        match = [n for n in shapes if n == name or n.endswith("." + name) or name.endswith("." + n)]
        if not match or shapes[match[0]] != (b.shape[0], a.shape[1]):
            raise InputError(f"adapter: module {name} ({b.shape[0]} x {a.shape[1]}) is not a linear layer of the "
                             f"base model {base!r}")
    path = detector or SHIPPED_DETECTOR
    if not path.is_file():
        raise InputError(f"--detector: {path} does not exist (fit one on a bank of adapters with "
                         "`lorasec scan-fit STORE --detector FILE`)")
    det = Detector.from_json(path)
    feats = features(pairs, scale)
    vec = vector(feats)
    prob = det.probability(vec)
    drivers = sorted(det.contributions(vec).items(), key=lambda kv: -abs(kv[1]))[:5]
    out = {"adapter": str(adapter), "base": base, "verdict": "backdoored" if prob >= det.threshold else "clean",
           "probability": prob, "threshold": det.threshold, "score": det.logit(vec),
           "drivers": dict(drivers), "by_type": feats["by_type"], "frobenius_spread": feats["frobenius_spread"],
           "detector": str(path), "fitted_on": det.fitted_on}
    known = det.fitted_on.get("base_models")
    if known and base not in known:
        out["warning"] = (f"the detector was fitted on adapters of {', '.join(known)}, not of {base}: this verdict "
                          "is outside what it was tested on")
    if as_json:
        typer.echo(json.dumps(out))
        return
    from rich.table import Table

    console.print(f"[bold]{out['verdict']}[/bold]  probability {prob:.3f} (calibrated, at even prior odds; "
                  f"threshold {det.threshold:.3f}: 1% false positives on the clean adapters of its bank, out of "
                  f"fold), logit {out['score']:+.2f}")
    if "warning" in out:
        console.print(f"[yellow]warning: {out['warning']}[/yellow]")
    fails = det.card.get("known_to_fail")
    if fails:
        console.print(f"known to fail (held-out AUC < 0.7): {', '.join(fails)}")
    t = Table(title="per module type: the statistics of ΔW = scale·B·A (means over layers)")
    cols = ["sigma_1", "frobenius", "energy_concentration", "spectral_entropy", "kurtosis"]
    t.add_column("module type")
    t.add_column("modules", justify="right")
    for c in cols:
        t.add_column(c, justify="right")
    for ty, st in feats["by_type"].items():
        t.add_row(ty, str(st["modules"]), *(f"{st[c]:.4g}" for c in cols))
    console.print(t)
    console.print("what drove it (terms of the logit): " + ", ".join(f"{k} {v:+.2f}" for k, v in drivers))


@app.command("scan-fit")
@one_line_errors
def scan_fit(store: Annotated[Path, typer.Argument(help="a store of cells that ran the adapter_features analysis")],
             detector: Annotated[Path, typer.Option("--detector", help="where to write the detector JSON")],
             table: Annotated[Path | None, typer.Option("--table", help="also write the evaluation (random, "
                                                        "leave-one-attack-out, leave-one-dataset-out, unseen-rank "
                                                        "splits) as Markdown here")] = None,
             seed: Annotated[int, typer.Option("--seed")] = 0,
             leave_out: Annotated[list[str] | None, typer.Option(
                 "--leave-out", help="fit without the adapters of this attack kind (repeatable), e.g. to scan a "
                                     "fresh adapter of an attack the detector never saw")] = None) -> None:
    """Fit the weight-only detector on a bank of adapters and evaluate it on held-out attacks, datasets, ranks."""
    from lorasec.metrics.adapter_detector import CLEAN, bank, evaluate, fit, markdown, single_statistics
    from lorasec.report import load

    if not store.exists():
        raise InputError(f"store: {str(store)!r} does not exist")
    rows, _, _ = load(store)
    b = bank(rows)
    if leave_out:
        kinds = sorted(set(b.attack.tolist()) - {CLEAN})
        bad = [a for a in leave_out if a not in kinds]
        if bad or CLEAN in leave_out:
            raise InputError(f"--leave-out: {(bad or [CLEAN])[0]!r} is not a backdoor of this bank; allowed: "
                             f"{', '.join(kinds)}")
        b = b.without(leave_out)
    if len(b.y) < 4 or len(set(b.y.tolist())) < 2:
        raise InputError(f"store: {store} holds {len(b.y)} adapters with features; a detector needs clean and "
                         "backdoored ones (run a bank grid with analyses: [{kind: adapter_features}])")
    evaluation = evaluate(b, seed)
    det = fit(b, seed, evaluation)
    det.to_json(detector)
    typer.echo(f"detector written: {detector} ({len(b.y)} adapters: {det.fitted_on['attacks']})")
    if table is not None:
        table.write_text(markdown(store.as_posix(), b, det, evaluation, single_statistics(b)))
        typer.echo(f"evaluation written: {table}")


def quiet_when_piped() -> None:
    """A log is not a terminal: no progress-bar redraws in it. transformers / huggingface_hub read their switch
    when imported (after this) and sweep workers inherit both; lorasec's own bars hide themselves off a TTY."""
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")


def main(argv: list[str] | None = None) -> int:
    """The `lorasec` command. Every error the user can fix, click's usage errors included, is one line on
    stderr and exit 2."""
    try:  # typer 0.29 carries its own copy of click
        from typer._click import exceptions as click_errors
    except ImportError:  # pragma: no cover  (older typer: click itself)
        from click import exceptions as click_errors

    # typer's copy of click has no Abort: naming it unguarded turned every unexpected error into an AttributeError
    abort = getattr(click_errors, "Abort", KeyboardInterrupt)
    quiet_when_piped()
    try:
        code = app(args=argv, prog_name="lorasec", standalone_mode=False)
    except click_errors.NoArgsIsHelpError:  # `lorasec` alone: the help is already on stdout
        return 0
    except click_errors.UsageError as e:  # a missing or extra argument, an unknown option or command, a bad value
        verb = e.ctx.command_path.partition(" ")[2] if e.ctx is not None else ""
        where = f"{verb}: " if verb else ""
        typer.echo(f"lorasec: {where}{' '.join(e.format_message().split())}", err=True)
        return 2
    except click_errors.ClickException as e:  # e.g. a file option that cannot be opened
        typer.echo(f"lorasec: {' '.join(e.format_message().split())}", err=True)
        return e.exit_code
    except (abort, KeyboardInterrupt):  # Ctrl-C
        typer.echo("lorasec: aborted", err=True)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
