"""Scoring and running the enhancement and separation evaluations: per-utterance scores, the batch loop, summaries.

Each system (the unprocessed input, ours, a classical peer) is scored by the same functions from
`training.evaluation.metrics`; means skip NaNs (metrics that are undefined for an utterance) and the summary counts
them. The per-case scorers are top-level functions so that worker processes can run them while the model works.
"""

from __future__ import annotations

import contextlib
import functools
import math
import multiprocessing
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import numpy as np
from tqdm import tqdm

from model.audio import SAMPLE_RATE
from model.errors import ConfigError
from training.evaluation import metrics
from training.evaluation.cases import Case, snr_bucket
from training.evaluation.common import checked, nanmean
from training.evaluation.peers import PEER_LABELS

ENHANCE_METRICS = ("pesq_wb", "estoi", "si_sdr", "dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak")
SEPARATE_METRICS = ("si_sdr", "si_sdri", "pesq_wb", "estoi")
SYSTEM_LABELS = {
    "enhance": {
        "input": "noisy input",
        "ours": "SpeechFlow (ours)",
        "spectral_gating": "spectral gating (noisereduce)",
        **PEER_LABELS,
    },
    "separate": {
        "input": "mixture (no processing)",
        "ours": "SpeechFlow (ours)",
        "oracle_irm": "oracle IRM (upper bound)",
    },
}

Batch = list[np.ndarray]
Process = Callable[[Batch], Sequence[np.ndarray]]
Peer = Callable[[np.ndarray], np.ndarray]  # one utterance in, one out (a neural peer, `training.evaluation.peers`)
OnOutput = Callable[[Case, np.ndarray], None]
Row = tuple[dict[str, Any], dict[str, int]]  # (per-utterance record, PESQ failures while scoring it)


# ------------------------------------------------------------------------------------------------ per utterance


def _enhancement_scores(est: np.ndarray, clean: np.ndarray, use_dnsmos: bool, threads: int | None) -> dict:
    scores = {
        "pesq_wb": metrics.pesq_wb(clean, est),
        "estoi": metrics.estoi(clean, est),
        "si_sdr": metrics.si_sdr(est, clean),
    }
    if use_dnsmos:
        scores |= {f"dnsmos_{k}": v for k, v in metrics.dnsmos(est, threads=threads).items()}
    return scores


def _separation_scores(ests: np.ndarray, refs: np.ndarray, mixture: np.ndarray) -> dict[str, float]:
    """Scores averaged over the two speakers, after matching estimates to speakers by the best SI-SDR."""
    per_source, perm = metrics.permutation_si_sdr(ests, refs)
    ordered = ests[list(perm)]
    baseline = np.array([metrics.si_sdr(mixture, r) for r in refs])
    return {
        "si_sdr": nanmean(per_source),
        "si_sdri": nanmean(per_source - baseline),
        "pesq_wb": nanmean(metrics.pesq_wb(r, e) for r, e in zip(refs, ordered, strict=True)),
        "estoi": nanmean(metrics.estoi(r, e) for r, e in zip(refs, ordered, strict=True)),
    }


def _row(case: Case, groups: dict[str, str], scores: dict, failures_before: Counter[str]) -> Row:
    failures = {k: v - failures_before.get(k, 0) for k, v in metrics.pesq_failures.items()}
    record = {"id": case.id, "info": case.info, "groups": groups, "scores": scores}
    return record, {k: v for k, v in failures.items() if v}


def score_enhancement_case(
    case: Case, ours: np.ndarray, others: dict[str, np.ndarray] | None = None, peers: bool = True,
    use_dnsmos: bool = True, threads: int | None = None,
) -> Row:
    """One utterance: every system's scores (``others``: outputs of neural peers, run by the caller), its groups,
    PESQ failures (top-level: worker processes can run it)."""
    before = metrics.pesq_failures.copy()
    outputs = {"input": case.noisy, "ours": ours, **(others or {})}
    if peers:
        outputs["spectral_gating"] = metrics.spectral_gating(case.noisy)
    scores = {name: _enhancement_scores(wav, case.clean, use_dnsmos, threads) for name, wav in outputs.items()}
    groups = {"SNR": snr_bucket(case.info["snr_db"]), "noise kind": str(case.info.get("noise", "?"))}
    return _row(case, groups, scores, before)


