"""TTS fine-tuning data and objective (Voicebox-style): frame-aligned phones plus a span-masked audio context.

The model sees the phone of every frame and the audio of the unmasked frames, and learns to generate the masked
(70-100 %) frames; condition dropout (audio context and phones together) trains the unconditional branch for
classifier-free guidance.
"""

from __future__ import annotations

import os
from itertools import islice

import numpy as np
import torch
from lhotse.cut import Cut
from torch import Tensor, nn

from model.config import ModelConfig
from model.errors import ConfigError
from model.features import MelSpectrogram
from model.flow import FlowMatching, masked_mean
from model.solvers import step_times
from model.text import PhoneVocab
from training.data.alignments import phones_to_frames
from training.data.cuts import ManifestError, cut_phones, has_phones
from training.data.foreign_phones import primary_language
from training.data.loading import CutBatchDataset, crop_cut, load_mono
from training.data.manifest import open_cuts

from .masking import pretraining_masks
from .pretraining import frame_mask


class AlignedCropDataset(CutBatchDataset):
    """Cut with phones -> {"wav": (n,), "phones": (n // hop + 1,) int64 frame labels of that crop}.

    ``phone_languages`` (primary language subtags, e.g. ("en",)): the languages whose phones are trusted; a cut in
    another language gets no phones (all PAD, as condition dropout gives), so it teaches its voice through the
    audio context alone and nothing about what a phone sounds like. None: every cut's phones."""

    def __init__(self, max_seconds: float, vocab: PhoneVocab, sample_rate: int = 16000, hop: int = 160,
                 seed: int = 0, phone_languages: tuple[str, ...] | None = None) -> None:
        super().__init__(max_seconds, sample_rate, seed)
        self.vocab, self.hop, self.phone_languages = vocab, hop, phone_languages

    def item(self, cut: Cut, seed: int) -> dict[str, np.ndarray]:
        crop, start = crop_cut(cut, self.max_seconds, seed)
        wav = load_mono(crop, self.sample_rate)
        frames = len(wav) // self.hop + 1
        labels = phones_to_frames(cut_phones(cut), frames, self.vocab, fps=self.sample_rate // self.hop, start=start)
        return {"wav": wav, "phones": labels if self._trusted(cut) else np.zeros_like(labels)}

    def _trusted(self, cut: Cut) -> bool:
        language = next((s.language for s in cut.supervisions if s.language), None)
        return self.phone_languages is None or language is None or primary_language(language) in self.phone_languages

    def collate(self, items: list[dict[str, np.ndarray]]) -> dict[str, Tensor]:
        return collate_aligned(items)


def require_phones(data: str | os.PathLike, probe: int = 5000) -> None:
    """A clear error, before training starts, when the first ``probe`` cuts carry no phone alignments."""
    if not any(has_phones(cut) for cut in islice(open_cuts(data), probe)):
        raise ManifestError(f"{data}: no cuts with phone alignments among the first {probe}: build the corpus with "
                            "espeak-ng speakers, import MFA alignments, or label it (`speechflow label`)")


def collate_aligned(items: list[dict[str, np.ndarray]]) -> dict[str, Tensor]:
    """-> {"wav": (B, N) float, "lengths": (B,) samples, "phones": (B, T) int64, 0-padded}."""
    lengths = torch.tensor([len(i["wav"]) for i in items])
    wav = torch.zeros(len(items), int(lengths.max()))
    phones = torch.zeros(len(items), max(len(i["phones"]) for i in items), dtype=torch.long)
    for k, item in enumerate(items):
        wav[k, : len(item["wav"])] = torch.from_numpy(item["wav"])
        phones[k, : len(item["phones"])] = torch.from_numpy(item["phones"])
    return {"wav": wav, "lengths": lengths, "phones": phones}


GUIDED_LOSSES = ("guided", "trajectory")  # a TTS student's losses, regressed on its teacher's guided steps


class TTSObjective:
    """Generate the masked frames from the rest and every frame's phone (both dropped with ``p_uncond``, for
    guidance). With a ``teacher`` (a "guided" student: `training.trainers.finetune.make_student`), the velocity
    is regressed on the teacher's guided one instead (`guided_loss`)."""

    def __init__(self, config: ModelConfig, teacher: nn.Module | None = None) -> None:
        self.config, self.mel, self.flow = config, MelSpectrogram(config.mel), FlowMatching(config.flow)
        self.teacher = teacher
        student = config.student
        self.guidance = float(student.get("guidance", 1.0))
        self.on_teacher_path = student.get("loss") == "trajectory"
        # the teacher's grid, which the student's is a subset of ("teacher_steps" absent: one teacher step per step)
        steps = int(student.get("teacher_steps", student.get("steps", 1)))
        self.teacher_grid = step_times(steps, sway=float(config.sampling.get("sway", 0.0))) if student else None
        if self.teacher_grid is not None:
            check_teacher_grid(self.flow, self.teacher_grid)

    def __call__(self, net: nn.Module, batch: dict[str, Tensor], rng: np.random.Generator,
                 gen: torch.Generator) -> Tensor:
        self.mel = self.mel.to(batch["wav"].device)
        x1 = self.mel(batch["wav"])  # (B, T, n_mels)
        mask = frame_mask(self.mel, batch["lengths"], x1.shape[1])
        phones = batch["phones"][:, : x1.shape[1]] * mask  # (B, T), 0 on padding
        masked = pretraining_masks(rng, mask.sum(1).tolist(), x1.shape[1], self.config.flow).to(x1.device)
        keep = (torch.rand(x1.shape[0], device=x1.device, generator=gen) >= self.config.flow.p_uncond)[:, None]
        cond = x1 * (~masked & keep)[..., None]
        if self.teacher is not None:
            self.teacher = self.teacher.to(x1.device)
            return guided_loss(self.flow, net, self.teacher, self.guidance, x1, cond, phones, mask, masked, gen,
                               self.teacher_grid, on_teacher_path=self.on_teacher_path)
        return self.flow.loss(net, x1, cond, mask, masked, generator=gen, phones=phones * keep)


def guided_loss(flow: FlowMatching, net: nn.Module, teacher: nn.Module, guidance: float, x1: Tensor, cond: Tensor,
                phones: Tensor, mask: Tensor, loss_mask: Tensor, gen: torch.Generator,
                teacher_grid: Tensor | None = None, on_teacher_path: bool = False) -> Tensor:
    """Guidance (and step) distillation: from a state x_t at one of the student's grid times, the teacher's guided
    Euler steps v_u + w (v_c - v_u) (conditional and unconditional in one doubled batch, no gradient) on
    ``teacher_grid`` up to the student's next grid time; the student's velocity is regressed on that displacement
    over its own step, on the frames of ``loss_mask``. With one teacher step per student step (no
    ``teacher_grid``) the target is the teacher's guided velocity at x_t. x_t is the flow's data path, or with
    ``on_teacher_path`` where the teacher's guided sampler gets to from the noise by time t: the states a sampling
    student meets, since guidance leaves the data path's marginals. x1 and cond (B, T, D), phones, mask and
    loss_mask (B, T); the student's grid (``flow.cfg.train_times`` + 1.0) must lie on ``teacher_grid``
    (`check_teacher_grid`, which `TTSObjective` runs once)."""
    t, x0 = flow.draw(x1, gen)
    grid = _student_grid(flow) if teacher_grid is None else teacher_grid.to(torch.float32)
    guided = GuidedTeacher(teacher, guidance, cond, mask, phones, x1.dtype)
    with torch.no_grad():
        x_t = guided.path(x0.float(), t, grid.to(t)) if on_teacher_path else flow.path(x0, x1, t)[0].float()
        starts, ends = _teacher_steps(flow, t, grid)
        x = x_t
        for k in range(starts.shape[1]):
            x = guided.step(x, starts[:, k], ends[:, k] - starts[:, k])
        target = (x - x_t) / (ends[:, -1] - starts[:, 0])[:, None, None]
    v = net(x_t.to(x1.dtype), t, cond, mask, phones=phones).float()
    return masked_mean((v - target) ** 2, loss_mask & mask)


class GuidedTeacher:
    """The teacher's guided Euler steps on a batch's conditions (no gradient; the state in float32)."""

    def __init__(self, teacher: nn.Module, guidance: float, cond: Tensor, mask: Tensor, phones: Tensor,
                 dtype: torch.dtype) -> None:
        self.teacher, self.guidance, self.dtype = teacher, guidance, dtype
        self.cond, self.mask, self.phones = cond, mask, phones

    def step(self, x: Tensor, t: Tensor, dt: Tensor, rows: Tensor | None = None) -> Tensor:
        """x (R, T, D) at times t (R,) -> x at t + dt, for the batch's ``rows`` (all when None)."""
        cond, mask, phones = ((v if rows is None else v[rows]) for v in (self.cond, self.mask, self.phones))
        both = self.teacher(torch.cat([x, x]).to(self.dtype), torch.cat([t, t]),
                            torch.cat([cond, torch.zeros_like(cond)]), torch.cat([mask, mask]),
                            phones=torch.cat([phones, torch.zeros_like(phones)])).float()
        v_c, v_u = both.chunk(2)
        return x + dt[:, None, None] * (v_u + self.guidance * (v_c - v_u))

    def path(self, x0: Tensor, t: Tensor, grid: Tensor) -> Tensor:
        """The teacher's sampler from x0 (B, T, D) at time 0 along ``grid`` up to each sample's t (B,), which lies
        on it; only the rows still short of their t take each step."""
        x = x0.clone()
        for k in range(len(grid) - 1):
            rows = (grid[k + 1] <= t + 1e-6).nonzero().squeeze(1)
            if len(rows) == 0:
                break
            x[rows] = self.step(x[rows], grid[k].expand(len(rows)), (grid[k + 1] - grid[k]).expand(len(rows)), rows)
        return x


def check_teacher_grid(flow: FlowMatching, teacher_grid: Tensor) -> None:
    """ConfigError unless the student's grid (``flow.cfg.train_times`` + 1.0) is every k-th time of
    ``teacher_grid``: the teacher's steps must tile the student's."""
    student = _student_grid(flow)
    per_step = (len(teacher_grid) - 1) // (len(student) - 1)
    if per_step * (len(student) - 1) != len(teacher_grid) - 1 or \
            not torch.allclose(teacher_grid.to(torch.float32)[::per_step], student, atol=1e-6):
        raise ConfigError(f"a student's grid {student.tolist()} must be every k-th time of its teacher's "
                          f"{teacher_grid.tolist()}")


def _student_grid(flow: FlowMatching) -> Tensor:
    return torch.tensor([*flow.cfg.train_times, 1.0], dtype=torch.float32)


def _teacher_steps(flow: FlowMatching, t: Tensor, grid: Tensor) -> tuple[Tensor, Tensor]:
    """Each sample's teacher steps on ``grid`` (float32, on the CPU) over its student step from t (B,): their start
    and end times, each (B, K) (`check_teacher_grid` has checked that they tile it)."""
    per_step = (len(grid) - 1) // (len(_student_grid(flow)) - 1)
    first = (t.cpu()[:, None] - grid[None, :]).abs().argmin(1)[:, None] + torch.arange(per_step)[None, :]  # (B, K)
    return grid[first].to(t), grid[first + 1].to(t)
