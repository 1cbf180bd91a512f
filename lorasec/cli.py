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
            typer.echo(f"lorasec: {e}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper


def _print_results(results: list[dict], store: Path) -> None:
    from lorasec.report.memorization_table import memorization_table
    from lorasec.report.table import comparison_table

    clf = [r for r in results if r["config"]["task"] == "classification"]
    mem = [r for r in results if r["config"]["task"] == "memorization"]
    if clf:
        console.print(comparison_table(clf))
    if mem:
        console.print(memorization_table(mem))
    cached = sum(bool(r.get("cached")) for r in results)
    note = f" ({cached} reused from the store)" if cached else ""
    console.print(f"results stored in {store.resolve()}{note}")


@app.command()
@one_line_errors
def run(config: Annotated[Path, typer.Argument(help="experiment YAML")], store: StoreOpt = DEFAULT_STORE,
        force: Annotated[bool, typer.Option(help="rerun even if the store holds this config")] = False) -> None:
    """Run one experiment (and its clean baseline) and store the result."""
    from lorasec.audit import audit
    from lorasec.config import load_config

    cfg = load_config(config)
    _print_results([audit(cfg, store, force=force)], store)


@app.command()
@one_line_errors
def grid(spec: Annotated[Path, typer.Argument(help="grid YAML: base experiment + axes")],
         store: StoreOpt = DEFAULT_STORE) -> None:
    """Run every cell of a grid in order (cells already stored are reused) and print the table."""
    from lorasec.audit import audit_all
    from lorasec.grid import load_grid

    cells = load_grid(spec)
    _print_results(audit_all(cells, store), store)


@app.command()
@one_line_errors
def demo(arm: Annotated[str, typer.Argument(help="classification (the main job) or memorization")] = "classification",
         store: StoreOpt = DEFAULT_STORE) -> None:
    """Full vs LoRA r=8 vs head-only. classification: MiniLM + movie reviews under clean, label flip 0.3 and a
    prefix backdoor. memorization: SmolLM2-135M on State of the Union text with canaries and duplicates."""
    from lorasec.audit import audit_all
    from lorasec.grid import load_grid

    if arm not in DEMOS:
        raise InputError(f"arm: unknown demo {arm!r}. Known: {', '.join(DEMOS)}")
    cells = load_grid(DEMOS[arm])
    console.print(f"lorasec demo {arm}: {len(cells)} cells, seed 1; cells already in the store are reused")
    _print_results(audit_all(cells, store), store)


@app.command()
@one_line_errors
def validate(config: Annotated[Path, typer.Argument(help="experiment YAML")]) -> None:
    """Check a config, its names, its data columns and model path without training."""
    from lorasec.attacks.base import check_target
    from lorasec.config import load_config
    from lorasec.data import load_splits
    from lorasec.models.weights import check_safetensors_dir

    cfg = load_config(config)
    if cfg.model.name == "local":
        check_safetensors_dir(Path(cfg.model.path))
    if cfg.task == "memorization":
        from lorasec.data.corpora import load_corpus

        corpus = load_corpus(cfg.corpus)  # type: ignore[attr-defined]
        typer.echo(f"ok: {cfg.label()} ({len(corpus.documents)} documents)")
        return
    splits = load_splits(cfg.data, cfg.seed)
    check_target(cfg.attack, splits.train.n_classes)
    typer.echo(f"ok: {cfg.label()} on {cfg.data.name} ({len(splits.train)} train rows)")


@app.command()
def models() -> None:
    """List the model names a config may use."""
    from lorasec.models import DESCRIPTIONS, MODELS

    for n in MODELS.names():
        typer.echo(f"{n:12} {DESCRIPTIONS.get(n, '')}")


@app.command()
def datasets() -> None:
    """List the dataset names a config may use."""
    from lorasec.data import DATASETS, DESCRIPTIONS

    for n in DATASETS.names():
        typer.echo(f"{n:16} {DESCRIPTIONS.get(n, '')}")


@app.command()
@one_line_errors
def show(store: StoreOpt = DEFAULT_STORE) -> None:
    """Print the tables of every result in the store."""
    from lorasec.store import open_store, results

    if not store.exists():
        raise InputError(f"--store: {str(store)!r} does not exist")
    con = open_store(store)
    _print_results(list(results(con)), store)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
