"""Bad input: one line on stderr naming the field, exit code 2, nothing written to the store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lorasec.cli import app
from lorasec.store import open_store, results

runner = CliRunner()


def write_cfg(tmp: Path, raw: dict) -> Path:
    p = tmp / "exp.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def bad_run(tmp: Path, raw: dict) -> str:
    store = tmp / "results.db"
    res = runner.invoke(app, ["run", str(write_cfg(tmp, raw)), "--store", str(store)])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert not store.exists()
    return lines[0]


def with_(base: dict, **parts: dict) -> dict:
    out = dict(base)
    for k, v in parts.items():
        out[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return out


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"method": {"kind": "lorra"}}, "method.kind: unknown method 'lorra'. Did you mean 'lora'?"),
        ({"attack": {"kind": "badnet", "rate": 0.1}}, "attack.kind: unknown attack 'badnet'"),
        ({"model": {"name": "bert-huge"}}, "model.name: unknown model 'bert-huge'"),
        ({"data": {"name": "sst3"}}, "data.name: unknown dataset 'sst3'"),
        ({"method": {"kind": "lora", "rank": 0}}, "method.rank: Input should be greater than 0"),
        ({"method": {"kind": "lora", "rank": -4}}, "method.rank"),
        ({"attack": {"kind": "label_flip", "rate": 1.5}}, "attack.rate: Input should be less than or equal to 1"),
        ({"attack": {"kind": "prefix", "rate": -0.1}}, "attack.rate"),
        ({"attack": {"kind": "prefix", "rate": 0.1, "trigger": ""}}, "attack.trigger"),
        ({"attack": {"kind": "multi_trigger", "rate": 0.1, "triggers": []}}, "attack.triggers"),
        ({"attack": {"kind": "prefix", "rate": 0.1, "target": 7}}, "attack.target: 7 is out of range"),
        ({"train": {"steps": 5, "batch_size": 8, "max_length": 48, "lr": 0}}, "train.lr"),
        ({"model": {"name": "local", "path": "/nonexistent/model"}}, "model.path"),
        ({"seed": -1}, "seed"),
        ({"epochs_typo": 3}, "epochs_typo: Extra inputs are not permitted"),
    ],
)
def test_bad_config_values_exit_2_with_one_line(tmp_path, tiny_cfg, change, expected):
    raw = {**tiny_cfg, **change}
    line = bad_run(tmp_path, raw)
    assert line.startswith("lorasec: ")
    assert expected in line


def test_bad_data_files(tmp_path, tiny_cfg):
    base = {**tiny_cfg, "attack": {"kind": "none"}}
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    assert "empty" in bad_run(tmp_path, base | {"data": {"name": "csv", "path": str(empty)}})

    cols = tmp_path / "cols.csv"
    cols.write_text("sentence,label\nhello,0\nworld,1\n")
    line = bad_run(tmp_path, base | {"data": {"name": "csv", "path": str(cols)}})
    assert "data.text_column: column 'text' not found" in line
    line = bad_run(tmp_path, base | {"data": {"name": "csv", "path": str(cols), "text_column": "sentence",
                                              "label_column": "y"}})
    assert "data.label_column" in line

    rng = tmp_path / "range.jsonl"
    rng.write_text("\n".join(json.dumps({"text": f"t{i}", "label": lbl}) for i, lbl in enumerate([0, 1, 3, -1])))
    assert "out of range" in bad_run(tmp_path, base | {"data": {"name": "jsonl", "path": str(rng)}})

    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9 ok,0\nbad,1\n".encode("latin-1"))
    assert "not UTF-8" in bad_run(tmp_path, base | {"data": {"name": "csv", "path": str(latin)}})

    missing = tmp_path / "nope.csv"
    assert "does not exist" in bad_run(tmp_path, base | {"data": {"name": "csv", "path": str(missing)}})


def test_pickle_checkpoint_is_refused(tmp_path, tiny_cfg):
    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "pytorch_model.bin").write_bytes(b"not loaded")
    line = bad_run(tmp_path, {**tiny_cfg, "model": {"name": "local", "path": str(d)}})
    assert "pickle" in line and "safetensors" in line
    line = bad_run(tmp_path, {**tiny_cfg, "model": {"name": "local", "path": str(d / "pytorch_model.bin")}})
    assert "pickle" in line


def test_yaml_that_is_not_a_mapping(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("- just\n- a list\n")
    res = runner.invoke(app, ["run", str(p), "--store", str(tmp_path / "r.db")])
    assert res.exit_code == 2 and "expected a mapping" in res.stderr


def test_installed_entry_point_run_and_bad_input(tmp_path, tiny_cfg):
    """The real `lorasec` console script: a good run stores its cells; a bad one exits 2 and stores nothing."""
    exe = Path(sys.executable).parent / "lorasec"
    store = tmp_path / "r.db"
    good = subprocess.run([exe, "run", str(write_cfg(tmp_path, tiny_cfg)), "--store", str(store)],
                          capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert "results stored in" in good.stdout and "ASR" in good.stdout
    assert len(list(results(open_store(store)))) == 2  # the cell and its clean baseline

    bad_store = tmp_path / "bad.db"
    bad = subprocess.run([exe, "run", str(write_cfg(tmp_path, {**tiny_cfg, "method": {"kind": "lora", "rank": 0}})),
                          "--store", str(bad_store)], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "method.rank" in bad.stderr
    assert not bad_store.exists()


def test_listing_commands_read_the_registries():
    from lorasec.data import DATASETS
    from lorasec.models.classifier import MODELS

    out = runner.invoke(app, ["models"]).stdout
    assert all(n in out for n in MODELS.names())
    out = runner.invoke(app, ["datasets"]).stdout
    assert all(n in out for n in DATASETS.names())


def test_validate_checks_without_training(tmp_path, tiny_cfg):
    res = runner.invoke(app, ["validate", str(write_cfg(tmp_path, tiny_cfg))])
    assert res.exit_code == 0 and res.stdout.startswith("ok:")
    res = runner.invoke(app, ["validate", str(write_cfg(tmp_path, {**tiny_cfg, "attack": {"kind": "prefix",
                                                                                          "rate": 0.1, "target": 9}}))])
    assert res.exit_code == 2


def lorasec_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).parent / "lorasec")
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd)


def one_line_exit_2(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lorasec: "), res.stderr
    assert all(n in lines[0] for n in needles), lines[0]


def test_every_verb_through_the_installed_command(tmp_path, tiny_cfg):
    store = tmp_path / "g.db"
    grid = tmp_path / "grid.yaml"
    base = {**tiny_cfg, "attack": {"kind": "none"}, "train": {**tiny_cfg["train"], "steps": 2}}
    grid.write_text(yaml.safe_dump({"base": base, "axes": {"seed": [1, 2]}}))
    res = lorasec_cli("grid", str(grid), "--store", str(store))
    assert res.returncode == 0, res.stderr
    assert "seed" in res.stdout and "results stored in" in res.stdout
    assert sorted(r["config"]["seed"] for r in results(open_store(store))) == [1, 2]

    shown = lorasec_cli("show", "--store", str(store))
    assert shown.returncode == 0 and "lora r=4" in shown.stdout
    table_lines = [ln for ln in shown.stdout.splitlines() if "lora r=4" in ln]
    assert len(table_lines) == 2 and {ln.split("│")[3].strip() for ln in table_lines} == {"1", "2"}
    again = lorasec_cli("grid", str(grid), "--store", str(store))  # everything reused
    assert again.returncode == 0 and "2 cells: 0 computed here, 2 already stored" in again.stdout

    ok = lorasec_cli("validate", str(write_cfg(tmp_path, tiny_cfg)))
    assert ok.returncode == 0 and ok.stdout.startswith("ok: lora(r=4) / prefix(0.05) on tweets (")
    for verb in ("models", "datasets"):
        listed = lorasec_cli(verb)
        assert listed.returncode == 0 and "memorization" in listed.stdout and "classification" in listed.stdout


def test_bad_invocations_are_one_line_exit_2_and_write_nothing(tmp_path, tiny_cfg):
    missing = tmp_path / "missing.db"
    one_line_exit_2(lorasec_cli("show", "--store", str(missing)), "--store", "does not exist")
    assert not missing.exists()
    one_line_exit_2(lorasec_cli("demo", "nope", "--store", str(missing)), "unknown demo 'nope'", "memorization")
    assert not missing.exists()
    bad_grid = tmp_path / "bad_grid.yaml"
    bad_grid.write_text(yaml.safe_dump({"base": tiny_cfg, "axes": {"seed": []}}))
    one_line_exit_2(lorasec_cli("grid", str(bad_grid), "--store", str(missing)), "axes.seed", "non-empty list")
    bad_cell = tmp_path / "bad_cell.yaml"
    bad_cell.write_text(yaml.safe_dump({"base": tiny_cfg, "axes": {"method": [{"kind": "lora"}, {"kind": "lorra"}]}}))
    one_line_exit_2(lorasec_cli("grid", str(bad_cell), "--store", str(missing)), "method.kind", "Did you mean 'lora'")
    one_line_exit_2(lorasec_cli("validate", str(tmp_path / "nope.yaml")), "does not exist")
    one_line_exit_2(lorasec_cli("run", str(write_cfg(tmp_path, {**tiny_cfg, "task": "nosuchtask"})), "--store",
                                str(missing)), "task: unknown task 'nosuchtask'", "classification, memorization")
    assert not missing.exists()


# ---- one way to name the store, grids validated, show reads one row, options refused before anything ----

def test_store_is_an_option_everywhere_with_report_keeping_its_positional_alias(tmp_path, tiny_cfg):
    store = tmp_path / "r.db"
    base = {**tiny_cfg, "attack": {"kind": "none"}, "train": {**tiny_cfg["train"], "steps": 2}}
    assert runner.invoke(app, ["run", str(write_cfg(tmp_path, base)), "--store", str(store)]).exit_code == 0
    by_option = runner.invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "a"), "--format", "md"])
    by_argument = runner.invoke(app, ["report", str(store), "--out", str(tmp_path / "b"), "--format", "md"])
    assert by_option.exit_code == 0 and by_argument.exit_code == 0, by_option.output + by_argument.output

    def body(d: str) -> list[str]:  # the page but for its time stamp
        return [ln for ln in (tmp_path / d / "report.md").read_text().splitlines() if "Generated" not in ln]
    assert body("a") == body("b")
    twice = runner.invoke(app, ["report", str(store), "--store", str(tmp_path / "other.db"), "--out",
                                str(tmp_path / "c")])
    assert twice.exit_code == 2 and "--store: given twice" in twice.stderr and not (tmp_path / "c").exists()


def test_report_out_that_is_a_file_is_one_line_exit_2_and_nothing_written(tmp_path, tiny_cfg):
    store = tmp_path / "r.db"
    open_store(store).close()
    existing = tmp_path / "report.txt"
    existing.write_text("mine")
    for out, needle in ((existing, "is a file, not a directory"), (existing / "sub", "cannot be made")):
        res = runner.invoke(app, ["report", "--store", str(store), "--out", str(out)])
        assert res.exit_code == 2 and res.stderr.strip().startswith(f"lorasec: --out: {str(out)!r}"), res.output
        assert needle in res.stderr
    assert existing.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["r.db", "report.txt"]


def test_validate_checks_every_cell_of_a_grid_and_names_the_bad_one(tmp_path, tiny_cfg):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"base": tiny_cfg, "axes": {"seed": 2, "attack.target": [1]}}))
    ok = runner.invoke(app, ["validate", str(grid)])
    assert ok.exit_code == 0 and ok.stdout.strip() == "ok: 2 cells of grid.yaml checked", ok.output
    # the second cell's target does not exist in the data: only a real check (labels of the data) finds it
    grid.write_text(yaml.safe_dump({"base": tiny_cfg, "axes": {"attack.target": [1, 9]}}))
    bad = runner.invoke(app, ["validate", str(grid)])
    assert bad.exit_code == 2 and bad.stderr.startswith("lorasec: cell 2 of 2 (lora(r=4) / prefix(0.05)"), bad.output
    assert "attack.target" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert runner.invoke(app, ["validate", str(grid), "--force"]).exit_code == 2  # an option that did nothing: gone


def test_show_key_reads_only_the_rows_with_that_prefix(tmp_path):
    from lorasec.store import find, save, save_failure

    store = tmp_path / "r.db"
    con = open_store(store)
    keys = ["ab12" + "0" * 60, "ab13" + "0" * 60, "cd00" + "0" * 60]
    for k in keys[:2]:
        save(con, {"key": k, "label": k[:4], "config": {"task": "classification", "seed": 1}})
    save_failure(con, keys[2], "classification", "x", {"seed": 1}, "boom")
    assert [h["key"] for h in find(con, "ab12")] == [keys[0]]
    assert [h["key"] for h in find(con, "ab1")] == keys[:2]  # two: ambiguous
    assert find(con, "ab14") == [] and find(con, "abz") == []
    assert find(con, "cd")[0]["error"] == "boom"
    assert [h["key"] for h in find(con, keys[1])] == [keys[1]]  # a whole key
    con.close()
    res = runner.invoke(app, ["show", "ab1", "--store", str(store)])
    assert res.exit_code == 2 and "matches more than one cell" in res.stderr
    res = runner.invoke(app, ["show", "AB'", "--store", str(store)])
    assert res.exit_code == 2 and "is not a key or its prefix" in res.stderr
    res = runner.invoke(app, ["show", "cd", "--store", str(store)])
    assert res.exit_code == 0 and '"error": "boom"' in res.stdout


@pytest.mark.parametrize(("flags", "fragment"), [
    (("--executor", "ray", "--gpus", "-1"), "--gpus: must be >= 0 (GPUs each Ray task asks for), got -1.0"),
    (("--gpus", "1"), "--gpus: only the ray executor places cells on GPUs"),
])
def test_a_bad_gpu_option_is_one_line_exit_2_and_no_store(tmp_path, tiny_cfg, flags, fragment):
    store = tmp_path / "r.db"
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"base": tiny_cfg, "axes": {"seed": 2}}))
    one_line_exit_2(lorasec_cli("sweep", str(grid), "--store", str(store), *flags), fragment)
    assert not store.exists()


def _run_piped_and_on_a_terminal(tmp_path: Path, cfg: Path) -> tuple[bytes, bytes]:
    """`lorasec run` twice on fresh stores: stderr to a pipe, then to a pseudo-terminal. Both stderr bytes."""
    import os
    import pty

    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")}
    exe = str(Path(sys.executable).parent / "lorasec")
    piped = subprocess.run([exe, "run", str(cfg), "--store", str(tmp_path / "a.db")], capture_output=True, env=env)
    assert piped.returncode == 0, piped.stderr
    leader, follower = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 0x0 terminal hides tqdm
    proc = subprocess.Popen([exe, "run", str(cfg), "--store", str(tmp_path / "b.db")], stdout=subprocess.DEVNULL,
                            stderr=follower, env=env)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(timeout=300) == 0
    os.close(leader)
    return piped.stderr, seen


def test_a_piped_log_has_no_bar_redraws_and_a_terminal_still_sees_the_bars(tmp_path, tiny_cfg):
    cfg = write_cfg(tmp_path, {**tiny_cfg, "attack": {"kind": "none"}, "train": {**tiny_cfg["train"], "steps": 30}})
    piped, terminal = _run_piped_and_on_a_terminal(tmp_path, cfg)
    assert b"\r" not in piped and b"it/s" not in piped and b"step/s" not in piped and b"Loading weights" not in piped
    assert b"train" in terminal and b"\r" in terminal  # tqdm's live bar, redrawn in place
