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
    label_unaligned: bool = True  # duration + TTS training: force-align the rows without phones (flite, festival)
    aligner_rounds: int = 2  # Viterbi self-training rounds of the aligner on the corpus it labelled (0: none)
    aligner_round_steps: int = 500
    # TrainConfig fields shared by every stage, then each stage's own (vocoders train on short crops)
    train: dict[str, Any] = field(default_factory=lambda: {"lr": 4e-4, "warmup": 1000, "save_every": 250,
                                                           "log_every": 50, "num_workers": 1})
    vocoder_train: dict[str, Any] = field(default_factory=lambda: {"lr": 1e-3, "max_seconds": 1.0,
                                                                   "batch_seconds": 16.0})
    finetune_train: dict[str, Any] = field(default_factory=lambda: {"warmup": 200})
    vocoder_config: dict[str, Any] = field(default_factory=dict)  # VocosConfig overrides (tests: a tiny one)
    tts_eval: dict[str, Any] = field(default_factory=dict)  # run_tts_evaluation overrides (tests: short prompts)

    def stage_steps(self) -> dict[str, int]:
        rounds = self.aligner_rounds * self.aligner_round_steps if self.label_unaligned else 0
        return {"pretrain": self.pretrain_steps, "vocoder": self.vocoder_steps, "aligner": self.aligner_steps + rounds,
                "duration": self.duration_steps, "enhance": self.enhance_steps, "separate": self.separate_steps,
                "tts": self.tts_steps}


# training order: every fine-tuning task starts from "pretrain"; duration and tts train on the corpus labelled by
# the aligner (all voices, not only the espeak-ng ones with exact phones); the rest are independent of each other
STAGES = ("pretrain", "vocoder", "aligner", "duration", "enhance", "separate", "tts")
LABELS_DIR = "labels"  # in the work dir: NAME_cuts.jsonl.gz (every cut with phones) + NAME.info.json (which aligner)


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


def labelled_manifest(cfg: RecipeConfig, manifest: Path, aligner_run: Path, name: str | None = None) -> Path:
    """`manifest` with phones force-aligned by the aligner run where it has none -> work/labels/NAME_cuts.jsonl.gz
    (NAME: "train" for the final labels).

    Named files (the self-training rounds') are made once and kept: a round resumed after an interruption trains on
    the labels its round started with. The final labels (no name) are remade whenever the aligner has trained
    further since they were made."""
    out_dir = cfg.work / LABELS_DIR
    out = out_dir / f"{name or 'train'}_cuts.jsonl.gz"
    info_path = out_dir / f"{name or 'train'}.info.json"
    info = {"manifest": str(manifest.resolve()), "aligner": str(aligner_run.resolve()),
            "aligner_steps": trained_steps(aligner_run)}
    if out.is_file() and info_path.is_file():
        made = json.loads(info_path.read_text())
        if name is not None or {k: made.get(k) for k in info} == info:
            return out
    from model.aligner import PromptAligner
    from model.devices import resolve_device
    from training.data.labelling import label_manifest

    aligner = PromptAligner.from_pretrained(aligner_run, device=resolve_device(cfg.device))
    counts = label_manifest(manifest, aligner, out)
    write_json(info_path, {**info, **counts})
    print(f"[recipe] labelled {manifest} with the aligner at step {info['aligner_steps']} -> {out}: {counts}")
    return out


def train_aligner_stage(cfg: RecipeConfig, manifest: Path, run: Path) -> None:
    """The prompt aligner: trained on the exact (espeak-ng) alignments, then `aligner_rounds` rounds of Viterbi
    self-training: label every row with the aligner so far and train on the result, so that it learns the voices
    without exact alignments (it puts more of flite's phone ends within 50 ms of flite's own phone times:
    docs/results/quality.md, "Prompt alignment")."""
    from .aligner import default_train_config, train_aligner

    def train(data: Path, steps: int) -> None:
        config = default_train_config(steps=steps, seed=cfg.seed, device=cfg.device, threads=cfg.threads)
        train_aligner(data, run, None, config, resume=trained_steps(run) > 0)

    if trained_steps(run) < cfg.aligner_steps:
        train(manifest, cfg.aligner_steps)
    for r in range(1, cfg.aligner_rounds + 1 if cfg.label_unaligned else 1):
        target = cfg.aligner_steps + r * cfg.aligner_round_steps
        if trained_steps(run) < target:
            train(labelled_manifest(cfg, manifest, run, name=f"round{r}"), target)


