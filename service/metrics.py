"""Prometheus metrics, one registry per app (never the global one: two apps in one process, as in the tests, must
not share or collide). Audio seconds in/out per task give the real-time factor; batch size, frames and padding
ratio show what the batcher achieves."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0)
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
FRAME_BUCKETS = (100, 250, 500, 1000, 2000, 4000, 8000, 16000, 24000, 32000, 48000, 64000)
RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("speechflow_requests", "Finished task requests by HTTP status.", ["task", "status"],
                                registry=r)
        self.request_duration = Histogram("speechflow_request_duration_seconds", "Task request latency, end to end.",
                                          ["task"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("speechflow_queue_wait_seconds", "Time from admission to the start of the batch.",
                                    ["task"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("speechflow_queue_depth", "Requests waiting for a batch.", ["task"], registry=r)
        self.batch_size = Histogram("speechflow_batch_size", "Requests per batch.", ["task"],
                                    buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.batch_frames = Histogram("speechflow_batch_frames", "Padded feature frames per batch (size x longest).",
                                      ["task"], buckets=FRAME_BUCKETS, registry=r)
        self.padding_ratio = Histogram("speechflow_padding_ratio", "Share of a batch's padded frames that is padding.",
                                       ["task"], buckets=RATIO_BUCKETS, registry=r)
        self.inference = Histogram("speechflow_inference_seconds", "Engine time per batch and stage.", ["stage"],
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.audio_seconds = Counter("speechflow_audio_seconds",
                                     "Audio seconds received (in) and returned (out, counted per channel).",
                                     ["task", "direction"], registry=r)
        self.rejected = Counter("speechflow_rejected", "Requests refused or dropped, by reason (the error code).",
                                ["reason"], registry=r)

    def observe_batch(self, task: str, frames: list[int], stages: dict[str, float]) -> None:
        padded = len(frames) * max(frames)
        self.batch_size.labels(task).observe(len(frames))
        self.batch_frames.labels(task).observe(padded)
        self.padding_ratio.labels(task).observe(1.0 - sum(frames) / padded if padded else 0.0)
        for stage, seconds in stages.items():
            self.inference.labels(stage).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
