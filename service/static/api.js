// The demo page's shared state and its talk with the HTTP API: requests, the JSON errors shown next to the control
// they are about, and the API key asked for after a 401. Loaded before the page's other scripts (classic scripts
// share one global scope; index.html loads them in order).
"use strict";

const $ = (id) => document.getElementById(id);
const TIMINGS = [  // response header, label, unit
  ["X-Process-Time-Ms", "Total time", " ms"], ["X-Queue-Time-Ms", "Queue wait", " ms"],
  ["X-Inference-Time-Ms", "Inference", " ms"], ["X-First-Chunk-Ms", "First chunk ready", " ms"],
  ["X-Batch-Size", "Batch size", ""], ["X-Steps", "Steps", ""], ["X-Solver", "Solver", ""],
  ["X-Quality", "Quality", ""], ["X-Ensemble", "Draws averaged", ""], ["X-Seed", "Seed", ""],
];
// Which control an API error's "param" is about, per form; an unlisted param goes to the form's error box.
const CONTROLS = {
  task: { file: "file", quality: "quality", steps: "steps", solver: "solver", ensemble: "ensemble", seed: "seed",
    response_format: "format" },
  tts: { input: "tts-text", voice: "tts-voice", quality: "tts-quality", speed: "tts-speed",
    response_format: "tts-format", stream_format: "tts-stream" },
  voice: { audio_sample: "prompt-file", transcript: "voice-transcript", name: "voice-name",
    consent: "voice-consent" },
  edit: { file: "edit-file", text: "edit-text", transcript: "edit-transcript" },
};
const BUTTONS = { task: ["submit", "task-busy"], tts: ["tts-submit", "tts-busy"], voice: ["voice-save", "voice-busy"],
  edit: ["edit-submit", "edit-busy"] };
const EDIT_ENDPOINT = "/v1/audio/edit";  // served wherever TTS is (the TTS model regenerates the words)
const PROMPT_SECONDS = [3, 10];  // what makes a good prompt (the server accepts 0.5-15 s)

const state = {
  key: sessionStorage.getItem("speechflow-api-key") || "",
  endpoints: {},  // task -> endpoint, from /v1/models
  sampleRate: 16000,
  ttsModel: null,
  input: null,  // { blob, name, samples, rate } of the enhance/separate input (samples null: undecodable here)
  prompt: null,  // { blob, name, seconds, control } of the voice prompt
  replaces: null,  // id of a voice saved from this prompt with the server's transcript: a re-save replaces it
  audioContext: null,  // for streamed speech; made on the first click (browsers start audio only after one)
  stream: null,  // { controller, player } of the speech being streamed
  edit: null,  // { blob, name, samples, rate } of the recording to edit, like `input`
  urls: { task: [], tts: [], input: [], prompt: [], edit: [], "edit-input": [] },  // object URLs to revoke
};

class ApiError extends Error {
  constructor(status, message, code = "", param = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.param = param;
  }
}

// --- the API ------------------------------------------------------------------------------------------------------
async function api(path, options = {}) {
  const headers = new Headers(options.headers);
  if (state.key) headers.set("Authorization", `Bearer ${state.key}`);
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, `the server could not be reached (${error.message})`);
  }
  if (response.ok) return response;
  let message = response.statusText || "request failed";
  let code = "", param = null;
  try {
    const body = await response.json();
    ({ message, code, param = null } = body.error);
  } catch {
    // not the JSON envelope (a proxy's page, say): keep the status text
  }
  const retry = response.headers.get("Retry-After");
  if (retry) message += ` (retry after ${retry} s)`;
  if (response.status === 401) askForKey();
  throw new ApiError(response.status, message, code, param);
}

function describe(error) {
  if (!(error instanceof ApiError) || !error.status) return error.message;
  return `Error ${error.status}${error.code ? ` (${error.code})` : ""}: ${error.message}`;
}

