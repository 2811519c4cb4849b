"""``SpeechFlowPipeline``: waveforms in, waveforms out, for every task a bundle serves.

This is the single generate path: the CLI, the service and the evaluation all call it, so features, sampling and
vocoding cannot drift apart between training, offline use and serving.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .aligner import PromptAligner
from .audio import prepare_waveform, resample
from .defaults import Sampling
from .devices import dtype_name, resolve_device, resolve_dtype, use_tf32
from .duration import DurationModel
from .editing import MAX_EDIT_S, edit_layout, span_layout, speech_frames, splice_plan
from .errors import CheckpointError, ConfigError, SettingError
from .features import MelSpectrogram
from .generation import Plan, Row, generate_rows
from .infilling import InfillRequest, Span, span_frames
from .joining import chunk_offsets, join_with_crossfade
from .loading import load_parts
from .modeling import SpeechFlowModel
from .packing import pack
from .quality import Qualities, machine_class
from .recognizer import transcribe
from .reconstruct import mask_reconstruction, mean_mask_features, separation_masks
from .stages import stage
from .text import PhoneVocab
from .tts import (
    Chunk,
    Prompt,
    Voice,
    WordTime,
    align_prompt,
    check_prompt_length,
    known_prompt,
    plan_chunks,
)
from .vocoder import GriffinLimVocoder
from .vocos import VocosVocoder
from .windows import OVERLAP_S, WINDOW_S, stitch, window_spans

MAX_BATCH_FRAMES = 24_000  # offline: padded frames of the live batch (memory)
VOCODER_BATCH_FRAMES = 8_000  # padded frames of one vocoder call (its 768-wide activations: ~25 MB in fp32)
RECONSTRUCTIONS = ("mask", "vocoder")
TTS_JOIN_FADE_S = 0.02  # chunks of long text are joined with 20 ms cross-fades


class SpeechFlowPipeline:
    """Loads a bundle (``pretrained/ enhance/ separate/ tts/ vocoder/`` + ``bundle.json``) or a single model
    directory, and runs the tasks it has."""

    def __init__(self, models: dict[str, SpeechFlowModel], info: dict | None = None,
                 vocoder: VocosVocoder | None = None, durations: DurationModel | None = None,
                 voices: dict[str, Voice] | None = None, aligner: PromptAligner | None = None,
                 students: dict[str, SpeechFlowModel] | None = None) -> None:
        if not models:
            raise CheckpointError("a pipeline needs at least one model")
        self.models = models
        self.students = students or {}  # task -> its few-step student (`quality="fast"`)
        self.info = info or {}
        first = next(iter(models.values()))
        self.qualities = Qualities(models, self.students, self.info.get("quality", {}),
                                   machine_class(first.device, first.dtype))
        self.mel_config = first.config.mel
        self.device = first.device
        self.mel = MelSpectrogram(self.mel_config).to(self.device)
        self.vocoder: VocosVocoder | GriffinLimVocoder = GriffinLimVocoder(self.mel_config)
        if vocoder is not None:
            self.use_vocoder(vocoder)
        if aligner is not None and aligner.config.mel != self.mel_config:
            raise CheckpointError("the bundle's prompt aligner was trained on other mel settings than its models")
        self.durations = durations
        self.aligner = aligner
        self.voices = voices or {}

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sample_rate

    @property
    def dtype_name(self) -> str:
        """The flow networks' compute dtype ("bf16", "fp16", "fp32")."""
        return dtype_name(next(iter(self.models.values())).dtype)

    @property
    def vocoder_name(self) -> str:
        return self.vocoder.name

    def use_vocoder(self, vocoder: VocosVocoder | GriffinLimVocoder) -> None:
        """Vocode with ``vocoder`` from now on (e.g. a training run's, to compare it with the bundle's); it must
        invert the mel features the models were trained on."""
        mel = vocoder.config.mel if isinstance(vocoder, VocosVocoder) else vocoder.mel
        if mel != self.mel_config:
            raise CheckpointError("the vocoder was trained on other mel settings than the bundle's models")
        self.vocoder = vocoder

    @property
    def tasks(self) -> list[str]:
        return list(self.models)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "auto",
                        dtype: str | torch.dtype = "auto") -> SpeechFlowPipeline:
        """Load a bundle or a model directory. ``dtype`` is the flow networks' compute dtype (``auto``: bf16 where
        the device runs it fast, see ``model.devices``); the ODE state, features, reconstruction and the small
        models (vocoder, durations, aligner) stay float32."""
        path = Path(path)
        dev = resolve_device(device)
        compute = resolve_dtype(dtype, dev)
        use_tf32(dev)
        return cls(**load_parts(path, dev, compute))

    def model(self, task: str, student: bool = False) -> SpeechFlowModel:
        if task not in self.models:
            raise ConfigError(f"this bundle has no {task!r} model (it has: {', '.join(self.models)})")
        if student and task not in self.students:
            raise ConfigError(f"this bundle has no few-step student for {task!r} (quality 'fast' is offered for: "
                              f"{', '.join(self.students) or 'no task'})")
        return self.students[task] if student else self.models[task]

    def default_quality(self, task: str) -> str:
        return self.qualities.default(task)

    def task_sampling(self, task: str, quality: str | None = None, **given: Any) -> Sampling:
        """A request's sampling (`model.quality.Qualities.sampling`); the bundle must have the task."""
        self.model(task)
        return self.qualities.sampling(task, quality, given)

    # --- shared steps -------------------------------------------------------------------------------------------
    def features(self, wavs: Sequence[np.ndarray]) -> tuple[Tensor, Tensor]:
        """16 kHz waveforms -> normalised log-mel (B, T, n_mels) and frame mask (B, T), padded to the longest."""
        feats = [self.mel(torch.from_numpy(w).to(self.device))[0] for w in wavs]
        lengths = torch.tensor([f.shape[0] for f in feats], device=self.device)
        padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
        return padded, torch.arange(padded.shape[1], device=self.device)[None] < lengths[:, None]

    def vocode(self, feats: Sequence[Tensor]) -> list[np.ndarray]:
        """(T_i, n_mels) feature sequences -> one waveform (T_i * hop,) each, in padded vocoder batches under the
        frame budget. Each result equals vocoding that sequence alone (the vocoder masks its padding)."""
        order = sorted(range(len(feats)), key=lambda i: -feats[i].shape[0])  # longest first: least padding
        out: list[np.ndarray] = [np.zeros(0, np.float32)] * len(feats)
        with stage("vocoder"):
            for group in pack(order, [feats[i].shape[0] for i in order], VOCODER_BATCH_FRAMES):
                for i, wav in zip(group, self.vocoder.batch([feats[i] for i in group]), strict=True):
                    out[i] = wav.float().cpu().numpy()
        return out

    def pieces(self, finished: Sequence[tuple[Plan, int]]) -> list[Any]:
        """The pieces of finished rows ((plan, row index), each row's ``output`` set), in order: rows whose plan
        vocodes them (TTS chunks) go through the vocoder together, whichever requests they belong to."""
        out = [None if plan.vocode_from is not None else plan.piece(i, _output(plan, i)) for plan, i in finished]
        to_vocode = [k for k, (plan, _) in enumerate(finished) if plan.vocode_from is not None]
        waves = self.vocode([_output(plan, i)[plan.vocode_from :] for plan, i in (finished[k] for k in to_vocode)])
        for k, wav in zip(to_vocode, waves, strict=True):
            out[k] = wav
        return out

    def run(self, plans: Sequence[Plan]) -> list[np.ndarray]:
        """Generate every plan's rows (plans that share a model and solver share live batches, under
        MAX_BATCH_FRAMES, each row on its own plan's sampling settings) and assemble each plan's result."""
        groups: dict[tuple[str, bool, str], list[Row]] = {}
        for plan in plans:
            groups.setdefault((plan.task, plan.sampling.student, plan.sampling.solver), []).extend(plan.rows)
        for (task, student, solver), rows in groups.items():
            with stage("sampling"):
                generate_rows(self.model(task, student), solver, rows, MAX_BATCH_FRAMES)
        finished = [(plan, i) for plan in plans for i in range(len(plan.rows))]
        pieces = iter(self.pieces(finished))
        return [plan.assemble([next(pieces) for _ in plan.rows]) for plan in plans]

    # --- enhancement and separation -----------------------------------------------------------------------------
    def enhance(self, wav: np.ndarray, sr: int, **kwargs) -> tuple[np.ndarray, int]:
        """Noisy speech -> (clean speech (n,), sr) at the input's rate and length."""
        return self.enhance_batch([(wav, sr)], **kwargs)[0]

    def enhance_batch(self, items: Sequence[tuple[np.ndarray, int]], **kwargs) -> list[tuple[np.ndarray, int]]:
        return self._run_task("enhance", items, **kwargs)

    def separate(self, wav: np.ndarray, sr: int, **kwargs) -> tuple[np.ndarray, int]:
        """Two-talker mixture -> ((2, n) speakers, sr) at the input's rate and length."""
        return self.separate_batch([(wav, sr)], **kwargs)[0]

    def separate_batch(self, items: Sequence[tuple[np.ndarray, int]], **kwargs) -> list[tuple[np.ndarray, int]]:
        return self._run_task("separate", items, **kwargs)

    def _run_task(
        self,
        task: str,
        items: Sequence[tuple[np.ndarray, int]],
        *,
        steps: int | None = None,
        solver: str | None = None,
        guidance: float | None = None,
        sway: float | None = None,
        guidance_until: float | None = None,
        ensemble: int | None = None,
        quality: str | None = None,
        seed: int | Sequence[int] = 0,
        reconstruction: str = "mask",
        window_s: float = WINDOW_S,
    ) -> list[tuple[np.ndarray, int]]:
        """The shared task path; sampling settings left None take the defaults (`task_sampling`)."""
        seeds = [seed + i for i in range(len(items))] if isinstance(seed, int) else list(seed)
        s = self.task_sampling(task, quality, steps=steps, guidance=guidance, solver=solver, sway=sway,
                               guidance_until=guidance_until, ensemble=ensemble)
        plans = [self.plan_task(task, wav, sr, seed=k, sampling=s, reconstruction=reconstruction, window_s=window_s)
                 for (wav, sr), k in zip(items, seeds, strict=True)]
        return [(audio, sr) for audio, (_, sr) in zip(self.run(plans), items, strict=True)]

    def plan_task(self, task: str, wav: np.ndarray, sr: int, *, seed: int, sampling: Sampling,
                  reconstruction: str = "mask", window_s: float = WINDOW_S, overlap_s: float = OVERLAP_S) -> Plan:
        """Enhancement or separation of one recording as rows: long inputs in overlapping windows, each drawn
        ``sampling.ensemble`` times (window k, draw j seeded with (seed, k, j)) and the draws' masks averaged
        (`mean_mask_features`); the result is stitched, reconstructed and resampled to the input's rate and length."""
        if reconstruction not in RECONSTRUCTIONS:
            raise ConfigError(f"reconstruction must be one of {RECONSTRUCTIONS}, got {reconstruction!r}")
        model = self.model(task, sampling.student)  # fail before any work if the bundle lacks it
        wav16 = prepare_waveform(wav, sr, self.sample_rate)
        with stage("features"):
            feats, _ = self.features([wav16])
        cond = feats[0]  # (T, n_mels)
        spans = window_spans(cond.shape[0], self.sample_rate / self.mel_config.hop_length, window_s, overlap_s)
        draws = sampling.ensemble
        rows = [Row(cond[a:b], (seed + 1_000_003 * k + 999_983 * j) % 2**31)
                for k, (a, b) in enumerate(spans) for j in range(draws)]
        n_streams = model.config.network.x_dim // self.mel_config.n_mels

        def assemble(outputs: list[Tensor]) -> np.ndarray:
            windows = [mean_mask_features(cond[a:b], outputs[k * draws:(k + 1) * draws], self.mel)
                       for k, (a, b) in enumerate(spans)]
            out = stitch(windows, spans, cond.shape[0], n_streams)
            audio = self.reconstruct(task, wav16, out, reconstruction)  # (n,) or (2, n) at 16 kHz
            audio = np.stack([resample(a, self.sample_rate, sr) for a in audio]) if audio.ndim == 2 else \
                resample(audio, self.sample_rate, sr)
            return audio.astype(np.float32)

        return Plan(task, sampling, rows, assemble=assemble)

    def reconstruct(self, task: str, wav: np.ndarray, feats: Tensor, reconstruction: str) -> np.ndarray:
        """Generated features (T, x_dim) of one input (n,) at 16 kHz -> waveform(s) of the input's length."""
        x = torch.from_numpy(wav).to(self.device)[None]
        n = len(wav)
        if reconstruction == "mask":
            if task == "enhance":
                return mask_reconstruction(x, feats[None], self.mel)[0].cpu().numpy()
            return separation_masks(x, feats[None], self.mel)[0].cpu().numpy()
        streams = feats.chunk(feats.shape[-1] // self.mel_config.n_mels, dim=-1)  # one (T, n_mels) per speaker
        audio = [np.pad(w, (0, max(0, n - len(w))))[:n] for w in self.vocode(streams)]
        return audio[0] if len(audio) == 1 else np.stack(audio)

    # --- text-to-speech ------------------------------------------------------------------------------------------
    def tts(self, text: str, **kwargs) -> tuple[np.ndarray, int]:
        """Text in the voice of a prompt (audio + its transcript) or of a built-in ``voice`` -> (waveform, 16 kHz).
        Keyword arguments as for `plan_tts`, plus ``quality`` and the settings of `model.defaults.Sampling`
        (``steps``, ``solver``, ``guidance``, ``sway``, ``guidance_until``; None: the defaults, `task_sampling`)."""
        return self.tts_with_words(text, **kwargs)[:2]

    def tts_with_words(self, text: str, **kwargs) -> tuple[np.ndarray, int, list[WordTime]]:
        """`tts` plus each word's start and end in seconds of the returned audio (from the phone durations it was
        generated with, so they cost nothing)."""
        given = {f.name: kwargs.pop(f.name, None) for f in fields(Sampling) if f.name != "student"}
        s = self.task_sampling("tts", kwargs.pop("quality", None), **given)
        plan = self.plan_tts(text, sampling=s, **kwargs)
        [audio] = self.run([plan])
        return audio, self.sample_rate, [w for chunk in plan.words or [] for w in chunk]

    def plan_tts(
        self,
        text: str,
        *,
        sampling: Sampling,
        prompt_wav: np.ndarray | None = None,
        prompt_sr: int | None = None,
        prompt_text: str | None = None,
        voice: str | None = None,
        speed: float = 1.0,
        seed: int = 0,
        prompt_alignment: Sequence[tuple[str, int]] | None = None,
    ) -> Plan:
        """TTS as rows: the text split at sentence boundaries, one row per chunk, each after the same prompt (its
        frames known) and seeded seed + chunk; each chunk is vocoded as it finishes, then joined with short
        cross-fades, so the chunks can be streamed in order. ``prompt_alignment`` ((phone, frames) pairs, e.g.
        stored with an uploaded voice by `align_prompt`) skips aligning the prompt again."""
        sampling.one_draw("tts")
        vocab = self._tts_vocab()
        wav, prompt_text = self._prompt(prompt_wav, prompt_sr, prompt_text, voice)
        prompt_feats, prompt = self._aligned_prompt(wav, prompt_text, vocab, prompt_alignment)
        t_p = prompt_feats.shape[0]
        prompt_labels = torch.from_numpy(prompt.labels).to(self.device)
        rows = []
        chunks = plan_chunks(text, vocab, self.durations, prompt, speed)
        for i, chunk in enumerate(chunks):
            t = t_p + len(chunk.labels)
            cond = torch.zeros(t, prompt_feats.shape[1], device=self.device)
            cond[:t_p] = prompt_feats
            phones = torch.cat([prompt_labels, torch.from_numpy(chunk.labels).to(self.device)])
            known_mask = torch.arange(t, device=self.device) < t_p
            rows.append(Row(cond, seed + i, known=cond, known_mask=known_mask, extras={"phones": phones}))
        fade = int(TTS_JOIN_FADE_S * self.sample_rate)  # a chunk's piece: its frames after the prompt, vocoded
        hop = self.mel_config.hop_length  # the vocoder makes hop samples a frame: each piece's length is known now
        offsets = chunk_offsets([len(c.labels) * hop for c in chunks], fade)
        frame_s = hop / self.sample_rate
        words, phones = ([[w.shifted(offset / self.sample_rate) for w in timed(c, frame_s)]
                          for c, offset in zip(chunks, offsets, strict=True)]
                         for timed in (Chunk.word_times, Chunk.phone_times))
        return Plan("tts", sampling, rows, assemble=lambda p: join_with_crossfade(p, fade), vocode_from=t_p,
                    chunk_fade=fade, words=words, phones=phones)

    def align_prompt(self, wav: np.ndarray, sr: int, transcript: str) -> list[tuple[str, int]]:
        """A prompt's phones and their frame counts, as `plan_tts` aligns them (to store with a voice)."""
        vocab = self._tts_vocab()
        wav = prepare_waveform(wav, sr, self.sample_rate)
        check_prompt_length(len(wav), self.sample_rate)
        _, prompt = self._aligned_prompt(wav, transcript, vocab)
        return [(str(p), int(n)) for p, n in zip(prompt.symbols, prompt.durations, strict=True)]

    def _tts_vocab(self) -> PhoneVocab:
        """The TTS model's phone vocabulary, once the bundle is known to have what TTS needs."""
        model = self.model("tts")
        if self.durations is None:
            raise CheckpointError("this bundle's TTS model has no duration model (tts/duration/)")
        return PhoneVocab(model.config.phones)

    def _aligned_prompt(self, wav: np.ndarray, transcript: str, vocab: PhoneVocab,
                        alignment: Sequence[tuple[str, int]] | None = None) -> tuple[Tensor, Prompt]:
        """A 16 kHz prompt -> its features (T_p, n_mels) and its phone alignment: the stored ``alignment`` when it
        covers the prompt's frames, else aligned now (forced aligner, or durations rescaled)."""
        with stage("features"):
            feats, _ = self.features([wav])
        known = known_prompt(alignment, vocab, feats.shape[1]) if alignment else None
        assert self.durations is not None  # _tts_vocab checked
        return feats[0], known or align_prompt(transcript, feats[0], vocab, self.durations, self.aligner)

    def _prompt(self, wav: np.ndarray | None, sr: int | None, text: str | None,
                voice: str | None) -> tuple[np.ndarray, str]:
        """(16 kHz prompt waveform, transcript) from a built-in voice or from the caller's audio + transcript."""
        if voice is not None:
            if voice not in self.voices:
                raise ConfigError(f"unknown voice {voice!r}; this bundle has: {', '.join(self.voices) or 'none'}")
            chosen = self.voices[voice]
            return chosen.wav, chosen.text
        if wav is None or sr is None or not (text and text.strip()):
            raise ConfigError("give a voice, or prompt_wav + prompt_sr + prompt_text (the prompt's transcript)")
        wav = prepare_waveform(wav, sr, self.sample_rate)
        check_prompt_length(len(wav), self.sample_rate)
        return wav, text

    # --- infilling and editing -----------------------------------------------------------------------------------
    def infill(self, wav: np.ndarray, sr: int, spans: Sequence[Span], **kwargs) -> tuple[np.ndarray, int]:
        """Regenerate the given time spans (seconds) of a recording with the pre-trained model; the rest of the
        recording is kept as it was. Returns (float32 waveform, sr) at the input's rate."""
        return self.infill_batch([InfillRequest(wav, sr, spans)], **kwargs)[0]

    def infill_batch(self, requests: Sequence[InfillRequest], *, seed: int | Sequence[int] = 0,
                     **given: Any) -> list[tuple[np.ndarray, int]]:
        """`infill` of several recordings together; ``given``: steps, solver, guidance, sway, guidance_until,
        ensemble (None: the pre-trained model's defaults)."""
        s = self.task_sampling("pretrain", **given)
        seeds = [seed + i for i in range(len(requests))] if isinstance(seed, int) else list(seed)
        plans = [self.plan_infill(r, sampling=s, seed=k) for r, k in zip(requests, seeds, strict=True)]
        return [(audio, r.sr) for audio, r in zip(self.run(plans), requests, strict=True)]

    def plan_infill(self, request: InfillRequest, *, sampling: Sampling, seed: int) -> Plan:
        """Infilling as one row: the recording's features with the spans' frames masked out (to generate) and the
        rest known; the generated audio is spliced into the original inside the spans (`model.editing.splice`)."""
        self.model("pretrain")
        wav = prepare_waveform(request.wav, request.sr, self.sample_rate)
        feats, mask = self.features([wav])
        fps = self.sample_rate / self.mel_config.hop_length
        layout = span_layout(span_frames(request.spans, len(wav) / self.sample_rate, fps, mask.shape[1]))
        if layout.generate.sum() > MAX_EDIT_S * fps:
            raise SettingError(f"the spans cover {layout.generate.sum() / fps:.1f} s of frames; at most "
                               f"{MAX_EDIT_S:g} s can be regenerated", param="spans")
        return splice_plan("pretrain", sampling, feats[0], layout, request.wav, request.sr, seed, self.vocode,
                           self.mel_config.hop_length, self.sample_rate, "spans")

    def edit(self, wav: np.ndarray, sr: int, text: str, transcript: str | None = None, *, seed: int = 0,
             speed: float = 1.0, span: Span | None = None, **given: Any) -> tuple[np.ndarray, int]:
        """Make a recording say ``text`` instead of ``transcript`` (None: what the recogniser hears), in its own
        voice: only the changed words and a short margin are regenerated (the TTS model, their durations in the
        context of the speaker's), the rest is the input's own samples. With ``span`` (seconds), ``text`` is what
        that stretch should say instead. Returns (float32 waveform, sr)."""
        if transcript is None:
            transcript = transcribe(prepare_waveform(wav, sr, self.sample_rate), self.sample_rate)
        plan = self.plan_edit(wav, sr, text, transcript, sampling=self.task_sampling("tts", **given), seed=seed,
                              speed=speed, span=span)
        return self.run([plan])[0], sr

    def plan_edit(self, wav: np.ndarray, sr: int, text: str, transcript: str, *, sampling: Sampling, seed: int,
                  speed: float = 1.0, span: Span | None = None) -> Plan:
        """An edit as TTS rows: the edited recording's frames (`model.editing.edit_layout`), the kept ones known
        and every frame labelled with its phone; the regenerated runs are spliced into the original."""
        vocab = self._tts_vocab()
        feats, _ = self.features([prepare_waveform(wav, sr, self.sample_rate)])
        assert self.durations is not None  # _tts_vocab checked
        layout, _ = edit_layout(feats[0], transcript, text, vocab, self.durations, self.aligner, speed, span,
                                speech_frames(self.mel.denormalize(feats[0])))
        return splice_plan("tts", sampling, feats[0], layout, wav, sr, seed, self.vocode, self.mel_config.hop_length,
                           self.sample_rate, "text" if span is None else "spans")


def _output(plan: Plan, index: int) -> Tensor:
    """A finished row's generated features (T, x_dim)."""
    output = plan.rows[index].output
    assert output is not None, "the row has not finished"
    return output
