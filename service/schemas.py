"""Request and response models (they are also what /docs shows)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, get_args

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, Json, field_validator, model_validator

from model.defaults import MAX_ENSEMBLE, TASK_SAMPLING

from .openai_names import OPENAI_MAX_INPUT_CHARS, OPENAI_SAMPLE_RATE
from .settings import Solver

ResponseFormat = Literal["wav", "flac", "ogg", "pcm", "mp3", "opus"]
RESPONSE_FORMATS: tuple[str, ...] = get_args(ResponseFormat)
SPEECH_FORMATS = (*RESPONSE_FORMATS, "aac")  # /v1/audio/speech: OpenAI's six and ogg (aac is speech-only)
StreamFormat = Literal["audio", "sse"]
Granularity = Literal["word", "phone"]  # timings from the phone durations TTS generates with (docs/serving.md)
TIMESTAMPS_HELP = ('["word"] and/or ["phone"]: each word\'s (phone\'s) start and end in seconds of the audio; with '
                   "stream_format sse as speech.timestamps.delta events, else a JSON body with the audio in base64 "
                   "and the words (phones)")
_STREAM_MODES = ("audio: the audio streamed as each sentence is ready (chunked; flac, whose header needs the total "
                 "length, comes when generation ends); sse: speech.audio.delta events with base64 audio, then "
                 "speech.audio.done")
STREAM_FORMAT_HELP = f"{_STREAM_MODES}; absent: one complete file with timing headers"
SPEECH_STREAM_FORMAT_HELP = (f"{_STREAM_MODES}. audio is the default, as OpenAI's: a client that reads the whole body "
                             "gets one complete file")
MAX_INSTRUCTIONS_CHARS = 4096  # OpenAI's limit
Reconstruction = Literal["mask", "vocoder"]
Quality = Literal["fast", "full"]  # model.defaults.QUALITIES
MAX_SEED = 2**31 - 1
UPLOAD_FIELDS = {"file"}  # multipart file fields of the task endpoints
MIN_SPEED, MAX_SPEED = 0.25, 4.0  # model.duration.SPEED_RANGE (also OpenAI's range)
ENSEMBLE_HELP = ("independent draws whose masks are averaged (less sampling noise; each costs a full sampling run); "
                 "default: the server's default_ensemble if set, else the task's "
                 f"({TASK_SAMPLING['enhance'].ensemble} for enhance, {TASK_SAMPLING['separate'].ensemble} for "
                 "separate)")
TTS_GUIDANCE = f"classifier-free guidance weight (1 = none; default {TASK_SAMPLING['tts'].guidance:g})"
TTS_QUALITY_HELP = ("fast: the TTS model's guided student (guidance folded in: half the network passes), where the "
                    "bundle has one; full: the TTS model itself; default: the bundle's choice (GET /v1/models)")


class StrictForm(BaseModel):
    """A multipart form whose unknown fields are an error, so a typo ("step") is not silently ignored."""

    uploads: ClassVar[frozenset[str]] = frozenset()  # the endpoint's file fields, which FastAPI hands over too

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_fields(cls, data: Any) -> Any:
        # FastAPI hands the whole form to the model, the upload included; extra="forbid" would reject the upload
        if isinstance(data, dict):
            unknown = sorted(set(data) - cls._known_fields() - cls.uploads)
            if unknown:
                raise ValueError(f"unknown form field(s): {', '.join(unknown)}")
        return data

    @classmethod
    def _known_fields(cls) -> set[str]:
        names = set(cls.model_fields)
        for field in cls.model_fields.values():
            alias = field.validation_alias
            if isinstance(alias, str):
                names.add(alias)
            elif isinstance(alias, AliasChoices):
                names.update(choice for choice in alias.choices if isinstance(choice, str))
        return names


class TaskForm(StrictForm):
    """Form fields of /v1/enhance and /v1/separate (besides ``file``). Unknown fields are an error, so a typo
    ("step") is not silently ignored."""

    uploads: ClassVar[frozenset[str]] = frozenset(UPLOAD_FIELDS)

    steps: int | None = Field(None, ge=1, description="network evaluations (NFE) of the ODE solver; default: the "
                              "server's default_steps if set, else the task's; at most max_steps")
    solver: Solver | None = Field(None, description="ODE solver; default: the server's default_solver if "
                                  "set, else the task's (Euler)")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="noise seed; default: random (echoed in X-Seed)")
    guidance: float | None = Field(None, ge=0.0, le=10.0, description="classifier-free guidance weight (1 = none); "
                                   "default: the task's (2 for enhance and separate)")
    ensemble: int | None = Field(None, ge=1, le=MAX_ENSEMBLE, description=ENSEMBLE_HELP)
    quality: Quality | None = Field(None, description="fast: the task's few-step student (one network pass per "
                                    "window, no guidance, no draws), where the bundle has one; full: the teacher "
                                    "at the task's sampling defaults; default: the bundle's choice per task (GET "
                                    "/v1/models shows it)")
    reconstruction: Reconstruction = Field("mask", description="mask: per-band mask on the input's STFT (keeps its "
                                           "phase); vocoder: the bundle's vocoder")
    response_format: ResponseFormat = Field("wav", description="pcm = raw 16-bit little-endian, interleaved")


class TtsSamplingForm(StrictForm):
    """The TTS model's sampling fields, which /v1/tts and /v1/audio/edit share."""

    quality: Quality | None = Field(None, description=TTS_QUALITY_HELP)
    steps: int | None = Field(None, ge=1, description="network evaluations (NFE) of the ODE solver; default: the "
                              "server's default_steps if set, else the task's; at most max_steps")
    solver: Solver | None = Field(None, description="ODE solver; default: the server's default_solver if "
                                  "set, else the task's (Euler)")
    cfg: float | None = Field(None, ge=0.0, le=10.0, validation_alias=AliasChoices("cfg", "guidance"),
                              description=f"{TTS_GUIDANCE}; 'guidance' is accepted too")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="noise seed; default: random (echoed in X-Seed)")