async function loadModels() {
  const info = $("server-info");
  let models;
  try {
    models = await (await api("/v1/models")).json();
  } catch (error) {
    info.textContent = `Could not read the server's models. ${describe(error)}`;
    if (error.status === 503) setTimeout(loadModels, 2000);  // still loading or warming up
    return;
  }
  const engine = models.engine || {};
  state.sampleRate = engine.sample_rate || state.sampleRate;
  state.endpoints = Object.fromEntries(models.data.filter((m) => m.endpoint).map((m) => [m.task, m.endpoint]));
  const tasks = Object.keys(state.endpoints);  // pretrain: the model the others were fine-tuned from (infilling)
  info.textContent = `Models: ${tasks.join(", ") || "none"} · device: ${engine.device ?? "?"}`
    + (engine.sample_rate ? ` · ${engine.sample_rate} Hz` : "");
  setUpTasks();
  const tts = models.data.find((m) => m.task === "tts" && m.endpoint);
  if (tts) {
    state.ttsModel = tts.id;
    $("voice-fields").disabled = false;
    $("edit-fields").disabled = false;
    loadVoices();
  } else {
    $("tts-note").textContent = "This server's bundle has no TTS model, so text to speech is not available here.";
    $("voice-note").textContent = "Saving voices needs a TTS model, which this server does not have.";
    $("edit-note").textContent = "Editing needs a TTS model, which this server does not have.";
  }
}

function setUpTasks() {
  const radios = [...document.querySelectorAll("input[name=task]")];
  const missing = [];
  for (const radio of radios) {
    radio.disabled = !(radio.value in state.endpoints);
    if (radio.disabled) missing.push(radio.value);
  }
  const usable = radios.filter((r) => !r.disabled);
  if (usable.length && !usable.some((r) => r.checked)) usable[0].checked = true;
  $("submit").disabled = usable.length === 0;
  $("task-note").hidden = missing.length === 0;
  $("task-note").textContent = `Not served by this server: ${missing.join(", ")}.`;
}

// --- errors next to the control that caused them -------------------------------------------------------------------
function showError(group, error) {
  const control = error instanceof ApiError && error.param ? $(CONTROLS[group][error.param] || "") : null;
  if (control) return fieldError(control, describe(error));
  const box = $(`${group}-error`);
  box.textContent = describe(error);
  box.hidden = false;
}

// A message right after the control (after its label for a checkbox, which sits inside one), tied to it for screen
// readers; a control in a closed <details> gets it opened, or the message would be invisible.
function fieldError(control, text) {
  const id = `${control.id}-error`;
  let message = $(id);
  if (!message) {
    message = document.createElement("p");
    message.id = id;
    message.className = "field-error";
    message.setAttribute("role", "alert");
    const anchor = control.closest("label") || control;
    anchor.after(message);
  }
  message.textContent = text;
  control.setAttribute("aria-invalid", "true");
  control.setAttribute("aria-describedby", id);
  const details = control.closest("details");
  if (details) details.open = true;
  return message;
}

// A standing remark by a control (why it is disabled): shown like an error but not one, and kept by clearErrors.
function fieldNote(control, text) {
  const note = fieldError(control, text);
  note.classList.add("note");
  note.removeAttribute("role");
  control.removeAttribute("aria-invalid");
}

function clearFieldError(control) {
  $(`${control.id}-error`)?.remove();
  control.removeAttribute("aria-invalid");
  control.removeAttribute("aria-describedby");
}

function clearErrors(group) {
  const section = $(`${group}-section`);
  section.querySelectorAll("[aria-invalid]").forEach(clearFieldError);
  $(`${group}-error`).hidden = true;
}

// --- the API key (shown after a 401) ------------------------------------------------------------------------------
function askForKey() {
  const panel = $("key-panel");
  if (!panel.hidden) return;
  panel.hidden = false;
  $("api-key").focus();
}

function useKey(event) {
  event.preventDefault();
  state.key = $("api-key").value.trim();
  sessionStorage.setItem("speechflow-api-key", state.key);
  $("key-panel").hidden = true;
  loadModels();
}
