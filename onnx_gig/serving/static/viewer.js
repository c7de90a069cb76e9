// onnx-gig viewer: upload photos to this server's /view/api, show the figure and the top classes.
// Everything from the server (labels, names, messages) is put on the page as text (textContent), never as
// HTML: labels come from the model's metadata and are untrusted.
"use strict";

const API = "view/api/models";
const state = { models: [], config: null, cards: [], queue: Promise.resolve(), nextId: 1 };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  // A DOM element with attributes (set as properties or attributes) and text/element children.
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function percent(p) {
  return p >= 0.001 ? (100 * p).toFixed(1) + "%" : "<0.1%";
}

function bytesText(n) {
  return n >= 1 << 20 ? (n / (1 << 20)).toFixed(n % (1 << 20) ? 1 : 0) + " MB" : Math.round(n / 1024) + " KB";
}

function b64Blob(b64, type) {
  const raw = atob(b64);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return new Blob([bytes], { type });
}

function stem(name) {
  const base = name.replace(/^.*[\\/]/, "");
  const dot = base.lastIndexOf(".");
  return (dot > 0 ? base.slice(0, dot) : base).replace(/[^\w.-]+/g, "_") || "photo";
}

function options() {
  return {
    steps: $("steps").value, baseline: $("baseline").value, clip: $("clip").value, sign: $("sign").value,
    alpha: $("alpha").value,
  };
}

// ------------------------------------------------------------------ one card per photo

function makeCard(file) {
  const card = {
    id: state.nextId++, file, target: null, generation: 0, urls: [],
    node: null, refs: {},
  };
  const r = card.refs;
  r.title = el("span", { class: "filename", text: file.name || "photo" });
  r.status = el("span", { class: "status", text: "waiting" });
  r.progress = el("div", { class: "progress", "aria-hidden": "true" });
  r.close = el("button", { class: "icon", title: "remove", "aria-label": "remove this photo", text: "\u00d7",
                          onclick: () => removeCard(card) });
  r.figure = el("img", { class: "figure", alt: "photo, attribution map and overlay" });
  r.figureBox = el("div", { class: "figure-box" }, r.figure);
  r.explained = el("div", { class: "explained" });
  r.top = el("ol", { class: "top" });
  r.error = el("div", { class: "error", role: "alert", hidden: "" });
  r.notes = el("div", { class: "notes muted small", hidden: "" });
  r.png = el("a", { class: "button small", download: "", text: "Download PNG", "aria-disabled": "true" });
  r.npy = el("a", { class: "button small ghost", download: "", text: "Download .npy", "aria-disabled": "true" });
  r.meta = el("span", { class: "muted small meta" });
  const side = el("div", { class: "side" },
    el("div", { class: "side-title", text: "Top classes" }),
    el("div", { class: "muted small", text: "click one to explain it" }), r.top);
  card.node = el("article", { class: "card", "data-state": "busy" },
    r.progress,
    el("header", { class: "card-head" }, r.title, r.explained, el("span", { class: "spacer" }), r.status, r.close),
    r.error,
    el("div", { class: "card-body" }, r.figureBox, side),
    r.notes,
    el("footer", { class: "card-foot" }, r.png, r.npy, r.meta));
  return card;
}

function removeCard(card) {
  card.generation++;
  card.urls.forEach((u) => URL.revokeObjectURL(u));
  card.node.remove();
  state.cards = state.cards.filter((c) => c !== card);
  $("empty").hidden = state.cards.length > 0;
}

function setBusy(card, text) {
  card.node.dataset.state = "busy";
  card.refs.status.textContent = text;
}

function showError(card, message) {
  card.node.dataset.state = "error";
  card.refs.status.textContent = "failed";
  card.refs.error.hidden = false;
  card.refs.error.textContent = message;
}

function showAnswer(card, a) {
  const r = card.refs;
  card.node.dataset.state = "done";
  card.node.dataset.target = String(a.target);
  r.error.hidden = true;
  r.status.textContent = `${a.steps} steps in ${a.seconds.toFixed(1)} s` + (a.cached ? ", redrawn" : "");
  r.explained.replaceChildren(
    el("span", { class: "muted", text: "explaining " }),
    el("strong", { class: "explained-label", text: a.label }),
    el("span", { class: "muted", text: ` (${percent(a.probability)})` }));
  r.figure.src = "data:image/png;base64," + a.figure_png;
  r.figure.dataset.target = String(a.target);
  r.top.replaceChildren(...a.top.map((t) => {
    const pressed = t.class === a.target;
    const button = el("button", {
      class: "class" + (pressed ? " chosen" : ""), "aria-pressed": String(pressed), "data-class": String(t.class),
      title: `explain class ${t.class}`,
      onclick: () => { if (!pressed) { card.target = t.class; explain(card); } },
    },
    el("span", { class: "bar" }),
    el("span", { class: "class-label", text: t.label }),
    el("span", { class: "prob", text: percent(t.probability) }));
    button.firstChild.style.width = Math.max(0.5, 100 * t.probability).toFixed(1) + "%";
    return el("li", {}, button);
  }));
  card.urls.forEach((u) => URL.revokeObjectURL(u));
  const png = URL.createObjectURL(b64Blob(a.figure_png, "image/png"));
  const npy = URL.createObjectURL(b64Blob(a.attributions_npy, "application/octet-stream"));
  card.urls = [png, npy];
  const name = `${stem(card.file.name)}_${a.model}_class${a.target}`;
  Object.assign(r.png, { href: png, download: name + ".png" });
  Object.assign(r.npy, { href: npy, download: name + ".npy" });
  r.png.removeAttribute("aria-disabled");
  r.npy.removeAttribute("aria-disabled");
  r.meta.textContent = `${a.method} \u00b7 ${a.steps} steps ${a.rule} \u00b7 baseline ${a.baseline} \u00b7 ` +
    `map ${a.sign} \u00b7 .npy ${a.shape.join("\u00d7")} float32`;
  r.notes.hidden = a.notes.length === 0;
  r.notes.textContent = a.notes.join(" ");
}

