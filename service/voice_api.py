"""The voices API: ``POST /v1/audio/voices`` (multipart ``audio_sample``, ``name``, ``consent``, optional
``transcript``), ``GET /v1/audio/voices``, ``DELETE /v1/audio/voices/{id}``, and how a request's ``voice`` becomes
a TTS input (a built-in voice, an OpenAI alias of one, or an uploaded voice).

With API keys, another key's voice does not exist as far as a caller can tell: it is not listed, and using it is
the same 422 as an unknown voice (only DELETE says 403, to tell the caller that the id is not theirs to remove)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import TYPE_CHECKING

from fastapi import UploadFile

from model import recognizer
from model.duration import DurationError
from model.errors import ConfigError
from model.text import TextError

from .engine import Engine, TtsInput
from .errors import Forbidden, InvalidParameter, NotFound, ServiceError, TextTooLong
from .schemas import StoredVoiceCard, StoredVoiceList, VoiceCard, VoiceDeleted, VoiceForm, VoiceList
from .speech import openai_aliases
from .voices import StoredVoice, VoiceStore, request_owner

if TYPE_CHECKING:
    from .runtime import ServiceRuntime

MAX_NAME_CHARS = 64
log = logging.getLogger(__name__)


class VoicesUnavailable(ServiceError):
    """The data directory cannot hold the voices (not writable, a broken database): a server fault, said so."""

    status, type, code = 503, "service_unavailable", "voices_unavailable"


class VoiceAPI:
    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self._store: VoiceStore | None = None

    @property
    def store(self) -> VoiceStore:
        """The store, opened on first use (a server that never sees an uploaded voice never writes one)."""
        if self._store is None:
            directory = self.runtime.settings.data_dir
            try:
                self._store = VoiceStore(directory)
            except (OSError, sqlite3.Error) as e:
                raise VoicesUnavailable(f"the voices store in {directory!r} (SPEECHFLOW_DATA_DIR) cannot be opened: "
                                        f"{e}") from e
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    # --- what a request's voice means ---------------------------------------------------------------------------
    async def tts_input(self, engine: Engine, voice: str, text: str, speed: float, param: str) -> TtsInput:
        stored = await asyncio.to_thread(self.store.get, voice) if voice.startswith("voice_") else None
        if stored is not None and self._visible(stored):
            wav = await asyncio.to_thread(self.store.audio, stored)
            return TtsInput(text, prompt=wav, prompt_text=stored.transcript, speed=speed,
                            alignment=tuple(stored.alignment))
        return TtsInput(text, voice=self.builtin(engine, voice, param), speed=speed)

    def builtin(self, engine: Engine, voice: str, param: str) -> str:
        """A built-in voice id, or an OpenAI voice name -> the built-in voice it is an alias of."""
        if voice in engine.voices:
            return voice
        aliases = openai_aliases(list(engine.voices))
        if voice in aliases:
            return aliases[voice]
        known = ", ".join(engine.voices) or "none (upload a prompt to /v1/tts instead)"
        openai = f"; OpenAI's names ({', '.join(aliases)}) are aliases of them" if aliases else ""
        raise InvalidParameter(f"unknown voice {voice!r}; this server's voices: {known}{openai}; uploaded voices "
                               "are voice_... ids (GET /v1/audio/voices)", param=param)

    def catalogue(self, engine: Engine) -> VoiceList:
        aliases = openai_aliases(list(engine.voices))
        builtin = [VoiceCard(id=v.id, transcript=v.transcript, aliases=[a for a, t in aliases.items() if t == v.id])
                   for v in engine.voices.values()]
        try:
            stored = [v for v in self.store.list() if self._visible(v)]
        except VoicesUnavailable:
            log.warning("listing the built-in voices only", exc_info=True)
            stored = []
        uploaded = [VoiceCard(id=v.id, transcript=v.transcript, source="uploaded") for v in stored]
        return VoiceList(voices=builtin + uploaded)

    # --- the voices endpoints ---------------------------------------------------------------------------------
    async def create(self, form: VoiceForm, sample: UploadFile) -> StoredVoiceCard:
        runtime = self.runtime
        engine = runtime._serving("tts")
        settings = runtime.settings
        if not form.consent:
            raise InvalidParameter("consent must be true: only upload a voice whose speaker agreed to it being "
                                   "cloned", param="consent")
        name = form.name.strip()
        if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise InvalidParameter(f"name must be 1-{MAX_NAME_CHARS} printable characters", param="name")
        if len(await asyncio.to_thread(self.store.list)) >= settings.max_voices:
            raise InvalidParameter(f"this server holds at most {settings.max_voices} uploaded voices; delete one "
                                   "first (DELETE /v1/audio/voices/{id})", param="audio_sample")
        decoded = await runtime._decode_prompt(engine, sample, param="audio_sample")
        transcript, transcribed = (form.transcript or "").strip(), False
        if len(transcript) > settings.max_prompt_text_chars:
            raise TextTooLong(f"transcript is {len(transcript)} characters; the limit is "
                              f"{settings.max_prompt_text_chars}", param="transcript")
        if not transcript:
            if not recognizer.available():
                raise InvalidParameter("give the transcript: this server has no speech recogniser installed "
                                       "(pip install 'speechflow[asr]')", param="transcript")
            transcript, transcribed = await asyncio.to_thread(recognizer.transcribe, decoded.wav), True
            if not transcript:
                raise InvalidParameter("the recogniser heard no words in audio_sample; give the transcript",
                                       param="transcript")
        try:
            alignment = await runtime._on_engine_thread(engine.align_prompt, decoded.wav, transcript)
        except (TextError, DurationError, ConfigError) as e:
            raise InvalidParameter(f"the transcript does not fit the audio: {e}", param="transcript") from e
        voice = await asyncio.to_thread(self.store.add, name, decoded.wav, transcript, transcribed, alignment,
                                        request_owner.get())
        return _card(voice)

    def _visible(self, voice: StoredVoice) -> bool:
        """Whether the caller may see, use or delete ``voice``: always on an open server; with keys, only the key
        that made it (a voice uploaded while the server was open belongs to no key)."""
        return not self.runtime.settings.api_keys or voice.owner == request_owner.get()

    async def list(self) -> StoredVoiceList:
        self.runtime._serving("tts")
        voices = await asyncio.to_thread(self.store.list)
        return StoredVoiceList(data=[_card(v) for v in voices if self._visible(v)])

    async def delete(self, voice_id: str) -> VoiceDeleted:
        self.runtime._serving("tts")
        voice = await asyncio.to_thread(self.store.get, voice_id)
        if voice is None:
            raise NotFound(f"no uploaded voice {voice_id!r}", param="voice_id")
        if not self._visible(voice):
            raise Forbidden("only the API key that created this voice may delete it", param="voice_id")
        await asyncio.to_thread(self.store.delete, voice_id)
        return VoiceDeleted(id=voice_id)


def _card(voice: StoredVoice) -> StoredVoiceCard:
    return StoredVoiceCard(id=voice.id, name=voice.name, transcript=voice.transcript,
                           transcribed=voice.transcribed, seconds=voice.seconds, created_at=voice.created_at)
