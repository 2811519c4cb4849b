#!/usr/bin/env python3
"""Would int8 pay? The enhancement network's Linear layers quantised dynamically to int8 (PyTorch's fbgemm kernels)
against fp32, one thread, 4 s of the noisy example: one network pass (the student's cost) and the teacher's
defaults, with the largest waveform difference each makes.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/int8_check.py [BUNDLE]

Prints RTF (seconds of processing per second of audio, best of 5 after a warm-up) as JSON. The time embedding's
layers stay fp32 (the network reads their weight dtype).
"""

import json
import sys
import time

import numpy as np
import torch
from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

from model.examples import noisy_example
from model.pipeline import SpeechFlowPipeline

SECONDS = 4.0
SETTINGS = {"one pass": {"steps": 1, "guidance": 1.0, "solver": "euler", "sway": 0.0, "ensemble": 1},
            "teacher default": {}}


def best_time(pipe: SpeechFlowPipeline, wav: np.ndarray, repeats: int = 5, **kwargs) -> tuple[float, np.ndarray]:
    pipe.enhance(wav, 16000, seed=0, quality="full", **kwargs)  # warm-up
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = pipe.enhance(wav, 16000, seed=0, quality="full", **kwargs)[0]
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    torch.set_num_threads(1)
    pipe = SpeechFlowPipeline.from_pretrained(sys.argv[1] if len(sys.argv) > 1 else "checkpoints/demo",
                                              device="cpu", dtype="fp32")
    wav = np.resize(noisy_example()[0], int(SECONDS * 16000))
    model = pipe.models["enhance"]
    fp32 = model.net
    spec = {name: default_dynamic_qconfig for name, m in fp32.named_modules()
            if isinstance(m, torch.nn.Linear) and not name.startswith("time_embed")}
    int8 = quantize_dynamic(fp32, spec, dtype=torch.qint8)
    rtf: dict[str, float] = {}
    for name, kwargs in SETTINGS.items():
        seconds, reference = best_time(pipe, wav, **kwargs)
        rtf[f"{name} fp32"] = round(seconds / SECONDS, 4)
        model.net = int8
        seconds, out = best_time(pipe, wav, **kwargs)
        model.net = fp32
        rtf[f"{name} int8"] = round(seconds / SECONDS, 4)
        rtf[f"{name} int8 max abs difference"] = round(float(np.abs(out - reference).max()), 4)
    print(json.dumps({"threads": 1, "audio_s": SECONDS, "rtf": rtf}, indent=1))


if __name__ == "__main__":
    main()
