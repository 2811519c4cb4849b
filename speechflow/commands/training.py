"""Training commands: the synthetic corpus, pre-training, fine-tuning, the small models, labelling, the recipe
and bundles."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from model.errors import SpeechFlowError

from .common import DEFAULT_BUNDLE

if TYPE_CHECKING:
    from training.trainers.trainer import TrainConfig

BUNDLE_ENTRIES = ("pretrain", "enhance", "separate", "tts", "vocoder", "duration", "aligner",  # model.bundle's dirs
                  "enhance-student", "separate-student", "tts-student")


def _train_config(args: argparse.Namespace, **defaults):
    """TrainConfig from the command line; ``defaults`` are the command's own defaults, `_settings` on top."""
    from training.trainers.trainer import TrainConfig

    return TrainConfig(**(defaults | _settings(args)))


def _settings(args: argparse.Namespace) -> dict:
    """The training settings chosen for this run: with --resume, those the run in --out was saved with, so that it
    continues its own schedule (learning rate, warm-up, steps, batch) and not the command's defaults; then the
    flags given, which win (--steps to extend it, --threads for another machine)."""
    from training.trainers.trainer import TrainConfig

    names = ("steps", "lr", "warmup", "betas", "batch_seconds", "max_seconds", "save_every", "log_every", "seed",
             "precision", "num_workers", "device", "threads", "num_buckets", "shuffle_buffer")
    settings: dict = {}
    config = Path(args.out) / "config.json"
    if getattr(args, "resume", False) and config.is_file():
        saved = json.loads(config.read_text()).get("extra", {}).get("training", {}).get("config", {})
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        settings = {k: v for k, v in saved.items() if k in known}
    settings |= {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    if "betas" in settings:  # JSON and argparse both give a list
        settings["betas"] = tuple(settings["betas"])
    return settings


def cmd_corpus(args: argparse.Namespace) -> None:
    from training.synthetic.corpus import CorpusOptions, build_corpus

    splits = tuple(args.splits.split(","))
    options = CorpusOptions(espeak_speakers=args.espeak_speakers, prosody=args.prosody,
                            long_fraction=args.long_fraction, max_sentences=args.max_sentences,
                            gender=True if args.gender else None)
    out = build_corpus(args.out, hours=args.hours, seed=args.seed, workers=args.workers, splits=splits,
                       options=options)
    print(f"corpus written to {out} ({', '.join(f'{s}_cuts.jsonl.gz' for s in splits)})")


def cmd_shard(args: argparse.Namespace) -> None:
    from training.data.shar_export import export_shar

    n = export_shar(args.data, args.out, shard_size=args.shard_size, audio_format=args.format, num_jobs=args.jobs)
    print(f"wrote {n} shard(s) to {args.out}")


def cmd_data_bench(args: argparse.Namespace) -> None:
    from training.trainers.data_bench import run_bench

    print(json.dumps(run_bench(args.data, batches=args.batches, workers=args.num_workers,
                               batch_seconds=args.batch_seconds, max_seconds=args.max_seconds, task=args.task),
                     indent=2))


def cmd_pretrain(args: argparse.Namespace) -> None:
    from training.trainers.pretrain import pretrain

    out = pretrain(args.data, args.out, args.preset, _train_config(args), resume=args.resume, init=args.init)
    print(f"model saved to {out}")


def cmd_finetune(args: argparse.Namespace) -> None:
    from training.trainers.finetune import finetune

    out = finetune(args.task, args.init, args.data, args.out, _train_config(args), resume=args.resume,
                   student_steps=args.student_steps, student_loss=args.student_loss,
                   phone_languages=tuple(args.phone_languages.split(",")) if args.phone_languages else None)
    print(f"model saved to {out}")


def cmd_vocoder(args: argparse.Namespace) -> None:
    from training.trainers.vocoder import train_vocoder

    defaults = dict(max_seconds=1.0, batch_seconds=16.0)
    if args.adversarial:  # HiFi-GAN's optimiser settings; half the batch, as the discriminators cost ~2x the vocoder
        defaults |= dict(lr=2e-4, betas=(0.8, 0.99), batch_seconds=8.0)
    out = train_vocoder(args.data, args.out, None, _train_config(args, **defaults), resume=args.resume,
                        init=args.init, adversarial=args.adversarial)
    print(f"vocoder saved to {out}")


def _small_model_train_config(args: argparse.Namespace, defaults: TrainConfig) -> TrainConfig:
    """A small model's own training defaults, with `_settings` (a resumed run's, the flags given) on top."""
    return dataclasses.replace(defaults, **_settings(args))


def cmd_duration(args: argparse.Namespace) -> None:
    from training.trainers.duration import default_train_config, train_duration

    out = train_duration(args.data, args.out, None, _small_model_train_config(args, default_train_config()),
                         resume=args.resume)
    print(f"duration model saved to {out}")


def cmd_aligner(args: argparse.Namespace) -> None:
    from training.trainers.aligner import default_train_config, train_aligner

    out = train_aligner(args.data, args.out, None, _small_model_train_config(args, default_train_config()),
                        resume=args.resume)
    print(f"prompt aligner saved to {out}")


def cmd_label(args: argparse.Namespace) -> None:
    from model.aligner import PromptAligner
    from model.bundle import ALIGNER_DIR
    from model.devices import resolve_device
    from training.data.labelling import label_manifest

    path = Path(args.aligner)
    if (path / ALIGNER_DIR).is_dir():  # a bundle: its TTS prompt aligner
        path = path / ALIGNER_DIR
    counts = label_manifest(args.data, PromptAligner.from_pretrained(path, device=resolve_device(args.device)),
                            args.out)
    print(f"wrote {args.out}: {counts['kept']} cuts kept their phones, {counts['aligned']} force-aligned, "
          f"{counts['failed']} could not be aligned (left without phones)")


def cmd_recipe(args: argparse.Namespace) -> None:
    from training.trainers.recipe import RecipeConfig, run_recipe

    cfg = RecipeConfig(work=Path(args.work), out=Path(args.out), preset=args.preset, hours=args.hours, seed=args.seed,
                       device=args.device, pretrain_steps=args.pretrain_steps, vocoder_steps=args.vocoder_steps,
                       enhance_steps=args.enhance_steps, separate_steps=args.separate_steps,
                       tts_steps=args.tts_steps, duration_steps=args.duration_steps,
                       aligner_steps=args.aligner_steps, aligner_rounds=args.aligner_rounds,
                       aligner_round_steps=args.aligner_round_steps, label_unaligned=not args.exact_alignments_only,
                       eval_utterances=args.eval_n, eval_nfe=args.eval_nfe, threads=args.threads)
    run_recipe(cfg, only=args.only.split(",") if args.only else None)


def default_qualities(specs: list[str]) -> dict[str, str | dict[str, str]]:
    """--default-fast's TASK or TASK:MACHINE list -> bundle.json's "quality" (a task named bare is fast everywhere)."""
    from model.bundle import STUDENT_TASKS
    from model.quality import MACHINES

    out: dict[str, str | dict[str, str]] = {}
    for spec in specs:
        task, _, machine = spec.partition(":")
        if task not in STUDENT_TASKS or (machine and machine not in MACHINES):
            raise SpeechFlowError(f"--default-fast takes TASK or TASK:MACHINE (tasks {', '.join(STUDENT_TASKS)}; "
                                  f"machines {', '.join(MACHINES)}), got {spec!r}")
        chosen = out.setdefault(task, {})
        if not machine:
            out[task] = "fast"
        elif isinstance(chosen, dict):
            chosen[machine] = "fast"
    return out


def cmd_bundle(args: argparse.Namespace) -> None:
    import torch

    from model.bundle import write_bundle

    models = {task: path for task in BUNDLE_ENTRIES if (path := getattr(args, task.replace("-", "_"))) is not None}
    if not models:
        raise SpeechFlowError("name at least one model: --pretrain, --enhance, --separate, --tts or --vocoder")
    info: dict = {"recipe": args.recipe} if args.recipe else {}
    if args.default_fast:
        info["quality"] = default_qualities(args.default_fast)
    out = write_bundle(args.out, models, dtype=None if args.fp32 else torch.float16, info=info or None)
    if args.voices:
        from model.bundle import write_voices
        from training.data.voices import pick_voices

        write_voices(out, pick_voices(args.voices))
    print(f"bundle written to {out} ({', '.join(models)})")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup", type=int)
    p.add_argument("--betas", type=float, nargs=2, metavar=("BETA1", "BETA2"), help="AdamW betas (default 0.9 0.98)")
    p.add_argument("--batch-seconds", type=float, help="padded audio seconds per batch and process")
    p.add_argument("--max-seconds", type=float, help="crop length in seconds")
    p.add_argument("--save-every", type=int)
    p.add_argument("--log-every", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"])
    p.add_argument("--num-workers", type=int)
    p.add_argument("--device", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, help="torch threads (default: all cores; 1 when runs share a CPU)")
    p.add_argument("--num-buckets", type=int, help="Lhotse duration buckets of the sampler (default 10)")
    p.add_argument("--shuffle-buffer", type=int,
                   help="cuts the sampler holds to bucket and shuffle (default 5000; with their audio from Shar)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("corpus", help="build the synthetic training corpus (Lhotse CutSets per split)")
    p.add_argument("--out", required=True)
    p.add_argument("--hours", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--splits", default="train,valid,test",
                   help="comma-separated splits to synthesise; 'test' alone rebuilds the unseen-speaker test split "
                        "of a corpus with the same --hours, --seed and richer-corpus options")
    # richer corpus (docs/data.md); without these flags a seed builds the original corpus, file for file
    p.add_argument("--espeak-speakers", type=int, default=40,
                   help="espeak-ng speakers (>= 40; extras come after the original 40, ~12 %% of them unseen)")
    p.add_argument("--prosody", action="store_true",
                   help="vary each utterance's tempo, pitch and intonation around its speaker's")
    p.add_argument("--long-fraction", type=float, default=0.0,
                   help="share of utterances joining 2..--max-sentences fortune sentences (aiming at 10-20 s)")
    p.add_argument("--max-sentences", type=int, default=4, help="sentences in a long utterance at most")
    p.add_argument("--gender", action="store_true",
                   help="write speakers' genders (speakers.jsonl, supervisions) also without the options above")
    p.set_defaults(func=cmd_corpus)

    p = sub.add_parser("manifest", help="CutSets for real corpora (Lhotse recipes: librispeech, libritts, "
                       "librilight, ljspeech, vctk; tree, voicebank, librimix) and convert (old JSONL -> CutSet)",
                       add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)  # dispatched in main() before this parser runs

    p = sub.add_parser("shard", help="write a CutSet with its audio as Lhotse Shar shards (sequential reading)")
    p.add_argument("--data", required=True, help="CutSet manifest (.jsonl.gz) or Shar directory")
    p.add_argument("--out", required=True, help="empty directory for the shards")
    p.add_argument("--shard-size", type=int, default=1000, help="cuts per shard (at least one shard per process)")
    p.add_argument("--format", default="flac", choices=["flac", "wav", "mp3"], help="audio format in the shards")
    p.add_argument("--jobs", type=int, default=1, help="shards written in parallel")
    p.set_defaults(func=cmd_shard)

    p = sub.add_parser("data-bench", help="throughput of the training data path (cuts/s, audio s/s per worker)")
    p.add_argument("--data", required=True, help="CutSet manifest (.jsonl.gz) or Shar directory")
    p.add_argument("--task", default="pretrain", choices=["pretrain", "enhance", "separate"])
    p.add_argument("--batches", type=int, default=200, help="batches to time (after 5 warm-up batches)")
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--batch-seconds", type=float, default=48.0)
    p.add_argument("--max-seconds", type=float, default=3.0)
    p.set_defaults(func=cmd_data_bench)

    p = sub.add_parser("pretrain", help="pre-train with masked flow matching on untranscribed audio")
    p.add_argument("--data", required=True, help="Lhotse CutSet: a .jsonl.gz manifest or a Shar directory")
    p.add_argument("--preset", default="tiny", choices=["debug", "tiny", "small", "base"])
    p.add_argument("--out", required=True, help="run directory (a loadable model directory)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--init", metavar="DIR", help="warm-start a new run from these weights (a model directory)")
    _add_train_args(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="fine-tune a pre-trained model for enhancement, separation or TTS")
    p.add_argument("--task", required=True, choices=["enhance", "separate", "tts"])
    p.add_argument("--init", required=True, help="pre-trained model directory")
    p.add_argument("--data", required=True, help="CutSet (manifest or Shar directory) of clean speech (noise and "
                   "mixtures are made on the fly), of real pairs ('noisy') / mixtures ('sources'), or, for tts, cuts "
                   "with phone alignments")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--student-steps", type=int, metavar="NFE",
                   help="train a NFE-step student of --init (a task model): trained at its Euler grid's times only, "
                        "no condition dropout, served at NFE steps without guidance or draws")
    p.add_argument("--phone-languages", metavar="LANGS",
                   help="tts: comma-separated language subtags (e.g. en) whose phones are used; cuts in other "
                        "languages train with their phones dropped, teaching voices through the audio context only "
                        "(default: every cut's phones)")
    p.add_argument("--student-loss", choices=["flow", "mask", "guided", "trajectory"], default="flow",
                   help="flow: the flow-matching loss at the grid's times from zeros (one step: log-mel regression); "
                        "mask (one-step enhancement or separation): the masks the reconstruction applies, plus a "
                        "tenth of the log-mel error; guided (TTS): the teacher's grid from noise (NFE dividing "
                        "the teacher's steps: every k-th time of it), each step regressed on where the teacher's "
                        "guided steps over it lead (guidance and k steps folded into one pass); trajectory (TTS): "
                        "guided, from the states of the teacher's own sampling path. An --init that is a student "
                        "keeps its teacher")
    _add_train_args(p)
    p.set_defaults(func=cmd_finetune)

    aligned = "CutSet with phone alignments"
    for name, help_text, data_help, func in (
            ("vocoder", "train the Vocos-style mel -> waveform vocoder", "CutSet of clean speech", cmd_vocoder),
            ("duration", "train the TTS duration model on phone alignments", aligned, cmd_duration),
            ("aligner", "train the TTS prompt aligner (frame phone classifier + Viterbi)", aligned, cmd_aligner)):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--data", required=True, help=data_help)
        p.add_argument("--out", required=True)
        p.add_argument("--resume", action="store_true")
        if name == "vocoder":
            p.add_argument("--init", help="warm-start from a vocoder directory (e.g. checkpoints/vocoder-wip)")
            p.add_argument("--adversarial", action="store_true",
                           help="train against period and resolution discriminators too (best warm-started from a "
                                "reconstruction-trained vocoder with --init; resume such a run with it again)")
        _add_train_args(p)
        p.set_defaults(func=func)

    p = sub.add_parser("label", help="add phone alignments to the cuts that have none (flite/festival cuts, a real "
                       "corpus without MFA TextGrids), by the TTS prompt aligner")
    p.add_argument("--data", required=True, help="CutSet with text on its supervisions")
    p.add_argument("--out", required=True, help="labelled CutSet to write (.jsonl.gz, absolute audio paths)")
    p.add_argument("--aligner", default=DEFAULT_BUNDLE, help="a bundle with tts/aligner/, or an aligner directory")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("recipe", help="the whole resumable chain that builds a bundle (corpus ... evaluation)")
    p.add_argument("--work", required=True, help="working state: corpus, runs, reports (outside the repo)")
    p.add_argument("--out", default=DEFAULT_BUNDLE, help="where the bundle goes")
    p.add_argument("--preset", default="tiny", choices=["debug", "tiny", "small", "base"])
    p.add_argument("--hours", type=float, default=8.0, help="hours of synthetic corpus")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--pretrain-steps", type=int, default=24_000)
    p.add_argument("--vocoder-steps", type=int, default=8_000)
    p.add_argument("--enhance-steps", type=int, default=6_000)
    p.add_argument("--separate-steps", type=int, default=6_000)
    p.add_argument("--tts-steps", type=int, default=8_000)
    p.add_argument("--duration-steps", type=int, default=2_000)
    p.add_argument("--aligner-steps", type=int, default=1_500, help="prompt aligner on the exact alignments")
    p.add_argument("--aligner-rounds", type=int, default=2,
                   help="then rounds of self-training on the corpus it labels (flite/festival rows have no phones)")
    p.add_argument("--aligner-round-steps", type=int, default=500)
    p.add_argument("--exact-alignments-only", action="store_true",
                   help="train duration + TTS on the rows with exact phones only (espeak-ng), no aligner labels")
    p.add_argument("--eval-n", type=int, default=100, help="test utterances per task")
    p.add_argument("--eval-nfe", type=int, default=None,
                   help="sampler evaluations per utterance when evaluating (default: each task's, as served)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (1 when stages run side by side)")
    p.add_argument("--only", help="comma-separated stages to train, then stop (no bundle): "
                                  "pretrain,vocoder,duration,aligner,enhance,separate,tts")
    p.set_defaults(func=cmd_recipe)

    p = sub.add_parser("bundle", help="collect trained model directories into a (fp16) bundle")
    p.add_argument("--out", required=True)
    for task in BUNDLE_ENTRIES:
        p.add_argument(f"--{task}", metavar="DIR", help=f"{task} model directory (e.g. a run directory)")
    p.add_argument("--voices", metavar="CUTS", help="built-in TTS voices: one clip per speaker of this CutSet "
                   "(e.g. the unseen-speaker test_cuts.jsonl.gz)")
    p.add_argument("--recipe", help="the command(s) that produced the models, recorded in bundle.json")
    p.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: fp16, half the size)")
    p.add_argument("--default-fast", nargs="+", metavar="TASK[:MACHINE]",
                   help="tasks (enhance, separate, tts) whose requests get the student (quality 'fast') unless they "
                        "ask for 'full'; TASK:MACHINE only on that class of machine (gpu, cpu-bf16, cpu-fp32: a CPU "
                        "without bf16 units), e.g. tts:cpu-fp32")
    p.set_defaults(func=cmd_bundle)