class TtsForm(TtsSamplingForm):
    """Form fields of /v1/tts (besides the optional ``prompt`` upload). Give ``voice`` (a built-in voice, see
    /v1/voices) or ``prompt`` (0.5-15 s of the voice to use) with ``prompt_text`` (what the prompt says)."""

    uploads: ClassVar[frozenset[str]] = frozenset({"prompt"})

    text: str = Field(description="what to say (at most the server's max_text_chars characters)")
    voice: str | None = Field(None, description="a built-in voice (see /v1/voices) instead of a prompt")
    prompt_text: str | None = Field(None, description="the transcript of the uploaded prompt")
    speed: float = Field(1.0, ge=MIN_SPEED, le=MAX_SPEED, description="speaking rate (2 = twice as fast)")
    response_format: ResponseFormat = Field("wav", validation_alias=AliasChoices("response_format", "format"),
                                             description="16 kHz mono (the model's rate); pcm = raw 16-bit "
                                             "little-endian; 'format' is accepted too")
    stream_format: StreamFormat | None = Field(None, description=STREAM_FORMAT_HELP)
    timestamp_granularities: list[Granularity] | None = Field(
        None, validation_alias=AliasChoices("timestamp_granularities", "timestamp_granularities[]"),
        description=TIMESTAMPS_HELP + "; a repeated form field ('timestamp_granularities[]' is accepted too)")


class EditForm(TtsSamplingForm):
    """Form fields of /v1/audio/edit (besides ``file``, the recording)."""

    uploads: ClassVar[frozenset[str]] = frozenset(UPLOAD_FIELDS)

    text: str = Field(description="what the recording should say: its transcript with the words to change changed")
    transcript: str | None = Field(None, description="what the recording says; default: what the server's "
                                   "recogniser hears (echoed in X-Transcript)")
    speed: float = Field(1.0, ge=MIN_SPEED, le=MAX_SPEED, description="speaking rate of the new words relative to "
                         "the speaker's own (2 = twice as fast)")
    response_format: ResponseFormat = Field("wav", description="at the upload's rate; pcm = raw 16-bit "
                                            "little-endian. wav, flac and pcm of a 16-bit upload give its kept "
                                            "samples back bit for bit")


class InfillForm(StrictForm):
    """Form fields of /v1/audio/infill (besides ``file``, the recording)."""

    uploads: ClassVar[frozenset[str]] = frozenset(UPLOAD_FIELDS)

    spans: Json[list[tuple[float, float]]] = Field(description='the time spans to regenerate, in seconds, as JSON: '
                                                   '[[start, end], ...], e.g. [[1.2, 1.6]]')
    text: str | None = Field(None, description="what the one span should say instead: the TTS model regenerates it "
                             "in the recording's voice; default: the pre-trained model fills it from the audio "
                             "around it")
    transcript: str | None = Field(None, description="with text: what the recording says; default: what the "
                                   "server's recogniser hears")
    steps: int | None = Field(None, ge=1, description="network evaluations (NFE) of the ODE solver; default: the "
                              "server's default_steps if set, else the pre-trained model's; at most max_steps")
    solver: Solver | None = Field(None, description="ODE solver; default: the server's default_solver if set, "
                                  "else the pre-trained model's")
    guidance: float | None = Field(None, ge=0.0, le=10.0, description="classifier-free guidance weight (1 = none; "
                                   "default: the model's)")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="noise seed; default: random (echoed in X-Seed)")
    response_format: ResponseFormat = Field("wav", description="at the upload's rate; pcm = raw 16-bit "
                                            "little-endian")


