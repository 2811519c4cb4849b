// SpeechFlow demo page: plain JavaScript, no build step, no dependencies. It talks to the same HTTP API as any
// client (/v1/models, /v1/enhance, /v1/separate, /v1/voices, /v1/audio/voices, /v1/audio/speech), draws
// spectrograms of what it sends and gets back (spectrogram.js), and shows the API's JSON errors next to the
// control they are about.
"use strict";

const $ = (id) => document.getElementById(id);
const TIMINGS = [  // response header, label, unit
  ["X-Process-Time-Ms", "Total time", " ms"], ["X-Queue-Time-Ms", "Queue wait", " ms"],
  ["X-Inference-Time-Ms", "Inference", " ms"], ["X-First-Chunk-Ms", "First chunk ready", " ms"],
  ["X-Batch-Size", "Batch size", ""], ["X-Steps", "Steps", ""], ["X-Solver", "Solver", ""],
  ["X-Ensemble", "Draws averaged", ""], ["X-Seed", "Seed", ""],
];
// Which control an API error's "param" is about, per form; an unlisted param goes to the form's error box.
const CONTROLS = {
  task: { file: "file", steps: "steps", solver: "solver", ensemble: "ensemble", seed: "seed",
    response_format: "format" },
  tts: { input: "tts-text", voice: "tts-voice", speed: "tts-speed", response_format: "tts-format",
    stream_format: "tts-stream" },
  voice: { audio_sample: "prompt-file", transcript: "voice-transcript", name: "voice-name",
    consent: "voice-consent" },
};
const BUTTONS = { task: ["submit", "task-busy"], tts: ["tts-submit", "tts-busy"], voice: ["voice-save", "voice-busy"] };
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
  urls: { task: [], tts: [], input: [], prompt: [] },  // object URLs to revoke when replaced
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
  // what the page can use: a bundle's other models (the pretrained one the others were fine-tuned from) serve nothing
  const tasks = Object.keys(state.endpoints);
  info.textContent = `Models: ${tasks.join(", ") || "none"} · device: ${engine.device ?? "?"}`
    + (engine.sample_rate ? ` · ${engine.sample_rate} Hz` : "");
  setUpTasks();
  const tts = models.data.find((m) => m.task === "tts" && m.endpoint);
  if (tts) {
    state.ttsModel = tts.id;
    $("voice-fields").disabled = false;
    loadVoices();
  } else {
    $("tts-note").textContent = "This server's bundle has no TTS model, so text to speech is not available here.";
    $("voice-note").textContent = "Saving voices needs a TTS model, which this server does not have.";
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

// --- audio in the browser -----------------------------------------------------------------------------------------
// Decoded at the model's rate, so that every spectrogram has the same frequency axis whatever the file's rate.
async function decode(blob) {
  return new OfflineAudioContext(1, 1, state.sampleRate).decodeAudioData(await blob.arrayBuffer());
}

function mixdown(audio) {
  const out = new Float32Array(audio.length);
  for (let c = 0; c < audio.numberOfChannels; c++) {
    audio.getChannelData(c).forEach((x, i) => { out[i] += x / audio.numberOfChannels; });
  }
  return out;
}

// Raw 16-bit little-endian interleaved PCM (audio/L16, or a streamed chunk) -> one Float32Array per channel.
function pcmChannels(bytes, channels = 1) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength - (bytes.byteLength % 2));
  const frames = Math.floor(view.byteLength / 2 / channels);
  const out = Array.from({ length: channels }, () => new Float32Array(frames));
  for (let i = 0; i < frames; i++) {
    for (let c = 0; c < channels; c++) out[c][i] = view.getInt16(2 * (i * channels + c), true) / 32768;
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

function concatenate(pieces) {
  const out = new Float32Array(pieces.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const piece of pieces) {
    out.set(piece, offset);
    offset += piece.length;
  }
  return out;
}

// Blob types are lower-cased by the browser: audio/L16 arrives as audio/l16.
const isPcm = (blob) => /^audio\/l16\b/i.test(blob.type);

// An audio answer -> its channels as Float32Arrays at `rate`. The browser cannot decode raw PCM (audio/L16), so
// that is read by hand, with the rate and channels its content type names.
async function answerChannels(blob) {
  if (isPcm(blob)) {
    const rate = Number(/rate=(\d+)/.exec(blob.type)?.[1]) || state.sampleRate;
    const channels = Number(/channels=(\d+)/.exec(blob.type)?.[1]) || 1;
    return { rate, channels: pcmChannels(new Uint8Array(await blob.arrayBuffer()), channels) };
  }
  const audio = await decode(blob);
  const channels = Array.from({ length: audio.numberOfChannels }, (_, c) => audio.getChannelData(c));
  return { rate: audio.sampleRate, channels };
}

function keep(group, url) {
  state.urls[group].push(url);
  return url;
}

function release(group) {
  state.urls[group].forEach((url) => URL.revokeObjectURL(url));
  state.urls[group] = [];
}

// --- enhance / separate -------------------------------------------------------------------------------------------
function chooseInput(blob, name) {
  release("input");
  const audio = $("input-player");
  audio.src = keep("input", URL.createObjectURL(blob));
  audio.hidden = false;
  const input = { blob, name, samples: null, rate: state.sampleRate };
  // decoded now for the "before" picture; a run started meanwhile waits for it (input.ready)
  input.ready = decode(blob).then((audio) => { input.samples = mixdown(audio); }, (error) => {
    // the server reads more formats than some browsers: still send it, just without the "before" picture
    console.warn("the input could not be decoded here", error);
  });
  state.input = input;
}

async function runTask(event) {
  event.preventDefault();
  clearErrors("task");
  const form = event.target;
  const task = form.elements.task.value;
  if (!state.input) return fieldError($("file"), "Choose an audio file or record something first.");
  const body = new FormData();
  body.append("file", state.input.blob, state.input.name);
  for (const name of ["steps", "solver", "ensemble", "seed", "response_format"]) {
    const value = form.elements[name].value.trim();
    if (value !== "") body.append(name, value);
  }
  const input = state.input;
  await busy("task", async () => {
    await input.ready;
    const response = await api(state.endpoints[task], { method: "POST", body });
    const blob = await response.blob();
    release("task");
    const figures = await taskFigures(task, input, blob);
    showResult("task", { blob, response, figures });
  });
}

// Before (the input) and after (the output; each speaker for separation) on one loudness scale, so that what the
// model removed shows as darker areas rather than being rescaled away.
async function taskFigures(task, input, blob) {
  const figures = [];
  let topDb;
  if (input.samples) {
    const mel = logMel(input.samples, input.rate);
    topDb = loudestDb(mel);
    figures.push(spectrogramFigure("Input (before)", mel, keep("task", URL.createObjectURL(input.blob)), topDb));
  }
  let answer;
  try {
    answer = await answerChannels(blob);
  } catch (error) {
    console.warn("the answer could not be decoded here", error);
    return [...figures, plainPlayer(keep("task", URL.createObjectURL(blob)), "Result (download it to listen)")];
  }
  const playable = !isPcm(blob);
  if (task === "separate") {
    answer.channels.forEach((samples, c) => {
      const url = keep("task", URL.createObjectURL(encodeWav(samples, answer.rate)));
      figures.push(spectrogramFigure(`Speaker ${c + 1}`, logMel(samples, answer.rate), url, topDb));
    });
  } else {
    const samples = answer.channels[0];
    const url = keep("task", URL.createObjectURL(playable ? blob : encodeWav(samples, answer.rate)));
    figures.push(spectrogramFigure("Enhanced (after)", logMel(samples, answer.rate), url, topDb));
  }
  return figures;
}

function plainPlayer(url, label) {
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

// --- shared UI ----------------------------------------------------------------------------------------------------
async function busy(group, work) {
  const [buttonId, progressId] = BUTTONS[group];
  const button = $(buttonId);
  const progress = $(progressId);
  button.disabled = true;
  progress.hidden = false;
  button.closest("form").setAttribute("aria-busy", "true");
  try {
    await work();
  } catch (error) {
    if (error.name !== "AbortError") showError(group, error);
  } finally {
    button.disabled = false;
    progress.hidden = true;
    button.closest("form").removeAttribute("aria-busy");
  }
}

// The result box: the figures (players, spectrograms), a download link for the answer as the server sent it, and
// the timings it reported (plus any the page measured itself, in `extra`).
function showResult(group, { blob, response, figures, filename, extra = [], skip = [] }) {
  const box = $(`${group}-result`);
  const url = keep(group, URL.createObjectURL(blob));
  const players = document.createElement("div");
  players.className = "players";
  players.append(...figures);
  const link = document.createElement("a");
  const match = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
  link.href = url;
  link.download = filename || (match ? match[1] : "result");
  link.id = `${group}-download`;
  link.textContent = `Download ${link.download} (${(blob.size / 1024).toFixed(1)} kB)`;
  const timings = document.createElement("dl");
  timings.className = "timings";
  const rows = TIMINGS.filter(([header]) => !skip.includes(header))
    .map(([header, name, unit]) => [name, response.headers.get(header), unit]);
  for (const [name, value, unit] of [...extra, ...rows]) {
    if (value === null || value === undefined) continue;
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

// --- the microphone -----------------------------------------------------------------------------------------------
const MIC_PROBLEMS = {  // getUserMedia's DOMException names, in words
  NotAllowedError: "the browser refused access to the microphone (permission denied: allow it in the site's"
    + " settings)",
  SecurityError: "the browser does not allow the microphone on this page",
  NotFoundError: "no microphone was found",
  OverconstrainedError: "no microphone was found",
  NotReadableError: "the microphone could not be started (another program may be using it)",
  AbortError: "the microphone could not be started",
};

function micProblem(error) {
  return `Cannot record: ${MIC_PROBLEMS[error.name] || error.message}. You can choose a file instead.`;
}

// Why recording cannot even be offered here, or "" when it can. Browsers hide getUserMedia on insecure pages.
function recordingUnavailable() {
  if (!window.isSecureContext) {
    return `Recording needs a secure page (https, or http on localhost) and this one is ${location.origin}. `
      + "Choose a file instead.";
  }
  if (!navigator.mediaDevices?.getUserMedia) return "This browser gives pages no microphone. Choose a file instead.";
  if (!window.MediaRecorder) return "This browser cannot record (no MediaRecorder). Choose a file instead.";
  return "";
}

// A record/stop toggle: records at most maxSeconds, then hands over a mono WAV (the server's libsndfile reads
// no webm/ogg-opus from MediaRecorder, so the recording is decoded here and re-encoded).
function setUpRecorder(button, status, maxSeconds, onRecorded) {
  const why = recordingUnavailable();
  if (why) {
    button.disabled = true;
    return fieldNote(button, why);
  }
  const idle = button.textContent;
  let recorder = null;
  let timer = null;
  button.addEventListener("click", async () => {
    if (recorder) return recorder.stop();
    clearFieldError(button);
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      return fieldError(button, micProblem(error));
    }
    const chunks = [];
    const started = performance.now();
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (event) => chunks.push(event.data);
    recorder.onstop = async () => {
      clearInterval(timer);
      stream.getTracks().forEach((track) => track.stop());
      recorder = null;
      button.textContent = idle;
      button.setAttribute("aria-pressed", "false");
      try {
        const audio = await decode(new Blob(chunks));
        const samples = mixdown(audio);
        status.textContent = `Recorded ${audio.duration.toFixed(1)} s.`;
        onRecorded(encodeWav(samples, audio.sampleRate), samples, audio.duration);
      } catch (error) {
        status.textContent = "";
        fieldError(button, `The recording could not be decoded: ${error.message}`);
      }
    };
    recorder.start();
    button.textContent = "Stop recording";
    button.setAttribute("aria-pressed", "true");
    timer = setInterval(() => {
      const seconds = (performance.now() - started) / 1000;
      status.textContent = `Recording… ${seconds.toFixed(1)} s`;
      if (seconds >= maxSeconds && recorder?.state === "recording") recorder.stop();
    }, 100);
  });
}

// --- your voices: a prompt, its transcript, saved on the server -------------------------------------------------
function choosePrompt(blob, name, control, seconds = null) {
  release("prompt");
  const audio = $("prompt-player");
  audio.src = keep("prompt", URL.createObjectURL(blob));
  audio.hidden = false;
  const prompt = { blob, name, seconds, control, ready: Promise.resolve() };
  if (seconds === null) {  // an uploaded file: its length, to check it before the upload (prompt.ready)
    prompt.ready = decode(blob).then((decoded) => {
      prompt.seconds = decoded.duration;
      $("prompt-state").textContent = `${name}: ${decoded.duration.toFixed(1)} s.`;
    }, () => {
      $("prompt-state").textContent = "";  // not decodable here; the server may still read it
    });
  }
  state.prompt = prompt;
  state.replaces = null;  // a new prompt is a new voice, not a correction of the last one
  $("voice-saved").hidden = true;
}

function promptProblem() {
  const prompt = state.prompt;
  if (!prompt) return [$("prompt-file"), "Choose or record a prompt first."];
  const [shortest, longest] = PROMPT_SECONDS;
  if (prompt.seconds !== null && (prompt.seconds < shortest || prompt.seconds > longest)) {
    return [$(prompt.control), `The prompt is ${prompt.seconds.toFixed(1)} s long; use ${shortest} to ${longest} s`
      + " of one person speaking."];
  }
  return null;
}

async function saveVoice(event) {
  event.preventDefault();
  clearErrors("voice");
  $("voice-saved").hidden = true;
  await state.prompt?.ready;
  const problem = promptProblem();
  if (problem) return fieldError(...problem);
  const body = new FormData();
  body.append("audio_sample", state.prompt.blob, state.prompt.name);
  body.append("name", $("voice-name").value);
  body.append("consent", $("voice-consent").checked ? "true" : "false");  // the server explains a refusal
  const transcript = $("voice-transcript").value.trim();
  if (transcript) body.append("transcript", transcript);
  await busy("voice", async () => {
    const card = await (await api("/v1/audio/voices", { method: "POST", body })).json();
    if (state.replaces) await removeVoice(state.replaces);
    state.replaces = card.transcribed ? card.id : null;
    if (card.transcribed) $("voice-transcript").value = card.transcript;
    announceSaved(card);
    await loadVoices(card.id);
  });
}

function announceSaved(card) {
  const saved = $("voice-saved");
  saved.textContent = card.transcribed
    ? `Saved “${card.name}”. The server heard: “${card.transcript}”. If that is not what the prompt says, correct`
      + " it above and save again (the voice is replaced)."
    : `Saved “${card.name}” (${card.seconds.toFixed(1)} s); it is selected under Text to speech.`;
  saved.hidden = false;
}

async function removeVoice(id) {
  await api(`/v1/audio/voices/${encodeURIComponent(id)}`, { method: "DELETE" });
}

async function deleteVoice(button, card) {
  button.disabled = true;
  try {
    await removeVoice(card.id);
    if (state.replaces === card.id) state.replaces = null;
    await loadVoices();
  } catch (error) {
    button.disabled = false;
    fieldError(button, describe(error));
  }
}

// Both voice lists: the catalogue (/v1/voices: built-in and uploaded ids) for the TTS select, and the uploaded
// voices with their names (/v1/audio/voices) for the list under "Your voices". `select`: an id to choose.
async function loadVoices(select = null) {
  const note = $("tts-note");
  let builtin, uploaded;
  try {
    const [catalogue, mine] = await Promise.all([api("/v1/voices"), api("/v1/audio/voices")]);
    builtin = (await catalogue.json()).voices.filter((v) => v.source !== "uploaded");
    uploaded = (await mine.json()).data;
  } catch (error) {
    note.textContent = `Text to speech is unavailable. ${describe(error)}`;
    return;
  }
  const voiceSelect = $("tts-voice");
  const chosen = select || voiceSelect.value;
  const group = (label, options) => {
    const element = document.createElement("optgroup");
    element.label = label;
    element.append(...options);
    return element;
  };
  voiceSelect.replaceChildren(
    group("Built-in", builtin.map((v) => new Option(v.id, v.id))),
    group("Your voices", uploaded.map((v) => new Option(`${v.name} (${v.id})`, v.id))),
  );
  if ([...voiceSelect.options].some((o) => o.value === chosen)) voiceSelect.value = chosen;
  const any = builtin.length + uploaded.length > 0;
  $("tts-fields").disabled = !any;
  note.textContent = any ? "" : "No voices yet: save one under Your voices.";
  renderVoiceList(uploaded);
}

function renderVoiceList(voices) {
  const list = $("voice-list");
  if (!voices.length) {
    const empty = document.createElement("li");
    empty.className = "note";
    empty.textContent = "None yet.";
    return list.replaceChildren(empty);
  }
  list.replaceChildren(...voices.map((card) => {
    const item = document.createElement("li");
    item.dataset.voice = card.id;
    const name = document.createElement("strong");
    name.textContent = card.name;
    const about = document.createElement("span");
    about.textContent = ` · ${card.seconds.toFixed(1)} s · “${card.transcript}”${card.transcribed ? " (transcribed by"
      + " the server)" : ""}`;
    const use = button("Speak with it", () => {
      $("tts-voice").value = card.id;
      $("tts-text").focus();
    });
    const remove = button("Delete", () => deleteVoice(remove, card));
    remove.className = "delete";
    remove.setAttribute("aria-label", `Delete ${card.name}`);
    remove.id = `delete-${card.id}`;
    item.append(name, about, " ", use, " ", remove);
    return item;
  }));
}

function button(text, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = text;
  element.addEventListener("click", onClick);
  return element;
}

// --- text to speech -----------------------------------------------------------------------------------------------
async function runTts(event) {
  event.preventDefault();
  clearErrors("tts");
  const request = {
    model: state.ttsModel, input: $("tts-text").value, voice: $("tts-voice").value,
    speed: Number($("tts-speed").value) || 1,
  };
  const streamed = $("tts-stream").checked;
  const context = streamed ? audioContext() : null;  // now, inside the click: later, browsers keep it suspended
  await busy("tts", async () => {
    release("tts");
    if (streamed) return streamSpeech(request, context);
    const response = await api("/v1/audio/speech", jsonPost({ ...request, response_format: $("tts-format").value }));
    const blob = await response.blob();
    showResult("tts", { blob, response, figures: [await speechFigure(blob)] });
  });
}

function jsonPost(body, signal) {
  return { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal };
}

async function speechFigure(blob) {
  const url = keep("tts", URL.createObjectURL(blob));
  try {
    const { rate, channels } = await answerChannels(blob);
    return spectrogramFigure("Speech", logMel(channels[0], rate), url);
  } catch {
    return plainPlayer(url, "Speech");  // a format this browser cannot decode: still downloadable
  }
}

function audioContext() {
  state.audioContext ||= new AudioContext();
  state.audioContext.resume();
  return state.audioContext;
}

// Chunks of speech played back to back as they arrive: each is scheduled right after the previous one, or a moment
// from now if generation fell behind playback (a gap rather than a skip).
class ChunkPlayer {
  constructor(context, rate) {
    this.context = context;
    this.rate = rate;
    this.next = 0;
    this.sources = [];
  }

  play(samples) {
    const buffer = this.context.createBuffer(1, samples.length, this.rate);
    buffer.copyToChannel(samples, 0);
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    const at = Math.max(this.next, this.context.currentTime + 0.05);
    source.start(at);
    this.next = at + buffer.duration;
    this.sources.push(source);
  }

  stop() {
    this.sources.forEach((source) => source.stop());
    this.sources = [];
  }
}

// How many chunks the server will make of this text: one per sentence (and blank-line paragraph), long sentences
// cut at about 200 characters (model/text.py split_sentences). Only for the progress bar, so "about".
function expectedChunks(text) {
  const sentences = text.split(/(?<=[.!?])\s+|\n\s*\n/).map((s) => s.trim()).filter(Boolean);
  return Math.max(1, sentences.reduce((n, s) => n + Math.ceil(s.length / 200), 0));
}

// The body of an SSE response -> its events' JSON payloads, as they arrive.
async function* serverEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    pending += value;
    let end;
    while ((end = pending.indexOf("\n\n")) >= 0) {
      const data = pending.slice(0, end).split("\n").filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart()).join("\n");
      pending = pending.slice(end + 2);
      if (data) yield JSON.parse(data);
    }
  }
}

