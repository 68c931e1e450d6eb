// mmguard browser UI: vanilla JavaScript over the REST API. The API key lives in an HttpOnly
// cookie set by POST /api/v1/session; this script never sees it. Every request that changes
// something carries the X-Mmguard-Ui header (the API's CSRF check for cookie sign-in).
"use strict";

const API = "/api/v1";
const CSRF = { "X-Mmguard-Ui": "1" };
const PRESETS = [
  ["fast", "Fast: minutes on a CPU; a cheaper kind of image noise, no verification run. Weaker against models left out of the protection."],
  ["balanced", "Balanced: the default; image noise aimed at the wrong answer for models taught the task, then a check against a model left out of the protection (shown on the job page)."],
  ["strong", "Strong: longer optimisation with more image transformations (JPEG included), a longer trigger (32 inserted words instead of 12), smooth image noise aimed at two kinds of model copies and at small image classifiers trained from scratch on your samples, plus the check; slower, cleaner-looking images."],
];
const ACTIVE = new Set(["queued", "running"]);

const $ = (id) => document.getElementById(id);
const state = { owner: null, dataset: null, poll: null, jobId: null, samplesOffset: 0 };

// -- messages --------------------------------------------------------------------------------
function sentence(text) {
  text = String(text || "").trim();
  if (!text) return "Something went wrong.";
  text = text.charAt(0).toUpperCase() + text.slice(1);
  return /[.!?]$/.test(text) ? text : text + ".";
}

function showError(message) {
  const box = $("error");
  box.textContent = sentence(message);
  box.hidden = false;
  window.scrollTo({ top: 0 });
}

function clearMessages() { $("error").hidden = true; $("notice").hidden = true; }

function showNotice(message) { $("notice").textContent = sentence(message); $("notice").hidden = false; }

class ApiFailure extends Error {
  constructor(status, message, body) { super(message); this.status = status; this.body = body || {}; }
}

function describe(status, body) {
  if (status === 401) return "You are not signed in, or your API key is no longer valid. Sign in again";
  if (status === 413) return "The file is too large for this server: " + (body.detail || "");
  if (status >= 500) return status === 503 ? (body.detail || "A service the server needs is unavailable; try again later")
    : "Something went wrong on the server; try again, and tell its operator if it keeps happening";
  return body.detail || "The request failed (HTTP " + status + ")";
}

async function api(method, path, body) {
  const options = { method, headers: { ...CSRF }, credentials: "same-origin" };
  if (body !== undefined) { options.headers["Content-Type"] = "application/json"; options.body = JSON.stringify(body); }
  let response;
  try { response = await fetch(API + path, options); }
  catch (_) { throw new ApiFailure(0, "The server cannot be reached. Check that mmguard is running and try again"); }
  if (response.status === 204) return null;
  let data = {};
  try { data = await response.json(); } catch (_) { data = {}; }
  if (!response.ok) throw new ApiFailure(response.status, describe(response.status, data), data);
  return data;
}

function failed(error) {
  if (error instanceof ApiFailure) {
    if (error.status === 401 && state.owner) { signedOut(); }
    showError(error.message);
  } else {
    console.error(error);
    showError("Something unexpected happened in the page; reload it and try again");
  }
}

// -- formatting ------------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}
function bytes(n) {
  const units = ["bytes", "KB", "MB", "GB"]; let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}
function when(iso) { return iso ? new Date(iso).toLocaleString() : ""; }
function fixed(x, digits) { return x === null || x === undefined ? "—" : Number(x).toFixed(digits); }

// -- pages -----------------------------------------------------------------------------------
function show(page) {
  for (const id of ["page-signin", "page-datasets", "page-jobs", "page-job"]) $(id).hidden = id !== page;
  $("nav-datasets").classList.toggle("active", page === "page-datasets");
  $("nav-jobs").classList.toggle("active", page === "page-jobs" || page === "page-job");
}

function stopPolling() { if (state.poll) { clearTimeout(state.poll); state.poll = null; } }

