// The page at GET /: one card per task endpoint of /api/v1. No framework, no build step; the
// page runs under a strict Content-Security-Policy (no inline code), so everything is here.
"use strict";

const BILLS = [
  ["handicapped-infants", "Handicapped infants"],
  ["water-project-cost-sharing", "Water project cost sharing"],
  ["adoption-of-the-budget-resolution", "Adoption of the budget resolution"],
  ["physician-fee-freeze", "Physician fee freeze"],
  ["el-salvador-aid", "El Salvador aid"],
  ["religious-groups-in-schools", "Religious groups in schools"],
  ["anti-satellite-test-ban", "Anti-satellite test ban"],
  ["aid-to-nicaraguan-contras", "Aid to Nicaraguan contras"],
  ["mx-missile", "MX missile"],
  ["immigration", "Immigration"],
  ["synfuels-corporation-cutback", "Synfuels corporation cutback"],
  ["education-spending", "Education spending"],
  ["superfund-right-to-sue", "Superfund right to sue"],
  ["crime", "Crime"],
  ["duty-free-exports", "Duty-free exports"],
  ["export-administration-act-south-africa", "Export Administration Act: South Africa"],
];
const VOTE_CHOICES = [
  { value: "y", label: "Yea" },
  { value: "n", label: "Nay" },
  { value: "?", label: "Not voting" },
];
const DEFAULT_VOTE = "?";
const PHOTO_TOP_K = 5;
const AUTO_PREDICT_DELAY_MS = 600; // after the last stroke, so a "7" or a "4" can take two
const KEY_STORAGE = "modelserve-api-key"; // sessionStorage: this tab only, gone when it closes
const INK = "#111";
const PAPER = "#fff";

const byId = (id) => document.getElementById(id);
const percent = (p) => `${(p * 100).toFixed(1)}%`;

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// --- API -------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** The JSON reply to a request; an ApiError with the server's {"error": ...} otherwise. The
 * API key entered in the page, if any, goes with every request. */
async function callApi(path, init = {}) {
  const headers = new Headers(init.headers);
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.set("X-API-Key", key);
  let response;
  try {
    response = await fetch(path, { ...init, headers });
  } catch {
    throw new ApiError("The server cannot be reached.", 0);
  }
  const body = await response.json().catch(() => null);
  if (response.status === 401) {
    askForKey(key ? "The API key was not accepted: enter another." : null);
    throw new ApiError("This server needs an API key: enter it at the top of the page.", 401);
  }
  if (!response.ok) {
    throw new ApiError(body?.error ?? `${response.status} ${response.statusText}`, response.status);
  }
  if (body === null) throw new ApiError("The server's answer is not JSON.", response.status);
  return body;
}

function postJson(path, payload) {
  return callApi(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
}

function postFile(path, blob, filename) {
  const form = new FormData();
  form.append("file", blob, filename);
  return callApi(path, { method: "POST", body: form });
}

// --- API key ---------------------------------------------------------------------------------

/** Show the key form (the server answered 401), with `message` instead of the default. */
function askForKey(message) {
  const form = byId("key-form");
  const notice = byId("key-notice");
  notice.dataset.default ??= notice.textContent;
  notice.textContent = message ?? notice.dataset.default;
  if (form.hidden) {
    form.hidden = false;
    byId("api-key").focus();
  }
}

function setUpKey() {
  const form = byId("key-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, byId("api-key").value.trim());
    form.reset();
    if (await showModelStatus()) form.hidden = true;
  });
}

// --- results ---------------------------------------------------------------------------------

/** <ul> of horizontal bars: [{label, value (0..1), top}], the percentage written beside each. */
function barChart(entries) {
  const list = element("ul", "bars");
  for (const { label, value, top } of entries) {
    const item = element("li", top ? "bar top" : "bar");
    const track = element("span", "bar-track");
    const fill = element("span", "bar-fill");
    fill.style.width = `${Math.max(0, Math.min(1, value)) * 100}%`;
    track.setAttribute("aria-hidden", "true");
    track.append(fill);
    item.append(
      element("span", "bar-label", label),
      track,
      element("span", "bar-value", percent(value)),
    );
    list.append(item);
  }
  return list;
}