function base64Bytes(text) {
  return Uint8Array.from(atob(text), (ch) => ch.charCodeAt(0));
}

// Streamed speech: 16-bit PCM in speech.audio.delta events (one per generated chunk), played as each arrives. The
// page notes when the first chunk came and when the last did (data-first-audio-ms, data-complete-ms), to show
// that the audio started before the answer was complete.
async function streamSpeech(request, context) {
  const started = performance.now();
  const controller = new AbortController();
  const response = await api("/v1/audio/speech",
    jsonPost({ ...request, response_format: "pcm", stream_format: "sse" }, controller.signal));
  const rate = Number(response.headers.get("X-Sample-Rate")) || state.sampleRate;
  const player = new ChunkPlayer(context, rate);
  state.stream = { controller, player };
  const expected = expectedChunks(request.input);
  const progress = streamProgress(expected);
  const pieces = [];
  let received = 0, firstMs = null, stopped = false;  // samples so far
  try {
    for await (const event of serverEvents(response)) {
      if (event.type === "error") throw new ApiError(0, event.error.message, event.error.code);
      if (event.type !== "speech.audio.delta") continue;
      const [samples] = pcmChannels(base64Bytes(event.audio));
      firstMs ??= performance.now() - started;
      player.play(samples);
      pieces.push(samples);  // one delta per sentence (the last carries the cross-fade's tail)
      received += samples.length;
      progress.update(pieces.length, received / rate);
    }
  } catch (error) {
    if (error.name !== "AbortError") throw error;
    stopped = true;  // the Stop button: keep what came so far
  } finally {
    progress.done();
    state.stream = null;
  }
  if (pieces.length) showStreamed(response, pieces, rate, { firstMs, completeMs: performance.now() - started,
    stopped: stopped ? `after ${pieces.length} of about ${expected} sentences` : null,
    audioState: context.state });
}

