"""The service's URL paths, in one place: the routes, the middleware's policies and the metrics labels use them."""

from __future__ import annotations

ENHANCE = "/v1/enhance"
SEPARATE = "/v1/separate"
TTS = "/v1/tts"
SPEECH = "/v1/audio/speech"
VOICES = "/v1/voices"
AUDIO_VOICES = "/v1/audio/voices"  # uploaded voices (and /v1/audio/voices/{id})
EDIT = "/v1/audio/edit"
INFILL = "/v1/audio/infill"
MODELS = "/v1/models"
LIVEZ = "/livez"
READYZ = "/readyz"
METRICS = "/metrics"
STATIC = "/static/"  # the demo page's script and style, open like the page itself

TASK_ROUTES = {ENHANCE: "enhance", SEPARATE: "separate", TTS: "tts", SPEECH: "tts", AUDIO_VOICES: "tts",
               EDIT: "tts", INFILL: "pretrain"}  # path -> the model it needs (and the metrics task label)
# requests that wait in the step loop's queue (429 when full)
QUEUED_ROUTES = {ENHANCE, SEPARATE, TTS, SPEECH, EDIT, INFILL}
# multipart/form-data bodies (TTS with a voice: urlencoded too)
UPLOAD_ROUTES = {ENHANCE, SEPARATE, TTS, AUDIO_VOICES, EDIT, INFILL}
JSON_ROUTES = {SPEECH}  # application/json bodies
# never behind an API key: probes must work for orchestrators, and the docs describe how to authenticate
OPEN_PATHS = {LIVEZ, READYZ, "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc", "/"}
