"""What the command modules share: the default bundle and the inference / device / task options."""

from __future__ import annotations

import argparse

DEFAULT_BUNDLE = "checkpoints/demo"


def sampling_kwargs(task: str, args: argparse.Namespace, pipe=None) -> dict:  # pipe: model.SpeechFlowPipeline
    """quality / steps / guidance / solver / sway / guidance_until / ensemble: the flags given, else the defaults of
    the model they pick (``pipe``'s student or teacher; without ``pipe``, the teacher's), spelled out so reports
    show them."""
    from model.defaults import sampling

    nfe = args.nfe[0] if isinstance(args.nfe, list) else args.nfe  # `profile --nfe` takes a list
    given = {"steps": nfe, "guidance": getattr(args, "guidance", None), "solver": args.solver,
             "sway": getattr(args, "sway", None), "guidance_until": getattr(args, "guidance_until", None),
             "ensemble": getattr(args, "ensemble", None)}
    if pipe is None:
        return sampling(task, **given).settings()
    return pipe.task_sampling(task, getattr(args, "quality", None), **given).settings()


def add_inference_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", default=DEFAULT_BUNDLE, help="bundle or model directory")
    p.add_argument("--nfe", "--steps", dest="nfe", type=int, default=None,
                   help="network evaluations of the ODE solver (default: the task's, see model/defaults.py)")
    p.add_argument("--solver", default=None, choices=["euler", "midpoint", "heun", "rk4"],
                   help="ODE solver (default: the task's, see model/defaults.py)")
    p.add_argument("--sway", type=float, default=None,
                   help="time-grid bend in [-1, 1], < 0 = small steps early (default: the task's)")
    p.add_argument("--guidance-until", type=float, default=None,
                   help="apply guidance only while the flow time t is below this (default: the task's)")
    p.add_argument("--seed", type=int, default=0)
    add_device_args(p)


def add_device_args(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    from_env = " (default: SPEECHFLOW_DEVICE / SPEECHFLOW_DTYPE)" if default is None else ""
    p.add_argument("--device", default=default, help="auto (CUDA when present), cpu, cuda, cuda:N" + from_env)
    p.add_argument("--dtype", default=default, choices=["auto", "bf16", "fp16", "fp32"],
                   help="the flow networks' compute dtype; auto = bf16 where the device runs it fast" + from_env)


def add_task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance weight (1 = none; default: the task's, see model/defaults.py)")
    add_ensemble_arg(p)
    add_quality_arg(p)
    p.add_argument("--reconstruction", default="mask", choices=["mask", "vocoder"],
                   help="mask: per-band mask on the input's STFT (keeps its phase); vocoder: the bundle's vocoder")


def add_ensemble_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ensemble", type=int, default=None,
                   help="independent draws whose masks are averaged, 1-16; each costs a full sampling run "
                        "(default: the task's, see model/defaults.py)")


def add_quality_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quality", default=None, choices=["fast", "full"],
                   help="fast: the task's few-step student (one or two network passes, where the bundle has "
                        "one); full: the teacher at the task's defaults (default: the bundle's choice)")
