"""Self-contained HTML building blocks: escaped text, tables, embedded figures, one stylesheet.

Everything the page shows lives inside the one file: figures are ``data:`` URIs (base64 PNG), the
stylesheet is inline, and the page has no script and loads nothing from elsewhere, so it opens from a
laptop's disk, an e-mail attachment or a cluster's file browser alike.

Numbers are shown with :func:`fmt`: four significant digits, ``n/a`` for a missing value and ``∞``
for an infinite error (a joint behind a camera, see ``docs/metrics.md``).
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from smil.errors import DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0;
       color: #1d2330; background: #fff; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.1em; }
h2 { font-size: 1.3em; margin-top: 2.2em; border-bottom: 2px solid #d5dae3; padding-bottom: 0.2em; }
h3 { font-size: 1.15em; margin-top: 2em; color: #2b4c8c; }
h4 { font-size: 0.98em; margin: 1.3em 0 0.4em; text-transform: uppercase; letter-spacing: 0.04em; color: #3d4657; }
p.meta, p.note { color: #566074; font-size: 0.92em; margin: 0.3em 0; }
nav ul { columns: 3; padding-left: 1.2em; font-size: 0.93em; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.88em; }
th, td { border: 1px solid #d5dae3; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #f8f9fb; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e6ec; }
figcaption { color: #566074; font-size: 0.88em; margin-top: 0.3em; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; }
.figures figure { flex: 1 1 480px; max-width: 100%; }
details { margin: 0.6em 0; }
summary { cursor: pointer; color: #2b4c8c; }
code { background: #f1f3f7; padding: 0 3px; border-radius: 3px; font-size: 0.92em; }
.warn { color: #a03a16; font-weight: 600; }
"""


def esc(value: Any) -> str:
    """``value`` as text, HTML-escaped."""
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """A cell value as text: numbers with ``digits`` significant digits, ``n/a`` for ``None``/NaN."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return f"{value:.{digits}g}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], caption: str | None = None) -> str:
    """An HTML table; numeric cells are right-aligned and formatted with :func:`fmt`."""
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>")
    for row in rows:
        cells = []
        for value in row:
            cls = ' class="num"' if _is_number(value) else ""
            cells.append(f"<td{cls}>{esc(fmt(value))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def key_value_table(pairs: Iterable[tuple[str, Any]]) -> str:
    """A two-column table of labelled values."""
    return table(["", "value"], [(k, v) for k, v in pairs])


def png_data_uri(path: str | Path) -> str:
    """The PNG file at ``path`` as a ``data:image/png;base64,…`` URI.

    Raises:
        DataError: the file is not a PNG (its first bytes are not the PNG signature).
    """
    data = Path(path).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise DataError("not a PNG image (missing the PNG signature); figures are embedded as PNG", path=path)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure(path: str | Path, caption: str, alt: str | None = None) -> str:
    """A ``<figure>`` with the PNG embedded as a data URI and a caption."""
    return (
        f'<figure><img src="{png_data_uri(path)}" alt="{esc(alt or caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def details(summary: str, body: str) -> str:
    """A collapsible block (``<details>``), closed by default."""
    return f"<details><summary>{esc(summary)}</summary>\n{body}\n</details>"


def section(anchor: str, title: str, body: str, level: int = 2) -> str:
    return f'<section id="{esc(anchor)}">\n<h{level}>{esc(title)}</h{level}>\n{body}\n</section>'


def paragraph(text: str, cls: str | None = None) -> str:
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<p{attr}>{esc(text)}</p>"


def page(title: str, body: str) -> str:
    """A complete HTML document with the inline stylesheet."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )
