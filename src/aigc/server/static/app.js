// aigc-studio web page: plain JavaScript, no framework, no CDN (works offline).
"use strict";

const I18N = {
  en: {
    "tab.play": "Playground", "tab.runs": "Runs", "tab.datasets": "Datasets", "tab.log": "Log",
    "key.set": "API key", "key.prompt": "API key for this server (kept in this browser only):",
    "key.needed": "This server needs an API key: click “API key”.",
    "play.run": "Run", "play.compare": "Compare with", "play.none": "(none)", "play.temperature": "Temperature",
    "play.max_tokens": "Max tokens", "play.class": "Class", "play.count": "Images", "play.steps": "Steps",
    "play.seed": "Seed", "play.prompt": "Prompt (the run continues it)", "play.generate": "Generate",
    "play.stop": "Stop", "play.any": "(any)", "play.saved": "Thanks, saved.", "play.stopped": "stopped",
    "play.no_runs": "No trained runs yet: train one with `aigc train`.",
    "play.stats": "{tokens} tokens · {tps} tok/s · first token {ttft} ms",
    "col.name": "Name", "col.family": "Family", "col.dataset": "Dataset", "col.status": "Status", "col.step": "Step",
    "col.val": "Best val loss", "col.modality": "Modality", "col.created": "Created", "col.time": "Time",
    "col.run": "Run", "col.prompt": "Prompt", "col.output": "Output", "log.refresh": "Refresh",
    "run.curve": "Loss curve", "run.eval": "Evaluation", "run.samples": "Samples", "run.train": "train",
    "run.val": "validation", "ds.card": "Dataset card", "ds.preview": "Preview",
  },
  zh: {
    "tab.play": "试玩", "tab.runs": "训练任务", "tab.datasets": "数据集", "tab.log": "生成记录",
    "key.set": "API 密钥", "key.prompt": "本服务器的 API 密钥（只保存在此浏览器中）：",
    "key.needed": "此服务器需要 API 密钥：请点击“API 密钥”。",
    "play.run": "模型", "play.compare": "对比模型", "play.none": "（无）", "play.temperature": "温度",
    "play.max_tokens": "最多生成词元", "play.class": "类别", "play.count": "图片数", "play.steps": "步数",
    "play.seed": "随机种子", "play.prompt": "提示词（模型将续写）", "play.generate": "生成",
    "play.stop": "停止", "play.any": "（任意）", "play.saved": "已保存，谢谢。", "play.stopped": "已停止",
    "play.no_runs": "还没有训练好的模型：请先运行 `aigc train`。",
    "play.stats": "{tokens} 个词元 · 每秒 {tps} 个 · 首词元 {ttft} 毫秒",
    "col.name": "名称", "col.family": "模型族", "col.dataset": "数据集", "col.status": "状态", "col.step": "步数",
    "col.val": "最佳验证损失", "col.modality": "模态", "col.created": "创建时间", "col.time": "时间",
    "col.run": "模型", "col.prompt": "提示词", "col.output": "输出", "log.refresh": "刷新",
    "run.curve": "损失曲线", "run.eval": "评估", "run.samples": "样例", "run.train": "训练",
    "run.val": "验证", "ds.card": "数据集卡片", "ds.preview": "预览",
  },
};

let lang = localStorage.getItem("aigc.lang") || ((navigator.language || "en").startsWith("zh") ? "zh" : "en");
const $ = (sel) => document.querySelector(sel);
const t = (key, vars = {}) => (I18N[lang][key] || I18N.en[key] || key).replace(/\{(\w+)\}/g, (_, k) => vars[k]);
let runs = [];
let controllers = [];

function applyLang() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
  $("#lang").textContent = lang === "zh" ? "English" : "中文";
}

