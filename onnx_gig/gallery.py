"""A folder run's page, ``DIR/results.html``: every image's figure and class at a glance, in any browser.

A run over hundreds of photos is read by looking, not by reading results.csv. The page shows each figure with
its class, probability and top-5, and each failure with its reason; it filters (by path below the folder the
images share, or class) and
sorts (input order, probability either way, class) in the page, and shows 60 at a time, so a validation set's
page stays quick. It is one static file beside the figures, which it links by name, so the folder can be
moved, zipped or served as it is. The rows are embedded as JSON and drawn with ``textContent``: nothing is
fetched from anywhere, and no label or file name is ever read as markup.
"""
from __future__ import annotations

import html
import json
import math
import os
from typing import Sequence

PAGE = "results.html"  # beside results.csv; not index.html, which a folder may hold already
PER_PAGE = 60

_CSS = """
:root { color-scheme: light dark; --fg: #1d1d1f; --bg: #fafafa; --card: #fff; --muted: #6b6b70; --bad: #b3261e;
        --line: #e2e2e6; }
@media (prefers-color-scheme: dark) { :root { --fg: #ececf0; --bg: #151518; --card: #202024; --muted: #a0a0a8;
        --bad: #ff8a80; --line: #34343a; } }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: var(--fg); background: var(--bg); }
header { position: sticky; top: 0; background: var(--bg); padding: 12px 20px; border-bottom: 1px solid var(--line);
         z-index: 1; }
h1 { font-size: 18px; margin: 0 0 4px; }
.sub { color: var(--muted); margin: 0 0 8px; }
.controls { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: center; }
.controls input[type=search] { width: min(320px, 100%); padding: 4px 8px; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(440px, 100%), 1fr)); gap: 14px;
       padding: 16px 20px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 8px; margin: 0;
        overflow-wrap: anywhere; }
.card img { width: 100%; height: auto; display: block; border-radius: 4px; background: #000; }
.name { font-weight: 600; margin: 6px 0 2px; }
.cls { margin: 0; }
.top { color: var(--muted); font-size: 12px; margin: 2px 0 0; padding-left: 18px; }
.failed .why { color: var(--bad); }
.pager { display: flex; gap: 10px; align-items: center; padding: 0 20px 24px; }
.empty { padding: 16px 20px; color: var(--muted); }
"""

_JS = r"""
(() => {
  const rows = JSON.parse(document.getElementById("rows").textContent);
  const perPage = Number(document.body.dataset.perPage);
  const $ = (id) => document.getElementById(id);
  const grid = $("grid"), info = $("info"), pageOf = $("page");
  let page = 0;
  const common = document.body.dataset.common;  // the folder every image is in: left out of the filter
  rows.forEach((r, i) => {
    const path = String(r.image || "");
    r._i = i; r._name = path.split(/[\\/]/).pop();
    r._rel = (common && path.startsWith(common) ? path.slice(common.length) : path).toLowerCase();
  });
  const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls;
                                   if (text !== undefined) e.textContent = text; return e; };
  const pct = (p) => (p === null || p === undefined || p === "") ? "" : (100 * Number(p)).toFixed(1) + " %";
  function chosen() {
    const q = $("q").value.trim().toLowerCase(), failed = $("failed").checked, how = $("sort").value;
    let out = rows.filter((r) => (!failed || r.error) &&
      (!q || r._rel.includes(q) || String(r.label || "").toLowerCase().includes(q) || String(r.target ?? "") === q));
    const prob = (r) => (r.error || r.probability === null) ? -1 : Number(r.probability);
    if (how === "prob-desc") out.sort((a, b) => prob(b) - prob(a) || a._i - b._i);
    if (how === "prob-asc") out.sort((a, b) => (a.error ? 2 : prob(a)) - (b.error ? 2 : prob(b)) || a._i - b._i);
    const cls = (r) => String(r.label ?? r.target ?? "");
    if (how === "class") out.sort((a, b) => (!!a.error - !!b.error) ||
      cls(a).localeCompare(cls(b), undefined, {numeric: true, sensitivity: "base"}) || (a.target ?? 0) - (b.target ?? 0) ||
      a._i - b._i);
    return out;
  }
  function card(r) {
    const c = el("figure", r.error ? "card failed" : "card");
    c.dataset.index = r._i;
    let href = null;
    try { href = r.figure ? encodeURIComponent(r.figure) : null; } catch (e) { /* a name no encoding reads */ }
    if (href !== null) {
      const a = el("a"); a.href = href;  // a name in this folder, whatever characters it holds
      a.target = "_blank"; a.rel = "noopener";
      const img = el("img"); img.loading = "lazy"; img.alt = "figure of " + r._name; img.src = a.href;
      a.appendChild(img); c.appendChild(a);
    }
    const cap = el("figcaption");
    const name = el("p", "name", r._name); name.title = String(r.image); cap.appendChild(name);
    if (r.error) {
      cap.appendChild(el("p", "why", r.error));
    } else {
      cap.appendChild(el("p", "cls", `${r.label ?? ""} (class ${r.target}) ${pct(r.probability)}`));
      const top = el("ol", "top");
      for (let k = 1; k <= 5; k++) {
        if (r["top" + k] === null || r["top" + k] === undefined) break;
        top.appendChild(el("li", "", `${r["top" + k + "_label"] ?? ""} (${r["top" + k]}) ${pct(r["top" + k + "_prob"])}`));
      }
      cap.appendChild(top);
    }
    c.appendChild(cap);
    return c;
  }
  function draw() {
    const out = chosen(), pages = Math.max(1, Math.ceil(out.length / perPage));
    page = Math.min(page, pages - 1);
    grid.replaceChildren(...out.slice(page * perPage, (page + 1) * perPage).map(card));
    info.textContent = `${out.length} of ${rows.length} shown`;
    pageOf.textContent = `page ${page + 1} of ${pages}`;
    $("prev").disabled = page === 0;
    $("next").disabled = page >= pages - 1;
    $("none").hidden = out.length > 0;
  }
  for (const id of ["q", "sort", "failed"]) $(id).addEventListener("input", () => { page = 0; draw(); });
  $("prev").addEventListener("click", () => { page -= 1; draw(); window.scrollTo(0, 0); });
  $("next").addEventListener("click", () => { page += 1; draw(); window.scrollTo(0, 0); });
  draw();
})();
"""


