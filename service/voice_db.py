"""The uploaded voices' database: its tables, the SQLAlchemy engine for the configured backend, and the versioned
DDL that brings an older layout up to date.

Backends: without ``SPEECHFLOW_DATABASE_URL``, a SQLite file (``voices.sqlite3``) in the data directory, one store
per process; with ``postgresql://...``, a PostgreSQL database (through psycopg 3) that every replica shares.

Schema versions, recorded in the one-row table ``voices_schema`` (a data directory without that table but with a
``voices`` table is version 1):

1. a ``voices`` row per voice, its audio in a WAV file per voice under ``voices/`` beside the SQLite file;
2. the audio (16-bit FLAC) in the row itself, so that the database alone holds every voice whole.

Each step runs in the transaction that records the version it reaches, so a migration happens completely or not
at all; on PostgreSQL a transaction-scoped advisory lock makes replicas that start together take turns.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from model.audio import SAMPLE_RATE

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
SQLITE_FILE = "voices.sqlite3"
V1_AUDIO_DIR = "voices"  # version 1's WAV files, relative to the data directory
MIGRATION_LOCK = 0x5F0_1CE5  # any constant: the key every replica takes pg_advisory_xact_lock on
CONNECT_TIMEOUT_S = 5  # an unreachable database host answers 503 this fast rather than holding a worker thread
# what a URL may name: SQLite (the embedded default) or PostgreSQL through psycopg 3 (plain postgresql:// too)
DRIVERS = {"sqlite": "sqlite", "sqlite+pysqlite": "sqlite", "postgresql": "postgresql+psycopg",
           "postgres": "postgresql+psycopg", "postgresql+psycopg": "postgresql+psycopg"}

VOICE_ID = re.compile(r"voice_[0-9a-f]{16}")  # the only ids the store makes, looks up or turns into a file name
metadata = sa.MetaData()
voices = sa.Table(
    "voices", metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # voice_ + 16 hex digits
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("transcript", sa.Text, nullable=False),
    sa.Column("transcribed", sa.Boolean, nullable=False),
    sa.Column("alignment", sa.Text, nullable=False),  # JSON [[phone, frames], ...]
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),  # unix seconds
    sa.Column("owner", sa.Text, nullable=False),  # key_owner() of the creating API key, "" without keys
    sa.Column("audio", sa.LargeBinary, nullable=False),  # FLAC, 16-bit, SAMPLE_RATE, mono
)
schema = sa.Table("voices_schema", metadata, sa.Column("version", sa.Integer, nullable=False))
LISTED = [c for c in voices.columns if c.name != "audio"]  # a listing never reads the audio


def database_url(setting: str | None, directory: str | Path) -> URL:
    """The URL to open: the setting's (its driver made explicit), or the SQLite file in the data directory."""
    if not setting:
        return URL.create("sqlite", database=str(Path(directory) / SQLITE_FILE))
    try:
        url = make_url(setting)
    except sa.exc.ArgumentError as e:
        raise ValueError("SPEECHFLOW_DATABASE_URL is not a URL: postgresql://USER:PASSWORD@HOST:5432/DB") from e
    if url.drivername not in DRIVERS:
        raise ValueError(f"SPEECHFLOW_DATABASE_URL must be a postgresql:// (or sqlite://) URL, not "
                         f"{url.drivername}://")
    url = url.set(drivername=DRIVERS[url.drivername])
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise ValueError("a sqlite:// SPEECHFLOW_DATABASE_URL must name a file (sqlite:////path/voices.sqlite3)")
    return url


def create(url: URL) -> Engine:
    """An engine for ``url``: pooled connections checked before use, so a database that went away and came back is
    reconnected to on the next request, with nothing to restart."""
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(url)
        # the sqlite3 driver leaves DDL outside transactions unless told otherwise: take BEGIN/COMMIT into our own
        # hands, so that a migration's rename, copy and drop commit together or not at all
        sa.event.listen(engine, "connect", _sqlite_manual_transactions)
        sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        return engine
    return sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})


