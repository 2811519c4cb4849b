"""The service itself: ``GET /v1/models`` (the bundle's models and the endpoints that serve them), ``/metrics``
(Prometheus), and the probes ``/livez`` and ``/readyz`` (open: orchestrators call them without a key)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from .. import paths
from ..engine import SERVED_TASKS
from ..lifecycle import ServiceRuntime
from ..schemas import ErrorEnvelope, Health, ModelCard, ModelList

ENDPOINTS = {"enhance": paths.ENHANCE, "separate": paths.SEPARATE, "tts": paths.TTS}


def router(runtime: ServiceRuntime) -> APIRouter:
    api = APIRouter(tags=["service"])

    @api.get(paths.MODELS, response_model=ModelList)
    async def models() -> ModelList:
        """The bundle's models and the endpoints that serve them."""
        engine = runtime.engine
        cards = [ModelCard(id=task, task=task, endpoint=ENDPOINTS.get(task) if task in SERVED_TASKS else None)
                 for task in engine.tasks]
        return ModelList(data=cards, engine=engine.describe())

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
