"""Write a report: tables as CSV, figures as png + svg, one Markdown file and one self-contained HTML page.

The page has no script, loads nothing (figures are data: URIs, the style is inline and pinned by its hash in a
Content-Security-Policy), and every string from the store goes through Jinja2's autoescape: a poisoned text
like `<script>...</script>` is shown as text.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from lorasec.tasks.base import Section

HTML_ROWS = 200  # rows of one table shown in the page; the CSV beside it has them all
MD_ROWS = 60
KEY_COLUMNS = ("cells",)  # columns holding lists of cell keys: `lorasec show KEY` prints one

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1rem 1.5rem 3rem; color: #1a1a1a; background: #fff; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
h3 { font-size: 1rem; margin-top: 1.4rem; }
nav ul { columns: 2; } code, .key { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .85em; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: .82rem; margin: .4rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: .25rem .45rem; vertical-align: top; text-align: left; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { max-width: 32rem; white-space: pre-wrap; word-break: break-word; }
tr:nth-child(even) td { background: #fafafa; }
.holds { color: #006d4f; font-weight: 600; } .fails { color: #b34700; font-weight: 600; }
figure { margin: 1rem 0 1.6rem; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .note { color: #555; font-size: .85rem; }
details summary { cursor: pointer; color: #0b5394; }
"""
CSP = ("default-src 'none'; img-src data:; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'")


