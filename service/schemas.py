"""Request and response models (they are also what /docs shows)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from .settings import Solver

ResponseFormat = Literal["wav", "flac", "ogg", "pcm"]
Reconstruction = Literal["mask", "vocoder"]
MAX_SEED = 2**31 - 1
UPLOAD_FIELDS = {"file"}  # multipart file fields of the task endpoints


class TaskForm(BaseModel):
    """Form fields of /v1/enhance and /v1/separate (besides ``file``). Unknown fields are an error, so a typo
    ("step") is not silently ignored."""

    steps: int | None = Field(None, ge=1, description="network evaluations (NFE) of the ODE solver; default: the "
                              "server's default_steps, at most its max_steps")
    solver: Solver | None = Field(None, description="ODE solver; default: the server's default_solver")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="noise seed; default: random (echoed in X-Seed)")
    guidance: float = Field(1.0, ge=0.0, le=10.0, description="classifier-free guidance weight (1 = none)")
    reconstruction: Reconstruction = Field("mask", description="mask: per-band mask on the input's STFT (keeps its "
                                           "phase); vocoder: the bundle's vocoder")
    response_format: ResponseFormat = Field("wav", description="pcm = raw 16-bit little-endian, interleaved")

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_fields(cls, data: Any) -> Any:
        # FastAPI hands the whole form to the model, the upload included; extra="forbid" would reject the upload
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.model_fields) - UPLOAD_FIELDS)
            if unknown:
                raise ValueError(f"unknown form field(s): {', '.join(unknown)}")
        return data


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "speechflow"
    task: str
    endpoint: str | None = Field(None, description="where to use it; null: in the bundle but not served yet")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
    engine: dict[str, Any] = Field(default_factory=dict)


class Health(BaseModel):
    status: str


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str
    param: str | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorDetail
