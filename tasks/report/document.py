"""A report's content, built once, written out as one self-contained HTML page or as Markdown.

Sections hold blocks (paragraphs, facts, tables, bullet lists, charts). Text may quote names
`like this`: code in both formats. The HTML comes from the Jinja2 templates in templates/ (the CSS
inlined); a chart is inline SVG there, Markdown shows its table instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

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


# --- HTML: Jinja2 templates beside this module, every value escaped unless marked safe ----------------

TEMPLATES = Path(__file__).parent / "templates"


def inline_html(text: str) -> Markup:
    """Escaped text in which `quoted names` become code."""
    return Markup(CODE.sub(r"<code>\1</code>", str(escape(text))))


@cache
def templates() -> Environment:
    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)
    environment.filters["inline"] = inline_html
    environment.tests.update(paragraph=lambda block: isinstance(block, Paragraph),
                             facts=lambda block: isinstance(block, Facts), table=lambda block: isinstance(block, Table),
                             bullets=lambda block: isinstance(block, Bullets))
    environment.globals["short_cell"] = SHORT_CELL
    return environment


def render_template(template: str, /, **values: object) -> str:
    return templates().get_template(template).render(**values)


def to_html(document: Document) -> str:
    return render_template("document.html", document=document) + "\n"


# --- Markdown -----------------------------------------------------------------------------------


def markdown_text(text: object) -> str:
    """Text as Markdown shows it, on one line: what a run was told (a reason, an operator, an error) can neither
    open a heading or list with a newline nor smuggle HTML into a renderer that passes HTML through."""
    return " ".join(str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").splitlines())


def _cell_markdown(text: str) -> str:
    return markdown_text(text).replace("\\", "\\\\").replace("|", "\\|") or " "


def _table_markdown(table: Table) -> list[str]:
    lines = ["| " + " | ".join(_cell_markdown(cell) for cell in table.header) + " |",
             "|" + "|".join("---" for _ in table.header) + "|"]
    lines += ["| " + " | ".join(_cell_markdown(cell) for cell in row) + " |" for row in table.rows]
    return lines


def _block_markdown(block: Block) -> list[str]:
    if isinstance(block, Paragraph):
        return [markdown_text(block.text)]
    if isinstance(block, Facts):
        return [f"- **{markdown_text(label)}**: {markdown_text(value)}" for label, value in block.pairs]
    if isinstance(block, Table):
        return _table_markdown(block) if block.rows else ["(none)"]
    if isinstance(block, Bullets):
        return [f"- {markdown_text(item)}" for item in block.items]
    lines = [f"_{markdown_text(block.caption)}_"] if block.caption else []
    return lines + (_table_markdown(block.text) if block.text is not None else ["(chart in the HTML report)"])


def to_markdown(document: Document) -> str:
    lines = [f"# {markdown_text(document.title)}", "", markdown_text(document.subtitle), "",
             f"**{markdown_text(document.verdict_text)}**"]
    for section in document.sections:
        lines += ["", f"## {section.title}"]
        for block in section.blocks:
            lines += ["", *_block_markdown(block)]
    if document.footer:
        lines += ["", f"_{document.footer}_"]
    return "\n".join(lines) + "\n"
