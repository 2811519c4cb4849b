"""Sampling defaults per task: what a request gets when it names no NFE, guidance or solver.

Each default is the cheapest setting that scores as well as the costlier ones on the shipped bundle's `tiny` models
and the unseen-speaker test split; the tables and the commands that produce them are in docs/results/sampling.md
(steps, solver, guidance) and docs/results/ensemble.md (draws). Enhancement and separation: classifier-free guidance
2 is worth more than any step count, and a few Euler steps on a swayed grid (sway -1: small steps early) do at
least as well as 16 midpoint evaluations at a fraction of the network passes; more steps, midpoint at the same
cost, or guidance stopped half-way do not do better. The masks of several draws are averaged (`ensemble`): the gain
flattens after 4-8 draws, and separation does as well with 2 steps and more draws as with 4 steps and fewer. TTS:
4 Euler steps on the swayed grid match 32 uniform midpoint evaluations at an eighth of the passes; 8 Euler steps
(``steps=8``) score better still, for twice the time. TTS guidance 1.5 rather than 2: lower guidance trades the
recogniser's WER on flite/festival voices for signal quality (DNSMOS) and speaker similarity. Infilling with the
pre-trained model is unconditional on text, so guidance does nothing there. These are the teachers' defaults; a
bundle's few-step students carry their own in their configs (`model.quality`). Torch-free, so the service's request
schemas can import it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from .errors import ConfigError

MAX_ENSEMBLE = 16  # draws per window: each is a full row of network passes


@dataclass(frozen=True)
class Sampling:
    steps: int  # network evaluations (NFE) of the ODE solver
    guidance: float  # classifier-free guidance weight; 1 = none
    solver: str = "midpoint"
    sway: float = 0.0  # time-grid bend (model.solvers.step_times): < 0 takes small steps early; 0 = uniform
    guidance_until: float = 1.0  # guidance only while t < this (1 = the whole path)
    ensemble: int = 1  # enhancement / separation: independent draws whose masks are averaged (each costs a row)
    student: bool = False  # generate with the task's few-step student (a bundle's <task>/student), not the teacher

    def __post_init__(self) -> None:
        if not 1 <= self.ensemble <= MAX_ENSEMBLE:
            raise ConfigError(f"ensemble must be between 1 and {MAX_ENSEMBLE}, got {self.ensemble}")

    def one_draw(self, what: str) -> None:
        """Averaging draws is a mask estimate; generated speech (TTS, infilling, editing) would only blur."""
        if self.ensemble != 1:
            raise ConfigError(f"ensemble averages the masks of enhancement and separation; {what} takes one draw "
                              f"(ensemble=1), got {self.ensemble}")

    def settings(self) -> dict[str, Any]:
        """These settings as the pipeline's keyword arguments (with ``quality``, which says the network)."""
        return {**{k: v for k, v in asdict(self).items() if k != "student"},
                "quality": "fast" if self.student else "full"}


TASK_SAMPLING: dict[str, Sampling] = {
    "pretrain": Sampling(steps=32, guidance=1.0),
    "enhance": Sampling(steps=4, guidance=2.0, solver="euler", sway=-1.0, ensemble=4),
    "separate": Sampling(steps=2, guidance=2.0, solver="euler", sway=-1.0, ensemble=8),
    "tts": Sampling(steps=4, guidance=1.5, solver="euler", sway=-1.0),
}



QUALITIES = ("fast", "full")  # the task's few-step student, or the teacher at its defaults


def student_sampling(recorded: dict[str, Any]) -> Sampling:
    """A student's defaults, as its config records them (`ModelConfig.sampling`)."""
    return Sampling(**{**recorded, "student": True})


def student_conflict(student: Sampling, given: dict[str, Any]) -> str | None:
    """The first setting in ``given`` (None: not given) that differs from the student's own: it was trained at its
    grid only, without an unconditional branch for guidance, and is deterministic (more draws are the same)."""
    return next((name for name, value in given.items() if value is not None and value != getattr(student, name)),
                None)


def sampling(task: str, steps: int | None = None, guidance: float | None = None,
             solver: str | None = None, sway: float | None = None,
             guidance_until: float | None = None, ensemble: int | None = None,
             base: Sampling | None = None) -> Sampling:
    """``base`` (default: the task's teacher defaults) with whatever the caller gave on top (None = the default)."""
    base = base or TASK_SAMPLING[task]
    given = {"steps": steps, "guidance": guidance, "solver": solver, "sway": sway, "guidance_until": guidance_until,
             "ensemble": ensemble}
    return replace(base, **{k: v for k, v in given.items() if v is not None})
