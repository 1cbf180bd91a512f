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


@app.command()
@one_line_errors
def run(config: Annotated[Path, typer.Argument(help="experiment YAML")], store: StoreOpt = DEFAULT_STORE,
        force: Annotated[bool, typer.Option(help="rerun even if the store holds this config")] = False) -> None:
    """Run one experiment (and its clean baseline) and store the result."""
    from lorasec.audit import audit
    from lorasec.tasks import load_config

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
    """Check a config, its names, its data and model path without training."""
    from lorasec.tasks import load_config, task_of

    cfg = load_config(config)
    typer.echo(f"ok: {task_of(cfg).check(cfg)}")


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
