"""Evaluation against peers: deterministic test sets, per-utterance scores, JSON + a Markdown report with pictures.

Test sets are built from a clean manifest (the unseen-speaker `test.jsonl` of the corpus): case i is made with a
generator seeded by (seed, i), so the same (manifest, seed) gives the same noisy inputs and mixtures on any machine
with the same noise kinds, and the first k cases do not depend on n. The system under test is any callable that maps
a batch of 16 kHz waveforms to a batch of outputs (the CLI passes the model pipeline), so this module never loads a
model itself. Each system (the unprocessed input, ours, a classical peer) is scored by the same functions from
`training.metrics`; means skip NaNs (metrics that are undefined for an utterance) and the report says how many.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import multiprocessing
import os
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from model.audio import SAMPLE_RATE, load_audio
from model.errors import ConfigError
from training import metrics
from training.augment import AugmentConfig, NoiseBank, make_noisy, mix_speakers
from training.manifest import ManifestError, Utterance, read_manifest

log = logging.getLogger(__name__)

TASKS = ("enhance", "separate")
ENGINES = ("espeak", "flite", "festival")  # corpus speaker names start with the engine
LEVEL_SPLIT_DB = 2.5  # separation classes: talkers at similar level vs one clearly louder
SNR_BUCKET_DB = 5.0
BABBLE_SOURCES = 8  # utterances lent to the babble noise of the default noise bank
ENHANCE_METRICS = ("pesq_wb", "estoi", "si_sdr", "dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak")
SEPARATE_METRICS = ("si_sdr", "si_sdri", "pesq_wb", "estoi")
METRIC_LABELS = {
    "pesq_wb": "PESQ-WB",
    "estoi": "ESTOI",
    "si_sdr": "SI-SDR (dB)",
    "si_sdri": "SI-SDRi (dB)",
    "dnsmos_ovrl": "DNSMOS OVRL",
    "dnsmos_sig": "DNSMOS SIG",
    "dnsmos_bak": "DNSMOS BAK",
}
SYSTEM_LABELS = {
    "enhance": {
        "input": "noisy input",
        "ours": "SpeechFlow (ours)",
        "spectral_gating": "spectral gating (noisereduce)",
    },
    "separate": {
        "input": "mixture (no processing)",
        "ours": "SpeechFlow (ours)",
        "oracle_irm": "oracle IRM (upper bound)",
    },
}
UPPER_BOUNDS = {"oracle_irm"}  # knows the answer: never the "best" system in a table

Batch = list[np.ndarray]
Process = Callable[[Batch], Sequence[np.ndarray]]
OnOutput = Callable[["Case", np.ndarray], None]
Row = tuple[dict[str, Any], dict[str, int]]  # (per-utterance record, PESQ failures while scoring it)


@dataclass
class Case:
    """One test item. `noisy` is the model input (noisy speech, or the two-talker mixture), `clean` the target ((n,)
    for enhancement, (2, n) for separation), `info` how the case was made (JSON-serialisable)."""

    id: str
    noisy: np.ndarray
    clean: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------- test sets


def _utterances(manifest: str | os.PathLike | Sequence[Utterance]) -> list[Utterance]:
    return read_manifest(manifest) if isinstance(manifest, str | os.PathLike) else list(manifest)


def _load(utt: Utterance, max_seconds: float | None) -> np.ndarray:
    wav = load_audio(utt.audio)
    return wav[: int(max_seconds * SAMPLE_RATE)] if max_seconds else wav


def _engine(speaker: str) -> str:
    prefix = speaker.split("-", 1)[0]
    return prefix if prefix in ENGINES else "other"


def _utt_info(utt: Utterance) -> dict[str, Any]:
    speaker = str(utt.meta.get("speaker", "unknown"))
    return {"audio": str(utt.audio), "speaker": speaker, "engine": _engine(speaker)}


def _default_bank(utts: list[Utterance], pool: np.ndarray, max_seconds: float | None) -> NoiseBank:
    """Noise bank whose babble comes from test utterances that are not targets, when the manifest has any spare."""
    sources = [_load(utts[k], max_seconds) for k in pool[:BABBLE_SOURCES]]
    return NoiseBank(babble_sources=sources)


def enhancement_cases(
    manifest: str | os.PathLike | Sequence[Utterance],
    n: int,
    seed: int = 0,
    snr_db: tuple[float, float] = (0.0, 10.0),
    noise_bank: NoiseBank | None = None,
    max_seconds: float | None = None,
) -> list[Case]:
    """n noisy/clean pairs: n distinct utterances (a seeded shuffle), each mixed by `make_noisy` at an SNR drawn from
    `snr_db`, no reverberation. info: speaker, engine, noise kind, snr_db, ... (see `make_noisy`).

    The default noise bank offers every kind this machine has (babble from other test utterances; `sound-icons`
    clips when installed), so results match across machines with the same packages.
    """
    utts = _utterances(manifest)
    if n > len(utts):
        log.warning("asked for %d enhancement cases, the manifest has %d utterances; using %d", n, len(utts), len(utts))
    order = np.random.default_rng(seed).permutation(len(utts))
    picks, spare = order[:n], order[n:]
    bank = noise_bank if noise_bank is not None else _default_bank(utts, spare if spare.size else order, max_seconds)
    cfg = AugmentConfig(snr_db=(float(snr_db[0]), float(snr_db[1])))
    cases = []
    for i, k in enumerate(picks):
        utt = utts[k]
        noisy, clean, info = make_noisy(np.random.default_rng([seed, i]), _load(utt, max_seconds), bank, cfg)
        cases.append(Case(f"{i:04d}-{utt.audio.stem}", noisy, clean, _utt_info(utt) | info))
    return cases


def level_class(rel_db: float | None) -> str:
    """Separation class by the talkers' relative level: similar (hardest to tell apart by loudness) or not."""
    if rel_db is None:
        return "unknown level"
    return f"within {LEVEL_SPLIT_DB:g} dB" if abs(rel_db) < LEVEL_SPLIT_DB else f"{LEVEL_SPLIT_DB:g} dB or more apart"


