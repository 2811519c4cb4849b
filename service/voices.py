"""Uploaded voices (``POST /v1/audio/voices``), kept in a database so that they survive restarts and are usable
wherever a built-in voice is: a SQLite file in the data directory by default (one store per process), or the
PostgreSQL database in ``SPEECHFLOW_DATABASE_URL``, which every replica behind a load balancer shares
(service/voice_db.py: tables, backends, schema versions).

A row holds the voice's id (``voice_`` + 16 hex digits, OpenAI's shape), its name, the transcript (given, or
transcribed by the project's recogniser and marked so), the prompt's phone alignment as the TTS pipeline computed
it at upload (reused by every request in that voice), when it was made, a hash of the API key that made it (empty
when the server has no keys) and the audio itself (16 kHz, 16-bit FLAC). A voice is one row, written in one
transaction: it exists whole or not at all, and no file path is ever stored or taken from a request.

With API keys, a voice belongs to the key that made it: only that key sees it in a list, speaks in it or deletes
it. ``request_owner`` holds the caller's hash for the request being served (the admission middleware sets it once
the key is checked), so that every path that resolves a voice asks the same question.

The database going away (PostgreSQL restarting, the network between) makes each store call raise
``VoicesUnavailable`` (503 ``voices_unavailable``) rather than hang or half-write; connections are checked before
use, so the first request after the database is back is served as usual.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import Connection, Row, delete, select
from sqlalchemy.exc import InterfaceError, OperationalError

from model.audio import SAMPLE_RATE

from . import voice_db
from .errors import VoicesUnavailable
from .voice_db import VOICE_ID, voices

__all__ = ["VOICE_ID", "StoredVoice", "VoiceStore", "key_owner", "request_owner"]

log = logging.getLogger(__name__)

# the caller's key_owner() for the request being served ("" without keys); set by the admission middleware
request_owner: ContextVar[str] = ContextVar("speechflow_request_owner", default="")


@dataclass(frozen=True)
class StoredVoice:
    id: str
    name: str
    transcript: str
    transcribed: bool  # the transcript came from the recogniser, not the uploader
    alignment: list[tuple[str, int]]  # (phone, frames) of the prompt, as the pipeline aligned it
    seconds: float
    created_at: int  # unix seconds
    owner: str  # sha256 prefix of the creating API key ("" without keys)
    # the encoded audio, read with the row by get() so that a voice deleted on another replica between the
    # lookup and its use cannot leave a request with half a voice; empty in a listing
    encoded: bytes = field(default=b"", repr=False, compare=False)


def key_owner(token: str | None) -> str:
    """Who a bearer token is, as stored: a hash prefix, never the key itself."""
    return hashlib.sha256(token.encode()).hexdigest()[:16] if token else ""


class VoiceStore:
    """The voices in ``database_url`` (SQLite or PostgreSQL), or in ``directory``'s SQLite file without one.

    A SQLite file is opened (and migrated) here, as a local file costs nothing to reach; a database server is
    reached on the first call, which the service makes from a worker thread, never from its event loop."""

    def __init__(self, directory: str | Path, database_url: str | None = None) -> None:
        try:
            self.url = voice_db.database_url(database_url, directory)
        except ValueError as e:
            raise VoicesUnavailable(f"the voice store cannot be opened: {e}") from e
        self.sqlite = self.url.get_backend_name() == "sqlite"
        # a SQLite file's folder: made when missing, and where the first layout kept its audio files
        self.directory = Path(self.url.database or directory).parent if self.sqlite else None
        self.setting = "SPEECHFLOW_DATABASE_URL" if database_url else "SPEECHFLOW_DATA_DIR"
        self.engine = voice_db.create(self.url)
        self._schema_lock = threading.Lock()
        self._schema_ready = False
        if self.sqlite:
            self._ensure_schema()

    def add(self, name: str, wav: np.ndarray, transcript: str, transcribed: bool,
            alignment: list[tuple[str, int]], owner: str) -> StoredVoice:
        voice = StoredVoice(f"voice_{secrets.token_hex(8)}", name, transcript, transcribed, alignment,
                            round(len(wav) / SAMPLE_RATE, 3), int(time.time()), owner)
        audio = voice_db.encode(wav)
        with self._transaction() as conn:
            conn.execute(voices.insert().values(
                id=voice.id, name=name, transcript=transcript, transcribed=transcribed,
                alignment=json.dumps(alignment), seconds=voice.seconds, created_at=voice.created_at, owner=owner,
                audio=audio))
        return voice

    def get(self, voice_id: str) -> StoredVoice | None:
        if not VOICE_ID.fullmatch(voice_id):
            return None  # not one of ours (a path, a typo): no query
        with self._transaction() as conn:
            row = conn.execute(select(voices).where(voices.c.id == voice_id)).first()
        return _voice(row) if row is not None else None

    def audio(self, voice: StoredVoice) -> np.ndarray:
        """The voice's samples (float32, SAMPLE_RATE): from the row get() read, else read now."""
        encoded = voice.encoded
        if not encoded:
            with self._transaction() as conn:
                encoded = conn.execute(select(voices.c.audio).where(voices.c.id == voice.id)).scalar_one()
        return voice_db.decode(encoded)

    def list(self) -> list[StoredVoice]:
        with self._transaction() as conn:
            rows = conn.execute(select(*voice_db.LISTED).order_by(voices.c.created_at, voices.c.id)).all()
        return [_voice(row) for row in rows]

    def delete(self, voice_id: str) -> None:
        if not VOICE_ID.fullmatch(voice_id):
            raise ValueError(f"not a voice id: {voice_id!r}")
        with self._transaction() as conn:
            conn.execute(delete(voices).where(voices.c.id == voice_id))

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One transaction, with the schema in place; the database being unreachable -> VoicesUnavailable."""
        try:
            self._ensure_schema()
            with self.engine.begin() as conn:
                yield conn
        except (OperationalError, InterfaceError) as e:
            raise self._unavailable(e) from e

    def _ensure_schema(self) -> None:
        with self._schema_lock:
            if self._schema_ready:
                return
            try:
                if self.directory is not None:
                    self.directory.mkdir(parents=True, exist_ok=True)
                with self.engine.begin() as conn:
                    leftovers = voice_db.migrate(conn, self.directory)
            except (OSError, OperationalError, InterfaceError) as e:
                raise self._unavailable(e) from e
            except RuntimeError as e:  # a layout this server cannot bring up to date: the operator's to resolve
                log.error("the voice store cannot be migrated: %s", e)
                raise VoicesUnavailable(f"the voice store ({self.setting}) cannot be opened: {e}") from e
            self._schema_ready = True
        if self.directory is not None:
            _remove(leftovers, self.directory / voice_db.V1_AUDIO_DIR)

    def _unavailable(self, error: Exception) -> VoicesUnavailable:
        if self.sqlite:  # the operator's own file: say which and why
            return VoicesUnavailable(f"the voices store in {str(self.directory)!r} ({self.setting}) cannot be used: "
                                     f"{getattr(error, 'orig', None) or error}")
        # the details (host, the driver's message) go to the log, not to API clients
        log.warning("the voices database %s is unreachable: %s", voice_db.describe(self.url),
                    getattr(error, "orig", None) or error)
        return VoicesUnavailable("the uploaded voices' database (SPEECHFLOW_DATABASE_URL) cannot be reached; "
                                 "the voices are kept there: retry once it is back")


def _remove(files: list[Path], folder: Path) -> None:
    """Version 1 audio files, once their rows hold the audio (a deleted voice must not live on as a file)."""
    for path in files:
        path.unlink(missing_ok=True)
    with suppress(OSError):
        folder.rmdir()  # only when empty (or absent): a file that is not ours stays, and so does its folder


def _voice(row: Row) -> StoredVoice:
    m = row._mapping
    return StoredVoice(m["id"], m["name"], m["transcript"], bool(m["transcribed"]),
                       [tuple(p) for p in json.loads(m["alignment"])], float(m["seconds"]),
                       int(m["created_at"]), m["owner"], m.get("audio") or b"")