/** Bars of a {label: probability} object, in the server's order, `chosen` highlighted. */
function probabilityBars(probabilities, chosen) {
  return Object.entries(probabilities).map(([label, value]) => ({
    label,
    value,
    top: label === chosen,
  }));
}

/** One card's answer area (#PREFIX-result) and error line (#PREFIX-error, role=alert). */
class Output {
  constructor(prefix) {
    this.prefix = prefix;
    this.result = byId(`${prefix}-result`);
    this.error = byId(`${prefix}-error`);
    this.latest = 0;
  }

  /** Run `request`, then show its reply with `render`; an answer overtaken by a newer
   * request is dropped, so the card always shows the latest one. */
  async run(request, render) {
    const ticket = ++this.latest;
    this.error.textContent = "";
    this.result.setAttribute("aria-busy", "true");
    let nodes = [];
    let message = "";
    try {
      nodes = render(await request());
    } catch (error) {
      message = error.message;
      // the model is gone or not ready (yet): the status badges may be out of date
      if (error.status === 404 || error.status === 503) showModelStatus();
    }
    if (ticket === this.latest) this.show(nodes, message);
  }

  fail(message) {
    this.latest++;
    this.show([], message);
  }

  clear() {
    this.fail("");
  }

  show(nodes, message) {
    this.result.replaceChildren(...nodes);
    this.result.removeAttribute("aria-busy");
    this.error.textContent = message;
  }

  /** The nodes showing a reply: `value` big (#PREFIX-value) with its `confidence`, the
   * reply's warning if any, the bars, and which model version answered. */
  answer(reply, { value, confidence, bars }) {
    const headline = element("p", "answer");
    const big = element("span", "answer-value", value);
    big.id = `${this.prefix}-value`;
    headline.append(big, element("span", "answer-detail", `${percent(confidence)} confident`));
    const nodes = [headline];
    if (reply.warning) nodes.push(element("p", "warning", reply.warning));
    const source = `model ${reply.model} version ${reply.version}`;
    nodes.push(barChart(bars), element("p", "model-version", source));
    return nodes;
  }
}

// --- model status ----------------------------------------------------------------------------

function describeModel(model) {
  if (!model) return { text: "not loaded", state: "missing" };
  const available = model.versions.filter((v) => v.state === "AVAILABLE").map((v) => v.version);
  if (model.ready && available.length > 0) {
    return { text: `version ${Math.max(...available)} ready`, state: "ready" };
  }
  // exported by the server itself (a model that needs no training): on its way, or failed
  if (model.export) {
    const coming = model.export.state === "coming";
    const text = coming ? `coming: ${model.export.stage}` : "not exported";
    return { text, state: coming ? "pending" : "missing", title: model.export.detail };
  }
  const failed = model.versions.find((v) => v.error);
  if (failed) return { text: `failed: ${failed.error}`, state: "missing" };
  return { text: "loading", state: "pending" };
}

// While a model is loading or being exported, its badge is refreshed this often.
const STATUS_REFRESH_MS = 2000;
let statusRefresh = 0;

/** A [data-missing-model] notice: shown when the model is not served at all, or when the
 * server could not export it (then with the reason and how to provide its files). */
function showNotice(notice, model) {
  const failedExport = model?.export?.state === "failed" ? model.export.detail : "";
  notice.hidden = Boolean(model) && !failedExport;
  const reason = notice.querySelector("[data-export-failure]");
  if (reason) reason.textContent = failedExport;
}

/** Fill each card's status badge ([data-model]) and show [data-missing-model] notices;
 * true when the server answered. */
