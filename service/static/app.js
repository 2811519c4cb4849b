// SpeechFlow demo page: plain JavaScript, no build step, no dependencies. It talks to the same HTTP API as any
// client (/v1/models, /v1/enhance, /v1/separate, /v1/voices, /v1/audio/speech) and shows its JSON errors.
"use strict";

const $ = (id) => document.getElementById(id);
const TIMINGS = [  // response header, label, unit
  ["X-Process-Time-Ms", "Total time", " ms"], ["X-Queue-Time-Ms", "Queue wait", " ms"],
  ["X-Inference-Time-Ms", "Inference", " ms"], ["X-Batch-Size", "Batch size", ""],
  ["X-Steps", "Steps", ""], ["X-Solver", "Solver", ""], ["X-Seed", "Seed", ""],
];
const state = {
  key: sessionStorage.getItem("speechflow-api-key") || "",
  endpoints: {},  // task -> endpoint, from /v1/models
  sampleRate: 16000,
  ttsModel: null,
  recorded: null,  // a WAV blob from the microphone, used when no file is chosen
  urls: { task: [], tts: [], input: [] },  // object URLs to revoke when replaced
};

class ApiError extends Error {
  constructor(status, message, code = "") {
    super(message);
    this.status = status;
    this.code = code;
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
    throw new ApiError(0, `the server could not be reached (${error.message})`);
  }
  if (response.ok) return response;
  let message = response.statusText || "request failed";
  let code = "";
  try {
    const body = await response.json();
    ({ message, code } = body.error);
  } catch {
    // not the JSON envelope (a proxy's page, say): keep the status text
  }
  const retry = response.headers.get("Retry-After");
  if (retry) message += ` (retry after ${retry} s)`;
  if (response.status === 401) askForKey();
  throw new ApiError(response.status, message, code);
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
  const tasks = models.data.map((m) => m.task);
  info.textContent = `Models: ${tasks.join(", ") || "none"} · device: ${engine.device ?? "?"}`
    + (engine.sample_rate ? ` · ${engine.sample_rate} Hz` : "");
  setUpTasks();
  const tts = models.data.find((m) => m.task === "tts");
  if (tts) {
    state.ttsModel = tts.id;
    loadVoices();
  } else {
    $("tts-note").textContent = "This server's bundle has no TTS model, so text to speech is not available here.";
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

async function loadVoices() {
  const note = $("tts-note");
  try {
    const body = await (await api("/v1/voices")).json();
    const voices = Array.isArray(body) ? body : body.data || body.voices || [];
    const select = $("tts-voice");
    select.replaceChildren(...voices.map((v) => {
      const id = typeof v === "string" ? v : v.id;
      return new Option(typeof v === "string" ? v : v.name || v.id, id);
    }));
    $("tts-fields").disabled = voices.length === 0;
    note.textContent = voices.length ? "" : "The TTS model has no built-in voices.";
  } catch (error) {
    note.textContent = `Text to speech is unavailable. ${describe(error)}`;
  }
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

// --- enhance / separate -------------------------------------------------------------------------------------------
async function runTask(event) {
  event.preventDefault();
  const form = event.target;
  const task = form.elements.task.value;
  const file = $("file").files[0];
  const body = new FormData();
  if (file) body.append("file", file, file.name);
  else if (state.recorded) body.append("file", state.recorded, "recording.wav");
  else return showError("task", new Error("Choose an audio file or record something first."));
  for (const name of ["steps", "solver", "seed", "response_format"]) {
    const value = form.elements[name].value.trim();
    if (value !== "") body.append(name, value);
  }
  await busy("task", async () => {
    const response = await api(state.endpoints[task], { method: "POST", body });
    const blob = await response.blob();
    const box = showResult("task", blob, response, task === "separate" ? "Both speakers" : "Enhanced");
    if (task === "separate" && !blob.type.includes("L16")) await showSpeakers(box, blob, response);
  });
}

async function showSpeakers(box, blob, response) {
  // the result is one 2-channel file; decode it and offer each channel as its own player (best effort)
  try {
    const rate = Number(response.headers.get("X-Sample-Rate")) || state.sampleRate;
    const audio = await new OfflineAudioContext(1, 1, rate).decodeAudioData(await blob.arrayBuffer());
    for (let c = 0; c < audio.numberOfChannels; c++) {
      const url = keep("task", URL.createObjectURL(encodeWav(audio.getChannelData(c), audio.sampleRate)));
      box.querySelector(".players").append(player(url, `Speaker ${c + 1}`));
    }
  } catch (error) {
    console.warn("could not split the channels", error);
  }
}

// --- text to speech -----------------------------------------------------------------------------------------------
async function runTts(event) {
  event.preventDefault();
  const request = {
    model: state.ttsModel, input: $("tts-text").value, voice: $("tts-voice").value,
    response_format: $("tts-format").value,
  };
  await busy("tts", async () => {
    const response = await api("/v1/audio/speech", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request),
    });
    showResult("tts", await response.blob(), response, "Speech");
  });
}

// --- shared UI ----------------------------------------------------------------------------------------------------
async function busy(prefix, work) {
  const button = $(prefix === "task" ? "submit" : "tts-submit");
  const progress = $(`${prefix}-busy`);
  $(`${prefix}-error`).hidden = true;
  button.disabled = true;
  progress.hidden = false;
  button.closest("form").setAttribute("aria-busy", "true");
  try {
    await work();
  } catch (error) {
    showError(prefix, error);
  } finally {
    button.disabled = false;
    progress.hidden = true;
    button.closest("form").removeAttribute("aria-busy");
  }
}

function showError(prefix, error) {
  const box = $(`${prefix}-error`);
  box.textContent = describe(error);
  box.hidden = false;
}

function keep(group, url) {
  state.urls[group].push(url);
  return url;
}

function release(group) {
  state.urls[group].forEach((url) => URL.revokeObjectURL(url));
  state.urls[group] = [];
}

function player(url, label) {
  const figure = document.createElement("figure");
  const caption = document.createElement("figcaption");
  const audio = document.createElement("audio");
  caption.textContent = label;
  audio.controls = true;
  audio.src = url;
  audio.setAttribute("aria-label", label);
  figure.append(caption, audio);
  return figure;
}

function showResult(prefix, blob, response, label) {
  release(prefix);
  const box = $(`${prefix}-result`);
  const url = keep(prefix, URL.createObjectURL(blob));
  const players = document.createElement("div");
  players.className = "players";
  if (blob.type.includes("L16")) {
    const note = document.createElement("p");
    note.textContent = "Raw PCM (16-bit, little-endian) cannot be played in the browser: download it.";
    players.append(note);
  } else {
    players.append(player(url, label));
  }
  const link = document.createElement("a");
  const match = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
  link.href = url;
  link.download = match ? match[1] : "result";
  link.id = `${prefix}-download`;
  link.textContent = `Download ${link.download} (${(blob.size / 1024).toFixed(1)} kB)`;
  const timings = document.createElement("dl");
  timings.className = "timings";
  for (const [header, name, unit] of TIMINGS) {
    const value = response.headers.get(header);
    if (value === null) continue;
    const term = document.createElement("dt");
    const detail = document.createElement("dd");
    term.textContent = name;
    detail.textContent = value + unit;
    timings.append(term, detail);
  }
  box.replaceChildren(players, link, timings);
  box.hidden = false;
  return box;
}

function showInput(blob) {
  release("input");
  const audio = $("input-player");
  audio.src = keep("input", URL.createObjectURL(blob));
  audio.hidden = false;
}

// --- recording: MediaRecorder -> decode -> mono 16-bit WAV (libsndfile on the server cannot read webm) ---------
let recorder = null;

function setUpRecorder() {
  const button = $("record");
  if (window.MediaRecorder && navigator.mediaDevices?.getUserMedia) {
    button.addEventListener("click", toggleRecording);
    return;
  }
  button.disabled = true;
  const note = $("record-note");
  note.hidden = false;
  note.textContent = "Recording is not available here"
    + (window.isSecureContext ? " (this browser has no MediaRecorder)" : " (it needs https or localhost)")
    + ". Choose a file instead.";
}

async function toggleRecording() {
  const button = $("record");
  if (recorder) {
    recorder.stop();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    return showError("task", new Error(`The microphone is not available: ${error.message}`));
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (event) => chunks.push(event.data);
  recorder.onstop = async () => {
    stream.getTracks().forEach((track) => track.stop());
    recorder = null;
    button.textContent = "Record from microphone";
    button.setAttribute("aria-pressed", "false");
    try {
      const data = await new Blob(chunks).arrayBuffer();
      const audio = await new OfflineAudioContext(1, 1, state.sampleRate).decodeAudioData(data);
      state.recorded = encodeWav(mixdown(audio), audio.sampleRate);
      $("file").value = "";
      showInput(state.recorded);
      $("record-state").textContent = `Recorded ${audio.duration.toFixed(1)} s.`;
    } catch (error) {
      $("record-state").textContent = "";
      showError("task", new Error(`The recording could not be decoded: ${error.message}`));
    }
  };
  recorder.start();
  button.textContent = "Stop recording";
  button.setAttribute("aria-pressed", "true");
  $("record-state").textContent = "Recording…";
}

function mixdown(audio) {
  const out = new Float32Array(audio.length);
  for (let c = 0; c < audio.numberOfChannels; c++) {
    audio.getChannelData(c).forEach((x, i) => { out[i] += x / audio.numberOfChannels; });
  }
  return out;
}

function encodeWav(samples, sampleRate) {
  const view = new DataView(new ArrayBuffer(44 + 2 * samples.length));
  const text = (offset, s) => [...s].forEach((ch, i) => view.setUint8(offset + i, ch.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + 2 * samples.length, true);
  text(8, "WAVEfmt ");
  view.setUint32(16, 16, true);  // fmt chunk size
  view.setUint16(20, 1, true);  // PCM
  view.setUint16(22, 1, true);  // mono
  view.setUint32(24, sampleRate, true);
  view.setUint32(28, 2 * sampleRate, true);  // bytes per second
  view.setUint16(32, 2, true);  // bytes per frame
  view.setUint16(34, 16, true);  // bits per sample
  text(36, "data");
  view.setUint32(40, 2 * samples.length, true);
  samples.forEach((x, i) => view.setInt16(44 + 2 * i, Math.round(32767 * Math.max(-1, Math.min(1, x))), true));
  return new Blob([view], { type: "audio/wav" });
}

// --- start --------------------------------------------------------------------------------------------------------
$("task-form").addEventListener("submit", runTask);
$("tts-form").addEventListener("submit", runTts);
$("key-form").addEventListener("submit", useKey);
$("file").addEventListener("change", () => {
  const file = $("file").files[0];
  if (!file) return;
  state.recorded = null;
  $("record-state").textContent = "";
  showInput(file);
});
setUpRecorder();
loadModels();
