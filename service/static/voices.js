// Recording from the microphone, and your voices: a prompt and its transcript, saved on the server, listed and
// deleted.
"use strict";

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
    // a server busy, restarting or its database away for a moment (503, or no answer) is asked again
    const transient = !error.status || error.status === 503;
    note.textContent = `Text to speech is unavailable. ${describe(error)}${transient ? " Trying again…" : ""}`;
    if (transient) setTimeout(() => loadVoices(select), 2000);
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