class VoiceRef(BaseModel):
    """OpenAI's voice object form: ``{"id": "..."}``."""

    model_config = ConfigDict(extra="forbid")

    id: str


class SpeechRequest(BaseModel):
    """OpenAI-compatible speech request (``POST /v1/audio/speech``). ``steps``, ``solver``, ``cfg`` and ``seed`` are
    SpeechFlow extensions; other unknown fields are an error rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("tts", description="the TTS model id that /v1/models lists ('tts'); OpenAI's names tts-1, "
                       "tts-1-hd and gpt-4o-mini-tts are accepted as aliases for it")
    input: str = Field(description=f"what to say: at most {OPENAI_MAX_INPUT_CHARS:,} characters, OpenAI's limit "
                       "(or the server's max_text_chars where it sets one); a text whose generation would not fit "
                       "the server's cost bounds (request timeout, rows, frames) is refused (413 request_too_costly)")
    voice: str | VoiceRef = Field(description="a voice of /v1/voices: a built-in voice or one of OpenAI's names "
                                  "(alloy, echo, ...; each is an alias of a built-in voice), as a string or as "
                                  '{"id": ...}')
    instructions: str | None = Field(None, max_length=MAX_INSTRUCTIONS_CHARS,
                                     description="accepted for compatibility and ignored: this model has no "
                                     "instruction-following (use speed for the rate); the response says so in "
                                     "X-Instructions: ignored")
    # a str checked by _served_format (so that the 422 lists the formats), listed as an enum for the schema's readers
    response_format: str = Field("mp3", description=f"mp3 (OpenAI's default), opus, aac (ADTS), wav, flac, ogg or "
                                 f"pcm (raw 16-bit little-endian, no header), all {OPENAI_SAMPLE_RATE // 1000} kHz "
                                 "mono as OpenAI's", json_schema_extra={"enum": list(SPEECH_FORMATS)})
    stream_format: StreamFormat = Field("audio", description=SPEECH_STREAM_FORMAT_HELP)
    speed: float = Field(1.0, ge=MIN_SPEED, le=MAX_SPEED, description="speaking rate, 0.25-4")
    quality: Quality | None = Field(None, description=TTS_QUALITY_HELP + "; model tts-1-hd asks for full")
    steps: int | None = Field(None, ge=1, description="NFE of the ODE solver (default: the server's)")
    solver: Solver | None = Field(None, description="ODE solver (default: the server's)")
    cfg: float | None = Field(None, ge=0.0, le=10.0, description=TTS_GUIDANCE)
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="noise seed; default: random (echoed in X-Seed)")
    timestamp_granularities: list[Granularity] | None = Field(None, description=TIMESTAMPS_HELP)

    @field_validator("response_format")
    @classmethod
    def _served_format(cls, value: str) -> str:
        if value not in SPEECH_FORMATS:
            raise ValueError(f"{value!r} is not supported; use one of: {', '.join(SPEECH_FORMATS)}")
        return value

    @property
    def voice_id(self) -> str:
        return self.voice.id if isinstance(self.voice, VoiceRef) else self.voice


class VoiceCard(BaseModel):
    id: str
    transcript: str = Field(description="what the voice's prompt says")
    aliases: list[str] = Field(default_factory=list, description="OpenAI voice names that speak in this voice")
    source: Literal["builtin", "uploaded"] = "builtin"


class VoiceForm(StrictForm):
    """Form fields of ``POST /v1/audio/voices`` (besides the ``audio_sample`` upload: 0.5-15 s of the voice)."""

    uploads: ClassVar[frozenset[str]] = frozenset({"audio_sample"})

    name: str = Field(description="a name for the voice (1-64 characters; not unique: the id is)")
    consent: bool = Field(description="must be true: the speaker agreed to their voice being cloned")
    transcript: str | None = Field(None, description="what audio_sample says; absent: transcribed by the "
                                   "server's recogniser (pocketsphinx), and the response says so")


class StoredVoiceCard(BaseModel):
    id: str = Field(description="voice_...: use it as the voice of /v1/tts and /v1/audio/speech")
    object: Literal["audio.voice"] = "audio.voice"
    name: str
    transcript: str
    transcribed: bool = Field(description="true when the transcript came from the server's recogniser")
    seconds: float
    created_at: int


class StoredVoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[StoredVoiceCard]


class VoiceDeleted(BaseModel):
    id: str
    object: Literal["audio.voice.deleted"] = "audio.voice.deleted"
    deleted: bool = True


class VoiceList(BaseModel):
    voices: list[VoiceCard]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time the bundle was written (else the server's start)")
    owned_by: str = "speechflow"
    task: str
    endpoint: str | None = Field(None, description="where to use it (tts: also /v1/audio/speech); null: in the "
                                 "bundle but not served")
    alias_of: str | None = Field(None, description="for OpenAI's model names: the model they name on this server")


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
