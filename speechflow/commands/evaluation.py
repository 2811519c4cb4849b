"""speechflow evaluate: quality reports per task on a test manifest."""

from __future__ import annotations

import argparse
import json
import shutil

from .common import add_inference_args, add_task_args, sampling_kwargs


def cmd_evaluate(args: argparse.Namespace) -> None:
    import torch

    from model.pipeline import SpeechFlowPipeline
    from training.evaluation.evaluate import run_evaluation
    from training.evaluation.peers import PEERS

    if args.threads:
        torch.set_num_threads(args.threads)  # the neural peers run one thread: --threads 1 compares like with like

    pipe = SpeechFlowPipeline.from_pretrained(args.bundle, device=args.device, dtype=args.dtype)
    if args.vocoder:
        pipe.use_vocoder(_load_vocoder(args.vocoder, pipe))
    if args.task == "vocoder":
        _evaluate_vocoder(args, pipe)
        return
    if args.task == "align":
        from training.data.manifest import read_manifest
        from training.evaluation.evaluate import write_json
        from training.trainers.aligner import prompt_alignment_report

        report = prompt_alignment_report(read_manifest(args.data), pipe.aligner, pipe.durations, n=args.n,
                                         flite_n=args.n if shutil.which("flite") else None)
        if args.json:
            write_json(report, args.json)
        print(json.dumps(report, indent=2))
        return
    if args.task == "edit":
        from training.evaluation.evaluate_edit import run_edit_evaluation

        tts_kwargs = sampling_kwargs("tts", args, pipe)
        res = run_edit_evaluation(pipe, args.data, n=args.n, seed=args.seed, conditions=args.conditions,
                                  json_out=args.json, tts_kwargs=tts_kwargs,
                                  extra_config={"bundle": str(args.bundle), "dtype": pipe.dtype_name,
                                                "threads": torch.get_num_threads(), **tts_kwargs})
        print(json.dumps(res["overall"], indent=2))
        return
    if args.task == "tts":
        from training.evaluation.evaluate_tts import pipeline_synthesizer, run_tts_evaluation
        from training.evaluation.tts_references import load_references

        tts_kwargs = {**sampling_kwargs("tts", args, pipe), "seed": args.seed}
        references = load_references(peer_names(args))
        res = run_tts_evaluation(pipeline_synthesizer(pipe, **tts_kwargs), args.data, n=args.n, seed=args.seed,
                                 json_out=args.json, report_out=args.report, use_dnsmos=not args.no_dnsmos,
                                 extra_config={"bundle": str(args.bundle), "dtype": pipe.dtype_name,
                                               "threads": torch.get_num_threads(),
                                               "vocoder": args.vocoder or pipe.vocoder_name, **tts_kwargs},
                                 conditions=args.conditions, references=references)
        print(json.dumps({k: res[k] for k in ("overall", "wer_ratio", "similarity_position")}, indent=2,
                         default=str))
        return
    kwargs = {**sampling_kwargs(args.task, args, pipe), "reconstruction": args.reconstruction}
    run = pipe.enhance_batch if args.task == "enhance" else pipe.separate_batch

    def process(wavs):
        return [out for out, _ in run([(w, pipe.sample_rate) for w in wavs], seed=args.seed, **kwargs)]

    peers = peer_names(args)
    results = run_evaluation(args.task, process, args.data, n=args.n, seed=args.seed, json_out=args.json,
                             report_out=args.report, batch_size=args.batch_size, workers=args.workers,
                             peers=not args.no_peers, use_dnsmos=not args.no_dnsmos,
                             extra_config={"bundle": str(args.bundle), "dtype": pipe.dtype_name,
                                           "threads": torch.get_num_threads(), **kwargs},
                             conditions=args.conditions, neural_peers=PEERS if peers == ["all"] else peers)
    print(json.dumps(results.get("overall", results), indent=2, default=str))


def peer_names(args: argparse.Namespace) -> list[str]:
    """--peers as a list (["all"] for every one)."""
    return [p for p in (args.peers or "").split(",") if p]


def _load_vocoder(spec: str, pipe):  # -> VocosVocoder | GriffinLimVocoder
    from model.vocoder import GriffinLimVocoder
    from model.vocos import VocosVocoder

    if spec == "griffin-lim":
        return GriffinLimVocoder(pipe.mel_config)
    return VocosVocoder.from_pretrained(spec, device=pipe.device)


def _evaluate_vocoder(args: argparse.Namespace, pipe) -> None:
    """Copy synthesis through the pipeline's vocoder (the bundle's, or --vocoder's) beside Griffin-Lim."""
    from model.vocoder import GriffinLimVocoder
    from training.evaluation.common import jsonable
    from training.evaluation.vocoder import run_vocoder_evaluation

    vocoders = {"griffin_lim": GriffinLimVocoder(pipe.mel_config)}
    if not isinstance(pipe.vocoder, GriffinLimVocoder):
        vocoders = {"vocoder": pipe.vocoder, **vocoders}
    res = run_vocoder_evaluation(vocoders, pipe.mel.cpu(), args.data, n=args.n, seed=args.seed, json_out=args.json,
                                 report_out=args.report, use_dnsmos=not args.no_dnsmos,
                                 extra_config={"bundle": str(args.bundle), "vocoder": args.vocoder or "bundle"})
    print(json.dumps(jsonable({"overall": res["overall"], "rtf": res["rtf"]}), indent=2))


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="enhance/separate: PESQ, ESTOI, SI-SDR, DNSMOS vs the input and classical "
                       "peers; tts: WER ratio, speaker similarity, DNSMOS; edit: 1-3 words of held-out recordings "
                       "changed, beside plain TTS; vocoder: copy synthesis vs Griffin-Lim")
    p.add_argument("--task", required=True, choices=["enhance", "separate", "tts", "edit", "align", "vocoder"],
                   help="align: frame accuracy of the bundle's prompt aligners against the manifest's alignments, and "
                        "their phone-boundary errors on flite speech of the manifest's texts; vocoder: copy synthesis "
                        "(clean test utterances -> log-mel -> waveform) beside Griffin-Lim: PESQ-WB, ESTOI, DNSMOS")
    p.add_argument("--vocoder", help="vocode with this vocoder directory (a training run, a bundle's vocoder/) or "
                   "'griffin-lim' instead of the bundle's")
    p.add_argument("--data", required=True, help="clean test manifest (e.g. the corpus's unseen-speaker test.jsonl)")
    p.add_argument("--n", type=int, default=100, help="utterances (cases) to evaluate")
    p.add_argument("--json", help="write all results here")
    p.add_argument("--report", help="write a Markdown report (with spectrogram PNGs beside it) here")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=0, help="processes computing metrics while the model runs")
    p.add_argument("--no-peers", action="store_true", help="skip spectral gating / oracle IRM")
    p.add_argument("--peers", help="enhancement: neural peers to run and time beside ours, comma-separated "
                   "(deepfilternet3, dtln, gtcrn, rnnoise) or 'all'; tts: fixed-voice references saying the same "
                   "texts, scored and timed like ours (piper, espeak-ng, flite) or 'all'")
    p.add_argument("--conditions", default="synthetic", choices=["synthetic", "real"],
                   help="real: --data is the real corpus's test_cuts.jsonl.gz (scripts/real-speech-corpus.sh) and "
                        "the cases are its real conditions: babble of real talkers, held-out music, white and pink "
                        "noise at 0/5/10 dB; separation with a real second talker at 0 dB; tts: the held-out speaker "
                        "cloned from her own 3-6 s prompts")
    p.add_argument("--threads", type=int, default=None, help="torch threads for our model (default: all cores)")
    p.add_argument("--no-dnsmos", action="store_true")
    add_inference_args(p)
    add_task_args(p)
    p.set_defaults(func=cmd_evaluate)