// The whole of a streamed answer once it is over: a WAV of its chunks with its spectrogram, and the page's own
// timings (the server's X-Process-Time-Ms stops at the headers of a stream, so it is left out).
function showStreamed(response, pieces, rate, { firstMs, completeMs, stopped, audioState }) {
  const samples = concatenate(pieces);
  const blob = encodeWav(samples, rate);
  const figure = spectrogramFigure("Speech", logMel(samples, rate), keep("tts", URL.createObjectURL(blob)));
  const box = showResult("tts", {
    blob, response, figures: [figure], filename: "speech.wav", skip: ["X-Process-Time-Ms"], extra: [
      ["First audio after", firstMs.toFixed(0), " ms"], ["Complete after", completeMs.toFixed(0), " ms"],
      ["Stopped", stopped, ""], ["Chunks", pieces.length, ""], ["Audio", (samples.length / rate).toFixed(2), " s"]],
  });
  Object.assign(box.dataset, { firstAudioMs: firstMs.toFixed(1), completeMs: completeMs.toFixed(1),
    chunks: pieces.length, audioState });
}

function streamProgress(expected) {
  const panel = $("tts-progress"), bar = $("tts-progress-bar"), text = $("tts-progress-text");
  $("tts-busy").hidden = true;
  $("tts-stop").hidden = false;
  panel.hidden = false;
  bar.value = 0;
  text.textContent = "Generating the first sentence…";
  return {
    update(received, seconds) {
      const total = Math.max(expected, received);
      bar.value = received / total;
      text.textContent = `${received} of about ${total} sentence${total > 1 ? "s" : ""} · ${seconds.toFixed(1)} s`
        + " of audio · playing";
    },
    done() {
      panel.hidden = true;
      $("tts-stop").hidden = true;
    },
  };
}

function stopSpeech() {
  if (!state.stream) return;
  state.stream.controller.abort();  // the server sees the disconnect and frees the request's remaining rows
  state.stream.player.stop();
}

// --- start --------------------------------------------------------------------------------------------------------
$("task-form").addEventListener("submit", runTask);
$("tts-form").addEventListener("submit", runTts);
$("voice-form").addEventListener("submit", saveVoice);
$("key-form").addEventListener("submit", useKey);
$("tts-stop").addEventListener("click", stopSpeech);
$("file").addEventListener("change", () => {
  const file = $("file").files[0];
  if (!file) return;
  $("record-state").textContent = "";
  chooseInput(file, file.name);
});
$("prompt-file").addEventListener("change", () => {
  const file = $("prompt-file").files[0];
  if (file) choosePrompt(file, file.name, "prompt-file");
});
setUpRecorder($("record"), $("record-state"), 60, (wav) => {
  $("file").value = "";
  chooseInput(wav, "recording.wav");
});
setUpRecorder($("prompt-record"), $("prompt-state"), PROMPT_SECONDS[1], (wav, samples, seconds) => {
  $("prompt-file").value = "";
  choosePrompt(wav, "prompt.wav", "prompt-record", seconds);
});
loadModels();
