"""Time `LiveBatch.step` on padded batches of mixed lengths, per way of attending, and the vocoder's inverse STFT.

    .venv/bin/python scripts/hot_path_bench.py --threads 1 --rows 1,4,8,16
    .venv/bin/python scripts/hot_path_bench.py --model checkpoints/demo/enhance --json out.json

Attention variants, run in turn within each repeat (A/B/C, so a background load disturbs all alike):
  sync  the row-by-row attention with each row's length read back from the mask tensor, and the bias rebuilt on
        every network call (`bool(mask.all())`, `.tolist()`: a host synchronisation per call on a GPU)
  rows  row-by-row attention from the lengths the live batch knows on the host, built once per membership change
  mask  one attention call per layer over the padded batch, ALiBi plus a key-padding mask (B, H, S, S)
The inverse STFT: `torch.istft` row by row against `ISTFTHead.waveforms` over the padded batch.
Prints a markdown table (median ms per step over the repeats); ``--json`` writes the figures too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor

from model.config import ModelConfig, preset
from model.defaults import Sampling
from model.flow import PackedRows
from model.generation import LiveBatch, Row
from model.modeling import SpeechFlowModel
from model.network import AttentionBias, SpeechFlowTransformer
from model.vocos import ISTFTHead, VocosConfig

VARIANTS = ("sync", "rows", "mask")


def sync_attention_bias(self: SpeechFlowTransformer, mask: Tensor, dtype: torch.dtype = torch.float32,
                        lengths: object = None) -> AttentionBias:
    """The row-by-row bias with the lengths read back from the mask (what the comparison measures against)."""
    alibi = self._alibi(mask.shape[1], dtype, mask.device)[None]
    if bool(mask.all()):
        return AttentionBias(alibi)
    return AttentionBias(alibi, tuple(int(n) + 1 for n in mask.sum(dim=1).tolist()))


@contextlib.contextmanager
def variant(net: SpeechFlowTransformer, name: str) -> Iterator[None]:
    """Run the network one way: ``sync`` also makes the live batch pass no prebuilt bias, so the network builds
    (and reads back) its own on every call."""
    if name == "sync":
        net.attention_bias = types.MethodType(sync_attention_bias, net)  # type: ignore[method-assign]
        built = PackedRows._attention
        PackedRows._attention = lambda self, mask, lengths: {}  # type: ignore[method-assign]
        try:
            yield
        finally:
            PackedRows._attention = built  # type: ignore[method-assign]
            del net.attention_bias
    else:
        net.padded_attention = name
        try:
            yield
        finally:
            net.padded_attention = "auto"


def load_model(args: argparse.Namespace) -> SpeechFlowModel:
    if args.model:
        return SpeechFlowModel.from_pretrained(args.model)
    torch.manual_seed(0)
    model = SpeechFlowModel(ModelConfig(network=preset(args.preset))).eval()
    torch.nn.init.normal_(model.net.out_proj.weight, std=0.1)  # non-zero velocities, as a trained model's
    return model


def lengths_for(rows: int, lo: int, hi: int, seed: int) -> list[int]:
    rng = random.Random(seed * 1_000 + rows)
    return [rng.randint(lo, hi) for _ in range(rows)]


def time_steps(model: SpeechFlowModel, sampling: Sampling, lengths: list[int], steps: int) -> float:
    """Median seconds of ``steps`` live-batch steps on rows of ``lengths`` (after one untimed step: packing)."""
    gen = torch.Generator().manual_seed(0)
    live = LiveBatch(model, sampling)
    live.join([Row(torch.randn(n, model.config.network.cond_dim, generator=gen), seed=i)
               for i, n in enumerate(lengths)])
    live.step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        live.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_istft(lengths: list[int], repeats: int) -> dict[str, float]:
    """Median ms of the inverse STFT of rows of ``lengths`` frames: row by row, and batched."""
    cfg = VocosConfig()
    head = ISTFTHead(cfg.dim, cfg.n_fft, cfg.hop)
    gen = torch.Generator().manual_seed(0)
    shape = (len(lengths), cfg.n_freqs, max(lengths))
    spec = torch.complex(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen))
    ways: dict[str, Callable[[], object]] = {
        "istft by row": lambda: [head.waveform(spec[i : i + 1, :, :n]) for i, n in enumerate(lengths)],
        "istft batched": lambda: head.waveforms(spec, lengths),
    }
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(repeats + 1):  # the first round warms up
        for name, run in ways.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {k: 1e3 * statistics.median(v[1:]) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--preset", default="tiny", help="network preset of a fresh model (without --model)")
    parser.add_argument("--model", default=None, help="a model directory, e.g. checkpoints/demo/enhance")
    parser.add_argument("--rows", default="1,4,8,16", help="batch sizes, comma-separated")
    parser.add_argument("--min-frames", type=int, default=200)
    parser.add_argument("--max-frames", type=int, default=600)
    parser.add_argument("--solver", default="euler")
    parser.add_argument("--guidance", type=float, default=2.0, help="2: every evaluation a doubled batch")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per repeat (median taken)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of sync/rows/mask, in turn")
    parser.add_argument("--seed", type=int, default=0, help="draws the row lengths")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model = load_model(args)
    sampling = Sampling(steps=100_000, guidance=args.guidance, solver=args.solver)  # no row finishes while timed
    results = []
    for rows in (int(r) for r in args.rows.split(",")):
        lengths = lengths_for(rows, args.min_frames, args.max_frames, args.seed)
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        with torch.inference_mode():
            for _ in range(args.repeats):
                for name in VARIANTS:
                    with variant(model.net, name):
                        times[name].append(time_steps(model, sampling, lengths, args.steps))
        row = {"rows": rows, "frames": lengths, "padded": rows * max(lengths)}
        row |= {f"{v} ms": round(1e3 * statistics.median(t), 1) for v, t in times.items()}
        row |= {k: round(v, 2) for k, v in time_istft(lengths, args.repeats).items()}
        results.append(row)
        print(json.dumps(row), flush=True)

    cols = ["rows", "padded", *(f"{v} ms" for v in VARIANTS), "istft by row", "istft batched"]
    print(f"\n{args.model or args.preset}, {args.solver}, guidance {args.guidance}, {args.threads} thread(s), "
          f"rows of {args.min_frames}-{args.max_frames} frames; ms per step (median)\n")
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=1))


if __name__ == "__main__":
    main()