def score_separation_case(case: Case, ours: np.ndarray, others: dict[str, np.ndarray] | None = None,
                          peers: bool = True) -> Row:
    """One mixture: the mixture itself, ours and (with peers) the oracle IRM, each after its best permutation."""
    before = metrics.pesq_failures.copy()
    outputs = {"input": np.stack([case.noisy, case.noisy]), "ours": ours, **(others or {})}
    if peers:
        outputs["oracle_irm"] = metrics.oracle_irm_separation(case.noisy, case.clean)
    scores = {name: _separation_scores(est, case.clean, case.noisy) for name, est in outputs.items()}
    groups = {"relative level": case.info["level"], "engines": case.info["engine_pair"]}
    return _row(case, groups, scores, before)


# ---------------------------------------------------------------------------------------------------- the loop


def _done(row: Row) -> Future:
    future: Future = Future()
    future.set_result(row)
    return future


def _pool(workers: int) -> contextlib.AbstractContextManager:
    # spawn, not fork: the parent may hold torch/OpenMP threads, which a forked child can deadlock on
    if workers > 0:
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    return contextlib.nullcontext()


def _run(
    process: Process,
    cases: Sequence[Case],
    ndim: int,
    score: Callable[[Case, np.ndarray, dict[str, np.ndarray]], Row],
    *,
    batch_size: int,
    workers: int,
    progress: bool,
    on_output: OnOutput | None,
    others: Mapping[str, Peer] | None = None,
) -> tuple[list[Row], dict[str, float]]:
    """Feed cases to `process` in chunks, run each of ``others`` on every case, and score the outputs -> (rows in
    case order, seconds spent in `process` ("ours") and in each of ``others``).

    With workers > 0 the scoring runs in worker processes while `process` works on the next chunk (metrics on CPU,
    the model on its device); at most 2 x workers outputs wait, so memory stays bounded.
    """
    if not cases:
        raise ValueError("no cases to evaluate")
    if batch_size < 1 or workers < 0:
        raise ConfigError(f"need batch_size >= 1 and workers >= 0, got {batch_size} and {workers}")
    rows: list[Row] = []
    pending: deque[Future] = deque()
    spent = dict.fromkeys(["ours", *(others or {})], 0.0)
    desc = "evaluate " + ("enhance" if ndim == 1 else "separate")
    with _pool(workers) as pool, tqdm(total=len(cases), desc=desc, unit="utt", disable=not progress) as bar:

        def collect(block: bool) -> None:
            while pending and (block or pending[0].done() or len(pending) > 2 * workers):
                rows.append(pending.popleft().result())
                bar.update(1)

        for start in range(0, len(cases), batch_size):
            chunk = list(cases[start : start + batch_size])
            t0 = time.perf_counter()
            outs = list(process([c.noisy for c in chunk]))
            spent["ours"] += time.perf_counter() - t0
            if len(outs) != len(chunk):
                raise ValueError(f"the process returned {len(outs)} outputs for a batch of {len(chunk)}")
            for case, out in zip(chunk, outs, strict=True):
                ours = checked(out, case.id, ndim)
                if on_output is not None:
                    on_output(case, ours)
                extra = {}
                for name, peer in (others or {}).items():
                    t0 = time.perf_counter()
                    extra[name] = checked(peer(case.noisy), f"{case.id} ({name})", ndim)
                    spent[name] += time.perf_counter() - t0
                pending.append(pool.submit(score, case, ours, extra) if pool is not None
                               else _done(score(case, ours, extra)))
                collect(block=False)
        collect(block=True)
    return rows, spent