def separation_cases(
    manifest: str | os.PathLike | Sequence[Utterance],
    n: int,
    seed: int = 0,
    rel_db: tuple[float, float] = (-5.0, 5.0),
    max_offset_s: float = 1.0,
    max_seconds: float | None = None,
) -> list[Case]:
    """n two-talker mixtures of different speakers (`mix_speakers`: relative level from `rel_db`, one talker starting
    up to `max_offset_s` later). Utterances without a speaker count as speakers of their own.

    info: speakers, engines, engine_pair (e.g. "espeak+flite"), rel_db, level (within 2.5 dB or not), offsets.
    """
    utts = _utterances(manifest)
    speakers = [str(u.meta.get("speaker", f"utterance-{k}")) for k, u in enumerate(utts)]
    if len(set(speakers)) < 2:
        raise ManifestError("separation needs utterances of at least two different speakers")
    cache: dict[int, np.ndarray] = {}

    def load(k: int) -> np.ndarray:
        if k not in cache:
            cache[k] = _load(utts[k], max_seconds)
        return cache[k]

    cases = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        a = int(rng.integers(len(utts)))
        others = [k for k, s in enumerate(speakers) if s != speakers[a]]
        b = others[int(rng.integers(len(others)))]
        mixture, (s1, s2), mix_info = mix_speakers(rng, load(a), load(b), rel_db, max_offset_s)
        engines = [_engine(speakers[a]), _engine(speakers[b])]
        info = {
            "audio": [str(utts[a].audio), str(utts[b].audio)],
            "speakers": [speakers[a], speakers[b]],
            "engines": engines,
            "engine_pair": "+".join(sorted(engines)),
            "level": level_class(mix_info["rel_db"]),
        } | mix_info
        cases.append(Case(f"{i:04d}-{utts[a].audio.stem}+{utts[b].audio.stem}", mixture, np.stack([s1, s2]), info))
    return cases


# ------------------------------------------------------------------------------------------------------- scoring


def _enhancement_scores(est: np.ndarray, clean: np.ndarray, use_dnsmos: bool, threads: int | None) -> dict:
    scores = {
        "pesq_wb": metrics.pesq_wb(clean, est),
        "estoi": metrics.estoi(clean, est),
        "si_sdr": metrics.si_sdr(est, clean),
    }
    if use_dnsmos:
        scores |= {f"dnsmos_{k}": v for k, v in metrics.dnsmos(est, threads=threads).items()}
    return scores


def _nanmean(values: Iterable[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _separation_scores(ests: np.ndarray, refs: np.ndarray, mixture: np.ndarray) -> dict[str, float]:
    """Scores averaged over the two speakers, after matching estimates to speakers by the best SI-SDR."""
    per_source, perm = metrics.permutation_si_sdr(ests, refs)
    ordered = ests[list(perm)]
    baseline = np.array([metrics.si_sdr(mixture, r) for r in refs])
    return {
        "si_sdr": _nanmean(per_source),
        "si_sdri": _nanmean(per_source - baseline),
        "pesq_wb": _nanmean(metrics.pesq_wb(r, e) for r, e in zip(refs, ordered, strict=True)),
        "estoi": _nanmean(metrics.estoi(r, e) for r, e in zip(refs, ordered, strict=True)),
    }


def _row(case: Case, groups: dict[str, str], scores: dict, failures_before: Counter[str]) -> Row:
    failures = {k: v - failures_before.get(k, 0) for k, v in metrics.pesq_failures.items()}
    record = {"id": case.id, "info": case.info, "groups": groups, "scores": scores}
    return record, {k: v for k, v in failures.items() if v}


def score_enhancement_case(
    case: Case, ours: np.ndarray, peers: bool = True, use_dnsmos: bool = True, threads: int | None = None
) -> Row:
    """One utterance: every system's scores, its groups, PESQ failures (top-level: worker processes can run it)."""
    before = metrics.pesq_failures.copy()
    outputs = {"input": case.noisy, "ours": ours}
    if peers:
        outputs["spectral_gating"] = metrics.spectral_gating(case.noisy)
    scores = {name: _enhancement_scores(wav, case.clean, use_dnsmos, threads) for name, wav in outputs.items()}
    groups = {"SNR": snr_bucket(case.info["snr_db"]), "noise kind": str(case.info.get("noise", "?"))}
    return _row(case, groups, scores, before)


def score_separation_case(case: Case, ours: np.ndarray, peers: bool = True) -> Row:
    """One mixture: the mixture itself, ours and (with peers) the oracle IRM, each after its best permutation."""
    before = metrics.pesq_failures.copy()
    outputs = {"input": np.stack([case.noisy, case.noisy]), "ours": ours}
    if peers:
        outputs["oracle_irm"] = metrics.oracle_irm_separation(case.noisy, case.clean)
    scores = {name: _separation_scores(est, case.clean, case.noisy) for name, est in outputs.items()}
    groups = {"relative level": case.info["level"], "engines": case.info["engine_pair"]}
    return _row(case, groups, scores, before)


def _checked(out: np.ndarray, case: Case, ndim: int) -> np.ndarray:
    """A system output as float32 of the expected rank, or a clear error naming the case."""
    x = np.asarray(out, dtype=np.float32)
    if x.ndim != ndim or (ndim == 2 and x.shape[0] != 2) or x.shape[-1] == 0:
        want = "(n,)" if ndim == 1 else "(2, n)"
        raise ValueError(f"case {case.id}: the process returned shape {x.shape}, expected {want}")
    if not np.isfinite(x).all():
        raise ValueError(f"case {case.id}: the process returned NaN or infinite samples")
    return x


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
    score: Callable[[Case, np.ndarray], Row],
    *,
    batch_size: int,
    workers: int,
    progress: bool,
    on_output: OnOutput | None,
) -> tuple[list[Row], float]:
    """Feed cases to `process` in chunks and score each output -> (rows in case order, seconds inside `process`).

    With workers > 0 the scoring runs in worker processes while `process` works on the next chunk (metrics on CPU,
    the model on its device); at most 2 x workers outputs wait, so memory stays bounded.
    """
    if not cases:
        raise ValueError("no cases to evaluate")
    if batch_size < 1 or workers < 0:
        raise ConfigError(f"need batch_size >= 1 and workers >= 0, got {batch_size} and {workers}")
    rows: list[Row] = []
    pending: deque[Future] = deque()
    spent = 0.0
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
            spent += time.perf_counter() - t0
            if len(outs) != len(chunk):
                raise ValueError(f"the process returned {len(outs)} outputs for a batch of {len(chunk)}")
            for case, out in zip(chunk, outs, strict=True):
                ours = _checked(out, case, ndim)
                if on_output is not None:
                    on_output(case, ours)
                pending.append(pool.submit(score, case, ours) if pool is not None else _done(score(case, ours)))
                collect(block=False)
        collect(block=True)
    return rows, spent


def snr_bucket(snr_db: float, width: float = SNR_BUCKET_DB) -> str:
    low = width * math.floor(snr_db / width)
    return f"{low:g}-{low + width:g} dB"


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
) -> dict[str, Any]:
    """Score the noisy input, `process` (list of (n,) -> list of (n,), 16 kHz) and, with `peers`, spectral gating.

    Per utterance: PESQ-WB, ESTOI, SI-SDR against the clean target and DNSMOS (OVRL/SIG/BAK, no reference needed).
    -> results dict (see `_summarize`), grouped by SNR bucket and by noise kind. `workers` > 0 scores in that many
    processes. `on_output(case, output)` sees every output of ours (e.g. to keep a few for pictures).
    """
    # one ONNX thread per worker: N workers x all-core thread pools would only fight over the cores
    threads = 1 if workers else None
    score = functools.partial(score_enhancement_case, peers=peers, use_dnsmos=use_dnsmos, threads=threads)
    rows, spent = _run(
        process, cases, 1, score, batch_size=batch_size, workers=workers, progress=progress, on_output=on_output
    )
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
    rows, spent = _run(
        process, cases, 2, score, batch_size=batch_size, workers=workers, progress=progress, on_output=on_output
    )
    return _summarize("separate", rows, list(SEPARATE_METRICS), spent, _audio_seconds(cases))


