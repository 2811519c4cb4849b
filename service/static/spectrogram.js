// Log-mel spectrograms drawn on a canvas from audio the page already holds, with a playhead that follows an
// <audio> element and seeks it when the picture is clicked. Computed here (STFT + mel filterbank) so that showing
// the picture costs no request; the parameters match the model's features (25 ms windows, 10 ms hop, 80 mels).
"use strict";

const MEL = { bins: 80, windowSeconds: 0.025, hopSeconds: 0.01, rangeDb: 80, maxColumns: 1600 };

// --- the transform ------------------------------------------------------------------------------------------------
function fftSize(windowLength) {
  let n = 1;
  while (n < windowLength) n *= 2;
  return n;
}

const twiddles = new Map();  // n -> [cos, sin] of -2 pi k / n, computed once per size rather than per butterfly

function twiddle(n) {
  if (!twiddles.has(n)) {
    const angle = (k) => (-2 * Math.PI * k) / n;
    twiddles.set(n, [Float64Array.from({ length: n / 2 }, (_, k) => Math.cos(angle(k))),
      Float64Array.from({ length: n / 2 }, (_, k) => Math.sin(angle(k)))]);
  }
  return twiddles.get(n);
}

// In-place iterative radix-2 FFT of (re, im); n is a power of two.
function fft(re, im) {
  const n = re.length;
  for (let i = 1, j = 0; i < n; i++) {  // bit-reversal permutation
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      [re[i], re[j]] = [re[j], re[i]];
      [im[i], im[j]] = [im[j], im[i]];
    }
  }
  const [cos, sin] = twiddle(n);
  for (let size = 2; size <= n; size *= 2) {
    const half = size / 2, stride = n / size;
    for (let start = 0; start < n; start += size) {
      for (let k = 0; k < half; k++) {
        const wr = cos[k * stride], wi = sin[k * stride];
        const a = start + k, b = a + half;
        const tr = re[b] * wr - im[b] * wi, ti = re[b] * wi + im[b] * wr;
        re[b] = re[a] - tr;
        im[b] = im[a] - ti;
        re[a] += tr;
        im[a] += ti;
      }
    }
  }
}

const hzToMel = (hz) => 2595 * Math.log10(1 + hz / 700);
const melToHz = (mel) => 700 * (10 ** (mel / 2595) - 1);

// Triangular filters evenly spaced on the mel scale from 0 Hz to Nyquist: for each mel bin, the first FFT bin it
// covers and its weights from there (most weights are zero, so only the span is kept).
function melFilterbank(bins, n, sampleRate) {
  const top = hzToMel(sampleRate / 2);
  const edges = Array.from({ length: bins + 2 }, (_, i) => melToHz((top * i) / (bins + 1)) * (n / sampleRate));
  return Array.from({ length: bins }, (_, m) => {
    const [left, centre, right] = [edges[m], edges[m + 1], edges[m + 2]];
    const first = Math.ceil(left), last = Math.min(n / 2, Math.floor(right));
    const weights = Float32Array.from({ length: Math.max(0, last - first + 1) }, (_, i) => {
      const k = first + i;
      return Math.max(0, k < centre ? (k - left) / (centre - left) : (right - k) / (right - centre));
    });
    return { first, weights };
  });
}

// samples (mono Float32Array) -> { data: Float32Array(frames x bins) in dB, frames, bins, seconds }
function logMel(samples, sampleRate) {
  const win = Math.round(MEL.windowSeconds * sampleRate);
  const hop = Math.round(MEL.hopSeconds * sampleRate);
  const n = fftSize(win);
  const hann = Float32Array.from({ length: win }, (_, i) => 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / win));
  const filters = melFilterbank(MEL.bins, n, sampleRate);
  const frames = Math.max(1, Math.floor(samples.length / hop) + 1);
  const data = new Float32Array(frames * MEL.bins);
  const re = new Float32Array(n), im = new Float32Array(n), power = new Float32Array(n / 2 + 1);
  for (let f = 0; f < frames; f++) {
    re.fill(0);
    im.fill(0);
    const start = f * hop - Math.floor(win / 2);  // centred frames, as the model's features are
    for (let i = 0; i < win; i++) {
      const x = samples[start + i];
      if (x !== undefined) re[i] = x * hann[i];
    }
    fft(re, im);
    for (let k = 0; k <= n / 2; k++) power[k] = re[k] * re[k] + im[k] * im[k];
    filters.forEach(({ first, weights }, m) => {
      let sum = 0;
      for (let k = 0; k < weights.length; k++) sum += weights[k] * power[first + k];
      data[f * MEL.bins + m] = 10 * Math.log10(sum + 1e-10);
    });
  }
  return { data, frames, bins: MEL.bins, seconds: samples.length / sampleRate, sampleRate };
}