def evaluate_enhancement(
    process: Process,
    cases: Sequence[Case],
    peers: bool = True,
    *,
    batch_size: int = 8,
    workers: int = 0,
    use_dnsmos: bool = True,
    progress: bool = True,
    on_output: OnOutput | None = None,
    neural_peers: Mapping[str, Peer] | None = None,
) -> dict[str, Any]:
    """Score the noisy input, `process` (list of (n,) -> list of (n,), 16 kHz), with `peers` spectral gating, and
    each of ``neural_peers`` (timed like ours, in this process, one utterance at a time).

    Per utterance: PESQ-WB, ESTOI, SI-SDR against the clean target and DNSMOS (OVRL/SIG/BAK, no reference needed).
    -> results dict (see `_summarize`), grouped by SNR bucket and by noise kind. `workers` > 0 scores in that many
    processes. `on_output(case, output)` sees every output of ours (e.g. to keep a few for pictures).
    """
    # one ONNX thread per worker: N workers x all-core thread pools would only fight over the cores
    threads = 1 if workers else None
    score = functools.partial(score_enhancement_case, peers=peers, use_dnsmos=use_dnsmos, threads=threads)
    rows, spent = _run(process, cases, 1, score, batch_size=batch_size, workers=workers, progress=progress,
                       on_output=on_output, others=neural_peers)
    names = [*ENHANCE_METRICS] if use_dnsmos else [m for m in ENHANCE_METRICS if not m.startswith("dnsmos")]
    return _summarize("enhance", rows, names, spent, _audio_seconds(cases))


def evaluate_separation(
    process: Process,
    cases: Sequence[Case],
    peers: bool = True,
    *,
    batch_size: int = 8,
    workers: int = 0,
    progress: bool = True,
    on_output: OnOutput | None = None,
) -> dict[str, Any]:
    """Score the mixture as its own estimate (SI-SDRi 0 by definition), `process` (list of (n,) mixtures -> list of
    (2, n)) and, with `peers`, the oracle ideal ratio mask (an upper bound, it knows the sources).

    Per utterance, after the best speaker permutation: SI-SDR, SI-SDR improvement over the mixture, PESQ-WB and
    ESTOI, averaged over the two speakers. Grouped by relative level and by the engines of the two speakers.
    """
    score = functools.partial(score_separation_case, peers=peers)
    rows, spent = _run(process, cases, 2, score, batch_size=batch_size, workers=workers, progress=progress,
                       on_output=on_output)
    return _summarize("separate", rows, list(SEPARATE_METRICS), spent, _audio_seconds(cases))


# --------------------------------------------------------------------------------------------------- summaries


def _audio_seconds(cases: Sequence[Case]) -> float:
    return sum(c.noisy.shape[-1] for c in cases) / SAMPLE_RATE


def _means(rows: Sequence[dict[str, Any]], systems: Sequence[str], names: Sequence[str]) -> dict[str, dict]:
    return {s: {m: nanmean(r["scores"][s][m] for r in rows) for m in names} for s in systems}


def _bucket_order(label: str) -> tuple[float, str]:
    """Numeric buckets ("5-10 dB") by their lower edge, named ones alphabetically after them."""
    match = re.match(r"-?\d+(\.\d+)?", label)
    return (float(match.group()) if match else math.inf, label)


def _summarize(task: str, scored: list[Row], names: list[str], spent: dict[str, float],
               audio_s: float) -> dict[str, Any]:
    """The results dict: overall means per system and metric, the same per group bucket (with its size), NaN counts,
    PESQ failures during this run, timing of the process (real-time factor), and every per-utterance row."""
    rows = [row for row, _ in scored]
    failures: Counter[str] = Counter()
    for _, counts in scored:
        failures.update(counts)
    systems = list(rows[0]["scores"])
    groups: dict[str, dict[str, Any]] = {}
    for group in rows[0]["groups"]:
        buckets = sorted({r["groups"][group] for r in rows}, key=_bucket_order)
        groups[group] = {}
        for bucket in buckets:
            subset = [r for r in rows if r["groups"][group] == bucket]
            groups[group][bucket] = {"n": len(subset), "means": _means(subset, systems, names)}
    nan_counts = {s: {m: sum(1 for r in rows if not math.isfinite(r["scores"][s][m])) for m in names} for s in systems}
    return {
        "task": task,
        "n": len(rows),
        "systems": systems,
        "system_labels": {s: SYSTEM_LABELS[task].get(s, s) for s in systems},
        "metrics": names,
        "overall": _means(rows, systems, names),
        "groups": groups,
        "nan_counts": nan_counts,
        "pesq_failures": dict(failures),
        "timing": {"process_s": spent["ours"], "audio_s": audio_s, "rtf": _rtf(spent["ours"], audio_s),
                   "systems": {s: {"process_s": v, "rtf": _rtf(v, audio_s)} for s, v in spent.items()}},
        "cases": rows,
    }


def _rtf(seconds: float, audio_s: float) -> float:
    return seconds / audio_s if audio_s else math.nan
