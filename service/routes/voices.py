"""Voices: ``GET /v1/voices`` (every voice the ``voice`` parameter takes) and the uploaded ones,
``POST /v1/audio/voices`` (multipart ``audio_sample``, ``name``, ``consent``, optional ``transcript``),
``GET /v1/audio/voices`` and ``DELETE /v1/audio/voices/{id}``. What a voice means and who may see it is the voice
book's (service/voice_book.py)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from model import recognizer
from model.duration import DurationError
from model.errors import ConfigError
from model.text import TextError

from .. import paths
from ..errors import Forbidden, InvalidParameter, NotFound, TextTooLong
from ..lifecycle import ServiceRuntime
from ..schemas import StoredVoiceCard, StoredVoiceList, VoiceDeleted, VoiceForm, VoiceList
from ..voice_book import decode_prompt
from ..voices import StoredVoice, request_owner

MAX_NAME_CHARS = 64


def router(runtime: ServiceRuntime) -> APIRouter:
    api = APIRouter(tags=["tts"])
    book = runtime.voices

    @api.get(paths.VOICES, response_model=VoiceList)
    async def voices() -> VoiceList:
        """Every voice the ``voice`` parameter takes: the built-in ones (with the OpenAI names that are aliases of
        them) and the uploaded ones, with what their prompts say."""
        # off the event loop: with PostgreSQL, listing the uploaded voices is a network round trip
        return await asyncio.to_thread(book.catalogue, runtime.serving("tts"))

    @api.post(paths.AUDIO_VOICES, response_model=StoredVoiceCard)
    async def create_voice(form: Annotated[VoiceForm, Form()],
                           audio_sample: Annotated[UploadFile, File(description="0.5-15 s of the voice, any format "
                                                                    "libsndfile reads")]) -> StoredVoiceCard:
        """Store a voice (kept across restarts) to use by its id wherever a voice is taken. ``consent`` must be
        true. Without ``transcript`` the server transcribes the sample and says so (``transcribed``)."""
        return await _create(runtime, form, audio_sample)

    @api.get(paths.AUDIO_VOICES, response_model=StoredVoiceList)
    async def list_voices() -> StoredVoiceList:
        """The uploaded voices."""
        runtime.serving("tts")
        stored = await asyncio.to_thread(book.store.list)
        return StoredVoiceList(data=[_card(v) for v in stored if book.visible(v)])

    @api.delete(paths.AUDIO_VOICES + "/{voice_id}", response_model=VoiceDeleted)
    async def delete_voice(voice_id: str) -> VoiceDeleted:
        """Delete an uploaded voice (with API keys: only the key that created it may)."""
        runtime.serving("tts")
        voice = await asyncio.to_thread(book.store.get, voice_id)
        if voice is None:
            raise NotFound(f"no uploaded voice {voice_id!r}", param="voice_id")
        if not book.visible(voice):
            raise Forbidden("only the API key that created this voice may delete it", param="voice_id")
        await asyncio.to_thread(book.store.delete, voice_id)
        return VoiceDeleted(id=voice_id)

    return api


async def _create(runtime: ServiceRuntime, form: VoiceForm, sample: UploadFile) -> StoredVoiceCard:
    engine = runtime.serving("tts")
    settings, store = runtime.settings, runtime.voices.store
    if not form.consent:
        raise InvalidParameter("consent must be true: only upload a voice whose speaker agreed to it being "
                               "cloned", param="consent")
    name = form.name.strip()
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise InvalidParameter(f"name must be 1-{MAX_NAME_CHARS} printable characters", param="name")
    if len(await asyncio.to_thread(store.list)) >= settings.max_voices:
        raise InvalidParameter(f"this server holds at most {settings.max_voices} uploaded voices; delete one "
                               "first (DELETE /v1/audio/voices/{id})", param="audio_sample")
    decoded = await decode_prompt(settings, engine, sample, "audio_sample")
    transcript, transcribed = (form.transcript or "").strip(), False
    if len(transcript) > settings.max_prompt_text_chars:
        raise TextTooLong(f"transcript is {len(transcript)} characters; the limit is "
                          f"{settings.max_prompt_text_chars}", param="transcript")
    if not transcript:
        if not recognizer.available():
            raise InvalidParameter("give the transcript: this server has no speech recogniser installed "
                                   "(pip install 'speechflow[asr]')", param="transcript")
        transcript = await runtime.loop.process(recognizer.transcribe, decoded.wav,
                                                timeout_s=settings.request_timeout_s)
        transcribed = True
        if not transcript:
            raise InvalidParameter("the recogniser heard no words in audio_sample; give the transcript",
                                   param="transcript")
    try:
        alignment = await runtime.loop.process(engine.align_prompt, decoded.wav, transcript,
                                               timeout_s=settings.request_timeout_s)
    except (TextError, DurationError, ConfigError) as e:
        raise InvalidParameter(f"the transcript does not fit the audio: {e}", param="transcript") from e
    voice = await asyncio.to_thread(store.add, name, decoded.wav, transcript, transcribed, alignment,
                                    request_owner.get())
    return _card(voice)


def _card(voice: StoredVoice) -> StoredVoiceCard:
    return StoredVoiceCard(id=voice.id, name=voice.name, transcript=voice.transcript,
                           transcribed=voice.transcribed, seconds=voice.seconds, created_at=voice.created_at)
