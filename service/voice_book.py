"""What a request's voice means, and the voice prompts the service accepts: a built-in voice, an OpenAI name that
is an alias of one, or an uploaded voice from the store (opened on first use, so a server that never sees an
uploaded voice never writes one). Also the decoding of uploaded prompt audio, shared by /v1/tts and
/v1/audio/voices.

With API keys, another key's voice does not exist as far as a caller can tell: it is not listed, and using it is
the same 422 as an unknown voice (only DELETE says 403, to tell the caller that the id is not theirs to remove)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import UploadFile

from model.tts import MAX_PROMPT_S, MIN_PROMPT_S

from .engine import Engine, TtsInput
from .errors import InvalidParameter, VoicesUnavailable
from .openai_names import openai_aliases
from .schemas import VoiceCard, VoiceList
from .settings import Settings
from .uploads import DecodedAudio, check_upload_type, decode_upload
from .voices import StoredVoice, VoiceStore, request_owner

log = logging.getLogger(__name__)


class VoiceBook:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: VoiceStore | None = None

    @property
    def store(self) -> VoiceStore:
        """The store, opened on first use (a failure to open it is VoicesUnavailable, and the next use tries
        again): the SQLite file in SPEECHFLOW_DATA_DIR, or the database in SPEECHFLOW_DATABASE_URL."""
        if self._store is None:
            url = self.settings.database_url
            self._store = VoiceStore(self.settings.data_dir, url.get_secret_value() if url else None)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    async def tts_input(self, engine: Engine, voice: str, text: str, speed: float, param: str) -> TtsInput:
        stored = await asyncio.to_thread(self.store.get, voice) if voice.startswith("voice_") else None
        if stored is not None and self.visible(stored):
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
            stored = [v for v in self.store.list() if self.visible(v)]
        except VoicesUnavailable:
            log.warning("listing the built-in voices only", exc_info=True)
            stored = []
        uploaded = [VoiceCard(id=v.id, transcript=v.transcript, source="uploaded") for v in stored]
        return VoiceList(voices=builtin + uploaded)

    def visible(self, voice: StoredVoice) -> bool:
        """Whether the caller may see, use or delete ``voice``: always on an open server; with keys, only the key
        that made it (a voice uploaded while the server was open belongs to no key)."""
        return not self.settings.api_keys or voice.owner == request_owner.get()


async def decode_prompt(settings: Settings, engine: Engine, prompt: UploadFile, param: str) -> DecodedAudio:
    """An uploaded voice prompt, decoded at the model's rate: 415 not audio, 400 undecodable, 413 over 15 s (the
    pipeline's limit; the upload limits of the task endpoints apply too), 422 under 0.5 s."""
    check_upload_type(prompt.content_type, param=param)
    data = await prompt.read()
    decoded = await asyncio.to_thread(decode_upload, data, prompt.content_type, prompt.filename,
                                      target_sr=engine.sample_rate, param=param,
                                      max_seconds=min(settings.max_audio_seconds, MAX_PROMPT_S),
                                      max_decoded_bytes=settings.max_decoded_bytes)
    if decoded.seconds < MIN_PROMPT_S:
        raise InvalidParameter(f"the {param} is {decoded.seconds:.2f} s; it must be {MIN_PROMPT_S:g}-"
                               f"{MAX_PROMPT_S:g} s", param=param)
    return decoded