async function showModelStatus() {
  clearTimeout(statusRefresh);
  let models;
  try {
    const { models: list } = await callApi("/api/v1/models");
    models = new Map(list.map((model) => [model.name, model]));
  } catch (error) {
    const text = error.status === 401 ? "API key needed" : "status unknown";
    for (const badge of document.querySelectorAll("[data-model]")) {
      badge.textContent = text;
      badge.dataset.state = "missing";
    }
    return false;
  }
  let pending = false;
  for (const badge of document.querySelectorAll("[data-model]")) {
    const { text, state, title } = describeModel(models.get(badge.dataset.model));
    badge.textContent = text;
    badge.dataset.state = state;
    badge.title = title ?? "";
    pending ||= state === "pending";
  }
  for (const notice of document.querySelectorAll("[data-missing-model]")) {
    showNotice(notice, models.get(notice.dataset.missingModel));
  }
  if (pending) statusRefresh = setTimeout(showModelStatus, STATUS_REFRESH_MS);
  return true;
}

// --- digits ----------------------------------------------------------------------------------

// The task API answers the 28x28 image the model read; shown beside what was sent, so a
// wrong answer can be traced to the picture's conversion.
const DIGITS_PATH = "/api/v1/digits?show_input=true";

/** `sent`: a URL of the picture sent (a drawing's PNG, or the chosen file). */
function digitAnswer(output, reply, sent) {
  const { digit, confidence, probabilities, uncertain, model_input: seen } = reply.predictions[0];
  const nodes = output.answer(reply, {
    value: String(digit),
    confidence,
    bars: probabilities.map((p, d) => ({ label: String(d), value: p, top: d === digit })),
  });
  const extra = [];
  if (uncertain) {
    const note = element("p", "warning", "Not sure: this may not be one clear digit.");
    note.id = "digit-uncertain";
    extra.push(note);
  }
  if (seen) extra.push(digitPreview(sent, seen));
  nodes.splice(1, 0, ...extra);
  return nodes;
}

function digitPreview(sent, seen) {
  const figure = element("figure", "digit-preview");
  const original = element("img");
  original.src = sent;
  original.alt = "The picture sent";
  const read = element("img", "model-input");
  read.id = "digit-model-input";
  read.src = seen;
  read.alt = "The 28 by 28 image the model read";
  figure.append(
    original,
    read,
    element("figcaption", "", "Sent (left) and what the model read: 28×28, ink white on black"),
  );
  return figure;
}

function setUpDigits() {
  const canvas = byId("digit-canvas");
  const context = canvas.getContext("2d");
  const output = new Output("digit");
  let stroke = null; // {pointerId, x, y} while a finger, pen or mouse button is down
  let hasInk = false;
  let autoPredict = 0;
  let sentUrl = null; // the chosen file's object URL, while its preview may show

  function clearCanvas() {
    context.fillStyle = PAPER;
    context.fillRect(0, 0, canvas.width, canvas.height);
    context.strokeStyle = INK;
    context.lineWidth = canvas.width / 12;
    context.lineCap = "round";
    context.lineJoin = "round";
    hasInk = false;
  }

  function canvasPoint(event) {
    const box = canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * canvas.width) / box.width,
      y: ((event.clientY - box.top) * canvas.height) / box.height,
    };
  }

  function lineTo(point) {
    context.beginPath();
    context.moveTo(stroke.x, stroke.y);
    context.lineTo(point.x, point.y);
    context.stroke();
    Object.assign(stroke, point);
  }

  function predict() {
    clearTimeout(autoPredict);
    if (!hasInk) {
      output.fail("Draw a digit first.");
      return;
    }
    const drawing = canvas.toDataURL("image/png");
    output.run(
      () =>
        new Promise((resolve) => canvas.toBlob(resolve, "image/png")).then((png) =>
          postFile(DIGITS_PATH, png, "digit.png"),
        ),
      (reply) => digitAnswer(output, reply, drawing),
    );
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (stroke || event.button !== 0) return;
    event.preventDefault();
    clearTimeout(autoPredict);
    canvas.setPointerCapture(event.pointerId);
    stroke = { pointerId: event.pointerId, ...canvasPoint(event) };
    lineTo(canvasPoint(event)); // a dot, for a tap
    hasInk = true;
  });
  canvas.addEventListener("pointermove", (event) => {
    if (stroke?.pointerId !== event.pointerId) return;
    const events = event.getCoalescedEvents?.() ?? [];
    for (const each of events.length > 0 ? events : [event]) lineTo(canvasPoint(each));
  });
  const endStroke = (event) => {
    if (stroke?.pointerId !== event.pointerId) return;
    stroke = null;
    autoPredict = setTimeout(predict, AUTO_PREDICT_DELAY_MS);
  };
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);

  byId("digit-predict").addEventListener("click", predict);
  byId("digit-clear").addEventListener("click", () => {
    clearTimeout(autoPredict);
    clearCanvas();
    output.clear();
  });
  byId("digit-file").addEventListener("change", (event) => {
    const [file] = event.target.files;
    if (!file) return;
    clearTimeout(autoPredict);
    if (sentUrl) URL.revokeObjectURL(sentUrl);
    sentUrl = URL.createObjectURL(file);
    const shown = sentUrl;
    output.run(
      () => postFile(DIGITS_PATH, file, file.name),
      (reply) => digitAnswer(output, reply, shown),
    );
  });
  clearCanvas();
}

