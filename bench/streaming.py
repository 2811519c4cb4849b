"""Time to first audio against the whole: `python -m bench.streaming --url URL [--json OUT]`.

For texts of 1-4 sentences (``--sentences``) in the first built-in voice, one request at a time on an otherwise
idle server: ``/v1/audio/speech`` as OpenAI clients call it (no ``stream_format``: streamed raw as it is
generated) and with ``stream_format=sse``. The client has audio at the first audio byte and the whole at the end.
Medians over ``--repeats``; the same seed for every run, so every run generates the same audio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from .config import check_loopback
from .scenarios import SENTENCES


async def _timed(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[float, float, float]:
    """(seconds to the first body byte, seconds to the end, seconds of pcm audio) of one request."""
    t0 = time.perf_counter()
    first = None
    size = 0
    async with client.stream("POST", "/v1/audio/speech", json=body) as r:
        r.raise_for_status()
        rate = float(r.headers["x-sample-rate"])
        async for chunk in r.aiter_raw():
            if chunk and first is None:
                first = time.perf_counter() - t0
            size += len(chunk)
    total = time.perf_counter() - t0
    return (first if first is not None else total), total, size / 2 / rate


async def run(url: str, repeats: int = 3, sentences: tuple[int, ...] = (1, 2, 4)) -> dict[str, Any]:
    check_loopback(url)
    rows = []
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        voice = (await client.get("/v1/voices")).json()["voices"][0]["id"]
        base = {"model": "tts", "voice": voice, "seed": 0, "response_format": "pcm"}
        await _timed(client, {**base, "input": SENTENCES[0]})  # one untimed request first
        for n in sentences:
            text = " ".join(SENTENCES[:n])
            runs: dict[str, list[tuple[float, float, float]]] = {"audio": [], "sse": []}
            for _ in range(repeats):
                runs["audio"].append(await _timed(client, {**base, "input": text}))
                runs["sse"].append(await _timed(client, {**base, "input": text, "stream_format": "sse"}))
            row: dict[str, Any] = {"sentences": n, "characters": len(text), "audio_s": round(runs["audio"][0][2], 2)}
            for mode, timings in runs.items():
                row[mode] = {"first_audio_ms": round(1000 * statistics.median(t[0] for t in timings)),
                             "total_ms": round(1000 * statistics.median(t[1] for t in timings))}
            rows.append(row)
    return {"url": url, "format": "pcm", "repeats": repeats, "rows": rows}


def table(report: dict[str, Any]) -> str:
    lines = ["| sentences | audio (s) | streamed: first audio / end (ms) | SSE: first audio / end (ms) | "
             "first audio, sooner than the end |", "|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        audio, sse = r["audio"], r["sse"]
        lines.append(f"| {r['sentences']} | {r['audio_s']} | {audio['first_audio_ms']:,} / {audio['total_ms']:,} | "
                     f"{sse['first_audio_ms']:,} / {sse['total_ms']:,} | "
                     f"{audio['total_ms'] / max(audio['first_audio_ms'], 1):.1f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sentences", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--json", help="also write the report here")
    parser.add_argument("--table", metavar="JSON", help="print the Markdown table of a saved report and exit")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    report = asyncio.run(run(args.url, args.repeats, sentences=tuple(args.sentences)))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))


if __name__ == "__main__":
    main()
