"""The evaluation report as one self-contained HTML page, and a PNG copy of each of its figures.

A page is a list of sections, each of HTML fragments, figures and notes (what a figure leaves out and
why), under a table of contents. The HTML embeds the figures as base64 PNG and loads nothing else, so it
opens offline; its Content-Security-Policy makes the browser refuse any other load.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class FigureImage:
    name: str  # file name stem: figures/NAME.png
    caption: str
    png: bytes


@dataclass(frozen=True)
class Note:
    text: str  # why something is not shown: systems a figure does not apply to


@dataclass
class Section:
    anchor: str
    title: str
    parts: list[str | FigureImage | Note] = field(default_factory=list)  # HTML fragments, figures, notes


def html_table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric_from: int = 1) -> str:
    """A plain table; cells are escaped, numbers printed with 3 decimals and right-aligned."""

    def cell(value: Any, tag: str, index: int) -> str:
        if isinstance(value, float):
            text = "–" if math.isnan(value) else f"{value:.3f}"
        else:
            text = html.escape(str(value))
        css = ' class="num"' if index >= numeric_from and tag == "td" else ""
        return f"<{tag}{css}>{text}</{tag}>"

    head = "".join(cell(h, "th", i) for i, h in enumerate(header))
    body = "\n".join("<tr>" + "".join(cell(v, "td", i) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; } th { background: #f0f0f0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #555; margin-top: .3em; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .4em .8em; margin: .6em 0; }
nav ul { columns: 2; } code { background: #f4f4f4; padding: 0 .2em; }
"""


# Everything the page shows is inline: the policy makes the browser refuse any other load.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def render_html(title: str, intro: str, sections: Sequence[Section]) -> str:
    toc = "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections)
    body = []
    for section in sections:
        body.append(f'<section id="{section.anchor}"><h2>{html.escape(section.title)}</h2>')
        for part in section.parts:
            if isinstance(part, FigureImage):
                data = base64.b64encode(part.png).decode("ascii")
                body.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(part.caption)}">'
                    f"<figcaption>{html.escape(part.caption)} <code>figures/{part.name}.png</code></figcaption>"
                    "</figure>"
                )
            elif isinstance(part, Note):
                body.append(f'<p class="note">{html.escape(part.text)}</p>')
            else:
                body.append(part)
        body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>"
        f"<h1>{html.escape(title)}</h1>{intro}<nav><ul>{toc}</ul></nav>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(out_dir: Path, title: str, intro: str, sections: Sequence[Section]) -> Path:
    """``out_dir/report.html`` and a PNG copy of each figure in ``out_dir/figures`` (older PNGs removed,
    so the folder holds exactly this report's figures)."""
    figures_dir = Path(out_dir) / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    for stale in figures_dir.glob("*.png"):
        stale.unlink()
    for section in sections:
        for part in section.parts:
            if isinstance(part, FigureImage):
                (figures_dir / f"{part.name}.png").write_bytes(part.png)
    path = Path(out_dir) / "report.html"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_html(title, intro, sections), encoding="utf-8")
    tmp.replace(path)
    return path
