"""Rendering the report: Markdown building blocks, figures, and one Markdown -> HTML path.

A section is a plain dict `{"title": str, "markdown": str, "figures": {"name.png": Figure}}`
(what every section function returns, here or in another module). summary.md is the sections'
Markdown; report.html is the same Markdown rendered by markdown-it (raw HTML off) with the
figures embedded as base64 PNGs, so the two can never disagree.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

CSS = (
    "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
    "table{border-collapse:collapse;margin:0.5em 0;font-size:0.85em}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    "img{max-width:100%}"
)


def fmt(v: Any, p: int = 4) -> str:
    """A number as text: 4 significant figures, an em dash for missing values."""
    if v is None or (isinstance(v, (float, np.floating)) and not np.isfinite(v)):
        return "—"
    if isinstance(v, (int, np.integer, bool, np.bool_)):
        return str(v)
    if isinstance(v, (float, np.floating)):
        return f"{v:.{p}g}"
    return str(v)


def esc(text: Any) -> str:
    """Text safe inside Markdown: `~` is not strikethrough, `|` does not split a table cell."""
    return str(text).replace("\\", "\\\\").replace("~", "\\~").replace("|", "\\|")


def md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(esc(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(esc(fmt(v)) for v in row) + " |")
    return "\n".join(lines)


def md_list(items) -> str:
    return "\n".join(f"- {esc(i)}" for i in items)


def fig_ref(name: str, caption: str) -> str:
    return f"![{esc(caption)}]({name})"


def section(title: str, parts: list[str], figures: dict | None = None) -> dict:
    """A section dict from Markdown parts (already escaped) and {name.png: Figure}."""
    return {"title": title, "markdown": "\n\n".join(p for p in parts if p), "figures": figures or {}}


def one_line(title: str, text: str) -> dict:
    """A section that has nothing to draw: one line saying why (no empty axes)."""
    return section(title, [esc(text)])


# ----------------------------------------------------------------------------- ticks
def tick_label(v: float, _pos=None) -> str:
    """Log-axis ticks as numbers: 0.5, 3, 250, 1e10, 3e12 (never "3.6 × 10^0")."""
    if not (v > 0 and math.isfinite(v)):
        return ""
    if 1e-2 <= v < 1e4:
        return f"{v:.3g}"
    mant, exp = f"{v:.0e}".split("e")
    return f"{mant}e{int(exp)}"


def _format_axis(axis, lo: float, hi: float) -> None:
    if axis.get_scale() != "log":
        return
    axis.set_major_formatter(FuncFormatter(tick_label))
    narrow = lo > 0 and hi / lo < 10  # under a decade: label the minor ticks too
    axis.set_minor_formatter(FuncFormatter(tick_label) if narrow else NullFormatter())


def number_ticks(fig) -> None:
    for ax in fig.axes + [c for a in fig.axes for c in getattr(a, "child_axes", [])]:
        _format_axis(ax.xaxis, *sorted(ax.get_xlim()))
        _format_axis(ax.yaxis, *sorted(ax.get_ylim()))


def png(fig) -> bytes:
    number_ticks(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


# ----------------------------------------------------------------------------- documents
def _markdown_to_html(text: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def write_documents(out: Path, title: str, sections: list[dict]) -> tuple[Path, Path, dict]:
    """Write summary.md, report.html and the PNGs; returns (html, md, {stem: png path})."""
    blocks, images, paths = [f"# {esc(title)}"], {}, {}
    for sec in sections:
        md = f"## {esc(sec['title'])}\n\n{sec.get('markdown', '')}"
        for name, fig in (sec.get("figures") or {}).items():
            try:
                data = png(fig)
            except Exception as exc:  # noqa: BLE001 - a figure that cannot be drawn is named, not fatal
                plt.close(fig)
                md += "\n\n" + esc(f"Figure {name} could not be drawn: {type(exc).__name__}: {exc}")
                continue
            (out / name).write_bytes(data)
            images[name] = base64.b64encode(data).decode()
            paths[Path(name).stem] = out / name
            if f"]({name})" not in md:  # a figure the section did not place: append it
                md += "\n\n" + fig_ref(name, Path(name).stem)
        blocks.append(md)
    text = "\n\n".join(blocks) + "\n"
    mp = out / "summary.md"
    mp.write_text(text, encoding="utf-8")
    body = _markdown_to_html(text)
    for name, b64 in images.items():
        body = body.replace(f'src="{name}"', f'src="data:image/png;base64,{b64}"')
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{CSS}</style></head><body>{body}</body></html>"
    )
    hp = out / "report.html"
    hp.write_text(page, encoding="utf-8")
    return hp, mp, paths