def _finite(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _json_for_script(rows: Sequence[dict]) -> str:
    """The rows as JSON that cannot end its <script> element: '<', '>' and '&' written as \\u escapes (and
    no NaN, which JSON.parse refuses)."""
    clean = [{k: _finite(v) for k, v in r.items()} for r in rows]
    text = json.dumps(clean, ensure_ascii=False, allow_nan=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _common_folder(rows: Sequence[dict]) -> str:
    """The folder every row's image is in, with its trailing separator ('' if none or one image)."""
    paths = [str(r.get("image") or "") for r in rows]
    if len(paths) < 2:
        return ""
    try:
        common = os.path.commonpath([os.path.dirname(p) for p in paths])
    except ValueError:  # absolute and relative paths mixed, or other drives
        return ""
    return common + os.sep if common else ""


def render_page(rows: Sequence[dict], title: str, subtitle: str = "", per_page: int = PER_PAGE) -> str:
    """The page for ``rows`` (ResultWriter's rows: image, target, label, probability, top1..5, error, figure)."""
    failed = sum(1 for r in rows if r.get("error"))
    counts = f"{len(rows) - failed} explained, {failed} failed"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{html.escape(title)}</title>
<style>{_CSS}</style>
</head>
<body data-per-page="{int(per_page)}" data-common="{html.escape(_common_folder(rows))}">
<header>
<h1>{html.escape(title)}</h1>
<p class="sub">{html.escape(counts)}{' · ' + html.escape(subtitle) if subtitle else ''}</p>
<div class="controls">
<input id="q" type="search" placeholder="filter: file or folder name, class or class index" aria-label="filter">
<label>sort <select id="sort" aria-label="sort">
<option value="input">input order</option>
<option value="prob-desc">probability, highest first</option>
<option value="prob-asc">probability, lowest first</option>
<option value="class">class</option>
</select></label>
<label><input id="failed" type="checkbox"> failed only</label>
<span id="info" aria-live="polite"></span>
</div>
</header>
<main id="grid"></main>
<p id="none" class="empty" hidden>nothing matches the filter</p>
<nav class="pager"><button id="prev" type="button">‹ previous</button><span id="page"></span>
<button id="next" type="button">next ›</button></nav>
<script type="application/json" id="rows">{_json_for_script(rows)}</script>
<script>{_JS}</script>
</body>
</html>
"""


__all__ = ["PAGE", "PER_PAGE", "render_page"]
