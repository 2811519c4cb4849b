"""Prometheus metrics, one registry per app (never the global one: two apps in one process, as in the tests, must
not share or collide). Audio seconds in/out per task give the real-time factor; batch size, frames and padding
ratio per step show what the scheduler achieves; steps, step time, row wait and dropped rows show the step loop."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0)
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
FRAME_BUCKETS = (100, 250, 500, 1000, 2000, 4000, 8000, 16000, 24000, 32000, 48000, 64000)
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("speechflow_requests", "Finished task requests by HTTP status.", ["task", "status"],
                                registry=r)
        self.request_duration = Histogram("speechflow_request_duration_seconds", "Task request latency, end to end.",
                                          ["task"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("speechflow_queue_wait_seconds", "Time from admission to a request's first step.",
                                    ["task"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("speechflow_queue_depth", "Admitted requests that have not started stepping.",
                                 registry=r)
        self.live_rows = Gauge("speechflow_live_rows", "Rows in live batches (all keys) after the last change.",
                               registry=r)
        self.batch_size = Histogram("speechflow_batch_size", "Rows in the live batch, per step.", ["task"],
                                    buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.batch_frames = Histogram("speechflow_batch_frames", "Padded feature frames of the live batch "
                                      "(rows x longest), per step.", ["task"], buckets=FRAME_BUCKETS, registry=r)
        self.padding_ratio = Histogram("speechflow_padding_ratio", "Share of a step's padded frames that is padding.",
                                       ["task"], buckets=RATIO_BUCKETS, registry=r)
        self.steps = Counter("speechflow_steps", "ODE solver steps run (rate() = steps/s).", ["task"], registry=r)
        self.step_seconds = Histogram("speechflow_step_seconds", "Time of one solver step of a live batch.",
                                      ["task"], buckets=STEP_BUCKETS, registry=r)
        self.row_wait = Histogram("speechflow_row_wait_seconds", "Time from a row's queueing to its first step.",
                                  ["task"], buckets=LATENCY_BUCKETS, registry=r)
        self.rows_dropped = Counter("speechflow_rows_dropped", "Rows that left a live batch or the queue before "
                                    "finishing, by reason.", ["reason"], registry=r)
        self.scheduler_up = Gauge("speechflow_scheduler_up", "1 while the step loop runs.", registry=r)
        self.inference = Histogram("speechflow_inference_seconds",
                                   "Engine time per call and stage (prepare, step, postprocess).", ["stage"],
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.audio_seconds = Counter("speechflow_audio_seconds",
                                     "Audio seconds received (in) and returned (out, counted per channel).",
                                     ["task", "direction"], registry=r)
        self.rejected = Counter("speechflow_rejected", "Requests refused or dropped, by reason (the error code).",
                                ["reason"], registry=r)

    def observe_step(self, task: str, rows: int, padded: int, real: int, seconds: float) -> None:
        self.steps.labels(task).inc()
        self.step_seconds.labels(task).observe(seconds)
        self.batch_size.labels(task).observe(rows)
        self.batch_frames.labels(task).observe(padded)
        self.padding_ratio.labels(task).observe(1.0 - real / padded if padded else 0.0)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