def slug(text: str) -> str:
    """A file- and anchor-safe name: lowercase letters, digits, dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "x"


def fmt(v: Any) -> str:
    """How a table value reads: 3 decimals for rates and differences, fewer as numbers grow."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        a = abs(v)
        if v != v:
            return "nan"
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 10:
            return f"{v:.2f}"
        if 0 < a < 0.0005:
            return f"{v:.1e}"
        return f"{v:.3f}"
    if isinstance(v, list | tuple):
        return ", ".join(fmt(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return str(v)


def csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, list | tuple):
        return " ".join(str(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return v


def columns(rows: list[dict]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def write_csv(path: Path, rows: list[dict]) -> None:
    cols = columns(rows)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([csv_value(r.get(c)) for c in cols])


# --- markdown -----------------------------------------------------------------------------------------------


def md_cell(v: Any, col: str) -> str:
    text = " ".join(str(k)[:12] for k in v) if col in KEY_COLUMNS and isinstance(v, list) else fmt(v)
    # a table cell is one line; `|` would end it and raw HTML would render on some viewers
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
            .replace("\r", " ").replace("\n", " "))


def md_table(rows: list[dict], csv_name: str) -> str:
    if not rows:
        return "_(no rows)_\n"
    cols = columns(rows)
    lines = ["| " + " | ".join(md_cell(c, "") for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(md_cell(r.get(c), c) for c in cols) + " |" for r in rows[:MD_ROWS]]
    if len(rows) > MD_ROWS:
        lines.append(f"\n_first {MD_ROWS} of {len(rows)} rows: all in `{csv_name}`_")
    return "\n".join(lines) + "\n"


# --- HTML ---------------------------------------------------------------------------------------------------

_INLINE = [(re.compile(r"`([^`]+)`"), r"<code>\1</code>"), (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
           (re.compile(r"(?<![*\w])\*([^*]+)\*(?![*\w])"), r"<em>\1</em>")]


def md_to_html(text: str) -> Markup:
    """The small Markdown a section's text uses (paragraphs, `- ` lists, `code`, **bold**, *em*), escaped first:
    the only tags in the output are the ones added here."""
    out = []
    for block in re.split(r"\n\s*\n", text.strip()):
        html = str(escape(block))
        for pat, rep in _INLINE:
            html = pat.sub(rep, html)
        lines = html.splitlines()
        if lines and all(line.lstrip().startswith("- ") for line in lines):
            out.append("<ul>" + "".join(f"<li>{line.lstrip()[2:]}</li>" for line in lines) + "</ul>")
        elif html:
            out.append(f"<p>{html}</p>")
    return Markup("\n".join(out))  # noqa: S704  (built from escaped text and fixed tags only)


@dataclass
class HtmlTable:
    name: str
    csv: str
    columns: list[str]
    rows: list[list[dict]]  # per row, per column: {"text", "cls", "links"}
    total: int


@dataclass
class HtmlFigure:
    name: str
    uri: str
    png: str
    svg: str
    width: int
    height: int


@dataclass
class HtmlSection:
    title: str
    anchor: str
    text: Markup
    tables: list[HtmlTable] = field(default_factory=list)
    figures: list[HtmlFigure] = field(default_factory=list)


def html_cell(v: Any, col: str) -> dict:
    if col in KEY_COLUMNS and isinstance(v, list):
        return {"text": f"{len(v)} cell{'s' * (len(v) != 1)}", "cls": "", "links": [str(k) for k in v]}
    text = fmt(v)
    cls = "num" if isinstance(v, int | float) and not isinstance(v, bool) else "text"
    if col == "claim" and text in ("holds", "fails"):
        cls = text
    return {"text": text, "cls": cls, "links": None}


# --- writing ------------------------------------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int]:
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def write(sections: list[Section], out: Path, formats: tuple[str, ...], title: str, subtitle: str) -> Path:
    """Write figures/, tables/, report.md and index.html (as `formats` ask) under `out`; the main file's path."""
    out.mkdir(parents=True, exist_ok=True)
    fig_dir, tab_dir = out / "figures", out / "tables"
    for d, exts in ((fig_dir, (".png", ".svg")), (tab_dir, (".csv",))):
        d.mkdir(exist_ok=True)
        for old in d.iterdir():  # figures of an earlier report of another store would mislead
            if old.suffix in exts and old.is_file():
                old.unlink()
    html_sections, md = [], [f"# {title}\n", f"{subtitle}\n"]
    md.append("\n".join(f"- [{s.title}](#{slug(s.title)})" for s in sections) + "\n")
    used: set[str] = set()
    for s in sections:
        base = slug(s.title)
        hs = HtmlSection(s.title, base, md_to_html(s.text))
        md.append(f"## {s.title}\n\n{s.text.strip()}\n" if s.text.strip() else f"## {s.title}\n")
        for name, fig in s.figures.items():
            stem = _unique(f"{base}_{slug(name)}", used)
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            png = buf.getvalue()
            (fig_dir / f"{stem}.png").write_bytes(png)
            fig.savefig(fig_dir / f"{stem}.svg", format="svg", metadata={"Date": None})
            w, h = _png_size(png)
            hs.figures.append(HtmlFigure(name, "data:image/png;base64," + base64.b64encode(png).decode(),
                                         f"figures/{stem}.png", f"figures/{stem}.svg", w, h))
            md.append(f"![{name}](figures/{stem}.png)\n\n_{name}: [png](figures/{stem}.png), "
                      f"[svg](figures/{stem}.svg)_\n")
        for name, rows in s.tables.items():
            stem = _unique(f"{base}_{slug(name)}", used)
            write_csv(tab_dir / f"{stem}.csv", rows)
            cols = columns(rows)
            hs.tables.append(HtmlTable(name, f"tables/{stem}.csv", cols,
                                       [[html_cell(r.get(c), c) for c in cols] for r in rows[:HTML_ROWS]], len(rows)))
            md.append(f"### {name}\n\n{md_table(rows, f'tables/{stem}.csv')}\n_CSV: `tables/{stem}.csv`_\n")
        html_sections.append(hs)
    main = out
    if "md" in formats:
        main = out / "report.md"
        main.write_text("\n".join(md), encoding="utf-8")
    if "html" in formats:
        main = out / "index.html"
        main.write_text(page(html_sections, title, subtitle), encoding="utf-8")
    return main


def _unique(stem: str, used: set[str]) -> str:
    s, i = stem, 2
    while s in used:
        s, i = f"{stem}-{i}", i + 1
    used.add(s)
    return s


def page(sections: list[HtmlSection], title: str, subtitle: str) -> str:
    env = Environment(loader=FileSystemLoader(Path(__file__).parent), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    style_hash = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    return env.get_template("page.html.j2").render(
        sections=sections, title=title, subtitle=subtitle, style=Markup(STYLE),  # noqa: S704  (a constant)
        csp=CSP.format(hash=style_hash), html_rows=HTML_ROWS)
