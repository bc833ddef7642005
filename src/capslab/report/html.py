"""The page shell every report shares: one self-contained HTML file.

Everything the page needs is inside it: plotly.js once (inline, in the head; left out of a page
that draws no plotly figure and runs no script), every figure as
its own ``<div>`` with the call that draws it, PNG images as ``data:`` URIs, data for the
page's scripts as ``<script type="application/json">`` blocks, and the style sheet. The page
names no external address, so it opens offline and from an e-mail attachment alike.

A :class:`Page` is built top to bottom (headings, text, tables, figures) and rendered once.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from capslab import __version__
from capslab.io import atomic_write_text

#: How figures behave in the page: no plotly logo, resize with the window.
FIGURE_CONFIG = {"displaylogo": False, "responsive": True}

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1d2433; background: #f6f7fb; }
header { background: #1d2433; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 1.5em; }
header .sub { color: #c8cfdd; font-size: 0.9em; }
nav { padding: 8px 32px; background: #e7eaf2; font-size: 0.9em; }
nav a { margin-right: 18px; color: #27408b; text-decoration: none; }
main { padding: 8px 32px 40px 32px; max-width: 1500px; }
section { background: #fff; border-radius: 6px; padding: 10px 20px 16px 20px; margin: 16px 0;
          box-shadow: 0 1px 3px rgba(0,0,0,0.08); overflow-x: auto; }
h2 { font-size: 1.2em; border-bottom: 1px solid #e3e6ee; padding-bottom: 6px; }
h3 { font-size: 1.0em; margin-bottom: 6px; }
table.data { border-collapse: collapse; font-size: 0.85em; margin: 6px 0; }
table.data th, table.data td { border-bottom: 1px solid #e3e6ee; padding: 3px 10px;
                               text-align: right; white-space: nowrap; }
table.data th { background: #f0f2f7; }
table.data td.text, table.data th.text { text-align: left; }
table.data tr.highlight td { background: #fff4d6; font-weight: 600; }
table.data tr.marked td { background: #eef6ee; }
.note { color: #6b5200; background: #fff8e1; border-left: 4px solid #e0b000;
        padding: 6px 12px; font-size: 0.9em; }
.muted { color: #5d6475; font-size: 0.88em; }
pre { background: #f0f2f7; padding: 8px 12px; font-size: 0.82em; overflow-x: auto; }
img.figure { max-width: 100%; border: 1px solid #e3e6ee; }
.plot { width: 100%; }
details summary { cursor: pointer; color: #27408b; margin: 6px 0; }
"""


def _plotlyjs() -> str:
    import plotly.offline

    return plotly.offline.get_plotlyjs()


def script_json(obj: Any) -> str:
    """``obj`` as JSON that is safe inside a ``<script>`` element (no ``</`` sequence)."""
    return json.dumps(obj, allow_nan=False, default=str).replace("</", "<\\/")


def png_data_uri(data: bytes) -> str:
    """A PNG as a ``data:`` URI (the page embeds its images)."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def format_value(value: Any, spec: str = "") -> str:
    """A cell's text: ``-`` for missing values and NaN, booleans as yes/blank."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else ""
    if spec and isinstance(value, int | float):
        return format(value, spec)
    return str(value)


def _is_text(values: Sequence[Any]) -> bool:
    """Is a column text (every value a string or missing, at least one string)?"""
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, str) for v in present)


