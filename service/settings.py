"""Service configuration: ``SPEECHFLOW_*`` environment variables (the same names as ``speechflow serve`` flags)."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model.defaults import MAX_ENSEMBLE

Solver = Literal["euler", "midpoint", "heun", "rk4"]
DRAIN_MARGIN_S = 5.0  # on top of the request timeout: the longest an admitted request can still take


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPEECHFLOW_", extra="ignore")

    # model
    bundle: str = "checkpoints/demo"
    device: str = "auto"  # auto = CUDA when present, else CPU; cpu, cuda, cuda:N
    # the flow networks' compute dtype; auto = bf16 where the device runs it fast (CUDA with bf16, a CPU with bf16
    # matrix units), fp16 on older GPUs, else fp32 (model/devices.py). The ODE state and audio stay float32.
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    # None: each task's own default (model/defaults.py: Euler NFE 4 + guidance 2 for enhance/separate, Euler
    # NFE 4 + guidance 1.5 for tts, all on a swayed time grid)
    default_steps: int | None = Field(None, ge=1, le=256)
    default_solver: Solver | None = None
    # enhance / separate: draws whose masks are averaged (None: the task's, 4 / 8); 1 buys throughput with quality
    default_ensemble: int | None = Field(None, ge=1, le=MAX_ENSEMBLE)
    max_steps: int = Field(128, ge=1, le=1024)  # a request cannot buy more network evaluations than this

    # network; loopback by default, the Docker image sets 0.0.0.0
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    # scheduling (service/scheduler.py): rows of one sampling key share a live batch that advances one ODE step at
    # a time; a live batch holds at most max_batch_size rows and max_batch_frames padded feature frames (100/s).
    # None: chosen for the device (placement.default_batch_frames; docs/results/scheduling.md#frame-budget)
    max_batch_frames: int | None = Field(None, ge=1)
    max_batch_size: int = Field(16, ge=1)
    max_wait_ms: float = Field(10.0, ge=0)  # a new live batch waits this long for company before its first step
    max_queue: int = Field(64, ge=1)  # admitted requests not yet started (all tasks) before 429
    # step: rows join and leave between steps, live batches take turns; request: request-level batching
    # (a batch forms when none runs and runs to the end), kept for comparison
    scheduling: Literal["step", "request"] = "step"
    # where pre- and post-processing (features, text frontend, durations, prompt alignment, vocoder, stitching)
    # run: engine = on the engine thread between steps; worker = on a thread of their own beside the steps;
    # auto = worker on an accelerator, engine on a CPU (where both would share the same cores)
    processing: Literal["auto", "engine", "worker"] = "auto"
    # a streamed TTS request's sentences: sequential = each joins when the one before has finished (its first audio
    # after one sentence's generation where rows cost in proportion, a CPU); together = all at once (an
    # accelerator, where a step of several rows costs about one); auto = sequential on a CPU, together elsewhere
    stream_order: Literal["auto", "sequential", "together"] = "auto"
    request_timeout_s: float = Field(60.0, gt=0)  # from queueing to result, else 504
    # threads that decode uploads, encode results and read the voice store, beside the engine's (a bound: a burst
    # of large uploads decodes this many at a time)
    io_threads: int = Field(4, ge=1)
    # SIGTERM: refuse new work and finish what was admitted for at most this long, then fail the rest (503) and
    # exit. None: request_timeout_s + 5 s, the longest an admitted request can take. Keep it within the
    # orchestrator's grace period (compose's stop_grace_period, Kubernetes' terminationGracePeriodSeconds)
    drain_timeout_s: float | None = Field(None, gt=0)
    # failed steps in a row (each bisecting its batch) before the engine counts as broken: /readyz 503, exit 1.
    # Errors the device cannot recover from (CUDA illegal address, device-side assert) end it at once
    max_step_failures: int = Field(8, ge=1)

    # limits on what a request may send
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1)  # the whole request body, multipart overhead included
    max_audio_seconds: float = Field(60.0, gt=0)
    max_text_chars: int = Field(2000, ge=1)
    max_prompt_text_chars: int = Field(500, ge=1)  # the transcript of an uploaded prompt (a 15 s prompt: ~250)
    # bounded work per request (refused up front with 413 request_too_costly): generation rows (windows times
    # ensemble draws, text chunks), generated frames, and the estimated compute time, which must fit in
    # request_timeout_s. 128 rows: a max_audio_seconds upload (12 windows) at the largest default ensemble (8)
    max_request_rows: int = Field(128, ge=1)
    max_request_frames: int = Field(60_000, ge=1)

    # uploaded voices (POST /v1/audio/voices), kept across restarts: a SQLite file in data_dir by default
    data_dir: str = "speechflow-data"
    # postgresql://user:password@host/db: the voices live there instead, shared by every replica (service/voices.py)
    database_url: SecretStr | None = None  # a secret: it may hold the password (never in repr or logs)
    max_voices: int = Field(1000, ge=0)

    # security: Bearer keys; empty = open. Probes are always open, /metrics only when protect_metrics is false.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    protect_metrics: bool = False
    # an upload's decoded size (samples x channels x 4 bytes, read from its header before decoding) above this:
    # 413 audio_too_large. Bounds what a small compressed upload can cost in memory (service/uploads.py)
    max_decoded_bytes: int = Field(128 * 1024 * 1024, ge=1)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        """Accept a JSON list or a comma-separated string (friendlier in a shell or a compose file)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [k.strip() for k in text.split(",") if k.strip()]
        return value

    @property
    def drain_s(self) -> float:
        return self.drain_timeout_s if self.drain_timeout_s is not None else self.request_timeout_s + DRAIN_MARGIN_S

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000.0
