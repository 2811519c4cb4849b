"""Sampling defaults per task: what a request gets when it names no NFE, guidance or solver.

Chosen by measurement on the demo bundle's `tiny` models (README, "Sampling defaults"): for enhancement and
separation, classifier-free guidance 2 at 16 network evaluations scores clearly higher than 32 evaluations without
guidance, at the same cost (guidance doubles the batch). TTS keeps 32 evaluations with guidance 2; infilling with the
pre-trained model is unconditional on text, so guidance does nothing there. Torch-free, so the service's request
schemas can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Sampling:
    steps: int  # network evaluations (NFE) of the ODE solver
    guidance: float  # classifier-free guidance weight; 1 = none
    solver: str = "midpoint"
    sway: float = 0.0  # time-grid bend (model.solvers.step_times): < 0 takes small steps early; 0 = uniform
    guidance_until: float = 1.0  # guidance only while t < this (1 = the whole path)


TASK_SAMPLING: dict[str, Sampling] = {
    "pretrain": Sampling(steps=32, guidance=1.0),
    "enhance": Sampling(steps=16, guidance=2.0),
    "separate": Sampling(steps=16, guidance=2.0),
    "tts": Sampling(steps=32, guidance=2.0),
}


def sampling(task: str, steps: int | None = None, guidance: float | None = None,
             solver: str | None = None, sway: float | None = None,
             guidance_until: float | None = None) -> Sampling:
    """The task's defaults with whatever the caller gave on top (None = the default)."""
    base = TASK_SAMPLING[task]
    given = {"steps": steps, "guidance": guidance, "solver": solver, "sway": sway, "guidance_until": guidance_until}
    return replace(base, **{k: v for k, v in given.items() if v is not None})
