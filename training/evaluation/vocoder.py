"""Copy-synthesis evaluation of a vocoder: clean test utterances -> their log-mel -> waveform again.

This isolates the vocoder from the flow models: whatever it loses here, every TTS and infilling output loses too.
Each system (the vocoder under test, Griffin-Lim on the same mels) is scored against the recording by PESQ-WB and
ESTOI, and on its own by DNSMOS (the recording's DNSMOS is the ceiling). Copy synthesis is a necessary check, not a
sufficient one: generated mels are smoother than real ones, and a vocoder can rank differently on them (the TTS
evaluation with each vocoder is the deciding figure; README "The shipped bundle").
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from model.audio import SAMPLE_RATE, load_audio
from model.features import MelSpectrogram
from training.data.manifest import Utterance
from training.evaluation import metrics
from training.evaluation.common import checked, engine, nanmean, utterances, write_json
from training.evaluation.markdown import config_lines, fmt, table_header, table_row

Vocode = Callable[[torch.Tensor], torch.Tensor]  # normalised log-mel (1, T, n_mels) -> waveform (1, T * hop)

METRICS = ("pesq_wb", "estoi", "dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak")
LABELS = {"pesq_wb": "PESQ-WB", "estoi": "ESTOI", "dnsmos_ovrl": "DNSMOS OVRL", "dnsmos_sig": "DNSMOS SIG",
          "dnsmos_bak": "DNSMOS BAK"}


def vocoder_utterances(manifest: str | os.PathLike | Sequence[Utterance], n: int, seed: int) -> list[Utterance]:
    """``n`` utterances drawn without replacement for ``seed`` (every engine's speakers, not the manifest's first)."""
    utts = utterances(manifest)
    order = np.random.default_rng(seed).permutation(len(utts))
    return [utts[i] for i in order[:n]]


def _score(wav: np.ndarray, recording: np.ndarray | None, use_dnsmos: bool) -> dict[str, float]:
    scores: dict[str, float] = {}
    if recording is not None:
        scores |= {"pesq_wb": metrics.pesq_wb(recording, wav), "estoi": metrics.estoi(recording, wav)}
    if use_dnsmos:
        scores |= {f"dnsmos_{k}": v for k, v in metrics.dnsmos(wav).items() if k in ("ovrl", "sig", "bak")}
    return scores


def _means(rows: Sequence[Mapping[str, Any]], systems: Sequence[str]) -> dict[str, dict[str, float]]:
    return {s: {m: nanmean(r[s].get(m, np.nan) for r in rows) for m in METRICS} for s in systems}


def evaluate_vocoders(
    vocoders: Mapping[str, Vocode],
    mel: MelSpectrogram,
    manifest: str | os.PathLike | Sequence[Utterance],
    n: int = 50,
    seed: int = 0,
    use_dnsmos: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Copy synthesis through each vocoder (same utterances, same mels) -> per-utterance rows, means overall and by
    engine, and seconds of vocoder compute per second of audio for each."""
    systems = ["recording", *vocoders]
    rows: list[dict[str, Any]] = []
    compute = dict.fromkeys(vocoders, 0.0)
    audio_s = 0.0
    for utt in tqdm(vocoder_utterances(manifest, n, seed), desc="vocoders", disable=not progress):
        recording = load_audio(utt.audio)  # 16 kHz mono float32
        audio_s += len(recording) / SAMPLE_RATE
        with torch.no_grad():
            feats = mel(torch.from_numpy(recording)[None])  # (1, T, n_mels), normalised
        row: dict[str, Any] = {"id": utt.id, "engine": engine(str(utt.meta.get("speaker", ""))),
                               "recording": _score(recording, None, use_dnsmos)}
        for name, vocode in vocoders.items():
            start = time.perf_counter()
            with torch.no_grad():
                out = vocode(feats).float().cpu().numpy().reshape(-1)
            compute[name] += time.perf_counter() - start
            out = checked(out, utt.id, 1)[: len(recording)]
            out = np.pad(out, (0, len(recording) - len(out)))  # the contract is T * hop: at most a hop short
            row[name] = _score(out, recording, use_dnsmos)
        rows.append(row)
    engines = sorted({r["engine"] for r in rows})
    return {
        "n": len(rows),
        "overall": _means(rows, systems),
        "by_engine": {e: {"n": sum(r["engine"] == e for r in rows),
                          **_means([r for r in rows if r["engine"] == e], systems)} for e in engines},
        "rtf": {name: s / max(audio_s, 1e-9) for name, s in compute.items()},
        "rows": rows,
    }


def write_vocoder_report(results: Mapping[str, Any], path: str | os.PathLike) -> None:
    """The means as Markdown tables (overall, then by engine) with the run's configuration."""
    systems = list(results["overall"])
    lines = [f"# Vocoder copy synthesis ({results['n']} clean test utterances)", "", *table_header(METRICS, LABELS)]
    lines += [table_row([s, *(fmt(results["overall"][s][m], ".3f") for m in METRICS)]) for s in systems]
    lines += ["", "## By engine", "", *table_header(METRICS, LABELS, first="engine")]
    for e, entry in results["by_engine"].items():
        lines += [table_row([f"{e} (n={entry['n']})", s, *(fmt(entry[s][m], ".3f") for m in METRICS)])
                  for s in systems]
    lines += ["", "Vocoder compute per audio second: "
              + ", ".join(f"{s} {v:.4f}" for s, v in results["rtf"].items()), "", "## Configuration", "",
              *config_lines(results)]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n")


def run_vocoder_evaluation(
    vocoders: Mapping[str, Vocode],
    mel: MelSpectrogram,
    manifest: str | os.PathLike,
    n: int = 50,
    seed: int = 0,
    json_out: str | os.PathLike | None = None,
    report_out: str | os.PathLike | None = None,
    use_dnsmos: bool = True,
    extra_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate, record the configuration, write JSON and/or the report -> results."""
    results = evaluate_vocoders(vocoders, mel, manifest, n, seed, use_dnsmos)
    results["config"] = {"task": "vocoder", "manifest": str(manifest), "seed": seed, **dict(extra_config or {})}
    if json_out is not None:
        write_json(results, json_out)
    if report_out is not None:
        write_vocoder_report(results, report_out)
    return results
