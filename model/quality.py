"""Which network and which sampling a request gets: a task's teacher at the task's defaults (quality 'full') or
its few-step student at the student's own (quality 'fast'), and the bundle's choice between them."""

from __future__ import annotations

from typing import Any

from .defaults import QUALITIES, Sampling, sampling, student_conflict, student_sampling
from .errors import CheckpointError, ConfigError, SettingError
from .modeling import SpeechFlowModel


class Qualities:
    """The students of a bundle beside its teachers, and bundle.json's default quality per task (checked here:
    a default the bundle cannot serve fails at load, not at the first request)."""

    def __init__(self, models: dict[str, SpeechFlowModel], students: dict[str, SpeechFlowModel],
                 defaults: dict[str, str]) -> None:
        for task, chosen in defaults.items():
            if chosen not in QUALITIES or (chosen == "fast" and task not in students):
                raise CheckpointError(f"bundle.json makes {chosen!r} the default quality of {task!r}, but the "
                                      f"bundle has {'a student' if task in students else 'no student'} for it")
        self.models, self.students, self.defaults = models, students, defaults

    def default(self, task: str) -> str:
        """'fast' where the bundle makes its student the task's default (chosen on the evaluation splits), else
        'full'."""
        return self.defaults.get(task, "full")

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