def _audio_seconds(cases: Sequence[Case]) -> float:
    return sum(c.noisy.shape[-1] for c in cases) / SAMPLE_RATE


def _means(rows: Sequence[dict[str, Any]], systems: Sequence[str], names: Sequence[str]) -> dict[str, dict]:
    return {s: {m: _nanmean(r["scores"][s][m] for r in rows) for m in names} for s in systems}


def _bucket_order(label: str) -> tuple[float, str]:
    """Numeric buckets ("5-10 dB") by their lower edge, named ones alphabetically after them."""
    match = re.match(r"-?\d+(\.\d+)?", label)
    return (float(match.group()) if match else math.inf, label)


def _summarize(task: str, scored: list[Row], names: list[str], process_s: float, audio_s: float) -> dict[str, Any]:
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
        "timing": {"process_s": process_s, "audio_s": audio_s, "rtf": process_s / audio_s if audio_s else math.nan},
        "cases": rows,
    }


# ---------------------------------------------------------------------------------------------------- JSON output


def _jsonable(x: Any) -> Any:
    """numpy types -> Python, NaN/inf -> null (strict JSON that any reader accepts)."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(results: Mapping[str, Any], path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(results), indent=2, allow_nan=False) + "\n")


# -------------------------------------------------------------------------------------------------------- report


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)  # None: a NaN after a JSON round trip


def _fmt(metric: str, value: float | None) -> str:
    if not _finite(value):
        return "n/a"
    return f"{value:.3f}" if metric == "estoi" else f"{value:.2f}"


def _best(means: Mapping[str, Mapping[str, float]], metric: str) -> str | None:
    """The best shown value of a metric (all ours are higher-is-better) among systems other than upper bounds."""
    candidates = [v[metric] for s, v in means.items() if s not in UPPER_BOUNDS and _finite(v[metric])]
    return _fmt(metric, max(candidates)) if candidates else None


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a bare pipe would end the table cell


def _table(results: Mapping[str, Any], means: Mapping[str, Mapping[str, float]], first: str = "") -> list[str]:
    """One Markdown table: a row per system, a column per metric, the best (non-oracle) value in bold."""
    names, labels = results["metrics"], results["system_labels"]
    lead = [first] if first else []
    lines = [
        "| " + " | ".join([*lead, "system", *(METRIC_LABELS.get(m, m) for m in names)]) + " |",
        "|" + "---|" * (len(lead) + 1 + len(names)),
    ]
    best = {m: _best(means, m) for m in names}
    for system, values in means.items():
        cells = []
        for m in names:
            shown = _fmt(m, values[m])
            cells.append(f"**{shown}**" if system not in UPPER_BOUNDS and shown == best[m] else shown)
        lines.append("| " + " | ".join(_cell(c) for c in [*lead, labels.get(system, system), *cells]) + " |")
    return lines


def _group_tables(results: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for group, buckets in results["groups"].items():
        lines += ["", f"## By {group}", ""]
        header = _table(results, {}, first=group)[:2]
        body: list[str] = []
        for bucket, entry in buckets.items():
            body += _table(results, entry["means"], first=f"{bucket} (n={entry['n']})")[2:]
        lines += header + body
    return lines


def _delta(results: Mapping[str, Any], metric: str, other: str) -> str:
    overall = results["overall"]
    if other not in overall or not (_finite(overall["ours"].get(metric)) and _finite(overall[other].get(metric))):
        return "n/a"
    diff = overall["ours"][metric] - overall[other][metric]
    return f"{diff:+.3f}" if metric == "estoi" else f"{diff:+.2f}"


def _verdict(results: Mapping[str, Any]) -> list[str]:
    """Plain sentences on the issue's targets, so a reader need not compare numbers by eye."""
    if results["task"] == "enhance":
        lines = []
        for other in ("input", "spectral_gating"):
            if other in results["overall"]:
                label = results["system_labels"][other]
                lines.append(
                    f"- Ours vs {label}: PESQ-WB {_delta(results, 'pesq_wb', other)}, "
                    f"ESTOI {_delta(results, 'estoi', other)}, SI-SDR {_delta(results, 'si_sdr', other)} dB."
                )
        return lines
    per_class = {
        f"{group}: {bucket}": entry["means"]["ours"]["si_sdri"]
        for group, buckets in results["groups"].items()
        for bucket, entry in buckets.items()
    }
    worst = min(per_class, key=lambda k: per_class[k] if _finite(per_class[k]) else -math.inf)
    met = all(_finite(v) and v > 0 for v in per_class.values())
    return [
        f"- Ours: mean SI-SDRi {_fmt('si_sdri', results['overall']['ours']['si_sdri'])} dB; lowest class mean "
        f"{_fmt('si_sdri', per_class[worst])} dB ({worst}).",
        f"- SI-SDRi > 0 dB on every class: **{'yes' if met else 'no'}**.",
    ]


