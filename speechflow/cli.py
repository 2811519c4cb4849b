"""``speechflow`` console script. Each subcommand imports only what it needs, so ``speechflow --help`` is instant
and the serving image does not need the training extras."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from model.errors import SpeechFlowError

DEFAULT_BUNDLE = "checkpoints/demo"
BUNDLE_ENTRIES = ("pretrain", "enhance", "separate", "tts", "vocoder", "duration", "aligner")  # model.bundle's dirs

if TYPE_CHECKING:
    from training.trainer import TrainConfig


def _train_config(args: argparse.Namespace, **defaults):
    """TrainConfig from the command line; ``defaults`` are the command's own defaults, flags win."""
    from training.trainer import TrainConfig

    names = ("steps", "lr", "warmup", "batch_seconds", "max_seconds", "save_every", "log_every", "seed", "precision",
             "num_workers", "device", "threads")
    flags = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    return TrainConfig(**(defaults | flags))


def cmd_corpus(args: argparse.Namespace) -> None:
    from training.corpus import build_corpus

    out = build_corpus(args.out, hours=args.hours, seed=args.seed, workers=args.workers)
    print(f"corpus written to {out} (train.jsonl, valid.jsonl, test.jsonl)")


def cmd_pretrain(args: argparse.Namespace) -> None:
    from training.pretrain import pretrain

    out = pretrain(args.data, args.out, args.preset, _train_config(args), resume=args.resume, init=args.init)
    print(f"model saved to {out}")


def cmd_finetune(args: argparse.Namespace) -> None:
    from training.finetune import finetune

    out = finetune(args.task, args.init, args.data, args.out, _train_config(args), resume=args.resume)
    print(f"model saved to {out}")


def cmd_vocoder(args: argparse.Namespace) -> None:
    from training.vocoder import train_vocoder

    out = train_vocoder(args.data, args.out, None, _train_config(args, max_seconds=1.0, batch_seconds=16.0),
                        resume=args.resume)
    print(f"vocoder saved to {out}")


def cmd_tts(args: argparse.Namespace) -> None:
    from model.audio import load_audio, save_audio
    from model.pipeline import SpeechFlowPipeline

    pipe = SpeechFlowPipeline.from_pretrained(args.bundle, device=args.device)
    prompt = load_audio(args.prompt, target_sr=pipe.sample_rate) if args.prompt else None
    out, sr = pipe.tts(args.text, prompt_wav=prompt, prompt_sr=pipe.sample_rate, prompt_text=args.prompt_text,
                       voice=args.voice, speed=args.speed, steps=args.nfe, solver=args.solver,
                       guidance=args.guidance, seed=args.seed)
    save_audio(args.out, out, sr)
    print(f"wrote {args.out} ({len(out) / sr:.2f} s)")


def _small_model_train_config(args: argparse.Namespace, defaults: TrainConfig) -> TrainConfig:
    """A small model's own training defaults, with the flags that were given on top."""
    given = {k: v for k, v in _train_config(args).__dict__.items() if getattr(args, k, None) is not None}
    return dataclasses.replace(defaults, **given)


def cmd_duration(args: argparse.Namespace) -> None:
    from training.duration import default_train_config, train_duration

    out = train_duration(args.data, args.out, None, _small_model_train_config(args, default_train_config()),
                         resume=args.resume)
    print(f"duration model saved to {out}")


def cmd_aligner(args: argparse.Namespace) -> None:
    from training.aligner import default_train_config, train_aligner

    out = train_aligner(args.data, args.out, None, _small_model_train_config(args, default_train_config()),
                        resume=args.resume)
    print(f"prompt aligner saved to {out}")