def describe(url: URL) -> str:
    """Where the voices live, for the log: never the password."""
    return url.render_as_string(hide_password=True)


def migrate(conn: Connection, directory: Path | None) -> list[Path]:
    """Bring the schema to SCHEMA_VERSION inside the caller's transaction. ``directory`` is a SQLite store's data
    directory (None on PostgreSQL). Returns the version 1 audio files to remove once the transaction commits."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    version = _version(conn)
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"the voices database is at schema version {version}, newer than this server's "
                           f"{SCHEMA_VERSION}: run a newer server")
    if version == SCHEMA_VERSION:
        return []
    if version == 0:  # an empty database: the current layout at once
        metadata.create_all(conn)
        conn.execute(schema.insert().values(version=SCHEMA_VERSION))
        return []
    leftovers: list[Path] = []
    for step in STEPS[version - 1:]:
        leftovers += step(conn, directory)
    if version == 1:  # version 1 had no version table
        schema.create(conn)
        conn.execute(schema.insert().values(version=SCHEMA_VERSION))
    else:
        conn.execute(schema.update().values(version=SCHEMA_VERSION))
    return leftovers


def encode(wav: np.ndarray) -> bytes:
    """A voice's audio as stored: 16-bit FLAC (lossless for what the store keeps, about half a WAV's size)."""
    out = io.BytesIO()
    sf.write(out, wav, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return out.getvalue()


def decode(data: bytes) -> np.ndarray:
    wav, _ = sf.read(io.BytesIO(data), dtype="float32")
    return wav


def _version(conn: Connection) -> int:
    tables = sa.inspect(conn)
    if tables.has_table(schema.name):
        return int(conn.execute(sa.select(schema.c.version)).scalar_one())
    if not tables.has_table(voices.name):
        return 0
    if conn.dialect.name != "sqlite":  # version 1 only ever lived in SQLite: this table is someone else's
        raise RuntimeError(f"the database has a {voices.name!r} table that the voice store did not make (no "
                           f"{schema.name!r} table): give the voices a database of their own")
    return 1


def _audio_into_rows(conn: Connection, directory: Path | None) -> list[Path]:
    """Version 1 -> 2: each row gains its audio. A row whose WAV is gone was never listed and is dropped; every
    WAV (a file whose row never committed included) is returned, to be removed once the rows hold the audio."""
    audio_dir = (directory or Path()) / V1_AUDIO_DIR
    conn.exec_driver_sql("ALTER TABLE voices RENAME TO voices_v1")
    voices.create(conn)
    rows = conn.exec_driver_sql("SELECT id, name, transcript, transcribed, alignment, seconds, created_at, owner "
                                "FROM voices_v1").fetchall()
    moved = 0
    for vid, name, transcript, transcribed, alignment, seconds, created_at, owner in rows:
        path = audio_dir / f"{vid}.wav"
        if not VOICE_ID.fullmatch(vid) or not path.is_file():
            log.warning("voice %s has no audio file; not migrated", vid)
            continue
        wav, rate = sf.read(path, dtype="float32")
        if rate != SAMPLE_RATE:
            raise RuntimeError(f"{path} is at {rate} Hz, not {SAMPLE_RATE}")
        conn.execute(voices.insert().values(
            id=vid, name=name, transcript=transcript, transcribed=bool(transcribed), alignment=alignment,
            seconds=float(seconds), created_at=int(created_at), owner=owner, audio=encode(wav)))
        moved += 1
    conn.exec_driver_sql("DROP TABLE voices_v1")
    log.info("voices: %d of %d moved into the database (schema version 2)", moved, len(rows))
    files = audio_dir.glob("voice_*") if audio_dir.is_dir() else []
    return [p for p in files if VOICE_ID.fullmatch(p.name.split(".")[0]) and p.suffix in (".wav", ".partial")]


# STEPS[v - 1] takes version v to v + 1
STEPS: list[Callable[[Connection, Path | None], list[Path]]] = [_audio_into_rows]


def _sqlite_manual_transactions(dbapi_connection: object, _record: object) -> None:
    dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
