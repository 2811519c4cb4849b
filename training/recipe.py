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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.bundle import write_bundle
from model.checkpoint import CONFIG_FILE, read_config

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
    eval_utterances: int = 100
    eval_nfe: int = 32
    engines: tuple[str, ...] = ("espeak", "flite", "festival")
    # TrainConfig fields shared by every stage, then each stage's own (vocoders train on short crops)
    train: dict[str, Any] = field(default_factory=lambda: {"lr": 4e-4, "warmup": 1000, "save_every": 250,
                                                           "log_every": 50, "num_workers": 1})
    vocoder_train: dict[str, Any] = field(default_factory=lambda: {"lr": 1e-3, "max_seconds": 1.0,
                                                                   "batch_seconds": 16.0})
    finetune_train: dict[str, Any] = field(default_factory=lambda: {"warmup": 200})
    vocoder_config: dict[str, Any] = field(default_factory=dict)  # VocosConfig overrides (tests: a tiny one)


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


def run_recipe(cfg: RecipeConfig) -> Path:
    from .corpus import build_corpus
    from .finetune import finetune
    from .pretrain import pretrain
    from .vocoder import train_vocoder

    work = cfg.work
    corpus = work / "corpus"
    print(f"[recipe] corpus: {cfg.hours} h, seed {cfg.seed} in {corpus}")
    build_corpus(corpus, hours=cfg.hours, seed=cfg.seed, engines=cfg.engines)
    train_manifest, test_manifest = corpus / "train.jsonl", corpus / "test.jsonl"

    def train(steps: int, **overrides: Any) -> TrainConfig:
        return TrainConfig(steps=steps, seed=cfg.seed, device=cfg.device, **(cfg.train | overrides))

    runs = {name: work / name for name in ("pretrain", "vocoder", "enhance", "separate", "tts", "duration")}
    if _stage("pretrain", runs["pretrain"], cfg.pretrain_steps):
        pretrain(train_manifest, runs["pretrain"], cfg.preset, train(cfg.pretrain_steps),
                 resume=trained_steps(runs["pretrain"]) > 0)
    if _stage("vocoder", runs["vocoder"], cfg.vocoder_steps):
        from model.vocos import VocosConfig

        train_vocoder(train_manifest, runs["vocoder"], VocosConfig(**cfg.vocoder_config),
                      train(cfg.vocoder_steps, **cfg.vocoder_train), resume=trained_steps(runs["vocoder"]) > 0)
    if _stage("duration", runs["duration"], cfg.duration_steps):
        from .duration import default_train_config, train_duration

        train_duration(train_manifest, runs["duration"], None,
                       default_train_config(steps=cfg.duration_steps, seed=cfg.seed, device=cfg.device),
                       resume=trained_steps(runs["duration"]) > 0)
    for task, steps in (("enhance", cfg.enhance_steps), ("separate", cfg.separate_steps), ("tts", cfg.tts_steps)):
        if _stage(task, runs[task], steps):
            finetune(task, runs["pretrain"], train_manifest, runs[task], train(steps, **cfg.finetune_train),
                     resume=trained_steps(runs[task]) > 0)

    evaluation = {}
    for task in ("enhance", "separate"):
        evaluation[task] = evaluate_run(cfg, task, runs, test_manifest)
    info = {"recipe": {"command": " ".join(shlex.quote(a) for a in sys.argv),
                       "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str))},
            "evaluation": evaluation}
    write_bundle(cfg.out, {name: runs[name] for name in ("pretrain", "enhance", "separate", "tts", "duration",
                                                          "vocoder")}, info=info)
    from model.bundle import write_voices

    from .voices import pick_voices

    write_voices(cfg.out, pick_voices(test_manifest))  # prompts of speakers never seen in training
    print(f"[recipe] bundle written to {cfg.out}")
    return cfg.out


def evaluate_run(cfg: RecipeConfig, task: str, runs: dict[str, Path], test_manifest: Path) -> dict[str, Any]:
    """Evaluate a fine-tuned run on the unseen-speaker test split; reports go to work/eval/."""
    from model.modeling import SpeechFlowModel
    from model.pipeline import SpeechFlowPipeline
    from model.vocos import VocosVocoder

    from .evaluate import run_evaluation

    pipe = SpeechFlowPipeline({task: SpeechFlowModel.from_pretrained(runs[task])},
                              vocoder=VocosVocoder.from_pretrained(runs["vocoder"]))
    run = pipe.enhance_batch if task == "enhance" else pipe.separate_batch

    def process(wavs):
        return [out for out, _ in run([(w, pipe.sample_rate) for w in wavs], steps=cfg.eval_nfe, seed=cfg.seed)]

    out_dir = cfg.work / "eval"
    results = run_evaluation(task, process, test_manifest, n=cfg.eval_utterances, seed=cfg.seed,
                             json_out=out_dir / f"{task}.json", report_out=out_dir / f"{task}.md",
                             extra_config={"nfe": cfg.eval_nfe, "run": str(runs[task])})
    print(f"[recipe] {task} evaluation: {out_dir / f'{task}.md'}")
    return {"overall": results["overall"], "n": cfg.eval_utterances, "nfe": cfg.eval_nfe}
