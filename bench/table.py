"""Markdown tables from `speechflow bench --json` reports.

- ``python -m bench.table DIR``: the serving table from a directory of one-task reports (what
  scripts/bench-sweep.sh writes: ``*-frames*-c*.json``).
- ``python -m bench.table --mixed A.json [B.json ...]``: step against request scheduling from mixed runs
  (``--mix``): one row per run, labelled by its ``--label`` (else the file name), or one row per policy of a
  ``--simulate`` report.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TASK_ORDER = ("enhance", "separate", "tts")


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
                  f"{_sampling_text(config)}; "
                  f"rejected or failed requests: {errors}."]
    return "\n".join(lines)


def _sampling_text(config: dict[str, Any]) -> str:
    if config.get("quality") == "fast" and config.get("steps") is None:
        return "the student (quality fast) at its own defaults"
    return (f"NFE {config['steps']}, guidance {config.get('guidance') or 1.0:g}, solver {config['solver']}, "
            f"ensemble {config.get('ensemble') or 'the task default'}")


# --- mixed runs: step against request scheduling ------------------------------------------------------------------
def mixed_runs(named: Sequence[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """(row label, mixed report) for each run: a simulation gives one per policy."""
    runs: list[tuple[str, dict[str, Any]]] = []
    for name, report in named:
        if "policies" in report:  # a --simulate report
            prefix = f"{name}: " if len(named) > 1 else ""
            cost = report["simulate"]["step_cost_s"]
            runs += [(f"{prefix}{policy}", {**r, "simulated_step_cost_s": cost})
                     for policy, r in report["policies"].items()]
        elif "tasks" in report:
            runs.append((report.get("label") or name, report))
        else:
            raise SystemExit(f"{name} is not a mixed bench report (speechflow bench --mix ... --json)")
    return runs


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _per_task(tasks: dict[str, Any], order: Sequence[str], pick: Any, fmt: str) -> str:
    values = [(t, pick(tasks[t])) for t in order if t in tasks]
    shown = [(t, "-" if v is None else format(v, fmt)) for t, v in values]
    return shown[0][1] if len(shown) == 1 else " · ".join(f"{t} {v}" for t, v in shown)


def mixed_table(runs: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """One row per run: per-task p50 / p95 / p99, TTS first chunk, audio s/s, live rows, padding, integrity."""
    present = {t for _, r in runs for t in r["tasks"]}
    order = [t for t in TASK_ORDER if t in present]
    head = ["policy", *(f"{t} p50 / p95 / p99 (ms)" for t in order)]
    if "tts" in present:
        head.append("tts first chunk p50 (ms)")
    head += ["audio s / s", "mean live rows", "padding", "lost / duplicated"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for label, r in runs:
        tasks = r["tasks"]
        cells = [label]
        for t in order:
            lat = tasks.get(t, {}).get("latency_ms", {})
            cells.append(" / ".join(_ms(lat.get(q)) for q in ("p50", "p95", "p99")))
        if "tts" in present:
            cells.append(_ms(tasks.get("tts", {}).get("first_chunk_ms", {}).get("p50")))
        integrity = r["integrity"]
        cells += [f"{r['audio_seconds_per_s'] or 0:.2f}",
                  _per_task(tasks, order, lambda x: x.get("mean_live_rows"), ".2f"),
                  _per_task(tasks, order, lambda x: (x.get("server") or {}).get("mean_padding"), ".1%"),
                  f"{integrity['lost']} / {integrity['duplicated'] + integrity['unexpected']}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _footnote(runs, order)]
    return "\n".join(lines)


def _footnote(runs: Sequence[tuple[str, dict[str, Any]]], order: Sequence[str]) -> str:
    cfg = runs[0][1]["config"]
    failed = sum(t["sent"] - t["ok"] for _, r in runs for t in r["tasks"].values())
    note = (f"Mix {cfg['mix']}, {cfg['mode']} ({cfg['rate']:g}/s)" if cfg["mode"] == "poisson" else
            f"Mix {cfg['mix']}, closed loop ({cfg['concurrency']} clients)")
    note += f", {runs[0][1]['sent']} requests per run, seed {cfg['seed']}; not 200: {failed}."
    cost = runs[0][1].get("simulated_step_cost_s")
    if cost is not None:
        note += f" Simulated (fake engine): a step takes {cost[0]:g} s + {cost[1]:g} s per row."
    by_label = {label.rsplit(": ", 1)[-1]: r for label, r in runs}
    if len(runs) == 2 and {"step", "request"} <= set(by_label):
        step, request = by_label["step"]["tasks"], by_label["request"]["tasks"]
        ratios = []
        for t in order:
            a, b = request[t]["latency_ms"].get("p99"), step[t]["latency_ms"].get("p99")
            if a and b:
                ratios.append(f"{t} {a / b:.2f}x")
        if ratios:
            note += f" p99 request / step: {', '.join(ratios)}."
    return note


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.table", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", nargs="?", default="bench-results", help="one-task reports (bench-sweep.sh)")
    parser.add_argument("--mixed", nargs="+", metavar="REPORT", help="mixed-run reports (--mix, or --simulate)")
    args = parser.parse_args(argv)
    if args.mixed:
        named = [(Path(p).stem, json.loads(Path(p).read_text())) for p in args.mixed]
        print(mixed_table(mixed_runs(named)))
    else:
        print(tables(_load(Path(args.directory))))


if __name__ == "__main__":
    main()
