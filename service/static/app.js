// SpeechFlow demo page: plain JavaScript, no build step, no dependencies. It talks to the same HTTP API as any
// client (/v1/models, /v1/enhance, /v1/separate, /v1/voices, /v1/audio/voices, /v1/audio/speech,
// /v1/audio/edit), draws
// spectrograms of what it sends and gets back (spectrogram.js), and shows the API's JSON errors next to the
// control they are about (api.js). This file: enhance / separate, text to speech, and the page's start; audio.js,
// voices.js and editing.js hold the audio helpers, the microphone and voices, and editing.
"use strict";

// --- enhance / separate -------------------------------------------------------------------------------------------
function chooseInput(blob, name) {
  state.input = loadInput(blob, name, "input", "input-player");
}

// An uploaded or recorded input: shown in its player, and decoded now for the "before" picture; a run started
// meanwhile waits for it (input.ready).
function loadInput(blob, name, group, playerId) {
  release(group);
  const audio = $(playerId);
  audio.src = keep(group, URL.createObjectURL(blob));
  audio.hidden = false;
  const input = { blob, name, samples: null, rate: state.sampleRate };
  input.ready = decode(blob).then((audio) => { input.samples = mixdown(audio); }, (error) => {
    // the server reads more formats than some browsers: still send it, just without the "before" picture
    console.warn("the input could not be decoded here", error);
  });
  return input;
}

async function runTask(event) {
  event.preventDefault();
  clearErrors("task");
  const form = event.target;
  const task = form.elements.task.value;
  if (!state.input) return fieldError($("file"), "Choose an audio file or record something first.");
  const body = new FormData();
  body.append("file", state.input.blob, state.input.name);
  for (const name of ["quality", "steps", "solver", "ensemble", "seed", "response_format"]) {
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
// `group` owns the figures' object URLs; `after` names the answer's picture (enhancement, editing).
async function taskFigures(task, input, blob, group = "task", after = "Enhanced (after)") {
  const figures = [];
  let topDb;
  if (input.samples) {
    const mel = logMel(input.samples, input.rate);
    topDb = loudestDb(mel);
    figures.push(spectrogramFigure("Input (before)", mel, keep(group, URL.createObjectURL(input.blob)), topDb));
  }
  let answer;
  try {
    answer = await answerChannels(blob);
  } catch (error) {
    console.warn("the answer could not be decoded here", error);
    return [...figures, plainPlayer(keep(group, URL.createObjectURL(blob)), "Result (download it to listen)")];
  }
  const playable = !isPcm(blob);
  if (task === "separate") {
    answer.channels.forEach((samples, c) => {
      const url = keep(group, URL.createObjectURL(encodeWav(samples, answer.rate)));
      figures.push(spectrogramFigure(`Speaker ${c + 1}`, logMel(samples, answer.rate), url, topDb));
    });
  } else {
    const samples = answer.channels[0];
    const url = keep(group, URL.createObjectURL(playable ? blob : encodeWav(samples, answer.rate)));
    figures.push(spectrogramFigure(after, logMel(samples, answer.rate), url, topDb));
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

// --- text to speech -----------------------------------------------------------------------------------------------
async function runTts(event) {
  event.preventDefault();
  clearErrors("tts");
  const request = {
    model: state.ttsModel, input: $("tts-text").value, voice: $("tts-voice").value,
    speed: Number($("tts-speed").value) || 1,
  };
  if ($("tts-quality").value) request.quality = $("tts-quality").value;  // else the server's default
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
$("edit-form").addEventListener("submit", runEdit);
$("edit-file").addEventListener("change", () => {
  const file = $("edit-file").files[0];
  if (!file) return;
  $("edit-state").textContent = "";
  state.edit = loadInput(file, file.name, "edit-input", "edit-player");
});
$("prompt-file").addEventListener("change", () => {
  const file = $("prompt-file").files[0];
  if (file) choosePrompt(file, file.name, "prompt-file");
});
setUpRecorder($("record"), $("record-state"), 60, (wav) => {
  $("file").value = "";
  chooseInput(wav, "recording.wav");
});
setUpRecorder($("edit-record"), $("edit-state"), 30, (wav) => {
  $("edit-file").value = "";
  state.edit = loadInput(wav, "recording.wav", "edit-input", "edit-player");
});
setUpRecorder($("prompt-record"), $("prompt-state"), PROMPT_SECONDS[1], (wav, samples, seconds) => {
  $("prompt-file").value = "";
  choosePrompt(wav, "prompt.wav", "prompt-record", seconds);
});
loadModels();
