"""One report structure, two renderings: self-contained HTML (images inlined as base64) and Markdown.

A report is a title and a list of sections; a section holds blocks: Text, Table (a DataFrame), Pre
(verbatim text such as a config) and Image (a PNG file with a caption).
"""
from __future__ import annotations

import base64
import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Text:
    text: str


@dataclass
class Table:
    frame: pd.DataFrame
    caption: str = ""


@dataclass
class Pre:
    text: str
    caption: str = ""


@dataclass
class Image:
    path: Path
    caption: str


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)
    folded: bool = False  # HTML and Markdown: closed <details> the reader opens (configuration, environment)


def format_cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } details > summary { cursor: pointer; } details > summary > h2 { display: inline; } h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: .82em; margin: .6em 0 1.2em; }
th, td { border: 1px solid #ddd; padding: .25em .5em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
tr.ours td { background: #fff1f0; font-weight: 600; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .8em; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption, .caption { font-size: .85em; color: #555; }
"""


def html_table(table: Table) -> str:
    frame = table.frame
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        ours = "origin" in frame.columns and str(row.get("origin", "")).startswith("varscale")
        cells = "".join(f"<td>{html.escape(format_cell(v))}</td>" for v in row.to_numpy())
        rows.append(f'<tr class="ours">{cells}</tr>' if ours else f"<tr>{cells}</tr>")
    caption = f'<p class="caption">{html.escape(table.caption)}</p>' if table.caption else ""
    return f"{caption}<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def md_table(table: Table) -> str:
    frame = table.frame

    def cell(value) -> str:
        return format_cell(value).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |",
             "|" + "|".join("---" for _ in frame.columns) + "|"]
    for _, row in frame.iterrows():
        ours = "origin" in frame.columns and str(row.get("origin", "")).startswith("varscale")
        cells = [cell(v) for v in row.to_numpy()]
        lines.append("| " + " | ".join(f"**{c}**" if ours and c else c for c in cells) + " |")
    caption = f"{table.caption}\n\n" if table.caption else ""
    return caption + "\n".join(lines)


def render_html(title: str, sections: list[Section]) -> str:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for section in sections:
        heading = f"<h2>{html.escape(section.title)}</h2>"
        parts.append(f"<details><summary>{heading}</summary>" if section.folded else heading)
        for block in section.blocks:
            if isinstance(block, Text):
                parts.append(f"<p>{html.escape(block.text)}</p>")
            elif isinstance(block, Table):
                parts.append(html_table(block))
            elif isinstance(block, Pre):
                caption = f'<p class="caption">{html.escape(block.caption)}</p>' if block.caption else ""
                parts.append(f"{caption}<pre>{html.escape(block.text)}</pre>")
            elif isinstance(block, Image):
                data = base64.b64encode(Path(block.path).read_bytes()).decode()
                parts.append(f"<figure><img alt='{html.escape(block.caption)}' src='data:image/png;base64,{data}'>"
                             f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
        if section.folded:
            parts.append("</details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(title: str, sections: list[Section], relative_to: Path) -> str:
    parts = [f"# {title}"]
    for section in sections:
        parts.append(f"<details><summary><b>{section.title}</b></summary>" if section.folded
                     else f"## {section.title}")
        for block in section.blocks:
            if isinstance(block, Text):
                parts.append(block.text)
            elif isinstance(block, Table):
                parts.append(md_table(block))
            elif isinstance(block, Pre):
                parts.append((f"{block.caption}\n\n" if block.caption else "") + f"```\n{block.text}\n```")
            elif isinstance(block, Image):
                link = Path(os.path.relpath(block.path, relative_to)).as_posix()
                parts.append(f"![{block.caption}]({link})\n\n*{block.caption}*")
        if section.folded:
            parts.append("</details>")
    return "\n\n".join(parts) + "\n"
