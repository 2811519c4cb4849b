"""Scheduler scenarios against a running server: `python -m bench.scenarios --url URL [--json OUT]`.

Each scenario is one question the step-level scheduler must answer well, measured end to end over HTTP:
- interference: short enhancements sent one after another while a long TTS request runs (only those sent while
  it runs count), against the same enhancement on an idle server (target: within 3x the idle latency);
- leave: a long TTS whose client goes away after a while, followed at once by the same short enhancement (target:
  back to the idle latency, give or take one step of the TTS batch, since rows leave at the next step boundary);
- tts_throughput: 8 one-sentence TTS requests one after another, then all 8 at once, ``rounds`` times in turn
  (target: concurrent >= sequential, in audio seconds per second, medians over the rounds).
Run it against an otherwise idle server on an otherwise idle machine; loopback URLs only.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import httpx

from model.audio import encode_audio

from .config import check_loopback
from .traffic import emit, scrape, speech_seconds, synthetic_input

LONG_TEXT = ("The old lighthouse keeper climbed the stairs every evening. He lit the lamp and watched the ships. "
             "Some nights the fog rolled in from the sea, thick and grey. Then he rang the bell until morning. "
             "Nobody in the village remembered a time before him.")
SENTENCES = ["A quiet morning settled over the harbour.", "The children ran down to the water to play.",
             "Gulls circled above the fishing boats.", "Somebody was singing an old song on the pier.",
             "The baker opened his shop before sunrise.", "Fresh bread filled the street with its smell.",
             "A dog slept in the warm sunlight by the door.", "By noon the market square was full of people."]


async def _enhance(client: httpx.AsyncClient, audio: bytes, seed: int) -> float:
    t0 = time.perf_counter()
    r = await client.post("/v1/enhance", files={"file": ("in.wav", audio, "audio/wav")}, data={"seed": str(seed)})
    r.raise_for_status()
    return time.perf_counter() - t0


async def _speak(client: httpx.AsyncClient, text: str, voice: str, seed: int) -> tuple[float, float]:
    """(latency s, audio s) of one /v1/audio/speech request."""
    t0 = time.perf_counter()
    r = await client.post("/v1/audio/speech", json={"model": "tts", "input": text, "voice": voice, "seed": seed,
                                                    "response_format": "pcm"})
    r.raise_for_status()
    return time.perf_counter() - t0, speech_seconds(r)


async def run_scenarios(url: str, enhance_seconds: float = 2.0, repeats: int = 5, head_start_s: float = 2.0,
                        rounds: int = 3, transport: httpx.AsyncBaseTransport | None = None) -> dict[str, Any]:
    check_loopback(url)
    audio = encode_audio(synthetic_input(enhance_seconds), 16_000, "wav")
    async with httpx.AsyncClient(base_url=url, timeout=600, transport=transport) as client:
        voice = (await client.get("/v1/voices")).json()["voices"][0]["id"]
        await _enhance(client, audio, 0)  # one untimed request first
        idle = [await _enhance(client, audio, i) for i in range(repeats)]
        idle_s = statistics.median(idle)

        # short enhancements, one after another, while a long TTS request is generating; only those sent while it
        # still ran count (after it, the server is idle again)
        tts = asyncio.create_task(_speak(client, LONG_TEXT, voice, 1))
        await asyncio.sleep(head_start_s)
        during: list[float] = []
        while len(during) < repeats and not tts.done():
            during.append(await _enhance(client, audio, 100 + len(during)))
        tts_latency, tts_audio = await tts
        interference = {"idle_ms": round(1000 * idle_s), "during_tts_ms": [round(1000 * d) for d in during],
                        # none if the TTS was over before the head start (a server much faster than this one)
                        "ratio_median": round(statistics.median(during) / idle_s, 2) if during else None,
                        "ratio_max": round(max(during) / idle_s, 2) if during else None,
                        "tts_ms": round(1000 * tts_latency), "tts_audio_s": tts_audio}

        # a long TTS whose client leaves, then the enhancement at once
        before = await scrape(client)
        leaving = asyncio.create_task(_speak(client, LONG_TEXT, voice, 2))
        await asyncio.sleep(head_start_s)
        leaving.cancel()
        after_leave = await _enhance(client, audio, 200)
        after = await scrape(client)
        assert before is not None and after is not None, "the server's /metrics is needed"
        tts_before, tts_after = before.tasks.get("tts", {}), after.tasks["tts"]
        steps = tts_after["steps"] - tts_before.get("steps", 0.0)
        step_s = (tts_after["step_s"] - tts_before.get("step_s", 0.0)) / steps if steps else float("nan")
        # rows leave at the next step boundary: the enhancement may wait for the TTS step in flight, no more
        leave = {"idle_ms": round(1000 * idle_s), "after_leave_ms": round(1000 * after_leave),
                 "ratio": round(after_leave / idle_s, 2), "excess_ms": round(1000 * (after_leave - idle_s)),
                 "tts_step_ms": round(1000 * step_s), "tts_steps_run": steps,
                 "rows_dropped": after.dropped - before.dropped}

        # TTS throughput: sequential vs concurrent, alternating, the median of the rounds (this CPU's timings move
        # by up to 30 % from one minute to the next)
        seq_rates, conc_rates, seq_times, conc_times = [], [], [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            seq = [await _speak(client, s, voice, 300 + i) for i, s in enumerate(SENTENCES)]
            seq_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            conc = await asyncio.gather(*(_speak(client, s, voice, 300 + i) for i, s in enumerate(SENTENCES)))
            conc_times.append(time.perf_counter() - t0)
            seq_rates.append(sum(a for _, a in seq) / seq_times[-1])
            conc_rates.append(sum(a for _, a in conc) / conc_times[-1])
        seq_rate, conc_rate = statistics.median(seq_rates), statistics.median(conc_rates)
        throughput = {"requests": len(SENTENCES), "rounds": rounds,
                      "sequential_audio_s_per_s": round(seq_rate, 3), "concurrent_audio_s_per_s": round(conc_rate, 3),
                      "gain": round(conc_rate / seq_rate, 2),
                      "gain_per_round": [round(c / q, 2) for c, q in zip(conc_rates, seq_rates, strict=True)],
                      "sequential_s": [round(t, 2) for t in seq_times],
                      "concurrent_s": [round(t, 2) for t in conc_times]}
    return {"url": url, "enhance_seconds": enhance_seconds, "interference": interference, "leave": leave,
            "tts_throughput": throughput}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--enhance-seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="sequential / concurrent TTS rounds (median)")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args()
    emit(asyncio.run(run_scenarios(args.url, args.enhance_seconds, args.repeats, rounds=args.rounds)), args.json)


if __name__ == "__main__":
    main()
