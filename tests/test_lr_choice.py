"""The tuned regime's lr is chosen on the clean validation split only (issue 31, part 2): changing every test label
(and so every test metric) leaves the choice as it was; changing validation scores moves it; attacked cells and lrs
with too few seeds take no part."""

from __future__ import annotations

import copy

from lorasec.report import task_sections
from lorasec.tasks import parse_config
from lorasec.tasks.classification.lr_choice import choice_rows, choose


def _row(lr: float, seed: int, val: float, test: float, attack: dict | None = None) -> dict:
    cfg = parse_config({"model": {"name": "tiny-bert"}, "data": {"name": "movie-reviews"},
                        "method": {"kind": "lora"}, "train": {"lr": lr, "steps": 5},
                        "attack": attack or {"kind": "none"}, "seed": seed}).model_dump(mode="json")
    labels = [0, 1, 1, 0]
    return {"key": f"{lr}-{seed}-{attack}", "config": cfg, "task": "classification",
            "metrics": {"clean": {"accuracy": test}, "val": {"accuracy": val}},
            "outputs": {"clean": {"ids": [0, 1, 2, 3], "labels": labels, "preds": labels, "probs": [[0.5, 0.5]] * 4}},
            "train": {"losses": [0.7, 0.6]}}


def _rows() -> list[dict]:
    rows = []
    for seed in (1, 2, 3):
        rows.append(_row(1e-4, seed, val=0.70 + 0.01 * seed, test=0.95))  # best on test, worse on validation
        rows.append(_row(5e-4, seed, val=0.80 + 0.01 * seed, test=0.60))
        rows.append(_row(1e-3, seed, val=0.75, test=0.99, attack=None))
        rows.append(_row(3e-3, seed, val=0.99, test=0.99, attack={"kind": "label_flip", "rate": 0.3}))  # attacked
    rows += [_row(2e-3, s, val=0.999, test=0.5) for s in (1, 2)]  # two seeds: not eligible
    return rows


def test_the_choice_reads_validation_not_test():
    rows = _rows()
    [choice] = choose(rows)
    assert [c.lr for c in choice.candidates] == [1e-4, 5e-4, 1e-3, 2e-3]  # the attacked lr is no candidate
    assert choice.chosen.lr == 5e-4
    # every test label flipped and every test metric changed: the same choice
    flipped = copy.deepcopy(rows)
    for r in flipped:
        out = r["outputs"]["clean"]
        out["labels"] = [1 - y for y in out["labels"]]
        r["metrics"]["clean"]["accuracy"] = 1 - r["metrics"]["clean"]["accuracy"]
    assert choose(flipped)[0].chosen.lr == 5e-4
    # the validation scores decide: lower 5e-4's and the choice moves to 1e-3
    moved = copy.deepcopy(rows)
    for r in moved:
        if r["config"]["train"]["lr"] == 5e-4:
            r["metrics"]["val"]["accuracy"] = 0.5
    assert choose(moved)[0].chosen.lr == 1e-3


def test_the_report_shows_candidates_scores_and_the_choice():
    table = choice_rows(_rows())
    chosen = [r for r in table if r["chosen"] == "chosen"]
    assert len(chosen) == 1 and chosen[0]["lr"] == 5e-4 and chosen[0]["n"] == 3
    assert abs(chosen[0]["val accuracy mean"] - 0.82) < 1e-12
    assert [r["chosen"] for r in table if r["lr"] == 2e-3] == ["n<3"]
    sections = task_sections("classification", _rows())
    sec = next(s for s in sections if s.title == "Classification: learning rates chosen on validation")
    assert "Test rows take no part" in sec.text and sec.tables["lr_choice"] == table


def _store(tmp_path, rows):
    from lorasec.store import open_store, save

    store = tmp_path / "lr.db"
    con = open_store(store)
    for r in rows:
        save(con, r | {"label": "x", "task": "classification"})
    con.close()
    return store


def _grid(store, **extra):
    return {"tuned": {"store": str(store)},
            "base": {"model": {"name": "tiny-bert"}, "data": {"name": "movie-reviews"}, "method": {"kind": "lora"},
                     "train": {"steps": 5}},
            "axes": {"attack": [{"kind": "none"}, {"kind": "prefix", "rate": 0.01}], "seed": 2}} | extra


def test_a_tuned_grid_takes_each_cells_lr_from_the_validation_choice(tmp_path):
    import pytest

    from lorasec.errors import InputError
    from lorasec.grid import expand

    rows = _rows()
    for r in rows:  # stored rows need distinct, real keys
        from lorasec.store import config_key
        r["key"] = config_key(parse_config(r["config"]))
    store = _store(tmp_path, rows)
    cells = expand(_grid(store), "g.yaml")
    assert len(cells) == 4 and {c.train.lr for c in cells} == {choose(rows)[0].chosen.lr} == {5e-4}
    assert {c.attack.kind for c in cells} == {"none", "prefix"}
    # validation moves the choice, and the grid follows it
    moved = copy.deepcopy(rows)
    for r in moved:
        if r["config"]["train"]["lr"] == 5e-4:
            r["metrics"]["val"]["accuracy"] = 0.5
    (tmp_path / "m").mkdir()
    assert {c.train.lr for c in expand(_grid(_store(tmp_path / "m", moved)), "g.yaml")} == {1e-3}
    other = _grid(store)
    other["base"]["train"] = {"steps": 7}  # a recipe the lr grid never ran: no choice for it
    with pytest.raises(InputError, match=r"g.yaml: cell .*tuned: .* no clean cells at two or more lrs .*"
                                         r"differs in train.steps"):
        expand(other, "g.yaml")
    both = _grid(store)
    both["base"]["train"] = {"steps": 5, "lr": 1e-3}
    with pytest.raises(InputError, match="train.lr is set, but the grid takes it from 'tuned'"):
        expand(both, "g.yaml")
    with pytest.raises(InputError, match=r"tuned.store: .* does not exist"):
        expand(_grid(tmp_path / "nope.db"), "g.yaml")
    with pytest.raises(InputError, match=r"tuned must be \{store: PATH\}"):
        expand(_grid(store) | {"tuned": "study.sqlite"}, "g.yaml")
    import subprocess
    import sys

    import yaml

    (tmp_path / "g.yaml").write_text(yaml.safe_dump(other))
    res = subprocess.run([sys.executable, "-m", "lorasec.cli", "sweep", str(tmp_path / "g.yaml"), "--store",
                          str(tmp_path / "out.db"), "--dry-run"], capture_output=True, text=True)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "tuned:" in res.stderr
    assert not (tmp_path / "out.db").exists()
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(_grid(store)))
    res = subprocess.run([sys.executable, "-m", "lorasec.cli", "sweep", str(tmp_path / "g.yaml"), "--store",
                          str(tmp_path / "out.db"), "--dry-run"], capture_output=True, text=True)
    assert res.returncode == 0 and "4 cells" in res.stdout, res.stderr