function banner(text) {
  const el = $("#banner");
  el.textContent = text || "";
  el.hidden = !text;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const key = localStorage.getItem("aigc.key");
  if (key) headers.Authorization = "Bearer " + key;
  if (options.body && typeof options.body !== "string") {
    headers["Content-Type"] = "application/json";
    options = Object.assign({}, options, { body: JSON.stringify(options.body) });
  }
  const res = await fetch(path, Object.assign({}, options, { headers }));
  if (res.status === 401) banner(t("key.needed"));
  if (!res.ok) {
    let message = res.status + " " + res.statusText;
    try { message = (await res.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return res;
}

async function imageUrl(path) {  // through fetch, so the API key goes along
  const res = await api(path);
  return URL.createObjectURL(await res.blob());
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// -- playground ---------------------------------------------------------------------------------

async function loadRuns() {
  runs = (await (await api("/api/runs")).json()).runs.filter((r) => r.servable);
  const select = $("#run-select"), compare = $("#compare-select");
  select.replaceChildren(...runs.map((r) => el("option", { value: r.name }, `${r.name} (${r.family})`)));
  compare.replaceChildren(el("option", { value: "" }, t("play.none")),
    ...runs.filter((r) => r.modality === "text").map((r) => el("option", { value: r.name }, r.name)));
  if (!runs.length) banner(t("play.no_runs"));
  onRunChange();
}

function currentRun() { return runs.find((r) => r.name === $("#run-select").value); }

function onRunChange() {
  const run = currentRun();
  const image = run && run.modality === "image";
  $("#text-opts").hidden = image;
  $("#image-opts").hidden = !image;
  $("#prompt").hidden = image;
  $("#compare-select").parentElement.hidden = image;
  const box = $("#cond-box");
  box.replaceChildren();
  if (!run) return;
  if (image) {
    $("#class-select").replaceChildren(el("option", { value: "" }, t("play.any")),
      ...run.classes.map((c) => el("option", { value: c }, c)));
    $("#steps-label").hidden = run.family !== "diffusion";
    return;
  }
  for (const [col, values] of Object.entries(run.conditions || {})) {
    const select = el("select", { "data-cond": col }, el("option", { value: "" }, t("play.any")),
      ...values.map((v) => el("option", { value: v }, v)));
    box.append(el("label", {}, col, select));
  }
}

function conditions() {
  const cond = {};
  document.querySelectorAll("#cond-box select").forEach((s) => { if (s.value) cond[s.dataset.cond] = s.value; });
  return cond;
}

function seedValue() { const v = $("#seed").value; return v === "" ? undefined : Number(v); }

function rateBox(index, getId) {
  const status = el("span", { class: "muted", id: `feedback-status-${index}` });
  const vote = async (rating, button) => {
    try {
      await api("/api/feedback", { method: "POST", body: { generation_id: getId(), rating } });
      button.classList.add("voted");
      status.textContent = t("play.saved");
    } catch (e) { status.textContent = e.message; }
  };
  const up = el("button", { id: `thumb-up-${index}`, disabled: "", title: "👍" }, "👍");
  const down = el("button", { id: `thumb-down-${index}`, disabled: "", title: "👎" }, "👎");
  up.addEventListener("click", () => vote("up", up));
  down.addEventListener("click", () => vote("down", down));
  return { node: el("div", { class: "rate" }, up, down, status), enable() { up.disabled = false; down.disabled = false; } };
}

async function streamText(model, index, card) {
  const prompt = $("#prompt").value;
  const out = el("div", { class: "output", id: `output-${index}` }, el("span", { class: "prompt" }, prompt));
  let generationId = null;
  const rate = rateBox(index, () => generationId);
  const stats = el("div", { class: "muted", id: `stats-${index}` });
  card.append(el("h3", {}, model), out, stats, rate.node);
  const controller = new AbortController();
  controllers.push(controller);
  const body = {
    model, prompt, cond: conditions(), stream: true,
    options: { temperature: Number($("#temperature").value), top_p: Number($("#top-p").value),
               num_predict: Number($("#max-tokens").value), seed: seedValue() },
  };
  try {
    const res = await api("/api/generate", { method: "POST", body, signal: controller.signal });
    generationId = res.headers.get("X-Generation-Id");
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (!line.trim()) continue;
        const msg = JSON.parse(line);
        if (msg.error) throw new Error(msg.error);
        if (!msg.done) out.append(msg.response);
        else {
          generationId = msg.id;
          const seconds = Math.max(1e-9, msg.eval_duration / 1e9);
          stats.textContent = t("play.stats", { tokens: msg.eval_count, tps: (msg.eval_count / seconds).toFixed(0),
                                                ttft: msg.ttft_ms === null ? "-" : msg.ttft_ms.toFixed(0) });
        }
      }
    }
    rate.enable();
  } catch (e) {
    stats.textContent = e.name === "AbortError" ? t("play.stopped") : e.message;
    if (e.name === "AbortError" && generationId) rate.enable();
  }
}

async function generateImages(run, card) {
  const body = { model: run.name, n: Number($("#image-n").value), response_format: "b64_json", seed: seedValue() };
  if ($("#class-select").value) body.label = $("#class-select").value;
  if (run.family === "diffusion") body.steps = Number($("#steps").value);
  let generationId = null;
  const rate = rateBox(0, () => generationId);
  const grid = el("div", { class: "grid", id: "image-grid" });
  const stats = el("div", { class: "muted", id: "stats-0" });
  card.append(el("h3", {}, run.name), grid, stats, rate.node);
  const started = performance.now();
  try {
    const data = await (await api("/v1/images/generations", { method: "POST", body })).json();
    generationId = data.id;
    grid.replaceChildren(...data.data.map((d) => el("img", { src: "data:image/png;base64," + d.b64_json, alt: data.label || "" })));
    stats.textContent = `${data.data.length} × ${run.image_size}px · ${((performance.now() - started) / 1000).toFixed(1)} s`;
    rate.enable();
  } catch (e) { stats.textContent = e.message; }
}

async function generate() {
  const run = currentRun();
  if (!run) return;
  banner("");
  const outputs = $("#outputs");
  outputs.replaceChildren();
  $("#generate").disabled = true;
  $("#stop").disabled = false;
  controllers = [];
  const jobs = [];
  if (run.modality === "image") {
    const card = el("div", { class: "card" });
    outputs.append(card);
    jobs.push(generateImages(run, card));
  } else {
    const models = [run.name];
    if ($("#compare-select").value) models.push($("#compare-select").value);
    models.forEach((m, i) => { const card = el("div", { class: "card" }); outputs.append(card); jobs.push(streamText(m, i, card)); });
  }
  await Promise.allSettled(jobs);
  $("#generate").disabled = false;
  $("#stop").disabled = true;
}

// -- runs, datasets, log ----------------------------------------------------------------------------

function drawCurve(canvas, train, val) {
  const ctx = canvas.getContext("2d");
  const series = [[train, "train_loss", "#2357d6", t("run.train")], [val, "val_loss", "#d2691e", t("run.val")]]
    .filter(([rows]) => rows.length);
  const points = series.flatMap(([rows, key]) => rows.map((r) => [r.step, r[key]])).filter(([, y]) => Number.isFinite(y));
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!points.length) return;
  const [x0, x1] = [Math.min(...points.map((p) => p[0])), Math.max(...points.map((p) => p[0]))];
  const [y0, y1] = [Math.min(...points.map((p) => p[1])), Math.max(...points.map((p) => p[1]))];
  const W = canvas.width, H = canvas.height, pad = 36;
  const sx = (x) => pad + (x - x0) / Math.max(1e-9, x1 - x0) * (W - 2 * pad);
  const sy = (y) => H - pad - (y - y0) / Math.max(1e-9, y1 - y0) * (H - 2 * pad);
  ctx.strokeStyle = "#ccc"; ctx.strokeRect(pad, pad, W - 2 * pad, H - 2 * pad);
  ctx.fillStyle = "#555"; ctx.font = "11px sans-serif";
  ctx.fillText(y1.toFixed(3), 2, pad + 4); ctx.fillText(y0.toFixed(3), 2, H - pad); ctx.fillText(String(x1), W - pad - 20, H - pad + 14);
  series.forEach(([rows, key, color, label], k) => {
    ctx.strokeStyle = color; ctx.beginPath();
    rows.filter((r) => Number.isFinite(r[key])).forEach((r, i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, sx(r.step), sy(r[key])));
    ctx.stroke(); ctx.fillStyle = color; ctx.fillText(label, W - pad - 80, pad + 14 + 14 * k);
  });
}

function kv(obj) {
  const dl = el("dl", { class: "kv" });
  for (const [k, v] of Object.entries(obj || {})) {
    if (v === null || typeof v === "object") continue;
    dl.append(el("dt", {}, k), el("dd", {}, typeof v === "number" ? Number(v.toFixed ? v.toFixed(4) : v) : v));
  }
  return dl;
}

async function showRun(name) {
  const run = await (await api(`/api/runs/${encodeURIComponent(name)}`)).json();
  const canvas = el("canvas", { width: 640, height: 260, id: "loss-curve" });
  const detail = el("div", { class: "detail" }, el("h3", {}, run.name), el("h4", {}, t("run.curve")), canvas);
  drawCurve(canvas, run.curve.train, run.curve.val);
  if (run.eval) detail.append(el("h4", {}, t("run.eval")), kv(run.eval));
  if (run.images.length) {
    detail.append(el("h4", {}, t("run.samples")));
    for (const img of run.images.slice(-4)) {
      const node = el("img", { class: "sheet", alt: img });
      detail.append(el("div", {}, el("div", { class: "muted" }, img), node));
      imageUrl(`/api/runs/${encodeURIComponent(name)}/files/${img}`).then((u) => { node.src = u; });
    }
  }
  $("#run-detail").replaceChildren(detail);
}

async function loadRunsPage() {
  const all = (await (await api("/api/runs")).json()).runs;
  $("#runs-table tbody").replaceChildren(...all.map((r) => el("tr", { onclick: () => showRun(r.name) },
    el("td", {}, r.name), el("td", {}, r.family), el("td", {}, r.dataset), el("td", {}, r.status),
    el("td", {}, r.step), el("td", {}, r.best_val_loss === null ? "-" : r.best_val_loss.toFixed(4)))));
}

async function showDataset(name) {
  const ds = await (await api(`/api/datasets/${encodeURIComponent(name)}`)).json();
  const card = ds.card || {};
  const detail = el("div", { class: "detail" }, el("h3", {}, `${t("ds.card")}: ${name}`), kv(card),
    el("pre", { class: "muted" }, JSON.stringify(card.counts || {}, null, 1)));
  for (const key of ["class_histogram", "classes", "cond_columns", "columns"]) {
    if (card[key]) detail.append(el("div", {}, el("b", {}, key + ": "), JSON.stringify(card[key])));
  }
  if (ds.has_preview) {
    const img = el("img", { class: "sheet", alt: "preview" });
    detail.append(el("h4", {}, t("ds.preview")), img);
    imageUrl(`/api/datasets/${encodeURIComponent(name)}/preview.png`).then((u) => { img.src = u; });
  }
  $("#dataset-detail").replaceChildren(detail);
}

async function loadDatasetsPage() {
  const all = (await (await api("/api/datasets")).json()).datasets;
  $("#datasets-table tbody").replaceChildren(...all.map((d) => el("tr", { onclick: () => showDataset(d.name) },
    el("td", {}, d.name), el("td", {}, d.modality), el("td", {}, d.n_train), el("td", {}, d.n_val),
    el("td", {}, d.n_test), el("td", {}, d.created_at))));
}

async function loadLog() {
  const rows = (await (await api("/api/generations?limit=100")).json()).generations;
  $("#log-table tbody").replaceChildren(...rows.map((g) => {
    const out = g.output.texts ? g.output.texts.join(" ‖ ") : `${(g.output.images || []).length} images`;
    return el("tr", { "data-id": g.id }, el("td", {}, g.created_at.replace("T", " ").slice(0, 19)), el("td", {}, g.run),
      el("td", { class: "clip" }, g.prompt), el("td", { class: "clip" }, out), el("td", { class: "up" }, g.up),
      el("td", { class: "down" }, g.down), el("td", {}, g.status), el("td", {}, Math.round(g.latency_ms)));
  }));
}

// -- wiring ---------------------------------------------------------------------------------------------

function showTab(name) {
  document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  document.querySelectorAll(".page").forEach((p) => { p.hidden = p.id !== name; });
  const load = { runs: loadRunsPage, datasets: loadDatasetsPage, log: loadLog }[name];
  if (load) load().catch((e) => banner(e.message));
}

document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
$("#lang").addEventListener("click", () => { lang = lang === "zh" ? "en" : "zh"; localStorage.setItem("aigc.lang", lang); applyLang(); onRunChange(); });
$("#key").addEventListener("click", () => {
  const key = prompt(t("key.prompt"), localStorage.getItem("aigc.key") || "");
  if (key !== null) { localStorage.setItem("aigc.key", key.trim()); banner(""); loadRuns().catch((e) => banner(e.message)); }
});
$("#run-select").addEventListener("change", onRunChange);
$("#generate").addEventListener("click", generate);
$("#stop").addEventListener("click", () => controllers.forEach((c) => c.abort()));
$("#log-refresh").addEventListener("click", () => loadLog().catch((e) => banner(e.message)));
applyLang();
loadRuns().catch((e) => banner(e.message));