// --- photos ----------------------------------------------------------------------------------

function setUpPhotos() {
  const input = byId("photo-input");
  const preview = byId("photo-preview");
  const output = new Output("photo");

  input.addEventListener("change", () => {
    const [file] = input.files;
    if (!file) return;
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    output.run(
      () => postFile(`/api/v1/images?top_k=${PHOTO_TOP_K}`, file, file.name),
      (reply) => {
        const ranked = reply.predictions[0];
        return output.answer(reply, {
          value: ranked[0].label,
          confidence: ranked[0].score,
          bars: ranked.map(({ label, score }, rank) => ({ label, value: score, top: rank === 0 })),
        });
      },
    );
  });
}

// --- review sentiment ------------------------------------------------------------------------

function setUpReview() {
  const form = byId("review-form");
  const text = byId("review-text");
  const output = new Output("review");

  text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const review = text.value.trim();
    if (!review) {
      output.fail("Write a review first.");
      return;
    }
    output.run(
      () => postJson("/api/v1/sentiment", { texts: [review] }),
      (reply) => {
        // `score` is the probability of "positive" whatever the label: show the label's own
        const { label, probabilities } = reply.predictions[0];
        return output.answer(reply, {
          value: label,
          confidence: probabilities[label],
          bars: probabilityBars(probabilities, label),
        });
      },
    );
  });
}

// --- party from votes ------------------------------------------------------------------------

function billFieldset([name, title]) {
  const fieldset = element("fieldset", "bill");
  const choices = element("div", "choices");
  for (const { value, label } of VOTE_CHOICES) {
    const input = element("input");
    Object.assign(input, { type: "radio", name, value, defaultChecked: value === DEFAULT_VOTE });
    const choice = element("label");
    choice.append(input, label);
    choices.append(choice);
  }
  fieldset.append(element("legend", "", title), choices);
  return fieldset;
}

function setUpVotes() {
  const form = byId("votes-form");
  const output = new Output("votes");
  byId("votes-bills").replaceChildren(...BILLS.map(billFieldset));

  form.addEventListener("reset", () => output.clear());
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const votes = Object.fromEntries(new FormData(form));
    output.run(
      () => postJson("/api/v1/party", { votes: [votes] }),
      (reply) => {
        const { party, probabilities } = reply.predictions[0];
        return output.answer(reply, {
          value: party,
          confidence: probabilities[party],
          bars: probabilityBars(probabilities, party),
        });
      },
    );
  });
}

setUpKey();
setUpDigits();
setUpPhotos();
setUpReview();
setUpVotes();
showModelStatus();