def cmd_label(args: argparse.Namespace) -> None:
    from model.aligner import PromptAligner
    from model.bundle import ALIGNER_DIR
    from model.modeling import resolve_device
    from training.labelling import label_manifest

    path = Path(args.aligner)
    if (path / ALIGNER_DIR).is_dir():  # a bundle: its TTS prompt aligner
        path = path / ALIGNER_DIR
    counts = label_manifest(args.data, PromptAligner.from_pretrained(path, device=resolve_device(args.device)),
                            args.out)
    print(f"wrote {args.out}: {counts['kept']} rows kept their phones, {counts['aligned']} force-aligned, "
          f"{counts['failed']} could not be aligned (left without phones)")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from model.pipeline import SpeechFlowPipeline
    from training.evaluate import run_evaluation

    pipe = SpeechFlowPipeline.from_pretrained(args.bundle, device=args.device)
    if args.task == "align":
        from training.aligner import prompt_alignment_report
        from training.evaluate import write_json
        from training.manifest import read_manifest

        report = prompt_alignment_report(read_manifest(args.data), pipe.aligner, pipe.durations, n=args.n,
                                         flite_n=args.n if shutil.which("flite") else None)
        if args.json:
            write_json(report, args.json)
        print(json.dumps(report, indent=2))
        return
    if args.task == "tts":
        from training.evaluate_tts import pipeline_synthesizer, run_tts_evaluation

        tts_kwargs = {**_sampling_kwargs("tts", args), "seed": args.seed}
        res = run_tts_evaluation(pipeline_synthesizer(pipe, **tts_kwargs), args.data, n=args.n, seed=args.seed,
                                 json_out=args.json, report_out=args.report, use_dnsmos=not args.no_dnsmos,
                                 extra_config={"bundle": str(args.bundle), **tts_kwargs})
        print(json.dumps({k: res[k] for k in ("overall", "wer_ratio", "similarity_position")}, indent=2,
                         default=str))
        return
    kwargs = {**_sampling_kwargs(args.task, args), "reconstruction": args.reconstruction}
    run = pipe.enhance_batch if args.task == "enhance" else pipe.separate_batch

    def process(wavs):
        return [out for out, _ in run([(w, pipe.sample_rate) for w in wavs], seed=args.seed, **kwargs)]

    results = run_evaluation(args.task, process, args.data, n=args.n, seed=args.seed, json_out=args.json,
                             report_out=args.report, batch_size=args.batch_size, workers=args.workers,
                             peers=not args.no_peers, use_dnsmos=not args.no_dnsmos,
                             extra_config={"bundle": str(args.bundle), **kwargs})
    print(json.dumps(results.get("overall", results), indent=2, default=str))


def cmd_recipe(args: argparse.Namespace) -> None:
    from training.recipe import RecipeConfig, run_recipe

    cfg = RecipeConfig(work=Path(args.work), out=Path(args.out), preset=args.preset, hours=args.hours, seed=args.seed,
                       device=args.device, pretrain_steps=args.pretrain_steps, vocoder_steps=args.vocoder_steps,
                       enhance_steps=args.enhance_steps, separate_steps=args.separate_steps,
                       tts_steps=args.tts_steps, duration_steps=args.duration_steps,
                       aligner_steps=args.aligner_steps, aligner_rounds=args.aligner_rounds,
                       aligner_round_steps=args.aligner_round_steps, label_unaligned=not args.exact_alignments_only,
                       eval_utterances=args.eval_n, eval_nfe=args.eval_nfe, threads=args.threads)
    run_recipe(cfg, only=args.only.split(",") if args.only else None)


def cmd_infill(args: argparse.Namespace) -> None:
    from model.audio import load_audio, save_audio
    from model.pipeline import SpeechFlowPipeline

    spans = [_parse_span(s) for s in args.span]
    pipe = SpeechFlowPipeline.from_pretrained(args.bundle, device=args.device)
    wav = load_audio(args.input, target_sr=pipe.sample_rate)
    out, sr = pipe.infill(wav, pipe.sample_rate, spans, steps=args.nfe, solver=args.solver, seed=args.seed)
    save_audio(args.output, out, sr)
    print(f"wrote {args.output} ({len(out) / sr:.2f} s, vocoder: {pipe.vocoder_name})")


def _sampling_kwargs(task: str, args: argparse.Namespace) -> dict:
    """steps / guidance / solver: the flags given, else the task's defaults (spelled out, so reports show them)."""
    from model.defaults import sampling

    return dataclasses.asdict(sampling(task, args.nfe, getattr(args, "guidance", None), args.solver))


def _task_kwargs(task: str, args: argparse.Namespace) -> dict:
    return {**_sampling_kwargs(task, args), "seed": args.seed, "reconstruction": args.reconstruction}


