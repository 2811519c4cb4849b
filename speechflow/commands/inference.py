"""Offline inference commands (no server): enhance, separate, tts, infill, edit, the demo and examples, profiling."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model.errors import SpeechFlowError

from .common import (
    DEFAULT_BUNDLE,
    add_ensemble_arg,
    add_inference_args,
    add_quality_arg,
    add_task_args,
    sampling_kwargs,
)


def cmd_tts(args: argparse.Namespace) -> None:
    from model.audio import load_audio, save_audio
    from model.pipeline import SpeechFlowPipeline

    pipe = SpeechFlowPipeline.from_pretrained(args.bundle, device=args.device, dtype=args.dtype)
    prompt = load_audio(args.prompt, target_sr=pipe.sample_rate) if args.prompt else None
    out, sr = pipe.tts(args.text, prompt_wav=prompt, prompt_sr=pipe.sample_rate, prompt_text=args.prompt_text,
                       voice=args.voice, speed=args.speed, steps=args.nfe, solver=args.solver,
                       guidance=args.guidance, seed=args.seed, quality=args.quality)
    save_audio(args.out, out, sr)
    print(f"wrote {args.out} ({len(out) / sr:.2f} s)")


def cmd_infill(args: argparse.Namespace) -> None:
    from model.audio import load_audio, save_audio
    from model.pipeline import SpeechFlowPipeline

    spans = [_parse_span(s) for s in args.span]
    if args.text is not None and len(spans) != 1:
        raise SpeechFlowError("--text replaces one --span")
    pipe = SpeechFlowPipeline.from_pretrained(args.bundle, device=args.device, dtype=args.dtype)
    sr = _native_rate(args.input)
    wav = load_audio(args.input, target_sr=sr)
    if args.text is None:
        out, sr = pipe.infill(wav, sr, spans, steps=args.nfe, solver=args.solver, seed=args.seed)
    else:  # the TTS model says the text there, in the recording's voice
        out, sr = pipe.edit(wav, sr, args.text, _transcript(args, wav, sr), span=spans[0], steps=args.nfe,
                            solver=args.solver, seed=args.seed)
    save_audio(args.output, out, sr)
    print(f"wrote {args.output} ({len(out) / sr:.2f} s, vocoder: {pipe.vocoder_name})")


def cmd_edit(args: argparse.Namespace) -> None:
    from model.audio import load_audio, save_audio
    from model.editing import replace_words
    from model.pipeline import SpeechFlowPipeline

    if (args.text is None) == (args.to is None) or (args.to is not None and not args.old):
        raise SpeechFlowError("give the words to change with --from OLD --to NEW, or the whole new text with --text")
    pipe = SpeechFlowPipeline.from_pretrained(args.bundle, device=args.device, dtype=args.dtype)
    sr = _native_rate(args.input)
    wav = load_audio(args.input, target_sr=sr)
    transcript = _transcript(args, wav, sr)
    text = args.text if args.text is not None else replace_words(transcript, args.old, args.to)
    out, sr = pipe.edit(wav, sr, text, transcript, steps=args.nfe, solver=args.solver, guidance=args.guidance,
                        seed=args.seed, speed=args.speed, quality=args.quality)
    save_audio(args.output, out, sr)
    print(f"wrote {args.output} ({len(out) / sr:.2f} s): {text}")


def _transcript(args: argparse.Namespace, wav, sr: int) -> str:
    """--transcript, else what the speech recogniser hears (printed, so the user can check it)."""
    from model import recognizer

    if args.transcript is not None:
        return args.transcript
    if not recognizer.available():
        raise SpeechFlowError("give --transcript: no speech recogniser is installed (pip install 'speechflow[asr]')")
    heard = recognizer.transcribe(wav, sr)
    print(f"heard: {heard}")
    return heard


def _task_kwargs(task: str, args: argparse.Namespace, pipe) -> dict:
    return {**sampling_kwargs(task, args, pipe), "seed": args.seed, "reconstruction": args.reconstruction}


def cmd_enhance(args: argparse.Namespace) -> None:
    from model.audio import load_audio, save_audio
    from model.pipeline import SpeechFlowPipeline

    pipe = SpeechFlowPipeline.from_pretrained(args.bundle, device=args.device, dtype=args.dtype)
    sr = _native_rate(args.input)
    out, sr = pipe.enhance(load_audio(args.input, target_sr=sr), sr, **_task_kwargs(args.command, args, pipe))
    save_audio(args.output, out, sr)
    print(f"wrote {args.output} ({len(out) / sr:.2f} s)")


def cmd_separate(args: argparse.Namespace) -> None:
    from model.audio import load_audio, save_audio
    from model.pipeline import SpeechFlowPipeline

    pipe = SpeechFlowPipeline.from_pretrained(args.bundle, device=args.device, dtype=args.dtype)
    sr = _native_rate(args.input)
    out, sr = pipe.separate(load_audio(args.input, target_sr=sr), sr, **_task_kwargs(args.command, args, pipe))
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
    pipe = SpeechFlowPipeline.from_pretrained(args.bundle, device=args.device, dtype=args.dtype)
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


def cmd_profile(args: argparse.Namespace) -> None:
    """Sampler timing per preset (random weights) or model and per dtype, with MFU; or one TTS request by stage."""
    import torch

    from model.config import ModelConfig, preset
    from model.devices import resolve_device, resolve_dtype
    from model.modeling import SpeechFlowModel
    from model.profiling import profile_edit, profile_task, profile_tts, time_sampler

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows = []
    for dtype in dict.fromkeys(resolve_dtype(d, device) for d in args.dtype):
        task = next((t for t in ("tts", "edit", "enhance", "separate") if getattr(args, t) is not None), None)
        if task is not None:
            from model.pipeline import SpeechFlowPipeline

            pipe = SpeechFlowPipeline.from_pretrained(args.bundle, device=device, dtype=dtype)
            if task in ("tts", "edit"):
                profile = profile_tts if task == "tts" else profile_edit
                row = profile(pipe, getattr(args, task), args.voice, repeats=args.repeats,
                              **sampling_kwargs("tts", args, pipe))
            else:
                row = profile_task(pipe, task, getattr(args, task), repeats=args.repeats,
                                   **sampling_kwargs(task, args, pipe))
            rows.append(row)
            print(json.dumps(row))
            continue
        for name in args.preset or [None]:
            if name is not None:  # random weights: speed does not depend on training
                model = SpeechFlowModel(ModelConfig(network=preset(name), preset=name))
                model = model.to(device=device, dtype=dtype).eval()
            else:
                model = SpeechFlowModel.from_pretrained(args.model, device=device, dtype=dtype)
            for row in time_sampler(model, args.seconds, tuple(args.nfe or [8, 16, 32]), args.solver or "midpoint",
                                    args.batch, repeats=args.repeats):
                rows.append(row)
                print(json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


def _parse_span(text: str) -> tuple[float, float]:
    try:
        start, end = (float(x) for x in text.split(":"))
    except ValueError:
        raise SpeechFlowError(f"--span expects START:END in seconds, got {text!r}") from None
    return start, end


def add_commands(sub: argparse._SubParsersAction) -> None:
    for name, help_text, outputs, func in (
            ("enhance", "enhance a noisy recording (offline, no server)", ["output"], cmd_enhance),
            ("separate", "separate a two-talker mixture into two files (offline, no server)", ["output1", "output2"],
             cmd_separate)):
        p = sub.add_parser(name, help=help_text)
        for arg in ["input", *outputs]:
            p.add_argument(arg)
        add_inference_args(p)
        add_task_args(p)
        p.set_defaults(func=func)

    p = sub.add_parser("tts", help="zero-shot text-to-speech in the voice of a prompt (offline, no server)")
    p.add_argument("--text", required=True)
    p.add_argument("--prompt", help="a few seconds of the voice to use")
    p.add_argument("--prompt-text", help="the prompt's transcript")
    p.add_argument("--voice", help="a built-in voice of the bundle instead of --prompt")
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--out", required=True)
    add_inference_args(p)
    p.add_argument("--guidance", "--cfg", dest="guidance", type=float, default=None,
                   help="classifier-free guidance weight (1 = none; default: the TTS model's)")
    add_quality_arg(p)
    p.set_defaults(func=cmd_tts)

    p = sub.add_parser("infill", help="regenerate time spans of a recording with the pre-trained model, or one span "
                       "saying --text")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--span", action="append", required=True, help="START:END in seconds (repeatable)")
    p.add_argument("--text", help="what the one span should say instead (the TTS model, in the recording's voice)")
    p.add_argument("--transcript", help="with --text: what the recording says (default: what the speech "
                   "recogniser hears)")
    add_inference_args(p)
    p.set_defaults(func=cmd_infill)

    p = sub.add_parser("edit", help="change words of a recording in its own voice (offline): --from OLD --to NEW, "
                       "or --text with the whole new text")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--from", dest="old", help="the words to replace (with --to; to insert words, use --text)")
    p.add_argument("--to", help="the words to put in their place")
    p.add_argument("--text", help="what the recording should say, whole (instead of --from/--to)")
    p.add_argument("--transcript", help="what the recording says (default: what the speech recogniser hears)")
    p.add_argument("--speed", type=float, default=1.0, help="speaking rate of the new words (2 = twice as fast)")
    p.add_argument("--guidance", "--cfg", dest="guidance", type=float, default=None,
                   help="classifier-free guidance weight (1 = none; default: the TTS model's)")
    add_quality_arg(p)
    add_inference_args(p)
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("demo", help="infill a generated example with the shipped bundle (offline)")
    p.add_argument("--out", default="demo_output")
    add_inference_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("examples", help="write example inputs (noisy.wav, clean.wav, mix.wav) made with espeak-ng")
    p.add_argument("--out", default="examples")
    p.set_defaults(func=cmd_examples)

    p = sub.add_parser("profile", help="time the ODE sampler offline (ms per network evaluation, MFU), or one TTS "
                       "request by stage (text frontend, durations, prompt alignment, sampling, vocoder)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="model directory")
    source.add_argument("--preset", nargs="+", choices=["debug", "tiny", "small", "base"],
                        help="random weights of these presets")
    source.add_argument("--tts", metavar="TEXT", help="profile one TTS request of this text with --bundle")
    source.add_argument("--edit", metavar="WORD", help="profile one edit with --bundle: a built-in voice's "
                        "recording (--voice) with its third word replaced by WORD")
    source.add_argument("--enhance", metavar="SECONDS", type=float,
                        help="profile one enhancement of this many seconds of noisy speech with --bundle")
    source.add_argument("--separate", metavar="SECONDS", type=float,
                        help="profile one separation of this many seconds of a two-voice mixture with --bundle")
    p.add_argument("--bundle", default=DEFAULT_BUNDLE, help="the bundle for --tts / --edit / --enhance / --separate")
    p.add_argument("--voice", help="built-in voice for --tts / --edit (default: the bundle's first)")
    p.add_argument("--seconds", type=float, default=10.0, help="audio per row for the sampler timing")
    p.add_argument("--nfe", type=int, nargs="+", help="network evaluations (sampler: 8 16 32; tts: the default)")
    p.add_argument("--solver", choices=["euler", "midpoint", "heun", "rk4"])
    p.add_argument("--guidance", type=float, help="guidance for a --tts / --enhance / --separate request "
                                                  "(default: the task's)")
    p.add_argument("--sway", type=float, help="time-grid bend for a --tts / --enhance / --separate request "
                                              "(default: the task's)")
    p.add_argument("--guidance-until", type=float, help="guidance only while t < this (default: the task's)")
    add_ensemble_arg(p)
    add_quality_arg(p)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up run (median reported)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--dtype", nargs="+", default=["auto"], choices=["auto", "bf16", "fp16", "fp32"],
                   help="compute dtypes to time (e.g. fp32 bf16)")
    p.add_argument("--json", help="also write the rows here")
    p.set_defaults(func=cmd_profile)
