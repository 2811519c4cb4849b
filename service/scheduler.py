"""The step scheduler: each turn, which live batch advances one ODE step, and which waiting rows join it at t = 0.

Pure bookkeeping (no model, no tensors, no asyncio), so every rule is unit-tested on its own:
- Rows are grouped by sampling key (task, solver: NFE, grid and guidance are per row); rows of one key share one live
  batch. Within a key, waiting rows join strictly in arrival order (oldest first, so none is starved) while the
  live batch stays within the frame budget (padded frames = rows x longest) and the row cap; a row longer than the
  budget runs alone.
- ``policy="step"``: live batches take turns step by step. The next turn goes to the key that has had the least
  step time per request so far (a step's time is charged to its key divided by the requests in the batch, so
  every request gets an equal share of the engine, whichever batch it is in). A key that becomes busy starts level
  with the least-served busy key, less the longest step those keys took last: it neither banks idle time nor
  carries its earlier requests' debt, and it is paid back the step in flight it had to wait for on arrival. Ties
  go to the key with fewer turns since it became busy, then to the oldest row. A short request next to a long one
  thus gets its share of the engine at once, never the long one's whole generation; where steps are cheap (a GPU)
  the credit is small and turns stay close to equal shares.
- Deadlines come first when they must: each turn the scheduler asks whether running the admitted requests earliest
  deadline first from now on (their remaining engine time from the loop's ``need``, with a safety factor and two
  steps of slack) would still bring some request in late of its deadline. If so the turn goes to the key holding
  the earliest-deadline request (EDF, optimal for one machine), otherwise to the fair share above. Admission
  (`StepLoop.submit`) lets a request in only when all admitted work plus its own fits in its timeout, which is
  exactly EDF's condition, so under overload admitted requests finish in time instead of every request sharing
  the engine until the long ones (TTS) miss their deadlines; with deadlines far off, as usual, nothing changes.
- ``policy="request"``: request-level batching, kept for comparison: a batch forms only when no
  batch runs, from the key with the oldest waiting row, and runs to the end without joiners or turns.
- A key with no live batch waits up to ``max_wait_s`` for company before its first step, unless its waiting rows
  already fill the budget or the scheduler is draining.
- A failed live batch is bisected by the loop: each half's rows get a ``group`` and run apart from other rows.
  A row with ``after`` set joins only once that row has left (a streamed request's chunks, one after another, on
  a device where rows cost in proportion: the first chunk is out after one chunk's generation).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

from model.packing import joinable

Policy = Literal["step", "request"]
POLICIES: tuple[Policy, ...] = ("step", "request")
NEED_SAFETY = 1.25  # remaining-work estimates are smoothed averages: a request may need this much more
SLACK_STEPS = 2  # and a turn can wait for the step in flight plus its own


@dataclass(frozen=True)
class Budget:
    frames: int  # padded frames of one live batch
    rows: int  # rows in one live batch


@dataclass(eq=False)  # identity semantics
class Entry:
    """A row as the scheduler sees it: its length, its owner (a request) and when it arrived."""

    row: Any
    owner: Any
    frames: int
    enqueued_at: float
    order: int = 0  # arrival order, set by the scheduler
    group: int | None = None  # a retry after its live batch failed: runs with rows of this group only
    deadline: float = math.inf  # its owner's deadline (time.monotonic())
    after: Entry | None = None  # joins only once this row has left (a stream's chunks, in order)
    left: bool = False  # set when the row finished or was removed


@dataclass(frozen=True)
class Turn:
    key: Hashable
    join: list[Entry]  # waiting rows that join at t = 0 before this step


@dataclass
class _Key:
    waiting: list[Entry] = field(default_factory=list)
    live: list[Entry] = field(default_factory=list)
    served_s: float = 0.0  # step time per request this key has had
    turns: int = 0  # steps since it became busy
    last_step_s: float = 0.0  # how long its latest step took


class Scheduler:
    def __init__(self, budget: Budget, policy: Policy = "step", max_wait_s: float = 0.0) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        self.budget = budget
        self.policy = policy
        self.max_wait_s = max_wait_s
        self.draining = False
        self._keys: dict[Hashable, _Key] = {}
        self._count = 0

    # --- what the loop tells the scheduler ----------------------------------------------------------------------
    def add(self, key: Hashable, entries: list[Entry]) -> None:
        """Rows that wait to join (in the order given: a request's rows in row order)."""
        state = self._keys.setdefault(key, _Key())
        if not state.live and not state.waiting:
            # a key that becomes busy starts level with the least-served busy key (it neither banks the time it was
            # idle nor carries the debt of its earlier requests), credited with the step it waited for on arrival
            busy = [s for s in self._keys.values() if s.live or s.waiting]
            in_flight = max((s.last_step_s for s in busy), default=0.0)
            state.served_s = min((s.served_s for s in busy), default=0.0) - in_flight
            state.turns = 0
        for entry in entries:
            self._count += 1
            entry.order = self._count
            state.waiting.append(entry)

    def retry(self, key: Hashable, entries: list[Entry]) -> None:
        """Rows of a failed live batch, back at the head of their key's queue (they were admitted first) with their
        arrival order kept; ``group`` set by the loop keeps each half of a bisected batch apart."""
        state = self._keys.setdefault(key, _Key())
        state.waiting[:0] = entries

    def remove(self, owner: Any) -> dict[Hashable, list[Entry]]:
        """Forget every row of ``owner`` (cancelled, expired or failed). Returns its live rows per key: the loop
        takes them out of the live batch before that batch's next step."""
        gone: dict[Hashable, list[Entry]] = {}
        for key, state in self._keys.items():
            state.waiting = [e for e in state.waiting if e.owner is not owner]
            live = [e for e in state.live if e.owner is owner]
            if live:
                state.live = [e for e in state.live if e.owner is not owner]
                gone[key] = live
        self._forget_idle()
        return gone

    def finished(self, key: Hashable, rows: list[Entry], step_s: float) -> None:
        """After a step of ``key``: the rows that reached t = 1 leave; the step's time is charged to the key."""
        state = self._keys[key]
        done = {id(e) for e in rows}
        for entry in rows:
            entry.left = True
        requests = _requests(state)
        state.live = [e for e in state.live if id(e) not in done]
        state.served_s += step_s / requests  # a share per request: a batch of n requests earns n times the steps
        state.last_step_s = step_s
        self._forget_idle()

    def charge(self, key: Hashable, seconds: float) -> None:
        """Engine time a key used outside a step (post-processing on the engine thread), shared like a step's."""
        state = self._keys.get(key)
        if state is not None:  # a key that went idle has nothing left to be fair about
            state.served_s += seconds / _requests(state)

    def drop_key(self, key: Hashable) -> list[Entry]:
        """Take a key's live rows out (its live batch failed; the loop fails or re-adds them); returns them."""
        state = self._keys.get(key)
        if state is None:
            return []
        live, state.live = state.live, []
        self._forget_idle()
        return live

    # --- what the scheduler decides -----------------------------------------------------------------------------
    def next(self, now: float | None = None, need: Callable[[Any], float] | None = None) -> Turn | None:
        """The next step to run (None: nothing is due; see ``due_in``). Joining rows become live at once.
        ``need(owner)``: engine seconds that request still needs (without it deadlines are not looked at)."""
        now = time.monotonic() if now is None else now
        if self.policy == "request":
            return self._next_request_level(now)
        candidates = [k for k, s in self._keys.items() if s.live or self._due(s, now)]
        if not candidates:
            return None
        key = self._earliest_deadline_key(now, need) if need is not None else None
        if key is None:
            # waiting for company pays only while the engine would idle: beside other work it would cost the
            # newcomer that work's whole next step (hundreds of ms for a TTS row on a CPU) instead of max_wait
            candidates += [k for k, s in self._keys.items() if s.waiting and k not in candidates]
            key = min(candidates, key=lambda k: (self._keys[k].served_s, self._keys[k].turns,
                                                 self._oldest(self._keys[k])))
        self._keys[key].turns += 1
        return Turn(key, self._admit(self._keys[key]))

    def _earliest_deadline_key(self, now: float, need: Callable[[Any], float]) -> Hashable | None:
        """The key of the earliest-deadline request if, run earliest deadline first from now, some request would
        come within the slack of its deadline; None while every deadline is safe (the fair share decides)."""
        first: dict[int, tuple[float, int, Hashable, Any]] = {}
        for key, state in self._keys.items():
            for e in (*state.live, *state.waiting):
                first.setdefault(id(e.owner), (e.deadline, e.order, key, e.owner))
        if not first:
            return None
        ordered = sorted(first.values(), key=lambda f: f[:2])
        slack = SLACK_STEPS * max(s.last_step_s for s in self._keys.values())
        done_at = now
        for deadline, _, _, owner in ordered:
            done_at += NEED_SAFETY * need(owner)
            if done_at + slack > deadline:
                return ordered[0][2]
        return None

    def _next_request_level(self, now: float) -> Turn | None:
        running = [k for k, s in self._keys.items() if s.live]
        if running:
            return Turn(running[0], [])
        due = [k for k, s in self._keys.items() if self._due(s, now)]
        if not due:
            return None
        key = min(due, key=lambda k: self._keys[k].waiting[0].order)
        return Turn(key, self._admit(self._keys[key]))

    def due_in(self, now: float | None = None) -> float | None:
        """Seconds until a waiting key becomes due (None: nothing waits)."""
        now = time.monotonic() if now is None else now
        times = [s.waiting[0].enqueued_at + self.max_wait_s - now for s in self._keys.values() if s.waiting]
        return max(0.0, min(times)) if times else None

    def _due(self, state: _Key, now: float) -> bool:
        if not state.waiting:
            return False
        if self.draining or now >= state.waiting[0].enqueued_at + self.max_wait_s:
            return True
        return self._would_fill(state)

    def _would_fill(self, state: _Key) -> bool:
        """Whether the waiting rows already fill the (empty) batch: waiting longer cannot make it better."""
        queue = self._queue(state)
        n = self._joinable(state, queue)
        return n < len(queue) or n >= self.budget.rows

    def _admit(self, state: _Key) -> list[Entry]:
        queue = self._queue(state)
        joining = queue[: self._joinable(state, queue)]
        chosen = {id(e) for e in joining}
        state.waiting = [e for e in state.waiting if id(e) not in chosen]
        state.live.extend(joining)
        return joining

    @staticmethod
    def _queue(state: _Key) -> list[Entry]:
        """The waiting rows that may join now, in arrival order: rows of the live batch's retry group only (a
        bisected batch's halves run apart from everything else), and no row before the row it must follow."""
        company = state.live[:1] or state.waiting[:1]  # whose batch it is (or will be)
        group = company[0].group if company else None
        queue = []
        for entry in state.waiting:
            if entry.group != group:
                break  # strict arrival order: a row that cannot join yet holds back the rows behind it
            if entry.after is None or entry.after.left:
                queue.append(entry)
        return queue

    def _joinable(self, state: _Key, queue: list[Entry]) -> int:
        """How many of ``queue`` may join the key's live batch now (the frame budget and the row cap)."""
        return joinable(len(state.live), max((e.frames for e in state.live), default=0),
                        [e.frames for e in queue], self.budget.frames, self.budget.rows)

    @staticmethod
    def _oldest(state: _Key) -> int:
        return min((e.order for e in [*state.live, *state.waiting[:1]]), default=0)

    def _forget_idle(self) -> None:
        """Keys with nothing waiting or live keep their served time only while others are active."""
        if not any(s.live or s.waiting for s in self._keys.values()):
            self._keys.clear()

    # --- what the loop and the metrics read ---------------------------------------------------------------------
    def live(self, key: Hashable) -> list[Entry]:
        state = self._keys.get(key)
        return list(state.live) if state else []

    def waiting_rows(self) -> int:
        return sum(len(s.waiting) for s in self._keys.values())

    def live_rows(self) -> int:
        return sum(len(s.live) for s in self._keys.values())

    def idle(self) -> bool:
        return not any(s.live or s.waiting for s in self._keys.values())


def _requests(state: _Key) -> int:
    """Requests with rows in the key's live batch (at least 1): a step's time is shared among them."""
    return len({id(e.owner) for e in state.live}) or 1
