"""Markdown tables from a directory of `speechflow bench --json` reports (scripts/bench-sweep.sh writes them):
`python -m service.bench_table DIR`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _load(directory: Path) -> list[dict[str, Any]]:
    reports = []
    for path in sorted(directory.glob("*-frames*-c*.json")):
        report = json.loads(path.read_text())
        report["frames"] = int(path.stem.split("-frames")[1].split("-c")[0])
        reports.append(report)
    if not reports:
        raise SystemExit(f"no bench reports (*-frames*-c*.json) in {directory}")
    return sorted(reports, key=lambda r: (r["frames"], r["config"]["concurrency"]))


def tables(reports: list[dict[str, Any]]) -> str:
    # one pipeline-alone measurement (the widest) serves every row: throughput share and batch-1 latency
    measured = [r["baseline"] for r in reports if "baseline" in r]
    best = max(measured, key=lambda b: len(b["by_batch_size"]), default=None)
    lines = []
    if best is not None:
        rows = best["by_batch_size"]
        b1 = rows["1"]["audio_seconds_per_s"]
        lines += [f"Pipeline alone ({best['device']}, no HTTP, no queue):", "",
                  "| batch size | latency (ms) | audio s / s | vs batch 1 |", "|---:|---:|---:|---:|"]
        lines += [f"| {b} | {r['latency_ms']:.0f} | {r['audio_seconds_per_s']:.2f} | "
                  f"{r['audio_seconds_per_s'] / b1:.2f}x |" for b, r in rows.items()]
        lines.append("")
    lines += ["| frame budget | concurrency | requests/s | audio s / s | p50 (ms) | p95 (ms) | p99 (ms) | mean batch "
              "| vs pipeline alone |", "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in reports:
        c, lat = r["config"]["concurrency"], r["latency_ms"]
        versus = ""
        if best is not None:
            share = r["audio_seconds_per_s"] / best["best_audio_seconds_per_s"]
            versus = f"{100 * share:.0f} % of its best throughput"
            if c == 1:
                versus += f"; p50 {lat['p50'] - best['batch1_latency_ms']:+.0f} ms vs its batch 1"
        lines.append(f"| {r['frames']} | {c} | {r['throughput_rps']:.2f} | {r['audio_seconds_per_s']:.2f} | "
                     f"{lat['p50']:.0f} | {lat['p95']:.0f} | {lat['p99']:.0f} | {r['mean_batch_size'] or 0:.2f} | "
                     f"{versus} |")
    errors = sum(r["errors"] + r["rejected"] for r in reports)
    # the baseline run spells out the sampling settings (the others may have left them to the server's defaults)
    config = next((r["config"] for r in reports if "baseline" in r), reports[0]["config"])
    lines += ["", f"Input {reports[0]['audio_seconds_per_request']:g} s per request, task {config['task']}, "
                  f"NFE {config['steps']}, guidance {config.get('guidance') or 1.0:g}, solver {config['solver']}; "
                  f"rejected or failed requests: {errors}."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(tables(_load(Path(sys.argv[1] if len(sys.argv) > 1 else "bench-results"))))