def run_recipe(cfg: RecipeConfig, only: Sequence[str] | None = None) -> Path | None:
    """Train every stage that is not complete, then (when all are) write the bundle and evaluate it.

    ``only`` trains just those stages and stops there: separate processes (or GPUs) can train stages side by side
    in the same work directory, and a last plain run finds them complete, bundles and evaluates."""
    from training.synthetic.corpus import build_corpus, split_cuts

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
    train_manifest, test_manifest = split_cuts(corpus, "train"), split_cuts(corpus, "test")
    runs = {name: work / name for name in STAGES}
    steps = cfg.stage_steps()

    def train(stage: str, **overrides: Any) -> TrainConfig:
        return TrainConfig(steps=steps[stage], seed=cfg.seed, device=cfg.device, threads=cfg.threads,
                           **(cfg.train | overrides))

    def resume(stage: str) -> bool:
        return trained_steps(runs[stage]) > 0

    def labelled() -> Path:  # duration + TTS data: every row with phones, once the aligner is complete
        if not cfg.label_unaligned:
            return train_manifest
        if trained_steps(runs["aligner"]) < steps["aligner"]:
            raise ConfigError(f"duration and tts train on the corpus labelled by the prompt aligner: finish the "
                              f"aligner stage first ({trained_steps(runs['aligner'])}/{steps['aligner']} steps)")
        return labelled_manifest(cfg, train_manifest, runs["aligner"])

    def run_stage(stage: str) -> None:
        if stage == "pretrain":
            pretrain(train_manifest, runs[stage], cfg.preset, train(stage), resume=resume(stage))
        elif stage == "vocoder":
            from model.vocos import VocosConfig

            train_vocoder(train_manifest, runs[stage], VocosConfig(**cfg.vocoder_config),
                          train(stage, **cfg.vocoder_train), resume=resume(stage))
        elif stage == "aligner":
            train_aligner_stage(cfg, train_manifest, runs[stage])
        elif stage == "duration":  # a small model with its own training defaults
            small = {"steps": steps[stage], "seed": cfg.seed, "device": cfg.device, "threads": cfg.threads}
            train_duration(labelled(), runs[stage], None, duration_train_config(**small), resume=resume(stage))
        else:  # a fine-tuning task: only from a finished pre-training run
            if trained_steps(runs["pretrain"]) < steps["pretrain"]:
                raise ConfigError(f"{stage} fine-tunes the pre-trained model: finish the pretrain stage first "
                                 f"({trained_steps(runs['pretrain'])}/{steps['pretrain']} steps)")
            data = labelled() if stage == "tts" else train_manifest
            finetune(stage, runs["pretrain"], data, runs[stage], train(stage, **cfg.finetune_train),
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
    from training.data.voices import pick_voices

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
    """Frame accuracy of the bundle's two prompt aligners on the unseen speakers' aligned (espeak-ng) utterances,
    and their phone-boundary errors on flite speech of the same texts."""
    from model.pipeline import SpeechFlowPipeline
    from training.data.manifest import read_manifest

    from .aligner import prompt_alignment_report

    pipe = SpeechFlowPipeline.from_pretrained(cfg.out, device=cfg.device)
    flite_n = cfg.eval_utterances if "flite" in cfg.engines else None
    report = prompt_alignment_report(read_manifest(test_manifest), pipe.aligner, pipe.durations, flite_n=flite_n)
    write_json(cfg.work / "eval" / "prompt_alignment.json", report)
    print(f"[recipe] prompt alignment: {json.dumps(report)}")
    return report


def evaluate_bundle(cfg: RecipeConfig, task: str, test_manifest: Path) -> dict[str, Any]:
    """Evaluate the written bundle (fp16 weights, exactly what ships) on the unseen-speaker test split; reports go
    to work/eval/."""
    from model.pipeline import SpeechFlowPipeline

    pipe = SpeechFlowPipeline.from_pretrained(cfg.out, device=cfg.device)
    out_dir = cfg.work / "eval"
    outputs = {"json_out": out_dir / f"{task}.json", "report_out": out_dir / f"{task}.md"}
    settings = pipe.task_sampling(task, "full", steps=cfg.eval_nfe).settings()  # the teacher's, spelled out
    config = {**settings, "bundle": str(cfg.out)}
    if task == "tts":
        from training.evaluation.evaluate_tts import pipeline_synthesizer, run_tts_evaluation

        synth = pipeline_synthesizer(pipe, **settings, seed=cfg.seed)
        results = run_tts_evaluation(synth, test_manifest, n=cfg.eval_utterances, seed=cfg.seed,
                                     extra_config=config, **outputs, **cfg.tts_eval)
        summary = {k: results[k] for k in ("overall", "wer_ratio", "similarity_position")}
    else:
        from training.evaluation.evaluate import run_evaluation

        run = pipe.enhance_batch if task == "enhance" else pipe.separate_batch

        def process(wavs):
            return [out for out, _ in run([(w, pipe.sample_rate) for w in wavs], **settings, seed=cfg.seed)]

        results = run_evaluation(task, process, test_manifest, n=cfg.eval_utterances, seed=cfg.seed,
                                 extra_config=config, **outputs)
        summary = {"overall": results["overall"]}
    print(f"[recipe] {task} evaluation: {outputs['report_out']}")
    return {**summary, "n": cfg.eval_utterances, **settings}
