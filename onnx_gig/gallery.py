"""A folder run's page, ``DIR/results.html``: every image's figure and class at a glance, in any browser.

A run over hundreds of photos is read by looking, not by reading results.csv. The page shows each figure with
its class, probability and top-5, and each failure with its reason; it filters (by path below the folder the
images share, or class) and sorts (input order, probability either way, class) in the page, and shows 60 at
a time (first, previous, a page number, next, last), so a validation set's page stays quick. It is one static
file beside the figures, which it links by name, so the folder can be moved, zipped or served as it is. The
rows are embedded as JSON and drawn with ``textContent``: nothing is fetched from anywhere, and no label or
file name is ever read as markup; the page's script runs by its hash, so no other script could.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
from typing import Optional, Sequence
from urllib.parse import quote

PAGE = "results.html"  # beside results.csv; not index.html, which a folder may hold already
PER_PAGE = 60

_CSS = """
:root { color-scheme: light dark; --fg: #1d1d1f; --bg: #fafafa; --card: #fff; --muted: #6b6b70; --bad: #b3261e;
        --line: #e2e2e6; }
@media (prefers-color-scheme: dark) { :root { --fg: #ececf0; --bg: #151518; --card: #202024; --muted: #a0a0a8;
        --bad: #ff8a80; --line: #34343a; } }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: var(--fg); background: var(--bg); }
header { background: var(--bg); padding: 12px 20px; border-bottom: 1px solid var(--line); z-index: 1; }
/* the controls stay in view on a screen with room for them; on a phone they would cover the cards */
@media (min-width: 700px) and (min-height: 600px) { header { position: sticky; top: 0; } }
h1 { font-size: 18px; margin: 0 0 4px; overflow-wrap: anywhere; }
.sub { color: var(--muted); margin: 0 0 8px; overflow-wrap: anywhere; }
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
.files { font-size: 12px; margin: 4px 0 0; }
.pager { display: flex; flex-wrap: wrap; gap: 10px; align-items: center; padding: 0 20px 24px; }
.pager input { width: 5em; }
main:focus { outline: none; }
.empty { padding: 16px 20px; color: var(--muted); }
"""

_JS = r"""
(() => {
  const rows = JSON.parse(document.getElementById("rows").textContent);
  const perPage = Number(document.body.dataset.perPage);
  const $ = (id) => document.getElementById(id);
  const grid = $("grid"), info = $("info"), pageNo = $("pageno"), pages = $("pages"), header = $("top");
  let page = 0, shown = [];
  // _name, _shown (the path below the folder every image is in), _href and _npy come from Python, which
  // knows the platform's separators and the bytes of a name that is not UTF-8
  rows.forEach((r, i) => { r._i = i; r._rel = String(r._shown).toLowerCase(); });
  const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls;
                                   if (text !== undefined) e.textContent = text; return e; };
  const pct = (p) => (p === null || p === undefined || p === "") ? "" : (100 * Number(p)).toFixed(1) + " %";
  const prob = (r) => (r.error || r.probability === null) ? -1 : Number(r.probability);
  const cls = (r) => String(r.label ?? r.target ?? "");
  const collator = new Intl.Collator(undefined, {numeric: true, sensitivity: "base"});
  const orders = {  // each sort made once, when first chosen: filtering keeps its order
    "input": (a, b) => a._i - b._i,
    "prob-desc": (a, b) => prob(b) - prob(a) || a._i - b._i,
    "prob-asc": (a, b) => (a.error ? 2 : prob(a)) - (b.error ? 2 : prob(b)) || a._i - b._i,
    "class": (a, b) => (!!a.error - !!b.error) || collator.compare(cls(a), cls(b)) ||
                       (a.target ?? 0) - (b.target ?? 0) || a._i - b._i,
  };
  const sorted = {};
  function chosen() {
    const q = $("q").value.trim().toLowerCase(), failed = $("failed").checked, how = $("sort").value;
    sorted[how] = sorted[how] || rows.slice().sort(orders[how] || orders.input);
    return sorted[how].filter((r) => (!failed || r.error) &&
      (!q || r._rel.includes(q) || String(r.label || "").toLowerCase().includes(q) || String(r.target ?? "") === q));
  }
  function card(r) {
    const c = el("figure", r.error ? "card failed" : "card");
    c.dataset.index = r._i;
    if (r._href) {
      const a = el("a"); a.href = r._href;  // a name in this folder, percent-encoded from its bytes
      a.target = "_blank"; a.rel = "noopener";
      const img = el("img"); img.loading = "lazy"; img.alt = "figure of " + r._shown; img.src = a.href;
      a.appendChild(img); c.appendChild(a);
    }
    const cap = el("figcaption");
    const name = el("p", "name", r._shown); name.title = String(r.image); cap.appendChild(name);
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
    if (r._npy) {
      const files = el("p", "files"), a = el("a", "", "attributions (.npy)");
      a.href = r._npy; a.download = ""; files.appendChild(a); cap.appendChild(files);
    }
    c.appendChild(cap);
    return c;
  }
  const count = () => Math.max(1, Math.ceil(shown.length / perPage));
  function draw() {
    page = Math.max(0, Math.min(page, count() - 1));
    grid.replaceChildren(...shown.slice(page * perPage, (page + 1) * perPage).map(card));
    info.textContent = `${shown.length} of ${rows.length} shown`;
    pageNo.value = page + 1; pageNo.max = count(); pages.textContent = `of ${count()}`;
    $("first").disabled = $("prev").disabled = page === 0;
    $("next").disabled = $("last").disabled = page >= count() - 1;
    const none = $("none");
    none.hidden = shown.length > 0;
    none.textContent = !rows.length ? "no images in this run" :
      ($("failed").checked && !$("q").value.trim()) ? "no image failed" : "nothing matches the filter";
  }
  function refilter() { shown = chosen(); page = 0; draw(); }
  function turn(to) {  // a new page: its first card is where reading (and the keyboard) goes on
    page = to; draw();
    grid.focus({preventScroll: true});
    window.scrollTo(0, 0);
  }
  for (const id of ["q", "sort", "failed"]) $(id).addEventListener("input", refilter);
  $("first").addEventListener("click", () => turn(0));
  $("prev").addEventListener("click", () => turn(page - 1));
  $("next").addEventListener("click", () => turn(page + 1));
  $("last").addEventListener("click", () => turn(count() - 1));
  pageNo.addEventListener("change", () => turn(Math.round(Number(pageNo.value) || 1) - 1));
  // a sticky header must not hide what the keyboard moves to
  const pad = () => { document.documentElement.style.scrollPaddingTop =
    getComputedStyle(header).position === "sticky" ? header.offsetHeight + 8 + "px" : ""; };
  window.addEventListener("resize", pad);
  pad();
  shown = chosen();
  draw();
})();
"""


def _finite(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _json_for_script(rows: Sequence[dict]) -> str:
    """The rows (``_page_rows``'s) as JSON that cannot end its <script> element: '<', '>' and '&' written as
    \\u escapes."""
    text = json.dumps(rows, ensure_ascii=False, allow_nan=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _readable(name: str) -> str:
    """A path as text: bytes that are not UTF-8 (kept as surrogates) written as \\xNN, as the tables write them."""
    try:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    except UnicodeError:
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _href(name: Optional[str]) -> Optional[str]:
    """A file in the page's folder as a link: its bytes percent-encoded, so any name (not UTF-8, '#', '?') works."""
    if not name:
        return None
    try:
        return quote(os.fsencode(name), safe="")
    except UnicodeError:
        return quote(name.encode("utf-8", "surrogatepass"), safe="")


def _page_rows(rows: Sequence[dict]) -> list[dict]:
    """The rows as the page reads them, in one copy: no NaN (JSON.parse refuses it), and what the page shows of
    each: the path below the folder all images share, and links."""
    common = _common_folder(rows)
    out = []
    for r in rows:
        path = str(r.get("image") or "")
        below = path[len(common):] if common and path.startswith(common) else path
        out.append({**{k: _finite(v) for k, v in r.items()}, "_shown": _readable(below),
                    "_href": _href(r.get("figure")), "_npy": _href(r.get("npy"))})
    return out


def _common_folder(rows: Sequence[dict]) -> str:
    """The folder every row's image is in, with its trailing separator ('' if none)."""
    paths = [str(r.get("image") or "") for r in rows]
    if not paths:
        return ""
    try:
        common = os.path.commonpath([os.path.dirname(p) for p in paths])
    except ValueError:  # absolute and relative paths mixed, or other drives
        return ""
    return common if not common or common.endswith(os.sep) else common + os.sep


def render_page(rows: Sequence[dict], title: str, subtitle: str = "", per_page: int = PER_PAGE) -> str:
    """The page for ``rows`` (ResultWriter's rows: image, target, label, probability, top1..5, error, figure)."""
    failed = sum(1 for r in rows if r.get("error"))
    counts = f"{len(rows) - failed} explained, {failed} failed"
    # the script by its hash, not 'unsafe-inline': were a name ever read as markup, no script of it would run
    script = base64.b64encode(hashlib.sha256(_JS.encode("utf-8")).digest()).decode("ascii")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'sha256-{script}'">
<title>{html.escape(title)}</title>
<style>{_CSS}</style>
</head>
<body data-per-page="{int(per_page)}">
<header id="top">
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
<main id="grid" tabindex="-1" aria-label="figures"></main>
<p id="none" class="empty" hidden></p>
<nav class="pager" aria-label="pages"><button id="first" type="button">« first</button>
<button id="prev" type="button">‹ previous</button>
<label>page <input id="pageno" type="number" min="1" value="1" inputmode="numeric"></label><span id="pages"></span>
<button id="next" type="button">next ›</button><button id="last" type="button">last »</button></nav>
<script type="application/json" id="rows">{_json_for_script(_page_rows(rows))}</script>
<script>{_JS}</script>
</body>
</html>
"""


__all__ = ["PAGE", "PER_PAGE", "render_page"]
