"""The reproducible recipe behind a shipped bundle: corpus -> pre-training -> vocoder -> fine-tuning -> evaluation
-> bundle, one resumable command.

Every stage is skipped when its output is complete and resumed from its last checkpoint when it is not, so the
same command picks up after any interruption (a killed process loses at most one save interval). The working state
(corpus, run directories, reports) lives in ``--work``, outside the repository; only the bundle goes to ``--out``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.bundle import BUNDLE_FILE, read_bundle_info, write_bundle
from model.checkpoint import CONFIG_FILE, read_config, write_json
from model.errors import ConfigError

from .trainer import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class RecipeConfig:
    work: Path
    out: Path
    preset: str = "tiny"
    hours: float = 8.0
    seed: int = 0
    device: str = "auto"
    pretrain_steps: int = 24_000
    vocoder_steps: int = 8_000
    enhance_steps: int = 6_000
    separate_steps: int = 6_000
    tts_steps: int = 8_000
    duration_steps: int = 2_000
    aligner_steps: int = 1_500
    eval_utterances: int = 100
    eval_nfe: int | None = None  # None: each task's default sampling (model/defaults.py), as served
    threads: int = 0  # torch threads per process (1 each when stages train side by side on one CPU)
    engines: tuple[str, ...] = ("espeak", "flite", "festival")
    # TrainConfig fields shared by every stage, then each stage's own (vocoders train on short crops)
    train: dict[str, Any] = field(default_factory=lambda: {"lr": 4e-4, "warmup": 1000, "save_every": 250,
                                                           "log_every": 50, "num_workers": 1})
    vocoder_train: dict[str, Any] = field(default_factory=lambda: {"lr": 1e-3, "max_seconds": 1.0,
                                                                   "batch_seconds": 16.0})
    finetune_train: dict[str, Any] = field(default_factory=lambda: {"warmup": 200})
    vocoder_config: dict[str, Any] = field(default_factory=dict)  # VocosConfig overrides (tests: a tiny one)
    tts_eval: dict[str, Any] = field(default_factory=dict)  # run_tts_evaluation overrides (tests: short prompts)

    def stage_steps(self) -> dict[str, int]:
        return {"pretrain": self.pretrain_steps, "vocoder": self.vocoder_steps, "duration": self.duration_steps,
                "aligner": self.aligner_steps, "enhance": self.enhance_steps, "separate": self.separate_steps,
                "tts": self.tts_steps}


# training order: every fine-tuning task starts from "pretrain"; the rest are independent of each other
STAGES = ("pretrain", "vocoder", "duration", "aligner", "enhance", "separate", "tts")


def trained_steps(run: Path) -> int:
    """Steps a run directory has saved (0 when there is none yet)."""
    if not (run / CONFIG_FILE).is_file():
        return 0
    return int(read_config(run).get("extra", {}).get("training", {}).get("step", 0))


def _stage(name: str, run: Path, steps: int) -> bool:
    """True when the stage still has work to do; says what it will do either way."""
    done = trained_steps(run)
    if done >= steps:
        print(f"[recipe] {name}: complete ({done} steps) in {run}")
        return False
    print(f"[recipe] {name}: {'resuming at ' + str(done) if done else 'starting'} -> {steps} steps in {run}")
    return True


def run_recipe(cfg: RecipeConfig, only: Sequence[str] | None = None) -> Path | None:
    """Train every stage that is not complete, then (when all are) write the bundle and evaluate it.

    ``only`` trains just those stages and stops there: separate processes (or GPUs) can train stages side by side
    in the same work directory, and a last plain run finds them complete, bundles and evaluates."""
    from .aligner import default_train_config as aligner_train_config
    from .aligner import train_aligner
    from .corpus import build_corpus
    from .duration import default_train_config as duration_train_config
    from .duration import train_duration
    from .finetune import finetune
    from .pretrain import pretrain
    from .vocoder import train_vocoder

    unknown = set(only or ()) - set(STAGES)
    if unknown:
        raise ConfigError(f"unknown recipe stage(s) {sorted(unknown)}; the stages are {', '.join(STAGES)}")
    work = cfg.work
    corpus = work / "corpus"
    print(f"[recipe] corpus: {cfg.hours} h, seed {cfg.seed} in {corpus}")
    build_corpus(corpus, hours=cfg.hours, seed=cfg.seed, engines=cfg.engines)
    train_manifest, test_manifest = corpus / "train.jsonl", corpus / "test.jsonl"
    runs = {name: work / name for name in STAGES}
    steps = cfg.stage_steps()

    def train(stage: str, **overrides: Any) -> TrainConfig:
        return TrainConfig(steps=steps[stage], seed=cfg.seed, device=cfg.device, threads=cfg.threads,
                           **(cfg.train | overrides))

    def resume(stage: str) -> bool:
        return trained_steps(runs[stage]) > 0

    def run_stage(stage: str) -> None:
        if stage == "pretrain":
            pretrain(train_manifest, runs[stage], cfg.preset, train(stage), resume=resume(stage))
        elif stage == "vocoder":
            from model.vocos import VocosConfig

            train_vocoder(train_manifest, runs[stage], VocosConfig(**cfg.vocoder_config),
                          train(stage, **cfg.vocoder_train), resume=resume(stage))
        elif stage in ("duration", "aligner"):  # small models with their own training defaults
            small = {"steps": steps[stage], "seed": cfg.seed, "device": cfg.device, "threads": cfg.threads}
            if stage == "duration":
                train_duration(train_manifest, runs[stage], None, duration_train_config(**small), resume=resume(stage))
            else:
                train_aligner(train_manifest, runs[stage], None, aligner_train_config(**small), resume=resume(stage))
        else:  # a fine-tuning task: only from a finished pre-training run
            if trained_steps(runs["pretrain"]) < steps["pretrain"]:
                raise ConfigError(f"{stage} fine-tunes the pre-trained model: finish the pretrain stage first "
                                 f"({trained_steps(runs['pretrain'])}/{steps['pretrain']} steps)")
            finetune(stage, runs["pretrain"], train_manifest, runs[stage], train(stage, **cfg.finetune_train),
                     resume=resume(stage))

    for stage in STAGES:
        if (only is None or stage in only) and _stage(stage, runs[stage], steps[stage]):
            run_stage(stage)
    if only is not None:
        print(f"[recipe] trained {', '.join(only)}; run without --only to bundle and evaluate")
        return None
    pending = [s for s in STAGES if trained_steps(runs[s]) < steps[s]]
    if pending:  # another process is still training them
        print(f"[recipe] not bundling yet: {', '.join(pending)} still training")
        return None

    from model.bundle import write_voices

    from .voices import pick_voices

    shipped = [s for s in STAGES if steps[s] > 0]  # a 0-step vocoder: the bundle uses labelled Griffin-Lim
    info = {"recipe": {"command": " ".join(shlex.quote(a) for a in sys.argv),
                       "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str))}}
    write_bundle(cfg.out, {s: runs[s] for s in shipped}, info=info)
    write_voices(cfg.out, pick_voices(test_manifest))  # prompts of speakers never seen in training
    evaluation = {task: evaluate_bundle(cfg, task, test_manifest) for task in ("enhance", "separate", "tts")
                  if steps[task] > 0}
    evaluation["prompt_alignment"] = evaluate_prompt_alignment(cfg, test_manifest)
    write_json(cfg.out / BUNDLE_FILE, {**read_bundle_info(cfg.out), "evaluation": evaluation})
    print(f"[recipe] bundle written to {cfg.out}")
    return cfg.out


def evaluate_prompt_alignment(cfg: RecipeConfig, test_manifest: Path) -> dict[str, Any]:
    """Frame accuracy of the bundle's two prompt aligners on the unseen speakers' aligned utterances."""
    from model.pipeline import SpeechFlowPipeline

    from .aligner import compare_prompt_aligners
    from .manifest import read_manifest

    pipe = SpeechFlowPipeline.from_pretrained(cfg.out, device=cfg.device)
    report = compare_prompt_aligners(read_manifest(test_manifest), pipe.aligner, pipe.durations)
    write_json(cfg.work / "eval" / "prompt_alignment.json", report)
    print(f"[recipe] prompt alignment: {json.dumps(report)}")
    return report


def evaluate_bundle(cfg: RecipeConfig, task: str, test_manifest: Path) -> dict[str, Any]:
    """Evaluate the written bundle (fp16 weights, exactly what ships) on the unseen-speaker test split; reports go
    to work/eval/."""
    from model.defaults import sampling
    from model.pipeline import SpeechFlowPipeline

    pipe = SpeechFlowPipeline.from_pretrained(cfg.out, device=cfg.device)
    out_dir = cfg.work / "eval"
    outputs = {"json_out": out_dir / f"{task}.json", "report_out": out_dir / f"{task}.md"}
    settings = dataclasses.asdict(sampling(task, cfg.eval_nfe))  # steps, guidance, solver
    config = {**settings, "bundle": str(cfg.out)}
    if task == "tts":
        from .evaluate_tts import pipeline_synthesizer, run_tts_evaluation

        synth = pipeline_synthesizer(pipe, **settings, seed=cfg.seed)
        results = run_tts_evaluation(synth, test_manifest, n=cfg.eval_utterances, seed=cfg.seed,
                                     extra_config=config, **outputs, **cfg.tts_eval)
        summary = {k: results[k] for k in ("overall", "wer_ratio", "similarity_position")}
    else:
        from .evaluate import run_evaluation

        run = pipe.enhance_batch if task == "enhance" else pipe.separate_batch

        def process(wavs):
            return [out for out, _ in run([(w, pipe.sample_rate) for w in wavs], **settings, seed=cfg.seed)]

        results = run_evaluation(task, process, test_manifest, n=cfg.eval_utterances, seed=cfg.seed,
                                 extra_config=config, **outputs)
        summary = {"overall": results["overall"]}
    print(f"[recipe] {task} evaluation: {outputs['report_out']}")
    return {**summary, "n": cfg.eval_utterances, **settings}