class Page:
    """One report page, built in reading order and rendered once.

    Args:
        title: the page title (heading and browser tab).
        subtitle: one line under the title (what the page is a report of).

    Sections appear in the navigation bar in the order they are opened with :meth:`section`.
    """

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self._body: list[str] = []
        self._nav: list[tuple[str, str]] = []
        self._scripts: list[str] = []
        self._open = False
        self._ids: set[str] = set()
        self.figure_ids: list[str] = []

    def _new_id(self, element_id: str) -> str:
        """``element_id``, once per page (a figure drawn into a section of the same id would
        land in the wrong place)."""
        if element_id in self._ids:
            raise ValueError(f"element id {element_id!r} is used twice in the page")
        self._ids.add(element_id)
        return html.escape(element_id)

    # ------------------------------------------------------------------ structure
    def section(self, title: str, anchor: str) -> Page:
        """Start a section (closing the previous one); it gets a link in the navigation bar."""
        self._close()
        self._body.append(f'<section id="{self._new_id(anchor)}"><h2>{html.escape(title)}</h2>')
        self._nav.append((anchor, title))
        self._open = True
        return self

    def _close(self) -> None:
        if self._open:
            self._body.append("</section>")
            self._open = False

    def heading(self, text: str) -> Page:
        self._body.append(f"<h3>{html.escape(text)}</h3>")
        return self

    def text(self, text: str, css: str = "") -> Page:
        cls = f' class="{css}"' if css else ""
        self._body.append(f"<p{cls}>{html.escape(text)}</p>")
        return self

    def note(self, text: str) -> Page:
        """A highlighted remark: something the report could not show, and why."""
        self._body.append(f'<p class="note">{html.escape(text)}</p>')
        return self

    def pre(self, text: str, element_id: str | None = None) -> Page:
        ident = f' id="{self._new_id(element_id)}"' if element_id else ""
        self._body.append(f"<pre{ident}>{html.escape(text)}</pre>")
        return self

    def raw(self, fragment: str) -> Page:
        """A trusted HTML fragment written by this package (never user text)."""
        self._body.append(fragment)
        return self

    # ------------------------------------------------------------------ content
    def figure(self, fig: Any, div_id: str) -> Page:
        """A plotly figure, drawn by the plotly.js that the page carries."""
        import plotly.io as pio

        self._new_id(div_id)
        self.figure_ids.append(div_id)
        self._body.append(
            '<div class="plot">'
            + pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id,
                          config=FIGURE_CONFIG, default_width="100%")
            + "</div>"
        )
        return self

    def image(self, png: bytes, alt: str) -> Page:
        self._body.append(f'<img class="figure" alt="{html.escape(alt)}" src="{png_data_uri(png)}">')
        return self

    def table(
        self,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[tuple[str, str, str | Callable[[Any], str]]],
        *,
        element_id: str | None = None,
        highlight: Callable[[Mapping[str, Any]], str] | None = None,
        header: bool = True,
    ) -> Page:
        """A table of ``rows``: ``columns`` are ``(key, header, spec)`` where ``spec`` is a
        :func:`format` spec or a function of the value; ``highlight(row)`` gives a row's CSS
        class (``"highlight"``, ``"marked"`` or ``""``). Columns whose values are all text are
        left-aligned, the others right-aligned."""
        ident = f' id="{self._new_id(element_id)}"' if element_id else ""
        out = [f'<table class="data"{ident}>']
        text_cols = {key for key, _, _ in columns if _is_text([r.get(key) for r in rows])}
        if header:
            out.append("<thead><tr>")
            for key, title, _ in columns:
                cls = ' class="text"' if key in text_cols else ""
                out.append(f"<th{cls}>{html.escape(title)}</th>")
            out.append("</tr></thead>")
        out.append("<tbody>")
        for row in rows:
            cls = highlight(row) if highlight else ""
            out.append(f'<tr class="{cls}">' if cls else "<tr>")
            for key, _, spec in columns:
                value = row.get(key)
                cell = spec(value) if callable(spec) else format_value(value, spec)
                tcls = ' class="text"' if key in text_cols else ""
                out.append(f"<td{tcls}>{html.escape(cell)}</td>")
            out.append("</tr>")
        out.append("</tbody></table>")
        self._body.append("".join(out))
        return self

    def key_values(self, items: Iterable[tuple[str, Any]]) -> Page:
        """A two-column table of names and values."""
        rows = [{"k": k, "v": "yes" if v is True else "no" if v is False else format_value(v)}
                for k, v in items]
        return self.table(rows, [("k", "", ""), ("v", "", "")], header=False)

    def details(self, summary: str) -> Page:
        """Open a folded block (closed by :meth:`end_details`)."""
        self._body.append(f"<details><summary>{html.escape(summary)}</summary>")
        return self

    def end_details(self) -> Page:
        self._body.append("</details>")
        return self

    def data(self, element_id: str, obj: Any) -> Page:
        """Data for the page's scripts, as a JSON block."""
        self._body.append(f'<script type="application/json" id="{self._new_id(element_id)}">'
                          f"{script_json(obj)}</script>")
        return self

    def script(self, code: str) -> Page:
        """A script run after every figure is drawn (at the end of the body)."""
        self._scripts.append(code)
        return self

    # ------------------------------------------------------------------ output
    def render(self) -> str:
        self._close()
        nav = "".join(f'<a href="#{html.escape(a)}">{html.escape(t)}</a>' for a, t in self._nav)
        made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        scripts = "".join(f"<script>{code}</script>" for code in self._scripts)
        plotly = (f'<script type="text/javascript" id="plotlyjs">{_plotlyjs()}</script>'
                  if self.figure_ids or self._scripts else "")
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{_STYLE}</style>"
            f"{plotly}"
            "</head><body>"
            f"<header><h1>{html.escape(self.title)}</h1>"
            f'<div class="sub">{html.escape(self.subtitle)} &middot; CapsLab {html.escape(__version__)}'
            f" &middot; written {made}</div></header>"
            f"<nav>{nav}</nav><main>{''.join(self._body)}</main>{scripts}</body></html>\n"
        )

    def write(self, path: str | Path) -> Path:
        """Render and write the page atomically; returns its path."""
        path = Path(path)
        atomic_write_text(path, self.render())
        return path
