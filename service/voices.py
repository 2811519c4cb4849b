"""Uploaded voices (``POST /v1/audio/voices``): a SQLite table in the data directory plus one 16 kHz WAV per voice,
so they survive restarts and are usable wherever a built-in voice is.

A row holds the voice's id (``voice_`` + 16 hex digits, OpenAI's shape), its name, the transcript (given, or
transcribed by the project's recogniser and marked so), the prompt's phone alignment as the TTS pipeline computed
it at upload (reused by every request in that voice), when it was made, and a hash of the API key that made it
(empty when the server has no keys). Writes are atomic: the audio file is complete before its row is committed,
and a row whose file is gone is not listed.

With API keys, a voice belongs to the key that made it: only that key sees it in a list, speaks in it or deletes
it. ``request_owner`` holds the caller's hash for the request being served (the admission middleware sets it once
the key is checked), so that every path that resolves a voice asks the same question. A voice id is never a path
from the request: only ids of the shape this store makes (``VOICE_ID``) are looked up or turned into a file name.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from model.audio import SAMPLE_RATE

SCHEMA = """
CREATE TABLE IF NOT EXISTS voices (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    transcript TEXT NOT NULL,
    transcribed INTEGER NOT NULL,
    alignment TEXT NOT NULL,
    seconds REAL NOT NULL,
    created_at INTEGER NOT NULL,
    owner TEXT NOT NULL
)
"""


VOICE_ID = re.compile(r"voice_[0-9a-f]{16}")
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


def key_owner(token: str | None) -> str:
    """Who a bearer token is, as stored: a hash prefix, never the key itself."""
    return hashlib.sha256(token.encode()).hexdigest()[:16] if token else ""


class VoiceStore:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.audio_dir = self.directory / "voices"
        self.audio_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one connection, used from worker threads one at a time
        self._db = sqlite3.connect(self.directory / "voices.sqlite3", check_same_thread=False)
        with self._lock, self._db:
            self._db.execute(SCHEMA)

    def add(self, name: str, wav: np.ndarray, transcript: str, transcribed: bool,
            alignment: list[tuple[str, int]], owner: str) -> StoredVoice:
        voice = StoredVoice(f"voice_{secrets.token_hex(8)}", name, transcript, transcribed, alignment,
                            round(len(wav) / SAMPLE_RATE, 3), int(time.time()), owner)
        path = self._audio(voice.id)
        partial = path.with_suffix(".partial")
        sf.write(partial, wav, SAMPLE_RATE, format="WAV", subtype="PCM_16")
        partial.replace(path)
        with self._lock, self._db:
            self._db.execute("INSERT INTO voices VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (voice.id, name, transcript, int(transcribed), json.dumps(alignment), voice.seconds,
                              voice.created_at, owner))
        return voice

    def get(self, voice_id: str) -> StoredVoice | None:
        if not VOICE_ID.fullmatch(voice_id):
            return None  # not one of ours (a path, a typo): no query, no file name
        with self._lock:
            row = self._db.execute("SELECT * FROM voices WHERE id = ?", (voice_id,)).fetchone()
        voice = _voice(row) if row else None
        return voice if voice is not None and self._audio(voice.id).is_file() else None

    def audio(self, voice: StoredVoice) -> np.ndarray:
        wav, _ = sf.read(self._audio(voice.id), dtype="float32")
        return wav

    def list(self) -> list[StoredVoice]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM voices ORDER BY created_at, id").fetchall()
        return [v for v in map(_voice, rows) if self._audio(v.id).is_file()]

    def delete(self, voice_id: str) -> None:
        path = self._audio(voice_id)  # checks the id before anything is touched
        with self._lock, self._db:
            self._db.execute("DELETE FROM voices WHERE id = ?", (voice_id,))
        path.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _audio(self, voice_id: str) -> Path:
        if not VOICE_ID.fullmatch(voice_id):
            raise ValueError(f"not a voice id: {voice_id!r}")
        return self.audio_dir / f"{voice_id}.wav"


def _voice(row: tuple) -> StoredVoice:
    vid, name, transcript, transcribed, alignment, seconds, created_at, owner = row
    return StoredVoice(vid, name, transcript, bool(transcribed), [tuple(p) for p in json.loads(alignment)],
                       float(seconds), int(created_at), owner)
