"""The service itself: ``GET /v1/models`` (the bundle's models and the endpoints that serve them, and OpenAI's
names for the TTS model), ``/metrics`` (Prometheus), and the probes ``/livez`` and ``/readyz`` (open:
orchestrators call them without a key)."""

from __future__ import annotations

import calendar
import time
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from .. import paths
from ..errors import ModelNotFound
from ..lifecycle import ServiceRuntime
from ..openai_names import OPENAI_SPEECH_MODELS, TTS_MODEL_ID
from ..schemas import ErrorEnvelope, Health, ModelCard, ModelList

# the endpoint that serves each model (TTS is also /v1/audio/speech and /v1/audio/edit)
ENDPOINTS = {"enhance": paths.ENHANCE, "separate": paths.SEPARATE, "tts": paths.TTS, "pretrain": paths.INFILL}


def router(runtime: ServiceRuntime) -> APIRouter:
    api = APIRouter(tags=["service"])
    started = int(time.time())

    def listing() -> ModelList:
        engine = runtime.engine
        info = engine.describe()
        created = _unix_time(info.get("updated")) or started
        cards = [ModelCard(id=task, created=created, task=task, endpoint=ENDPOINTS.get(task))
                 for task in engine.tasks]
        if "tts" in engine.tasks:
            cards += [ModelCard(id=name, created=created, task="tts", endpoint=paths.SPEECH,
                                alias_of=TTS_MODEL_ID) for name in OPENAI_SPEECH_MODELS]
        return ModelList(data=cards, engine=info)

    @api.get(paths.MODELS, response_model=ModelList)
    async def models() -> ModelList:
        """The bundle's models and the endpoints that serve them; with a TTS model, also OpenAI's names for it
        (tts-1, tts-1-hd, gpt-4o-mini-tts: ``alias_of`` 'tts', served by /v1/audio/speech)."""
        return listing()

    @api.get(paths.MODELS + "/{model_id}", response_model=ModelCard, responses={404: {"model": ErrorEnvelope}})
    async def model(model_id: str) -> ModelCard:
        """One model of the list (what ``client.models.retrieve`` asks); 404 ``model_not_found`` otherwise."""
        listed = listing().data
        for card in listed:
            if card.id == model_id:
                return card
        raise ModelNotFound(f"no model {model_id!r}: this server has {', '.join(c.id for c in listed)}",
                            param="model_id")

    @api.get(paths.METRICS, response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics (behind the API key only when protect_metrics is set)."""
        body, media_type = runtime.metrics.render()
        return Response(body, media_type=media_type)

    return api


def probes(runtime: ServiceRuntime) -> APIRouter:
    api = APIRouter(tags=["service"])

    @api.get(paths.LIVEZ, response_model=Health)
    async def livez() -> Health:
        """The process answers (no model work)."""
        return Health(status="ok")

    @api.get(paths.READYZ, response_model=Health, responses={503: {"model": ErrorEnvelope}})
    async def readyz() -> Health:
        """200 once the model is loaded and warm; 503 before that and while shutting down."""
        error = runtime.admission_error()
        if error is not None:
            raise error
        return Health(status="ready")

    return api


def _unix_time(stamp: Any) -> int | None:
    """The bundle's "updated" stamp (UTC, ISO 8601 to the second, as model.bundle writes it) -> Unix time."""
    try:
        return calendar.timegm(time.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None
