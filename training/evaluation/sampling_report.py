"""Quality-vs-cost curves (NFE, ensemble) from a directory of ``speechflow evaluate --json`` reports
(scripts/eval-sampling.sh): one Markdown table per task and one plot per task, written next to the reports.

    python -m training.evaluation.sampling_report docs/eval/sampling
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# per task: (metric label, how to read it from a report, higher is better)
METRICS: dict[str, list[tuple[str, Any]]] = {
    "enhance": [("PESQ-WB", lambda r: r["overall"]["ours"]["pesq_wb"]),
                ("ESTOI", lambda r: r["overall"]["ours"]["estoi"]),
                ("SI-SDR (dB)", lambda r: r["overall"]["ours"]["si_sdr"])],
    "separate": [("SI-SDRi (dB)", lambda r: r["overall"]["ours"]["si_sdri"]),
                 ("PESQ-WB", lambda r: r["overall"]["ours"]["pesq_wb"]),
                 ("ESTOI", lambda r: r["overall"]["ours"]["estoi"])],
    "tts": [("WER ratio", lambda r: r["wer_ratio"]),
            ("similarity position", lambda r: r["similarity_position"]),
            ("WER flite / festival", lambda r: _engine_wer(r))],
}


def _engine_wer(report: Mapping[str, Any]) -> str:
    engines = report.get("groups", {}).get("engine", {})
    parts = [engines.get(e, {}).get("overall", {}).get("ours", {}).get("wer") for e in ("flite", "festival")]
    return " / ".join("-" if v is None else f"{100 * v:.0f} %" for v in parts)


def _config(report: Mapping[str, Any]) -> dict[str, Any]:
    c = report["config"]
    return {"dtype": c.get("dtype", "fp32"), "solver": c["solver"], "nfe": c["steps"], "guidance": c["guidance"],
            "sway": c.get("sway", 0.0), "until": c.get("guidance_until", 1.0), "ensemble": c.get("ensemble", 1)}


def _guidance(c: Mapping[str, Any]) -> str:
    return f"{c['guidance']:g}" + (f" (t < {c['until']:g})" if c["until"] < 1 else "")


def _passes(c: Mapping[str, Any]) -> int:
    """Sequences per window through the network over the whole path, every draw of an ensemble counted: the
    cost, whatever the machine."""
    from model.defaults import Sampling
    from model.solvers import network_passes

    return c["ensemble"] * network_passes(Sampling(steps=c["nfe"], guidance=c["guidance"], solver=c["solver"],
                                                   sway=c["sway"], guidance_until=c["until"]))


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return value
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def load(directory: Path) -> dict[str, list[dict[str, Any]]]:
    by_task: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(directory.glob("*.json")):
        report = json.loads(path.read_text())
        if report.get("task") in METRICS:
            by_task.setdefault(report["task"], []).append(report)
    for reports in by_task.values():
        reports.sort(key=lambda r: (_config(r)["dtype"], _config(r)["solver"], _config(r)["sway"],
                                    -_config(r)["until"], _config(r)["ensemble"], _config(r)["nfe"]))
    return by_task


def table(task: str, reports: list[dict[str, Any]]) -> list[str]:
    names = [name for name, _ in METRICS[task]]
    lines = ["| dtype | solver | NFE | sway | guidance | ensemble | network passes | " + " | ".join(names) + " |",
             "|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(names)]
    for r in reports:
        c = _config(r)
        values = " | ".join(_fmt(get(r)) for _, get in METRICS[task])
        lines.append(f"| {c['dtype']} | {c['solver']} | {c['nfe']} | {c['sway']:g} | {_guidance(c)} | "
                     f"{c['ensemble']} | {_passes(c)} | {values} |")
    return lines


def plot(task: str, reports: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric = [(name, get) for name, get in METRICS[task] if not isinstance(get(reports[0]), str)]
    fig, axes = plt.subplots(1, len(numeric), figsize=(4.2 * len(numeric), 3.4), squeeze=False)
    # one curve per setting, along NFE, or along the ensemble where reports differ in it (docs/eval/ensemble)
    by_ensemble = len({_config(r)["ensemble"] for r in reports}) > 1
    curves: dict[str, list[dict[str, Any]]] = {}
    for r in reports:
        c = _config(r)
        swept = f"NFE {c['nfe']}" if by_ensemble else f"ensemble {c['ensemble']}"
        curves.setdefault(f"{c['dtype']} {c['solver']} sway {c['sway']:g} guidance {_guidance(c)} {swept}",
                          []).append(r)
    for ax, (name, get) in zip(axes[0], numeric, strict=True):
        for label, rs in curves.items():
            rs = sorted(rs, key=lambda r: _passes(_config(r)))
            ax.plot([_passes(_config(r)) for r in rs], [get(r) for r in rs], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("network passes per window (cost)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{task}: quality against cost (unseen-speaker test split)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def write_report(directory: Path) -> Path:
    by_task = load(directory)
    lines = ["# Sampling: quality against network passes", "",
             "Each row is one `speechflow evaluate` run (JSON beside this file) on the same utterances of the "
             "unseen-speaker test split, the same seed and the shipped bundle. The cost column is what a row puts "
             "through the network over its whole path (an evaluation, twice where guidance applies) times the "
             "draws of an ensemble (whose masks are averaged): time scales with it on any machine (see "
             "`speechflow profile` for seconds).", ""]
    for task, reports in by_task.items():
        n = {r["n"] for r in reports}
        lines += [f"## {task} ({', '.join(map(str, sorted(n)))} utterances)", "", *table(task, reports), "",
                  f"![{task}](sampling_{task}.png)", ""]
        plot(task, reports, directory / f"sampling_{task}.png")
    out = directory / "README.md"
    out.write_text("\n".join(lines))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory", type=Path)
    print(write_report(p.parse_args(argv).directory))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