def _notes(results: Mapping[str, Any]) -> list[str]:
    timing = results["timing"]
    lines = [
        "",
        "## Notes",
        "",
        f"- Processing (ours): {timing['process_s']:.1f} s for {timing['audio_s']:.1f} s of audio "
        f"(real-time factor {_fmt('rtf', timing['rtf'])}).",
        "- Means skip utterances where a metric is undefined (silent reference, too little speech; DNSMOS needs"
        " >= 1 s).",
    ]
    missing = {f"{s}/{m}": c for s, per in results["nan_counts"].items() for m, c in per.items() if c}
    if missing:
        lines.append("- Undefined scores: " + ", ".join(f"{k}: {v}" for k, v in missing.items()) + ".")
    if results.get("pesq_failures"):
        lines.append("- PESQ could not score: " + ", ".join(f"{k} x{v}" for k, v in results["pesq_failures"].items()))
    if results["task"] == "separate":
        lines.append("- Scores are averaged over both speakers after the best speaker permutation.")
    return lines


def _spectrogram_db(wav: np.ndarray) -> np.ndarray:
    spec = metrics.stft(np.asarray(wav, np.float64), SAMPLE_RATE)
    return 20.0 * np.log10(np.abs(spec) + 1e-8)


def save_spectrograms(path: Path, title: str, panels: Sequence[tuple[str, np.ndarray]]) -> None:
    """Stacked log-magnitude spectrograms (0-8 kHz) on one colour scale, so levels are comparable across panels."""
    from matplotlib.figure import Figure  # the Figure API needs no pyplot state or GUI backend (Agg by default)

    specs = [_spectrogram_db(w) for _, w in panels]
    top = max(float(s.max()) for s in specs)
    longest = max(w.shape[-1] for _, w in panels) / SAMPLE_RATE
    fig = Figure(figsize=(10, 0.6 + 2.2 * len(panels)))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    fig.subplots_adjust(left=0.07, right=0.9, top=1 - 0.5 / fig.get_figheight(), bottom=0.5 / fig.get_figheight())
    for ax, (label, wav), spec in zip(axes, panels, specs, strict=True):
        extent = (0.0, wav.shape[-1] / SAMPLE_RATE, 0.0, SAMPLE_RATE / 2000.0)
        image = ax.imshow(spec, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=top - 80, vmax=top)
        ax.set_ylabel("kHz")
        ax.set_title(label, loc="left", fontsize=10)
        ax.set_xlim(0.0, longest)
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(image, cax=fig.add_axes((0.92, 0.1, 0.015, 0.8)), label="dB")
    fig.suptitle(title)
    fig.savefig(path, dpi=80)


