"""HTML building blocks: escaping, relative links, sortable tables, the page frame and its local CSS/JS.

Every text that reaches a page goes through :func:`esc`; every link is relative (:func:`link`), so the
report opens from ``file://`` or any static host. The one script, ``assets/report.js``, sorts tables by a
click on a column head (``#sort=KEY`` or ``#sort=-KEY`` in the address sorts at load, by a simulated click)
and writes a self-check into ``<body>`` once the page has loaded: ``data-images`` (how many),
``data-broken-images`` (how many failed to load), ``data-js-errors`` and ``data-sorted``.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from benchmark.io import atomic_write_text

NAV = (("index.html", "Leaderboard"), ("plots.html", "Plots"), ("groups.html", "Groups"),
       ("failures.html", "Failures"), ("runs.html", "Runs"))


def esc(value: object) -> str:
    """Text for HTML content or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


def link(target: str | os.PathLike, page_dir: Path) -> str:
    """A relative, percent-encoded URL from a page in ``page_dir`` to ``target`` (escaped for an attribute)."""
    rel = os.path.relpath(os.path.abspath(target), os.path.abspath(page_dir))
    return esc(quote(Path(rel).as_posix(), safe="/"))


@dataclass(frozen=True)
class Cell:
    """A table cell: shown text, the value it sorts by (``None``: the text), a CSS class, a link."""

    text: str
    sort: str | None = None
    cls: str = ""
    href: str | None = None  # already a URL (from :func:`link`, or ``#anchor``)
    title: str | None = None

    def render(self) -> str:
        attrs = "" if self.sort is None else f' data-value="{esc(self.sort)}"'
        attrs += f' class="{esc(self.cls)}"' if self.cls else ""
        attrs += f' title="{esc(self.title)}"' if self.title else ""
        body = esc(self.text) if self.href is None else f'<a href="{self.href}">{esc(self.text)}</a>'
        return f"<td{attrs}>{body}</td>"


def table(heads: Sequence[tuple[str, str]], rows: Sequence[Sequence[Cell]], table_id: str = "",
          caption: str = "") -> str:
    """A sortable table: ``heads`` are (sort key, shown name)."""
    ths = "".join(f'<th data-key="{esc(k)}" tabindex="0">{esc(name)}</th>' for k, name in heads)
    trs = "\n".join("<tr>" + "".join(c.render() for c in row) + "</tr>" for row in rows)
    ident = f' id="{esc(table_id)}"' if table_id else ""
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (f'<div class="scroll"><table class="sortable"{ident}>{cap}<thead><tr>{ths}</tr></thead>'
            f"<tbody>\n{trs}\n</tbody></table></div>")


def page(title: str, body: str, prefix: str = "", active: str = "", subtitle: str = "") -> str:
    """A whole page; ``prefix`` leads from the page's folder to the report root (``""`` or ``"../"``)."""
    current = ' class="active"'
    nav = " ".join(f'<a href="{prefix}{href}"{current if href == active else ""}>{esc(name)}</a>'
                   for href, name in NAV)
    sub = f'<p class="subtitle">{esc(subtitle)}</p>' if subtitle else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<link rel="stylesheet" href="{prefix}assets/report.css">
