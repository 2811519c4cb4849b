"""Evaluation against peers: deterministic test sets, per-utterance scores, JSON + a Markdown report with pictures.

This module is the public entry point (`run_evaluation`, and the API the CLI, the recipe and the tests import);
the work is split by concern under `training.evaluation`: test sets (`cases`), scoring and the batch loop
(`scoring`), the report (`report`), shared helpers (`common`, `markdown`).

Test sets are built from a clean manifest (the unseen-speaker `test.jsonl` of the corpus) and are the same for the
same (manifest, seed). The system under test is any callable that maps a batch of 16 kHz waveforms to a batch of
outputs (the CLI passes the model pipeline), so this module never loads a model itself. Each system (the
unprocessed input, ours, a classical peer) is scored by the same functions from `training.evaluation.metrics`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from model.errors import ConfigError
from training.evaluation.cases import (
    BABBLE_SOURCES,
    LEVEL_SPLIT_DB,
    SNR_BUCKET_DB,
    Case,
    enhancement_cases,
    level_class,
    separation_cases,
    snr_bucket,
)
from training.evaluation.common import ENGINES, write_json
from training.evaluation.markdown import Picture, save_spectrograms
from training.evaluation.peers import load_peers
from training.evaluation.real_cases import REAL_NOISES, REAL_SNRS_DB, real_enhancement_cases, real_separation_cases
from training.evaluation.report import METRIC_LABELS, UPPER_BOUNDS, picture_collector, write_report
from training.evaluation.scoring import (
    ENHANCE_METRICS,
    SEPARATE_METRICS,
    SYSTEM_LABELS,
    Batch,
    OnOutput,
    Process,
    Row,
    evaluate_enhancement,
    evaluate_separation,
    score_enhancement_case,
    score_separation_case,
)

__all__ = [
    "BABBLE_SOURCES",
    "ENGINES",
    "ENHANCE_METRICS",
    "LEVEL_SPLIT_DB",
    "METRIC_LABELS",
    "SEPARATE_METRICS",
    "SNR_BUCKET_DB",
    "SYSTEM_LABELS",
    "TASKS",
    "UPPER_BOUNDS",
    "Batch",
    "Case",
    "OnOutput",
    "Process",
    "Row",
    "enhancement_cases",
    "evaluate_enhancement",
    "evaluate_separation",
    "level_class",
    "run_evaluation",
    "save_spectrograms",
    "score_enhancement_case",
    "score_separation_case",
    "separation_cases",
    "snr_bucket",
    "write_json",
    "write_report",
]

TASKS = ("enhance", "separate")
CONDITIONS = ("synthetic", "real")


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
    conditions: str = "synthetic",
    neural_peers: Sequence[str] = (),
) -> dict[str, Any]:
    """Build the test set, evaluate `process` and its peers, write JSON and/or the Markdown report -> results.

    `workers` > 0 computes the metrics in that many processes while `process` runs (a good value: the cores not used
    by the model). DNSMOS (enhancement only) is the slowest metric, ~0.2-0.5 s per utterance and system on a CPU core.

    `extra_config` (e.g. the bundle path, solver, steps, the command line) is recorded in the results and report.
    ``conditions="real"``: `manifest` is a real corpus's test split and the cases are its real conditions
    (`training.evaluation.real_cases`; enhancement: n // 12 utterances, each in all 12 conditions).
    ``neural_peers`` names the enhancement peers (`training.evaluation.peers`) run and timed beside ours.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown evaluation task {task!r}; expected one of {', '.join(TASKS)}")
    if conditions not in CONDITIONS:
        raise ConfigError(f"unknown conditions {conditions!r}; expected one of {', '.join(CONDITIONS)}")
    if neural_peers and task != "enhance":
        raise ConfigError("the neural peers are enhancement models: give them with --task enhance")
    pictures: list[Picture] = []
    hook = picture_collector(task, n_pictures, pictures)
    config: dict[str, Any] = {"task": task, "manifest": str(manifest), "seed": seed, "batch_size": batch_size,
                              "conditions": conditions, "neural_peers": list(neural_peers)}
    real = conditions == "real"
    common: dict[str, Any] = {"batch_size": batch_size, "workers": workers, "progress": progress, "on_output": hook}
    if task == "enhance":
        grid = len(REAL_NOISES) * len(REAL_SNRS_DB)  # real: every utterance in every condition
        cases = (real_enhancement_cases(manifest, max(1, n // grid), seed) if real
                 else enhancement_cases(manifest, n, seed, snr_db=snr_db, max_seconds=max_seconds))
        config["snr_db"] = list(REAL_SNRS_DB if real else snr_db)
        results = evaluate_enhancement(process, cases, peers, use_dnsmos=use_dnsmos,
                                       neural_peers=load_peers(tuple(neural_peers)), **common)
    else:
        cases = (real_separation_cases(manifest, n, seed) if real
                 else separation_cases(manifest, n, seed, max_seconds=max_seconds))
        results = evaluate_separation(process, cases, peers, **common)
    results["config"] = config | dict(extra_config or {})
    if json_out is not None:
        write_json(results, json_out)
    if report_out is not None:
        write_report(results, report_out, pictures)
    return results