function loudestDb(mel) {
  return mel.data.reduce((a, b) => Math.max(a, b), -Infinity);
}

// --- drawing ------------------------------------------------------------------------------------------------------
// Dark (quiet) to bright (loud): a few hand-picked stops, interpolated, so quiet frames stay dark in both themes.
const COLOUR_STOPS = [[12, 7, 40], [70, 20, 110], [170, 45, 95], [240, 120, 40], [252, 240, 150]];

function colour(level) {  // level in [0, 1]
  const x = Math.min(1, Math.max(0, level)) * (COLOUR_STOPS.length - 1);
  const i = Math.min(COLOUR_STOPS.length - 2, Math.floor(x));
  const t = x - i;
  return COLOUR_STOPS[i].map((c, j) => Math.round(c + t * (COLOUR_STOPS[i + 1][j] - c)));
}

// Paint mel on canvas: time left to right, low frequencies at the bottom. topDb is the loudest level shown; the
// same topDb for a before/after pair puts both on one scale, so a quieter output looks darker, not rescaled.
function drawMel(canvas, mel, topDb) {
  const columns = Math.min(mel.frames, MEL.maxColumns);
  canvas.width = columns;
  canvas.height = mel.bins;
  const context = canvas.getContext("2d");
  const image = context.createImageData(columns, mel.bins);
  for (let x = 0; x < columns; x++) {
    // long audio: each column shows the loudest of the frames it covers, so short events are not lost
    const from = Math.floor((x * mel.frames) / columns), to = Math.max(from + 1, Math.floor(((x + 1) * mel.frames) / columns));
    for (let m = 0; m < mel.bins; m++) {
      let db = -Infinity;
      for (let f = from; f < to; f++) db = Math.max(db, mel.data[f * mel.bins + m]);
      const [r, g, b] = colour(1 - (topDb - db) / MEL.rangeDb);
      const offset = 4 * ((mel.bins - 1 - m) * columns + x);
      image.data.set([r, g, b, 255], offset);
    }
  }
  context.putImageData(image, 0, 0);
}

// --- the figure: caption, spectrogram with playhead, player -------------------------------------------------------
// mel: logMel() of what to draw; url: what the player plays; topDb: the scale (default: this audio's loudest).
function spectrogramFigure(label, mel, url, topDb) {
  const figure = document.createElement("figure");
  figure.className = "spectrogram";
  const caption = document.createElement("figcaption");
  caption.textContent = `${label} (${mel.seconds.toFixed(1)} s)`;
  const frame = document.createElement("div");
  frame.className = "spectrogram-frame";
  const canvas = document.createElement("canvas");
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", `Log-mel spectrogram of ${label.toLowerCase()}: 0 to ${mel.seconds.toFixed(1)} s,`
    + ` 0 to ${mel.sampleRate / 2000} kHz. Click to play from a point.`);
  const playhead = document.createElement("div");
  playhead.className = "playhead";
  frame.append(canvas, playhead);
  const axes = document.createElement("p");
  axes.className = "axes";
  axes.textContent = `time 0-${mel.seconds.toFixed(1)} s across, frequency 0-${mel.sampleRate / 2000} kHz up (mel`
    + " scale), brighter = louder · click to play from a point";
  const audio = document.createElement("audio");
  audio.controls = true;
  audio.preload = "auto";
  audio.src = url;
  audio.setAttribute("aria-label", label);
  figure.append(caption, frame, axes, audio);
  drawMel(canvas, mel, topDb ?? loudestDb(mel));
  followPlayback(frame, playhead, audio, mel.seconds);
  return figure;
}

// Keep the playhead over the sample being played (every animation frame while playing, so it moves smoothly rather
// than at timeupdate's ~4 Hz), and seek where the picture is clicked.
function followPlayback(frame, playhead, audio, seconds) {
  const length = () => (Number.isFinite(audio.duration) && audio.duration > 0 ? audio.duration : seconds);
  const place = () => {
    playhead.style.left = `${(100 * Math.min(1, audio.currentTime / length())).toFixed(3)}%`;
  };
  const tick = () => {
    place();
    if (!audio.paused && !audio.ended) requestAnimationFrame(tick);
  };
  audio.addEventListener("play", () => requestAnimationFrame(tick));
  audio.addEventListener("seeked", place);
  audio.addEventListener("timeupdate", place);
  frame.addEventListener("click", (event) => {
    const box = frame.getBoundingClientRect();
    audio.currentTime = ((event.clientX - box.left) / box.width) * length();
    place();
    audio.play().catch(() => {});  // a refused autoplay leaves it seeked, which is still what was asked
  });
  place();
}
