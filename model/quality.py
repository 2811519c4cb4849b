"""Which network and which sampling a request gets: a task's teacher at the task's defaults (quality 'full') or
its few-step student at the student's own (quality 'fast'), and the bundle's choice between them."""

from __future__ import annotations

from typing import Any

import torch

from .defaults import QUALITIES, Sampling, sampling, student_conflict, student_sampling
from .errors import CheckpointError, ConfigError, SettingError
from .modeling import SpeechFlowModel

MACHINES = ("gpu", "cpu-bf16", "cpu-fp32")  # what decides a network pass's cost: an accelerator, bf16 units or not


def machine_class(device: torch.device, dtype: torch.dtype) -> str:
    """The class of machine the networks run on: "gpu" (CUDA or MPS), "cpu-bf16" (a CPU whose bf16 units made bf16
    the compute dtype: `--dtype auto`'s probe) or "cpu-fp32" (a CPU without them, e.g. AVX2 only)."""
    if device.type != "cpu":
        return "gpu"
    return "cpu-fp32" if dtype == torch.float32 else "cpu-bf16"


class Qualities:
    """The students of a bundle beside its teachers, and bundle.json's default quality per task, one for every
    machine or one per `machine_class` ({"cpu-fp32": "fast"}: the student where the teacher is slow; a class not
    named gets "full"). Checked here: a default the bundle cannot serve fails at load, not at the first request."""

    def __init__(self, models: dict[str, SpeechFlowModel], students: dict[str, SpeechFlowModel],
                 defaults: dict[str, str | dict[str, str]], machine: str = "cpu-fp32") -> None:
        # task -> machine class -> quality: a quality named for every machine is that quality on each
        self.chosen = {task: chosen if isinstance(chosen, dict) else dict.fromkeys(MACHINES, chosen)
                       for task, chosen in defaults.items()}
        for task, per_machine in self.chosen.items():
            if set(per_machine) - set(MACHINES):
                raise CheckpointError(f"bundle.json's default quality of {task!r} names unknown machine classes "
                                      f"{sorted(set(per_machine) - set(MACHINES))}; known: {list(MACHINES)}")
            for quality in per_machine.values():
                if quality not in QUALITIES or (quality == "fast" and task not in students):
                    raise CheckpointError(f"bundle.json makes {quality!r} the default quality of {task!r}, but the "
                                          f"bundle has {'a student' if task in students else 'no student'} for it")
        self.models, self.students, self.machine = models, students, machine

    def default(self, task: str) -> str:
        """'fast' where the bundle makes its student the task's default on this class of machine (chosen on the
        evaluation splits and the machine's speed), else 'full'."""
        return self.chosen.get(task, {}).get(self.machine, "full")

    def sampling(self, task: str, quality: str | None, given: dict[str, Any]) -> Sampling:
        """``quality`` ('fast', 'full', None: `default`) with ``given`` (steps, guidance, solver, sway,
        guidance_until, ensemble; None = the default) on top. A student takes no setting it was not trained for;
        without a quality, any such setting asks for the teacher."""
        if quality is None and task in self.models and self.models[task] is not self.students.get(task):
            quality = "full" if any(v is not None for v in given.values()) else None
        quality = quality or self.default(task)
        if quality not in QUALITIES:
            raise ConfigError(f"quality must be one of {QUALITIES}, got {quality!r}")
        if quality == "full":
            if task in self.students and self.students[task] is self.models.get(task):
                raise ConfigError(f"this {task!r} model is a few-step student without its teacher: only quality "
                                  "'fast'")
            return sampling(task, **given)
        if task not in self.students:
            raise ConfigError(f"this bundle has no few-step student for {task!r} (quality 'fast' is offered for: "
                              f"{', '.join(self.students) or 'no task'})")
        base = student_sampling(self.students[task].config.sampling)
        if (name := student_conflict(base, given)) is not None:
            raise SettingError(f"{name} cannot be set with quality 'fast': the student samples with {name}="
                               f"{getattr(base, name)} only (quality 'full' takes any)", param=name)
        return base