def write_report(
    results: Mapping[str, Any],
    out_md: str | os.PathLike,
    pictures: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = (),
) -> None:
    """A Markdown report: configuration, the overall table, per-class tables, verdict, notes, and spectrogram PNGs
    (input / ours / clean per picture) saved next to it as `<stem>_NN.png`."""
    out_md = Path(out_md)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    task = results["task"]
    title = "speech enhancement" if task == "enhance" else "two-speaker separation"
    lines = [f"# SpeechFlow evaluation: {title}", ""]
    lines += [f"- {k}: `{v}`" for k, v in results.get("config", {}).items()]
    lines += [f"- utterances: {results['n']}", "", "## Overall (mean over utterances; higher is better)", ""]
    lines += _table(results, results["overall"])
    lines += ["", *_verdict(results)]
    lines += _group_tables(results)
    lines += _notes(results)
    if pictures:
        lines += ["", "## Spectrograms", ""]
        names = ("mixture", "ours", "clean speaker") if task == "separate" else ("noisy input", "ours", "clean")
        for i, (caption, noisy, ours, clean) in enumerate(pictures):
            png = out_md.with_name(f"{out_md.stem}_{i:02d}.png")
            save_spectrograms(png, caption, list(zip(names, (noisy, ours, clean), strict=True)))
            lines += [f"### {caption}", "", f"![{caption}]({png.name})", ""]
    out_md.write_text("\n".join(lines).rstrip() + "\n")


# ------------------------------------------------------------------------------------------------- one-call entry


def _picture_collector(task: str, limit: int, pictures: list) -> OnOutput:
    """An on_output hook keeping the first outputs as (caption, input, ours, clean) pictures."""

    def keep(case: Case, out: np.ndarray) -> None:
        if len(pictures) >= limit:
            return
        if task == "enhance":
            caption = f"{case.id} ({case.info.get('noise')} noise, {case.info.get('snr_db', math.nan):.1f} dB SNR)"
            pictures.append((caption, case.noisy, out, case.clean))
            return
        _, perm = metrics.permutation_si_sdr(out, case.clean)
        for k in range(case.clean.shape[0]):
            if len(pictures) < limit:
                caption = f"{case.id}, speaker {k + 1} ({case.info['speakers'][k]})"
                pictures.append((caption, case.noisy, out[perm[k]], case.clean[k]))

    return keep


def run_evaluation(
    task: str,
    process: Process,
    manifest: str | os.PathLike,
    n: int = 100,
    seed: int = 0,
    json_out: str | os.PathLike | None = None,
    report_out: str | os.PathLike | None = None,
    *,
    batch_size: int = 8,
    workers: int = 0,
    peers: bool = True,
    use_dnsmos: bool = True,
    n_pictures: int = 3,
    snr_db: tuple[float, float] = (0.0, 10.0),
    max_seconds: float | None = None,
    progress: bool = True,
    extra_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the test set, evaluate `process` and its peers, write JSON and/or the Markdown report -> results.

    `workers` > 0 computes the metrics in that many processes while `process` runs (a good value: the cores not used
    by the model). DNSMOS (enhancement only) is the slowest metric, ~0.2-0.5 s per utterance and system on a CPU core.

    `extra_config` (e.g. the bundle path, solver, steps, the command line) is recorded in the results and report.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown evaluation task {task!r}; expected one of {', '.join(TASKS)}")
    pictures: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
    hook = _picture_collector(task, n_pictures, pictures)
    config: dict[str, Any] = {"task": task, "manifest": str(manifest), "seed": seed, "batch_size": batch_size}
    common: dict[str, Any] = {"batch_size": batch_size, "workers": workers, "progress": progress, "on_output": hook}
    if task == "enhance":
        cases = enhancement_cases(manifest, n, seed, snr_db=snr_db, max_seconds=max_seconds)
        config["snr_db"] = list(snr_db)
        results = evaluate_enhancement(process, cases, peers, use_dnsmos=use_dnsmos, **common)
    else:
        cases = separation_cases(manifest, n, seed, max_seconds=max_seconds)
        results = evaluate_separation(process, cases, peers, **common)
    results["config"] = config | dict(extra_config or {})
    if json_out is not None:
        write_json(results, json_out)
    if report_out is not None:
        write_report(results, report_out, pictures)
    return results