<script src="{prefix}assets/report.js"></script>
</head>
<body>
<header><span class="brand">icmbench report</span><nav>{nav}</nav></header>
<main>
<h1>{esc(title)}</h1>
{sub}
{body}
</main>
</body>
</html>
"""


def write_assets(out: Path) -> None:
    atomic_write_text(out / "assets" / "report.css", CSS)
    atomic_write_text(out / "assets" / "report.js", JS)


CSS = """\
:root { --fg: #1b1f24; --muted: #5b6470; --line: #d8dde3; --bg: #ffffff; --band: #f4f6f8; --accent: #1f6feb;
        --bad: #b42318; --good: #067647; --thumb: 220px; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); }
header { display: flex; gap: 24px; align-items: center; padding: 10px 24px; background: #0d1117; color: #fff; }
header .brand { font-weight: 600; letter-spacing: .02em; }
header nav a { color: #c9d1d9; text-decoration: none; margin-right: 16px; }
header nav a.active, header nav a:hover { color: #fff; text-decoration: underline; }
main { padding: 8px 24px 48px; max-width: 1800px; }
h1 { font-size: 22px; margin: 16px 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.subtitle, .note { color: var(--muted); margin: 4px 0 12px; }
a { color: var(--accent); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0 16px; font-variant-numeric: tabular-nums; }
caption { text-align: left; color: var(--muted); padding: 4px 0; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; white-space: nowrap; }
th { background: var(--band); position: sticky; top: 0; cursor: pointer; user-select: none; }
th[aria-sort=ascending]::after { content: " \\25B2"; font-size: 10px; }
th[aria-sort=descending]::after { content: " \\25BC"; font-size: 10px; }
td.num { text-align: right; }
td.msg { white-space: normal; min-width: 320px; overflow-wrap: anywhere; }
td.best { font-weight: 700; }
td.bad, span.bad { color: var(--bad); font-weight: 600; }
td.good { color: var(--good); }
tr.quoted td { color: var(--muted); font-style: italic; }
tbody tr:nth-child(even) { background: #fafbfc; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.facts td, .facts th { white-space: normal; max-width: 340px; overflow-wrap: anywhere; vertical-align: top; }
.facts th { cursor: default; position: static; }
.facts td:first-child { color: var(--muted); white-space: nowrap; }
.facts tr.differs td { background: #fff8e1; }
.plots figure { margin: 0 0 32px; }
.plots img { max-width: 100%; height: auto; border: 1px solid var(--line); }
.strip { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; margin: 6px 0 18px; }
.entry { display: flex; gap: 4px; padding: 4px; border-top: 4px solid var(--line); background: var(--band); }
figure.tile { margin: 0; width: var(--thumb); }
figure.tile .box { width: var(--thumb); height: var(--thumb); display: flex; align-items: center;
                   justify-content: center; background: #282828; }
figure.tile img { max-width: 100%; max-height: 100%; display: block; }
figure.tile figcaption { font-size: 12px; line-height: 1.3; padding: 2px 2px 0; overflow-wrap: anywhere; }
figure.tile .missing { color: #f5c2c0; font-size: 12px; padding: 8px; overflow-wrap: anywhere; }
.compact { --thumb: 150px; } .compact h3 { margin-top: 10px; }
.legend { display: flex; gap: 16px; align-items: center; flex-wrap: wrap; color: var(--muted); margin: 8px 0; }
.legend .swatches { display: flex; gap: 14px; flex-wrap: wrap; }
details { margin: 8px 0; } summary { cursor: pointer; color: var(--accent); }
code { background: var(--band); padding: 0 4px; border-radius: 3px; }
"""

JS = """\
(function () {
  "use strict";
  var jsErrors = 0;
  window.addEventListener("error", function () { jsErrors += 1; });

  function value(row, index) {
    var cell = row.cells[index];
    if (!cell) { return ""; }
    var v = cell.getAttribute("data-value");
    return v === null ? cell.textContent.trim() : v;
  }
  function number(s) {
    if (s === "" || s === "nan" || s === "NaN") { return null; }
    var n = Number(s);
    return isNaN(n) ? undefined : n;
  }
  function compare(a, b) {
    var x = number(a), y = number(b);
    if (x === null || y === null) { return (x === null) - (y === null); }
    if (x !== undefined && y !== undefined) { return x - y; }
    return String(a).localeCompare(String(b));
  }
  function sortBy(th, descending) {
    var table = th.closest("table"), body = table.tBodies[0];
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r, s) {
      var a = value(r, index), b = value(s, index), c = compare(a, b);
      if (number(a) === null || number(b) === null) { return c; }  /* missing values last either way */
      return descending ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(th.parentNode.children, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    document.body.dataset.sorted = th.getAttribute("data-key") + (descending ? ":descending" : ":ascending");
  }
  function onHead(event) {
    var th = event.currentTarget;
    sortBy(th, th.getAttribute("aria-sort") === "ascending");
  }
  function sortFromAddress() {
    var m = /(?:^#|&)sort=(-?)([^&]+)/.exec(window.location.hash);
    if (!m) { return; }
    var key = decodeURIComponent(m[2]);
    var ths = document.querySelectorAll("table.sortable th");
    var th = Array.prototype.filter.call(ths, function (h) { return h.getAttribute("data-key") === key; })[0];
    if (!th) { document.body.dataset.sorted = "unknown:" + key; return; }
    th.click();
    if (m[1] === "-") { th.click(); }
  }
  function selfCheck() {
    var images = document.images, broken = 0;
    for (var i = 0; i < images.length; i += 1) {
      if (!images[i].complete || images[i].naturalWidth === 0) { broken += 1; }
    }
    document.body.dataset.images = String(images.length);
    document.body.dataset.brokenImages = String(broken);
    document.body.dataset.jsErrors = String(jsErrors);
  }
  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable th"), function (th) {
      th.addEventListener("click", onHead);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") { th.click(); } });
    });
    sortFromAddress();
  });
  window.addEventListener("load", selfCheck);
}());
"""
