"""Markdown and picture pieces shared by the enhancement / separation report and the TTS report.

One copy of the number formatting, table rows, per-group sections and spectrogram pictures keeps the two reports
alike; each report only says which metrics it shows and how precisely.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.audio import SAMPLE_RATE
from training.evaluation import metrics
from training.evaluation.common import finite

Picture = tuple[str, np.ndarray, np.ndarray, np.ndarray]  # (caption, input or prompt, ours, reference)


def fmt(value: float | None, spec: str = ".2f") -> str:
    """A number for a table cell or sentence (`spec` as in `format`); "n/a" where it is undefined."""
    return format(value, spec) if finite(value) else "n/a"


def cell(text: str) -> str:
    return text.replace("|", "\\|")  # a bare pipe would end the table cell


def table_header(names: Sequence[str], labels: Mapping[str, str], first: str = "") -> list[str]:
    """Header and rule of a table with a "system" column (after `first`, when given) and a column per metric."""
    lead = [first] if first else []
    return [
        "| " + " | ".join([*lead, "system", *(labels.get(m, m) for m in names)]) + " |",
        "|" + "---|" * (len(lead) + 1 + len(names)),
    ]


def table_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell(c) for c in cells) + " |"


def group_section(
    group: str,
    buckets: Mapping[str, Mapping[str, Any]],
    header: list[str],
    rows: Callable[[Mapping[str, Any], str], list[str]],
) -> list[str]:
    """A "## By <group>" section: one table holding every bucket's rows (`rows(entry, lead)`), each row led by
    "<bucket> (n=<size>)"."""
    lines = ["", f"## By {group}", "", *header]
    for bucket, entry in buckets.items():
        lines += rows(entry, f"{bucket} (n={entry['n']})")
    return lines


def config_lines(results: Mapping[str, Any]) -> list[str]:
    return [f"- {k}: `{v}`" for k, v in results.get("config", {}).items()]


def undefined_counts(nan_counts: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """{"system/metric": how many utterances it was undefined for}, only where it was."""
    return {f"{s}/{m}": c for s, per in nan_counts.items() for m, c in per.items() if c}


def _spectrogram_db(wav: np.ndarray) -> np.ndarray:
    spec = metrics.stft(np.asarray(wav, np.float64), SAMPLE_RATE)
    return 20.0 * np.log10(np.abs(spec) + 1e-8)


def save_spectrograms(path: Path, title: str, panels: Sequence[tuple[str, np.ndarray]]) -> None:
    """Stacked log-magnitude spectrograms (0-8 kHz) on one colour scale, so levels are comparable across panels."""
    from matplotlib.figure import Figure  # the Figure API needs no pyplot state or GUI backend (Agg by default)

    specs = [_spectrogram_db(w) for _, w in panels]
    top = max(float(s.max()) for s in specs)
    longest = max(w.shape[-1] for _, w in panels) / SAMPLE_RATE
    fig = Figure(figsize=(10, 0.6 + 2.2 * len(panels)))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    fig.subplots_adjust(left=0.07, right=0.9, top=1 - 0.5 / fig.get_figheight(), bottom=0.5 / fig.get_figheight())
    for ax, (label, wav), spec in zip(axes, panels, specs, strict=True):
        extent = (0.0, wav.shape[-1] / SAMPLE_RATE, 0.0, SAMPLE_RATE / 2000.0)
        image = ax.imshow(spec, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=top - 80, vmax=top)
        ax.set_ylabel("kHz")
        ax.set_title(label, loc="left", fontsize=10)
        ax.set_xlim(0.0, longest)
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(image, cax=fig.add_axes((0.92, 0.1, 0.015, 0.8)), label="dB")
    fig.suptitle(title)
    fig.savefig(path, dpi=80)


def spectrogram_section(out_md: Path, pictures: Sequence[Picture], names: tuple[str, str, str]) -> list[str]:
    """The "## Spectrograms" section (none without pictures); picture i is saved beside the report as
    `<stem>_NN.png`, its three panels labelled by `names`."""
    if not pictures:
        return []
    lines = ["", "## Spectrograms", ""]
    for i, (caption, *wavs) in enumerate(pictures):
        png = out_md.with_name(f"{out_md.stem}_{i:02d}.png")
        save_spectrograms(png, caption, list(zip(names, wavs, strict=True)))
        lines += [f"### {caption}", "", f"![{caption}]({png.name})", ""]
    return lines