async function readError(response) {
  // The server's one-line message, whatever the body is.
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === "string") return body.error;
  } catch (e) { /* not JSON */ }
  return `HTTP ${response.status} ${response.statusText}`.trim();
}

function explain(card) {
  // Queue one request for this card (one at a time: the server runs one integration per model anyway).
  const generation = ++card.generation;
  const model = $("model").value;
  const params = new URLSearchParams(options());
  if (card.target !== null) params.set("target", String(card.target));
  setBusy(card, "queued");
  state.queue = state.queue.then(async () => {
    if (generation !== card.generation) return;
    const limit = state.config ? state.config.max_upload : Infinity;
    if (card.file.size > limit) {
      showError(card, `${card.file.name}: ${bytesText(card.file.size)} is more than this server's limit of ` +
        `${bytesText(limit)} per photo`);
      return;
    }
    setBusy(card, params.get("steps") ? `explaining with ${params.get("steps")} steps\u2026` : "explaining\u2026");
    try {
      const response = await fetch(`${API}/${encodeURIComponent(model)}/explain?${params}`, {
        method: "POST", body: card.file, headers: { "Content-Type": "application/octet-stream" },
      });
      if (generation !== card.generation) return;
      if (!response.ok) {
        showError(card, `${card.file.name}: ${await readError(response)}`);
        return;
      }
      showAnswer(card, await response.json());
    } catch (e) {
      if (generation === card.generation) showError(card, `${card.file.name}: the server did not answer (${e.message})`);
    }
  });
}

function addFiles(files) {
  for (const file of files) {
    const card = makeCard(file);
    state.cards.unshift(card);
    $("results").prepend(card.node);
    explain(card);
  }
  $("empty").hidden = state.cards.length > 0;
}

function rerunAll(resetTargets) {
  for (const card of state.cards) {
    if (resetTargets) card.target = null;
    explain(card);
  }
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

// ------------------------------------------------------------------ set up

function describeModel() {
  const m = state.models.find((x) => x.name === $("model").value);
  if (!m) return;
  $("model-info").textContent = `${m.method} \u00b7 ${m.device} \u00b7 ` +
    (m.classes ? `${m.classes} classes` : "classes unknown");
  $("steps").value = String(Math.min(m.default_steps, 50));
}

async function init() {
  const drop = $("drop");
  $("files").addEventListener("change", (e) => { addFiles(e.target.files); e.target.value = ""; });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("files").click(); });
  for (const type of ["dragenter", "dragover"]) {
    window.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("hover"); });
  }
  window.addEventListener("dragleave", (e) => { if (!e.relatedTarget) drop.classList.remove("hover"); });
  window.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("hover");
    if (e.dataTransfer && e.dataTransfer.files.length) addFiles(e.dataTransfer.files);
  });
  const redraw = debounce(() => rerunAll(false), 250);
  for (const id of ["clip", "alpha"]) {
    $(id).addEventListener("input", () => { $(id + "-out").textContent = $(id).value; });
    $(id).addEventListener("change", redraw);
  }
  $("steps").addEventListener("change", redraw);
  $("baseline").addEventListener("change", redraw);
  $("sign").addEventListener("change", redraw);
  $("model").addEventListener("change", () => { describeModel(); rerunAll(true); });

  try {
    const response = await fetch(API);
    if (!response.ok) throw new Error(await readError(response));
    state.config = await response.json();
  } catch (e) {
    $("empty").replaceChildren(el("p", { class: "error", role: "alert",
      text: `Cannot reach the server's model list: ${e.message}` }));
    return;
  }
  state.models = state.config.models;
  $("model").replaceChildren(...state.models.map((m) => new Option(m.name, m.name)));
  $("baseline").replaceChildren(...state.config.baselines.map((b) => new Option(b, b)));
  $("sign").replaceChildren(...state.config.signs.map((s) => new Option(s === "all" ? "all (signed)" : s, s)));
  $("steps").max = String(state.config.max_steps);
  if (state.config.clip_range) [$("clip").min, $("clip").max] = state.config.clip_range.map(String);
  $("clip").value = String(state.config.default_clip);
  $("clip-out").textContent = $("clip").value;
  $("alpha").value = String(state.config.default_alpha);
  $("alpha-out").textContent = $("alpha").value;
  $("limit").textContent = `PNG, JPEG, \u2026 up to ${bytesText(state.config.max_upload)} each`;
  describeModel();
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", init);