def cmd_enhance(args: argparse.Namespace) -> None:
    from model.audio import load_audio, save_audio
    from model.pipeline import SpeechFlowPipeline

    pipe = SpeechFlowPipeline.from_pretrained(args.bundle, device=args.device)
    sr = _native_rate(args.input)
    out, sr = pipe.enhance(load_audio(args.input, target_sr=sr), sr, **_task_kwargs(args.command, args))
    save_audio(args.output, out, sr)
    print(f"wrote {args.output} ({len(out) / sr:.2f} s)")


def cmd_separate(args: argparse.Namespace) -> None:
    from model.audio import load_audio, save_audio
    from model.pipeline import SpeechFlowPipeline

    pipe = SpeechFlowPipeline.from_pretrained(args.bundle, device=args.device)
    sr = _native_rate(args.input)
    out, sr = pipe.separate(load_audio(args.input, target_sr=sr), sr, **_task_kwargs(args.command, args))
    save_audio(args.output1, out[0], sr)
    save_audio(args.output2, out[1], sr)
    print(f"wrote {args.output1} and {args.output2} ({out.shape[1] / sr:.2f} s each)")


def _native_rate(path: str) -> int:
    """The file's own sample rate, so outputs come back at the rate the user gave."""
    import soundfile as sf

    from model.errors import AudioError

    try:
        return int(sf.info(path).samplerate)
    except (RuntimeError, OSError) as e:
        raise AudioError(f"could not read {path}: {e}") from e


def cmd_demo(args: argparse.Namespace) -> None:
    """The main job until the server lands: infill the middle of a generated example with the shipped bundle."""
    from model.audio import save_audio
    from model.examples import example_speech
    from model.pipeline import SpeechFlowPipeline

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    wav, sr = example_speech()
    save_audio(out_dir / "example.wav", wav, sr)
    pipe = SpeechFlowPipeline.from_pretrained(args.bundle, device=args.device)
    duration = len(wav) / sr
    span = (0.4 * duration, 0.6 * duration)
    out, out_sr = pipe.infill(wav, sr, [span], steps=args.nfe, seed=0)
    save_audio(out_dir / "infilled.wav", out, out_sr)
    print(f"regenerated {span[0]:.2f}-{span[1]:.2f} s of {duration:.2f} s with {args.bundle} "
          f"(vocoder: {pipe.vocoder_name}); wrote {out_dir}/example.wav and {out_dir}/infilled.wav")


def cmd_examples(args: argparse.Namespace) -> None:
    from model.examples import write_examples

    for path in write_examples(args.out):
        print(path)


def cmd_bundle(args: argparse.Namespace) -> None:
    import torch

    from model.bundle import write_bundle

    models = {task: path for task in BUNDLE_ENTRIES if (path := getattr(args, task)) is not None}
    if not models:
        raise SpeechFlowError("name at least one model: --pretrain, --enhance, --separate, --tts or --vocoder")
    info = {"recipe": args.recipe} if args.recipe else None
    out = write_bundle(args.out, models, dtype=None if args.fp32 else torch.float16, info=info)
    if args.voices:
        from model.bundle import write_voices
        from training.voices import pick_voices

        write_voices(out, pick_voices(args.voices))
    print(f"bundle written to {out} ({', '.join(models)})")


def cmd_profile(args: argparse.Namespace) -> None:
    import torch

    from model.config import ModelConfig, preset
    from model.modeling import SpeechFlowModel
    from model.pipeline import resolve_device
    from model.profiling import time_sampler

    device = resolve_device(args.device)
    if args.preset:  # random weights: speed does not depend on training
        model = SpeechFlowModel(ModelConfig(network=preset(args.preset), preset=args.preset)).to(device).eval()
    else:
        model = SpeechFlowModel.from_pretrained(args.model, device=device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{model.config.preset}: {model.num_parameters() / 1e6:.2f} M parameters on {device}")
    for row in time_sampler(model, args.seconds, tuple(args.nfe), args.solver, args.batch, autocast=args.bf16):
        print(json.dumps(row))


def cmd_serve(args: argparse.Namespace) -> None:
    from service.server import serve
    from service.settings import Settings

    flags = {k: getattr(args, k) for k in ("bundle", "host", "port", "device", "scheduling", "max_batch_frames")
             if getattr(args, k) is not None}
    serve(Settings(**flags))  # flags win over SPEECHFLOW_* variables, which win over defaults


def cmd_bench(args: argparse.Namespace) -> None:
    import asyncio

    from service.bench import BenchConfig, run_bench

    if (args.task is None) == (args.mix is None):
        raise SpeechFlowError("give either --task (one task) or --mix (e.g. enhance:0.5,tts:0.5)")
    cfg = BenchConfig(url=args.url, task=args.task or "enhance", concurrency=args.concurrency,
                      requests=args.requests, mode=args.mode, rate=args.rate, audio_seconds=args.audio_seconds,
                      input=args.input, steps=args.steps, solver=args.solver, guidance=args.guidance,
                      timeout_s=args.timeout, max_duration_s=args.max_duration,
                      seed=args.seed, api_key=args.api_key, baseline=args.baseline,
                      baseline_device=args.baseline_device, mix=args.mix,
                      enhance_seconds=_parse_floats(args.enhance_seconds, "--enhance-seconds"), voice=args.voice,
                      label=args.label, simulate=_simulate_cost(args.simulate))
    report = asyncio.run(run_bench(cfg))
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)


