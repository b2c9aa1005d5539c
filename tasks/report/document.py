"""A report's content, built once, written out as one self-contained HTML page or as Markdown.

Sections hold blocks (paragraphs, facts, tables, bullet lists, charts). Text may quote names
`like this`: code in both formats. A chart is inline SVG in HTML; Markdown shows its table instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import escape

CODE = re.compile(r"`([^`]+)`")
SHORT_CELL = 14  # characters: a time, a duration, a count; such a cell is not wrapped


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Facts:
    pairs: list[tuple[str, str]]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]
    row_classes: list[str] = field(default_factory=list)  # e.g. "failed": HTML colours the row


@dataclass(frozen=True)
class Bullets:
    items: list[str]
    css_class: str = ""


@dataclass(frozen=True)
class Chart:
    svg: str
    caption: str = ""
    text: Table | None = None  # what Markdown shows instead of the picture


Block = Paragraph | Facts | Table | Bullets | Chart


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    blocks: list[Block]


@dataclass(frozen=True)
class Document:
    title: str
    subtitle: str
    verdict: str  # met, missed, failed, unmeasured: the badge's colour
    verdict_text: str
    sections: list[Section]
    footer: str = ""


# --- HTML ---------------------------------------------------------------------------------------

CSS = """
:root { --ink: #111827; --muted: #6b7280; --line: #e5e7eb; --good: #2e8b57; --bad: #c93c3c; --warn: #b7791f; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #f6f7f9;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
header, main, footer { max-width: 1040px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 28px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
.subtitle { color: var(--muted); margin: 0 0 12px; }
.verdict { display: inline-block; padding: 3px 12px; border-radius: 999px; font-weight: 600; color: white; }
.verdict-met { background: var(--good); } .verdict-missed, .verdict-failed { background: var(--bad); }
.verdict-unmeasured { background: var(--muted); }
nav { max-width: 1040px; margin: 12px auto 0; padding: 0 24px; font-size: 13px; }
nav a { color: var(--muted); margin-right: 12px; text-decoration: none; white-space: nowrap; }
nav a:hover { color: var(--ink); text-decoration: underline; }
section { background: white; border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px; margin: 16px 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 0; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin: 4px 0 8px; }
th { text-align: left; color: var(--muted); font-weight: 600; border-bottom: 2px solid var(--line); padding: 5px 8px; }
td { border-bottom: 1px solid var(--line); padding: 5px 8px; vertical-align: top; overflow-wrap: anywhere; }
tr.failed td { background: #fdf0f0; } tr.retried td, tr.warning td { background: #fdf7e8; }
td.short { white-space: nowrap; } tr.skipped td { color: var(--muted); }
tr.overdue td { background: #fdf0f0; font-weight: 600; }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #f3f4f6;
       padding: 1px 4px; border-radius: 3px; }
ul { margin: 0; padding-left: 20px; } li { margin: 3px 0; }
ul.deviations li::marker { color: var(--bad); } ul.actions li::marker { color: var(--good); }
figure { margin: 8px 0; } figcaption { color: var(--muted); font-size: 13px; }
svg { display: block; max-width: 100%; height: auto; }
.figures { display: flex; flex-wrap: wrap; gap: 8px 16px; } .figures svg { width: calc(50% - 8px); min-width: 340px; }
footer { color: var(--muted); font-size: 12px; padding-bottom: 32px; }
@media print { body { background: white; } section { break-inside: avoid; border: none; } nav { display: none; } }
"""


def _inline_html(text: str) -> str:
    return CODE.sub(r"<code>\1</code>", escape(text))


def _table_html(table: Table) -> str:
    header = "".join(f"<th>{escape(cell)}</th>" for cell in table.header)
    rows = []
    for index, row in enumerate(table.rows):
        css_class = table.row_classes[index] if index < len(table.row_classes) else ""
        cells = "".join(f'<td class="short">{_inline_html(cell)}</td>' if len(cell) <= SHORT_CELL else
                        f"<td>{_inline_html(cell)}</td>" for cell in row)
        rows.append(f'<tr class="{escape(css_class)}">{cells}</tr>' if css_class else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _block_html(block: Block) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{_inline_html(block.text)}</p>"
    if isinstance(block, Facts):
        pairs = "".join(f"<dt>{escape(label)}</dt><dd>{_inline_html(value)}</dd>" for label, value in block.pairs)
        return f"<dl>{pairs}</dl>"
    if isinstance(block, Table):
        return _table_html(block)
    if isinstance(block, Bullets):
        items = "".join(f"<li>{_inline_html(item)}</li>" for item in block.items)
        return f'<ul class="{escape(block.css_class)}">{items}</ul>' if block.css_class else f"<ul>{items}</ul>"
    caption = f"<figcaption>{_inline_html(block.caption)}</figcaption>" if block.caption else ""
    return f"<figure>{block.svg}{caption}</figure>"


def to_html(document: Document) -> str:
    navigation = " ".join(f'<a href="#{escape(s.id)}">{escape(s.title)}</a>' for s in document.sections)
    sections = "\n".join(
        f'<section id="{escape(s.id)}"><h2>{escape(s.title)}</h2>{"".join(_block_html(b) for b in s.blocks)}</section>'
        for s in document.sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(document.title)}</title><style>{CSS}</style></head>\n<body>"
        f"<header><h1>{_inline_html(document.title)}</h1><p class=\"subtitle\">{_inline_html(document.subtitle)}</p>"
        f'<span class="verdict verdict-{escape(document.verdict)}">{escape(document.verdict_text)}</span></header>'
        f"<nav>{navigation}</nav>\n<main>\n{sections}\n</main><footer>{_inline_html(document.footer)}</footer>"
        "</body></html>\n"
    )


# --- Markdown -----------------------------------------------------------------------------------


def _cell_markdown(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ") or " "


def _table_markdown(table: Table) -> list[str]:
    lines = ["| " + " | ".join(_cell_markdown(cell) for cell in table.header) + " |",
             "|" + "|".join("---" for _ in table.header) + "|"]
    lines += ["| " + " | ".join(_cell_markdown(cell) for cell in row) + " |" for row in table.rows]
    return lines


def _block_markdown(block: Block) -> list[str]:
    if isinstance(block, Paragraph):
        return [block.text]
    if isinstance(block, Facts):
        return [f"- **{label}**: {value}" for label, value in block.pairs]
    if isinstance(block, Table):
        return _table_markdown(block) if block.rows else ["(none)"]
    if isinstance(block, Bullets):
        return [f"- {item}" for item in block.items]
    lines = [f"_{block.caption}_"] if block.caption else []
    return lines + (_table_markdown(block.text) if block.text is not None else ["(chart in the HTML report)"])


def to_markdown(document: Document) -> str:
    lines = [f"# {document.title}", "", document.subtitle, "", f"**{document.verdict_text}**"]
    for section in document.sections:
        lines += ["", f"## {section.title}"]
        for block in section.blocks:
            lines += ["", *_block_markdown(block)]
    if document.footer:
        lines += ["", f"_{document.footer}_"]
    return "\n".join(lines) + "\n"
