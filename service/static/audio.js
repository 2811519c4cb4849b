// Audio in the browser: decoding answers and uploads at the model's rate, raw PCM, WAV encoding, object URLs.
"use strict";

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