def _parse_floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SpeechFlowError(f"{flag} expects comma-separated numbers, got {text!r}") from None


def _simulate_cost(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    cost = _parse_floats(text, "--simulate")
    if len(cost) != 2:
        raise SpeechFlowError(f"--simulate expects A,B (seconds per step, per row), got {text!r}")
    return cost[0], cost[1]


def _parse_span(text: str) -> tuple[float, float]:
    try:
        start, end = (float(x) for x in text.split(":"))
    except ValueError:
        raise SpeechFlowError(f"--span expects START:END in seconds, got {text!r}") from None
    return start, end


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("corpus", help="build the synthetic training corpus + manifests")
    p.add_argument("--out", required=True)
    p.add_argument("--hours", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.set_defaults(func=cmd_corpus)

    p = sub.add_parser("manifest", help="manifests for real corpora: tree (LibriSpeech/Libri-Light), voicebank, "
                       "librimix", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)  # dispatched in main() before this parser runs

    p = sub.add_parser("pretrain", help="pre-train with masked flow matching on untranscribed audio")
    p.add_argument("--data", required=True, help="JSONL manifest with audio and duration")
    p.add_argument("--preset", default="tiny", choices=["debug", "tiny", "small", "base"])
    p.add_argument("--out", required=True, help="run directory (a loadable model directory)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--init", metavar="DIR", help="warm-start a new run from these weights (a model directory)")
    _add_train_args(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="fine-tune a pre-trained model for enhancement, separation or TTS")
    p.add_argument("--task", required=True, choices=["enhance", "separate", "tts"])
    p.add_argument("--init", required=True, help="pre-trained model directory")
    p.add_argument("--data", required=True, help="manifest of clean speech (noise and mixtures are made on the fly), "
                   "of real pairs ('noisy') / mixtures ('sources'), or, for tts, rows with 'phones' alignments")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    _add_train_args(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("enhance", help="enhance a noisy recording (offline, no server)")
    p.add_argument("input")
    p.add_argument("output")
    _add_inference_args(p)
    _add_task_args(p)
    p.set_defaults(func=cmd_enhance)

    p = sub.add_parser("separate", help="separate a two-talker mixture into two files (offline, no server)")
    p.add_argument("input")
    p.add_argument("output1")
    p.add_argument("output2")
    _add_inference_args(p)
    _add_task_args(p)
    p.set_defaults(func=cmd_separate)

    p = sub.add_parser("evaluate", help="enhance/separate: PESQ, ESTOI, SI-SDR, DNSMOS vs the input and classical "
                       "peers; tts: WER ratio, speaker similarity, DNSMOS")
    p.add_argument("--task", required=True, choices=["enhance", "separate", "tts", "align"],
                   help="align: frame accuracy of the bundle's prompt aligners against the manifest's alignments, and "
                        "their phone-boundary errors on flite speech of the manifest's texts")
    p.add_argument("--data", required=True, help="clean test manifest (e.g. the corpus's unseen-speaker test.jsonl)")
    p.add_argument("--n", type=int, default=100, help="utterances (cases) to evaluate")
    p.add_argument("--json", help="write all results here")
    p.add_argument("--report", help="write a Markdown report (with spectrogram PNGs beside it) here")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=0, help="processes computing metrics while the model runs")
    p.add_argument("--no-peers", action="store_true", help="skip spectral gating / oracle IRM")
    p.add_argument("--no-dnsmos", action="store_true")
    _add_inference_args(p)
    _add_task_args(p)
    p.set_defaults(func=cmd_evaluate)

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

    p = sub.add_parser("tts", help="zero-shot text-to-speech in the voice of a prompt (offline, no server)")
    p.add_argument("--text", required=True)
    p.add_argument("--prompt", help="a few seconds of the voice to use")
    p.add_argument("--prompt-text", help="the prompt's transcript")
    p.add_argument("--voice", help="a built-in voice of the bundle instead of --prompt")
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--out", required=True)
    _add_inference_args(p)
    p.add_argument("--guidance", "--cfg", dest="guidance", type=float, default=None,
                   help="classifier-free guidance weight (1 = none; default 2)")
    p.set_defaults(func=cmd_tts)

    aligned = "manifest with 'phones' alignments"
    for name, help_text, data_help, func in (
            ("vocoder", "train the Vocos-style mel -> waveform vocoder", "manifest of clean speech", cmd_vocoder),
            ("duration", "train the TTS duration model on phone alignments", aligned, cmd_duration),
            ("aligner", "train the TTS prompt aligner (frame phone classifier + Viterbi)", aligned, cmd_aligner)):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--data", required=True, help=data_help)
        p.add_argument("--out", required=True)
        p.add_argument("--resume", action="store_true")
        _add_train_args(p)
        p.set_defaults(func=func)

    p = sub.add_parser("label", help="add phone alignments to the manifest rows that have none (flite/festival rows, "
                       "a real corpus without MFA TextGrids), by the TTS prompt aligner")
    p.add_argument("--data", required=True, help="manifest with 'text' per row")
    p.add_argument("--out", required=True, help="labelled manifest to write (audio paths resolve from its folder)")
    p.add_argument("--aligner", default=DEFAULT_BUNDLE, help="a bundle with tts/aligner/, or an aligner directory")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("infill", help="regenerate time spans of a recording with the pre-trained model")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--span", action="append", required=True, help="START:END in seconds (repeatable)")
    _add_inference_args(p)
    p.set_defaults(func=cmd_infill)

    p = sub.add_parser("bundle", help="collect trained model directories into a (fp16) bundle")
    p.add_argument("--out", required=True)
    for task in BUNDLE_ENTRIES:
        p.add_argument(f"--{task}", metavar="DIR", help=f"{task} model directory (e.g. a run directory)")
    p.add_argument("--voices", metavar="MANIFEST", help="built-in TTS voices: one clip per speaker of this manifest "
                   "(e.g. the unseen-speaker test split)")
    p.add_argument("--recipe", help="the command(s) that produced the models, recorded in bundle.json")
    p.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: fp16, half the size)")
    p.set_defaults(func=cmd_bundle)

    p = sub.add_parser("profile", help="time the ODE sampler offline (ms per network evaluation)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="model directory")
    source.add_argument("--preset", choices=["debug", "tiny", "small", "base"], help="random weights of a preset")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--nfe", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--solver", default="midpoint", choices=["euler", "midpoint", "heun", "rk4"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("serve", help="run the HTTP service (settings: SPEECHFLOW_* variables; flags win)")
    p.add_argument("--bundle", help=f"bundle directory (default: SPEECHFLOW_BUNDLE or {DEFAULT_BUNDLE})")
    p.add_argument("--host", help="interface to listen on (default: SPEECHFLOW_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: SPEECHFLOW_PORT or 8000)")
    p.add_argument("--device", help="auto (CUDA when present), cpu, cuda, cuda:1 ... (default: SPEECHFLOW_DEVICE)")
    p.add_argument("--scheduling", choices=["step", "request"],
                   help="step: rows join and leave the live batch between ODE steps (default); request: the old "
                        "request-level batching, for comparison")
    p.add_argument("--max-batch-frames", type=int, help="padded frames of one live batch (default: by device)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("bench", help="load a running server (loopback only), or a simulated one: throughput, "
                                     "latency, batching")
    p.add_argument("--url", help="e.g. http://127.0.0.1:8000 (or --simulate)")
    p.add_argument("--task", choices=["enhance", "separate"], help="one task, the same input every request")
    p.add_argument("--mix", metavar="TASK:WEIGHT,...",
                   help="a mix of tasks, reported per task, e.g. enhance:0.5,tts:0.5 (enhance, separate, tts; TTS "
                        "via /v1/audio/speech with short, one-sentence and few-sentence texts from --seed)")
    p.add_argument("--enhance-seconds", default="2,4,8",
                   help="lengths of the generated uploads in a --mix, drawn per request (default 2,4,8)")
    p.add_argument("--voice", help="TTS voice in a --mix (default: the first of /v1/voices)")
    p.add_argument("--simulate", metavar="A,B",
                   help="no server: the same traffic against the in-process app with a fake engine whose ODE "
                        "step takes A + B x rows seconds (max wait 5 ms, 24000-frame budget), once per scheduling "
                        "policy (step, request), side by side with the p99 ratio. GPU-like: 0.015,0.0005 (a small "
                        "model's step is launch-bound and an extra row nearly free: 16 rows cost ~1.5x one, so "
                        "batching pays and how rows join decides latency); CPU-like: B close to A. E.g. --mix "
                        "enhance:0.5,tts:0.5 --mode poisson --rate 10 --requests 300")
    p.add_argument("--label", help="names this run in `python -m service.bench_table --mixed` (e.g. the server's "
                                   "--scheduling)")
    p.add_argument("--concurrency", type=int, default=4, help="clients (closed loop)")
    p.add_argument("--requests", type=int, default=32, help="requests in all (at most 10000)")
    p.add_argument("--mode", choices=["closed", "poisson"], default="closed")
    p.add_argument("--rate", type=float, default=4.0, help="arrivals per second (poisson)")
    p.add_argument("--audio-seconds", type=float, default=4.0, help="length of the generated input (--task)")
    p.add_argument("--input", help="send this audio file instead of a generated one")
    p.add_argument("--steps", type=int, help="NFE (default: the server's)")
    p.add_argument("--solver", choices=["euler", "midpoint", "heun", "rk4"])
    p.add_argument("--guidance", type=float, help="classifier-free guidance (default: the server's)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--max-duration", type=float, default=600.0, help="no new requests after this many seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--api-key", help="Bearer key, when the server has keys")
    p.add_argument("--baseline", metavar="BUNDLE", help="first time the pipeline alone on the same input "
                                                        "(the server's bundle), and compare the server with it")
    p.add_argument("--baseline-device", default="auto")
    p.add_argument("--json", help="also write the report here")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("examples", help="write example inputs (noisy.wav, clean.wav, mix.wav) made with espeak-ng")
    p.add_argument("--out", default="examples")
    p.set_defaults(func=cmd_examples)

    p = sub.add_parser("demo", help="infill a generated example with the shipped bundle (offline)")
    p.add_argument("--out", default="demo_output")
    _add_inference_args(p)
    p.set_defaults(func=cmd_demo)
    return parser


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup", type=int)
    p.add_argument("--batch-seconds", type=float, help="padded audio seconds per batch and process")
    p.add_argument("--max-seconds", type=float, help="crop length in seconds")
    p.add_argument("--save-every", type=int)
    p.add_argument("--log-every", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"])
    p.add_argument("--num-workers", type=int)
    p.add_argument("--device", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, help="torch threads (default: all cores; 1 when runs share a CPU)")


def _add_inference_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", default=DEFAULT_BUNDLE, help="bundle or model directory")
    p.add_argument("--nfe", "--steps", dest="nfe", type=int, default=None,
                   help="network evaluations of the ODE solver (default: the task's, see model/defaults.py)")
    p.add_argument("--solver", default=None, choices=["euler", "midpoint", "heun", "rk4"],
                   help="ODE solver (default: midpoint)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")


def _add_task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance weight (1 = none; default: the task's, see model/defaults.py)")
    p.add_argument("--reconstruction", default="mask", choices=["mask", "vocoder"],
                   help="mask: per-band mask on the input's STFT (keeps its phase); vocoder: the bundle's vocoder")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["manifest"]:  # its own parser (training.real_manifests), options and --help included
        from training.real_manifests import main as manifest_main

        return manifest_main(argv[1:], prog="speechflow manifest")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except SpeechFlowError as e:
        print(f"speechflow {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"speechflow {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