async function route() {
  stopPolling();
  if (!state.owner) { show("page-signin"); return; }
  const hash = location.hash || "#/datasets";
  const job = hash.match(/^#\/jobs\/([0-9a-f-]{36})$/);
  try {
    if (job) { show("page-job"); await openJob(job[1]); }
    else if (hash === "#/jobs") { show("page-jobs"); await refreshJobs(); }
    else { show("page-datasets"); await refreshDatasets(); }
  } catch (error) { failed(error); }
}

// -- sign in / out ---------------------------------------------------------------------------
function signedIn(owner) {
  state.owner = owner;
  $("owner").textContent = "signed in as " + owner;
  $("nav").hidden = false;
}
function signedOut() {
  state.owner = null;
  $("nav").hidden = true;
  stopPolling();
  show("page-signin");
}

async function signIn(event) {
  event.preventDefault();
  clearMessages();
  const key = $("key").value.trim();
  if (!key) { showError("Paste your API key first"); return; }
  try {
    const who = await api("POST", "/session", { key });
    $("key").value = "";
    signedIn(who.owner);
    if (!location.hash || location.hash === "#/signin") location.hash = "#/datasets"; else await route();
  } catch (error) {
    if (error instanceof ApiFailure && error.status === 401) showError("That API key is not valid or has been revoked. Check it and try again");
    else failed(error);
  }
}

async function signOut() {
  clearMessages();
  try { await api("DELETE", "/session"); } catch (error) { failed(error); }
  signedOut();
  showNotice("You are signed out");
}

// -- datasets and upload ---------------------------------------------------------------------
async function refreshDatasets() {
  const list = await api("GET", "/datasets?limit=100");
  const body = $("datasets-table").querySelector("tbody");
  body.replaceChildren();
  for (const d of list.data) {
    const protect = el("button", { type: "button", class: "secondary", "data-id": d.id, text: "Protect" });
    protect.addEventListener("click", () => { chooseDataset(d); window.scrollTo({ top: 0 }); });
    const remove = el("button", { type: "button", class: "danger", text: "Delete" });
    remove.addEventListener("click", async () => {
      if (!confirm("Delete the dataset " + d.name + "? Jobs made from it keep their results.")) return;
      try { await api("DELETE", "/datasets/" + d.id); if (state.dataset && state.dataset.id === d.id) chooseDataset(null); await refreshDatasets(); }
      catch (error) { failed(error); }
    });
    body.append(el("tr", {}, el("td", { text: d.name }), el("td", { text: String(d.sample_count) }),
      el("td", { text: d.layout }), el("td", { text: d.kind }), el("td", { text: bytes(d.size_bytes) }),
      el("td", { text: when(d.created_at) }), el("td", {}, protect, " ", remove)));
  }
  $("datasets-empty").hidden = list.count > 0;
}

function chooseDataset(dataset) {
  state.dataset = dataset;
  $("start-form").hidden = !dataset;
  if (dataset) $("start-dataset").textContent = dataset.name + " (" + dataset.sample_count + " samples)";
}

function renderAccepted(d) {
  const box = $("validation");
  box.className = "accepted";
  box.replaceChildren(
    el("h3", { text: "Validation report: the dataset is usable" }),
    el("table", { id: "validation-summary" }, el("tbody", {},
      el("tr", {}, el("th", { text: "File" }), el("td", { text: d.name })),
      el("tr", {}, el("th", { text: "Samples" }), el("td", { id: "validation-samples", text: String(d.sample_count) })),
      el("tr", {}, el("th", { text: "Detected format" }), el("td", { id: "validation-format", text: d.layout + " (" + d.archive_format + ")" })),
      el("tr", {}, el("th", { text: "Kind" }), el("td", { text: d.kind === "vqa" ? "visual question answering" : "captions" })),
      el("tr", {}, el("th", { text: "Size" }), el("td", { text: bytes(d.size_bytes) })),
      el("tr", {}, el("th", { text: "Problems" }), el("td", { text: "none: every sample and image could be read" })))));
  box.hidden = false;
}

function renderRejected(message, problems) {
  const box = $("validation");
  box.className = "rejected";
  const children = [el("h3", { class: "problem", text: "Validation report: the dataset was rejected" }),
    el("p", { text: sentence(message) })];
  if (problems && problems.length) {
    const rows = problems.map((p) => el("tr", {}, el("td", { text: p.file || "(archive)" }),
      el("td", { text: p.line ? String(p.line) : "" }), el("td", { text: sentence(p.message) })));
    children.push(el("table", { id: "problems" }, el("thead", {}, el("tr", {}, el("th", { text: "File" }),
      el("th", { text: "Line" }), el("th", { text: "Problem" }))), el("tbody", {}, ...rows)));
  }
  children.push(el("p", { class: "note", text: "Fix these and upload the archive again; no job can start from a rejected dataset." }));
  box.replaceChildren(...children);
  box.hidden = false;
}

function upload(file) {
  clearMessages();
  chooseDataset(null);
  $("validation").hidden = true;
  const lower = file.name.toLowerCase();
  if (!lower.endsWith(".zip") && !lower.endsWith(".tar")) {
    showError("Only .zip and plain .tar archives can be uploaded; " + file.name + " is neither");
    return;
  }
  const form = new FormData();
  form.append("file", file, file.name);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", API + "/datasets");
  xhr.setRequestHeader("X-Mmguard-Ui", "1");
  $("upload-status").hidden = false;
  $("upload-progress").value = 0;
  $("upload-text").textContent = "Uploading " + file.name + "…";
  xhr.upload.onprogress = (event) => {
    if (!event.lengthComputable) return;
    const percent = Math.round((100 * event.loaded) / event.total);
    $("upload-progress").value = percent;
    $("upload-text").textContent = percent < 100 ? "Uploading " + file.name + ": " + percent + " %" : "Checking the dataset…";
  };
  xhr.onerror = () => { $("upload-status").hidden = true; showError("The upload failed: the server cannot be reached"); };
  xhr.onload = async () => {
    $("upload-progress").value = 100;
    let data = {};
    try { data = JSON.parse(xhr.responseText); } catch (_) { data = {}; }
    if (xhr.status === 201) {
      $("upload-text").textContent = "Uploaded " + file.name + ".";
      renderAccepted(data);
      chooseDataset(data);
      try { await refreshDatasets(); } catch (error) { failed(error); }
    } else if (xhr.status === 422) {
      $("upload-text").textContent = "Uploaded " + file.name + ", but it cannot be used.";
      renderRejected(data.detail || "the dataset cannot be read", data.problems || []);
    } else {
      $("upload-status").hidden = true;
      if (xhr.status === 401) signedOut();
      showError(describe(xhr.status, data));
    }
  };
  xhr.send(form);
}

function setPreset() {
  const [name, note] = PRESETS[Number($("preset").value)];
  $("preset-name").textContent = name;
  $("preset-note").textContent = note;
}

function advancedConfig() {
  const config = {};
  const epsilon = $("opt-epsilon").value.trim();
  if (epsilon) config.epsilon = epsilon;
  const length = $("opt-trigger-length").value.trim();
  if (length) config.trigger_length = Number(length);
  if ($("opt-trigger-placement").value) config.trigger_placement = $("opt-trigger-placement").value;
  if ($("opt-trigger-position").value) config.trigger_position = $("opt-trigger-position").value;
  if ($("opt-trigger-vocabulary").value) config.trigger_vocabulary = $("opt-trigger-vocabulary").value;
  const surrogates = $("opt-surrogates").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (surrogates.length) config.surrogates = surrogates;
  if ($("opt-verify").value) config.verify = $("opt-verify").value === "on";
  // smooth noise: the per-sample noise on a 4x coarser grid (README, options)
  if ($("opt-noise").value) config.sample_noise_scale = Number($("opt-noise").value);
  const extra = $("opt-extra").value.trim();
  if (extra) {
    let parsed;
    try { parsed = JSON.parse(extra); } catch (_) { throw new Error("bad-json"); }
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("bad-json");
    Object.assign(config, parsed);
  }
  return config;
}

async function startJob(event) {
  event.preventDefault();
  clearMessages();
  if (!state.dataset) { showError("Upload or choose a dataset first"); return; }
  let config;
  try { config = advancedConfig(); }
  catch (_) { showError("The extra configuration fields must be a JSON object, such as {\"seed\": 1}"); return; }
  const body = { dataset_id: state.dataset.id, preset: PRESETS[Number($("preset").value)][0] };
  if (Object.keys(config).length) body.config = config;
  $("start").disabled = true;
  try {
    const job = await api("POST", "/jobs", body);
    location.hash = "#/jobs/" + job.id;
  } catch (error) {
    if (error instanceof ApiFailure && error.status === 422) showError("The job settings were refused: " + error.message);
    else failed(error);
  } finally { $("start").disabled = false; }
}

// -- jobs list -------------------------------------------------------------------------------
function progressBar(job) {
  const total = Math.max(1, job.progress.total);
  const bar = el("progress", { max: String(total), value: String(job.status === "succeeded" ? total : job.progress.done) });
  const text = ACTIVE.has(job.status) ? job.progress.done + " / " + job.progress.total + (job.progress.stage ? " · " + job.progress.stage : "")
    : job.status === "succeeded" ? "complete" : "stopped at " + job.progress.done + " / " + job.progress.total;
  return el("span", { class: "progress" }, bar, " " + text);
}

function cancelButton(job, after) {
  const button = el("button", { type: "button", class: "danger", text: job.cancel_requested ? "Cancelling…" : "Cancel" });
  button.disabled = job.cancel_requested;
  button.addEventListener("click", async () => {
    clearMessages();
    button.disabled = true;
    try { await api("POST", "/jobs/" + job.id + "/cancel"); showNotice("Cancelling the job"); await after(); }
    catch (error) { failed(error); button.disabled = false; }
  });
  return button;
}

async function refreshJobs() {
  const list = await api("GET", "/jobs?limit=100");
  const body = $("jobs-table").querySelector("tbody");
  body.replaceChildren();
  for (const job of list.data) {
    const actions = el("td", {}, el("a", { href: "#/jobs/" + job.id, class: "button secondary", text: "Open" }));
    if (ACTIVE.has(job.status)) actions.append(" ", cancelButton(job, refreshJobs));
    body.append(el("tr", { "data-id": job.id, "data-status": job.status },
      el("td", {}, el("a", { href: "#/jobs/" + job.id, text: job.id.slice(0, 8) })),
      el("td", { text: when(job.created_at) }), el("td", { text: job.preset || "custom" }),
      el("td", {}, el("span", { class: "status " + job.status, text: job.status })),
      el("td", {}, progressBar(job)), actions));
  }
  $("jobs-empty").hidden = list.count > 0;
  if (list.data.some((j) => ACTIVE.has(j.status)) && location.hash === "#/jobs") {
    state.poll = setTimeout(() => refreshJobs().catch(failed), 1000);
  }
}

// -- one job ---------------------------------------------------------------------------------
async function openJob(id) {
  if (state.jobId !== id) {
    state.jobId = id;
    $("job-results").hidden = true;
    $("samples").replaceChildren();
  }
  const job = await api("GET", "/jobs/" + id);
  $("job-id").textContent = id;
  $("job-status").textContent = job.status;
  $("job-status").className = "status " + job.status;
  $("job-stage").textContent = ACTIVE.has(job.status) ? (job.progress.stage || "") + " — " + job.progress.done
    + " of " + job.progress.total + " samples" : "";
  $("job-progress").max = Math.max(1, job.progress.total);
  $("job-progress").value = job.status === "succeeded" ? job.progress.total : job.progress.done;
  $("job-error").hidden = !job.error;
  $("job-error").textContent = job.error ? "The job failed: " + sentence(job.error) : "";
  const cancel = $("job-cancel");
  cancel.hidden = !ACTIVE.has(job.status);
  cancel.disabled = job.cancel_requested;
  cancel.textContent = job.cancel_requested ? "Cancelling…" : "Cancel job";
  const done = job.status === "succeeded";
  for (const [link, path, name] of [["download-archive", "/archive", "protected-" + id + ".zip"], ["download-report", "/report", "report-" + id + ".json"]]) {
    $(link).hidden = !done;
    $(link).href = API + "/jobs/" + id + path;
    $(link).setAttribute("download", name);
  }
  if (ACTIVE.has(job.status)) {
    state.poll = setTimeout(() => { if (location.hash === "#/jobs/" + id) openJob(id).catch(failed); }, 700);
  } else if (done && $("job-results").hidden) {
    await showResults(id);
  }
}

async function cancelCurrent() {
  clearMessages();
  $("job-cancel").disabled = true;
  try { await api("POST", "/jobs/" + state.jobId + "/cancel"); showNotice("Cancelling the job"); stopPolling(); await openJob(state.jobId); }
  catch (error) { failed(error); $("job-cancel").disabled = false; }
}

function histogram(values, bins, label) {
  const finite = values.filter((v) => v !== null && Number.isFinite(v));
  if (!finite.length) return el("p", { class: "note", text: "no finite values (images unchanged)" });
  let lo = Math.min(...finite), hi = Math.max(...finite);
  if (hi - lo < 1e-9) { lo -= 0.5 * (Math.abs(lo) * 0.01 + 1e-3); hi += 0.5 * (Math.abs(hi) * 0.01 + 1e-3); }
  const counts = new Array(bins).fill(0);
  for (const v of finite) counts[Math.min(bins - 1, Math.floor(((v - lo) / (hi - lo)) * bins))]++;
  const W = 320, H = 120, pad = 18, bw = W / bins, top = Math.max(...counts);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H + pad}`); svg.setAttribute("width", W); svg.setAttribute("height", H + pad);
  svg.setAttribute("role", "img"); svg.setAttribute("aria-label", label + " histogram");
  counts.forEach((c, i) => {
    const r = document.createElementNS(ns, "rect");
    const h = top ? (c / top) * (H - 4) : 0;
    r.setAttribute("x", i * bw + 1); r.setAttribute("y", H - h); r.setAttribute("width", bw - 2); r.setAttribute("height", h);
    r.setAttribute("fill", "#2458c6");
    const t = document.createElementNS(ns, "title"); t.textContent = c + " image(s)"; r.append(t);
    svg.append(r);
  });
  for (const [x, text, anchor] of [[0, lo.toFixed(3), "start"], [W, hi.toFixed(3), "end"]]) {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", x); t.setAttribute("y", H + 14); t.setAttribute("font-size", "11"); t.setAttribute("text-anchor", anchor);
    t.textContent = text; svg.append(t);
  }
  return svg;
}

function pct(v) { return v === null || v === undefined ? "—" : (v * 100).toFixed(0) + " %"; }

// the report's `verification`: a held-out model fine-tuned on clean vs protected samples (verify.py)
function renderVerification(v) {
  const box = $("verification");
  if (!v) { box.hidden = true; return; }
  const head = el("h3", { text: "Verification against a held-out model" });
  if (v.status !== "done") {
    box.replaceChildren(head, el("p", { class: "note", id: "verification-reason", text: "Skipped: " + (v.reason || "") }));
    box.hidden = false;
    return;
  }
  const rows = [["no countermeasure", v.acc_protected_trained, v.protection]];
  for (const c of Object.values(v.countermeasures || {})) rows.push([c.label, c.acc_protected_trained, c.protection]);
  const table = el("table", { id: "verification-table" },
    el("thead", {}, el("tr", {}, el("th", { text: "attacker trains on the protected copy with" }),
      el("th", { text: "accuracy on clean test" }), el("th", { text: "protection" }))),
    el("tbody", {}, ...rows.map(([label, acc, prot]) => el("tr", {}, el("td", { text: label }),
      el("td", { text: pct(acc) }), el("td", { text: pct(prot), class: "protection" })))));
  box.replaceChildren(head,
    el("p", { text: `${v.victim} (${v.threat}), fine-tuned ${v.recipe.epochs} epochs on ${v.train_samples} samples, ` +
      `tested on ${v.test_samples} held-out clean samples. Trained on the clean samples it scores ${pct(v.acc_clean_trained)}; ` +
      `the most common answer alone scores ${pct(v.floor)}. Protection 100 % = the protected copy taught nothing.` +
      ((v.runs || []).length > 1 ? ` Accuracies are means of ${v.runs.length} victim seeds; protection per seed: ` +
        v.runs.map((r) => pct(r.protection)).join(", ") + "." : "") }),
    table, el("p", { class: "note", text: v.note || "" }));
  if (v.protection === null || v.protection === undefined)  // the victim did not learn the task from clean data either
    box.append(el("p", { class: "problem", id: "verification-reason", text: "No verdict: " + (v.reason || "") }));
  box.hidden = false;
}

async function showResults(id) {
  const { report } = await api("GET", "/jobs/" + id + "/report");
  const s = report.summary || {};
  const eps = s.epsilon;
  const summary = [["ε", eps ? (eps * 255).toFixed(1) + "/255" : "—"], ["largest change (L∞)", s.linf_max !== undefined ? (s.linf_max * 255).toFixed(1) + "/255" : "—"],
    ["mean PSNR", fixed(s.psnr_mean, 1) + " dB"], ["mean SSIM", fixed(s.ssim_mean, 4)],
    ["samples", String((report.dataset || {}).samples ?? "—")], ["trigger", report.trigger ? [report.trigger.placement, report.trigger.position, report.trigger.vocabulary && report.trigger.vocabulary + " words", report.trigger.length + " word(s)"].filter(Boolean).join(", ") : "—"],
    ["surrogates", (report.surrogates || []).join(", ") || "—"], ["method", report.method || "—"],
    ["computed on", report.device || "—"]];
  $("summary").replaceChildren(...summary.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  const images = report.images || [];
  $("hist-psnr").replaceChildren(histogram(images.map((i) => i.psnr), 10, "PSNR"));
  $("hist-ssim").replaceChildren(histogram(images.map((i) => i.ssim), 10, "SSIM"));
  renderVerification(report.verification || null);
  $("job-results").hidden = false;
  state.samplesOffset = 0;
  $("samples").replaceChildren();
  await moreSamples();
}

function segments(parts) {
  const p = el("span");
  for (const part of parts || []) p.append(part.trigger ? el("mark", { class: "trigger", text: part.text }) : part.text);
  return p;
}

function picture(url, caption) {
  const img = url ? el("img", { src: url, alt: caption, loading: "lazy" }) : el("div", { class: "note", text: "original deleted" });
  return el("figure", {}, img, el("figcaption", { text: caption }));
}

async function moreSamples() {
  const page = await api("GET", "/jobs/" + state.jobId + "/samples?offset=" + state.samplesOffset + "&limit=12");
  for (const s of page.data) {
    const card = el("div", { class: "sample", "data-index": String(s.index) },
      el("div", { class: "images" }, picture(s.original_url, "original"), picture(s.protected_url, "protected"),
        picture(s.perturbation_url, "perturbation ×")),
      el("p", { class: "metrics", text: s.file + " · PSNR " + fixed(s.psnr, 1) + " dB · SSIM " + fixed(s.ssim, 4) }));
    if (s.question) card.append(el("p", {}, el("strong", { text: "Q: " }), segments(s.question)));
    card.append(el("p", {}, el("strong", { text: s.question ? "A: " : "Caption: " }), segments(s.answer)));
    $("samples").append(card);
  }
  state.samplesOffset += page.data.length;
  $("more-samples").hidden = state.samplesOffset >= page.count;
}

// -- start -----------------------------------------------------------------------------------
function wire() {
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("start-form").addEventListener("submit", startJob);
  $("preset").addEventListener("input", setPreset);
  $("job-cancel").addEventListener("click", cancelCurrent);
  $("more-samples").addEventListener("click", () => moreSamples().catch(failed));
  $("file").addEventListener("change", () => { if ($("file").files.length) upload($("file").files[0]); $("file").value = ""; });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
  window.addEventListener("hashchange", () => { clearMessages(); route(); });
  window.addEventListener("unhandledrejection", (e) => { e.preventDefault(); failed(e.reason); });
  setPreset();
}

async function boot() {
  wire();
  try {
    const who = await api("GET", "/session");
    signedIn(who.owner);
  } catch (error) {
    if (!(error instanceof ApiFailure && error.status === 401)) failed(error);
  }
  await route();
}

document.addEventListener("DOMContentLoaded", boot);
