"""The step scheduler on its own: pure decisions, no model, no clock (times are given)."""

import pytest

from service.scheduler import Budget, Entry, Scheduler

A, B = "enhance-key", "tts-key"


def entries(owner: str, frames: list[int], at: float = 0.0) -> list[Entry]:
    return [Entry(row=f"{owner}{i}", owner=owner, frames=f, enqueued_at=at) for i, f in enumerate(frames)]


def names(turn) -> list[str]:
    return [e.row for e in turn.join]


def run_key(s: Scheduler, key, step_s: float = 1.0):
    """Next turn, with every live row of its key finishing after it (a one-step generation)."""
    turn = s.next(0.0)
    s.finished(turn.key, s.live(turn.key), step_s)
    return turn


def test_rows_join_in_arrival_order_under_the_frame_budget_and_the_row_cap():
    s = Scheduler(Budget(frames=100, rows=3))
    s.add(A, entries("r", [30, 20, 40, 10, 10, 10]))
    assert names(s.next(0.0)) == ["r0", "r1"]  # r2 would make 3 x 40 = 120 > 100
    assert names(s.next(0.0)) == []  # strict arrival order: nothing behind r2 jumps the queue
    s.finished(A, [e for e in s.live(A) if e.row == "r1"], 1.0)  # r1 reached t = 1
    assert names(s.next(0.0)) == ["r2"]  # 2 x 40 = 80 fits now; r3 would make 120
    s.finished(A, s.live(A), 1.0)
    assert names(s.next(0.0)) == ["r3", "r4", "r5"] and len(s.live(A)) == 3  # 30 frames, at the row cap


def test_a_row_longer_than_the_budget_runs_alone():
    s = Scheduler(Budget(frames=100, rows=8))
    s.add(A, entries("big", [500]) + entries("small", [10]))
    assert names(s.next(0.0)) == ["big0"]
    assert names(s.next(0.0)) == []  # nothing joins a batch that is over budget already
    s.finished(A, s.live(A), 1.0)
    assert names(s.next(0.0)) == ["small0"]


def test_live_batches_take_turns_by_step_time_so_a_short_request_is_not_starved():
    s = Scheduler(Budget(frames=10_000, rows=16))
    s.add(B, entries("long", [2000]))
    assert s.next(0.0).key == B
    s.finished(B, [], 3.0)  # a long TTS step
    s.add(A, entries("short", [400]))  # arrives during it: starts level with the TTS, paid back the 3 s it waited
    order = []
    for _ in range(9):
        turn = s.next(0.0)
        order.append(turn.key)
        s.finished(turn.key, [], 3.0 if turn.key == B else 1.0)
    # three 1 s enhancement steps repay the wait, then equal shares: three 1 s steps per 3 s TTS step (the key with
    # fewer turns wins a tie)
    assert order == [A, A, A, B, A, A, A, B, A]


def test_where_steps_are_cheap_the_credit_is_small_and_turns_alternate():
    s = Scheduler(Budget(frames=10_000, rows=16))
    s.add(B, entries("long", [2000]))
    for _ in range(50):
        s.next(0.0)
        s.finished(B, [], 0.02)  # a GPU-like step
    s.add(A, entries("short", [400]))
    order = []
    for _ in range(6):
        turn = s.next(0.0)
        order.append(turn.key)
        s.finished(turn.key, [], 0.02)
    assert order == [A, A, B, A, B, A]  # one step of credit, then equal turns: the long request keeps moving


def test_the_oldest_work_breaks_ties():
    s = Scheduler(Budget(frames=10_000, rows=16))
    s.add(B, entries("first", [100]))
    s.add(A, entries("second", [100]))
    assert s.next(0.0).key == B


def test_removing_a_request_frees_its_rows_and_reports_the_live_ones():
    s = Scheduler(Budget(frames=10_000, rows=16))
    s.add(A, entries("gone", [10, 10]) + entries("kept", [10]))
    s.next(0.0)
    s.add(A, entries("gone", [10]))  # a third row of the same request, still waiting
    left = s.remove("gone")
    assert [e.row for e in left[A]] == ["gone0", "gone1"]  # the loop takes these out before the next step
    assert [e.row for e in s.live(A)] == ["kept0"] and s.waiting_rows() == 0


def test_request_level_policy_runs_one_batch_to_the_end_without_joiners():
    s = Scheduler(Budget(frames=10_000, rows=16), policy="request")
    s.add(A, entries("a", [10]))
    assert names(s.next(0.0)) == ["a0"]
    s.add(A, entries("b", [10]))
    s.add(B, entries("c", [10]))
    for _ in range(3):
        turn = s.next(0.0)
        assert turn.key == A and turn.join == []  # b waits for the running batch to end; c gets no turn
    s.finished(A, s.live(A), 1.0)
    assert names(s.next(0.0)) == ["b0"]


def test_a_new_batch_waits_for_company_unless_full_or_draining():
    s = Scheduler(Budget(frames=100, rows=2), max_wait_s=1.0)
    s.add(A, entries("a", [10], at=0.0))
    assert s.next(0.5) is None and s.due_in(0.5) == pytest.approx(0.5)
    assert names(s.next(1.0)) == ["a0"]
    full = Scheduler(Budget(frames=100, rows=2), max_wait_s=60.0)
    full.add(B, entries("b", [10, 10], at=5.0))  # two rows fill the cap: no point in waiting
    assert names(full.next(5.0)) == ["b0", "b1"]
    draining = Scheduler(Budget(frames=100, rows=4), max_wait_s=60.0)
    draining.add(A, entries("x", [10], at=0.0))
    draining.draining = True
    assert names(draining.next(0.0)) == ["x0"]


def test_beside_other_work_a_newcomer_does_not_wait_for_company():
    s = Scheduler(Budget(frames=3000, rows=16), max_wait_s=0.5)
    s.add(B, entries("long", [2000, 2000], at=0.0))  # two TTS rows; the budget takes one at a time
    assert names(s.next(1.0)) == ["long0"]  # due: its wait is over
    s.finished(B, [], 3.0)
    s.add(A, entries("short", [400], at=3.0))  # arrives while B steps: waiting would cost it B's next 3 s step
    turn = s.next(3.0)
    assert turn.key == A and names(turn) == ["short0"]
    s.finished(A, s.live(A), 0.1)
    s.finished(B, s.live(B), 3.0)  # B's first row is done; its second only waits to join (due)
    s.add(A, entries("again", [400], at=6.0))
    assert s.next(6.0).key == A  # B has work, so A does not wait for company behind B's next step either


def test_the_halves_of_a_failed_batch_run_apart_at_the_head_of_the_queue():
    s = Scheduler(Budget(frames=10_000, rows=16))
    s.add(A, entries("q", [10]))  # arrived after the failed batch started
    halves = [Entry(f"{o}0", o, 10, 0.0, group=g) for o, g in (("p", 1), ("r", 1), ("u", 2))]
    s.retry(A, halves)
    assert names(s.next(0.0)) == ["p0", "r0"]  # group 1 first, alone: neither group 2 nor q joins it
    assert names(s.next(0.0)) == []
    s.finished(A, s.live(A), 1.0)
    assert names(s.next(0.0)) == ["u0"]
    s.finished(A, s.live(A), 1.0)
    assert names(s.next(0.0)) == ["q0"]


def test_a_row_with_a_predecessor_joins_once_it_has_left():
    s = Scheduler(Budget(frames=10_000, rows=16))
    chunks = entries("stream", [10, 10, 10])
    chunks[1].after, chunks[2].after = chunks[0], chunks[1]
    s.add(A, chunks + entries("other", [10]))
    assert names(s.next(0.0)) == ["stream0", "other0"]  # the held chunks do not hold back another request
    assert names(s.next(0.0)) == []
    s.finished(A, [chunks[0]], 1.0)
    assert names(s.next(0.0)) == ["stream1"]
    s.remove("stream")  # cancelled: its last chunk goes with it
    assert s.live(A)[0].row == "other0" and s.waiting_rows() == 0


def test_turns_are_shared_per_request_not_per_batch():
    s = Scheduler(Budget(frames=10_000, rows=16))
    s.add(B, [e for owner in "wxyz" for e in entries(owner, [100])])  # four TTS requests share one batch
    s.add(A, entries("solo", [100]))
    order = []
    for _ in range(10):
        turn = s.next(0.0)
        order.append(turn.key)
        s.finished(turn.key, [], 1.0)  # every step costs the same
    assert order.count(B) == 8 and order.count(A) == 2  # 4 requests : 1 request


def deadline_entries(owner: str, frames: list[int], deadline: float) -> list[Entry]:
    return [Entry(row=f"{owner}{i}", owner=owner, frames=f, enqueued_at=0.0, deadline=deadline)
            for i, f in enumerate(frames)]


def test_with_deadlines_far_off_the_fair_share_decides():
    s = Scheduler(Budget(frames=10_000, rows=16))
    s.add(B, deadline_entries("tts", [100], deadline=300.0))
    s.add(A, [e for owner in "wxyz" for e in deadline_entries(owner, [100], deadline=300.0)])
    need = {"tts": 20.0, "w": 1.0, "x": 1.0, "y": 1.0, "z": 1.0}.__getitem__
    order = []
    for _ in range(10):
        turn = s.next(0.0, need)
        order.append(turn.key)
        s.finished(turn.key, [], 1.0)
    assert order.count(A) == 8 and order.count(B) == 2  # 4 requests : 1, exactly as without deadlines


def finish_times(with_deadlines: bool) -> dict[str, float]:
    """A TTS request needing 20 s with 27 s left, then four enhancement requests of 2.5 s each (60 s left): shared
    fairly (4 requests : 1) the TTS finishes at 30 s. Every step is 1 s, shared by the requests in it."""
    s = Scheduler(Budget(frames=10_000, rows=16))
    s.add(B, deadline_entries("tts", [100], deadline=27.0))
    s.add(A, [e for owner in "wxyz" for e in deadline_entries(owner, [100], deadline=60.0)])
    remaining = {"tts": 20.0, "w": 2.5, "x": 2.5, "y": 2.5, "z": 2.5}
    now, done = 0.0, {}
    while len(done) < len(remaining):
        turn = s.next(now, remaining.__getitem__ if with_deadlines else None)
        owners = {e.owner for e in s.live(turn.key)}
        for owner in owners:
            remaining[owner] -= 1.0 / len(owners)
        now += 1.0
        finished = [e for e in s.live(turn.key) if remaining[e.owner] <= 1e-9]
        done.update({e.owner: now for e in finished})
        s.finished(turn.key, finished, 1.0)
    return done


def test_when_fair_shares_would_miss_a_deadline_the_earliest_deadline_goes_first():
    fair = finish_times(with_deadlines=False)
    assert fair["tts"] > 27.0  # the failure this rule is for: a 504 for an admitted request
    done = finish_times(with_deadlines=True)
    assert done["tts"] <= 27.0 and max(done[o] for o in "wxyz") <= 60.0  # everyone in time
    assert done["tts"] > 20.0  # fair shares ran until the TTS's deadline got close, then it went first


def test_the_deadline_check_counts_the_work_of_every_earlier_deadline():
    # each request alone is safe, but the TTS comes within the safety margin once the work of the two earlier
    # deadlines is counted before it (1.25 x (4 + 4 + 16) = 30 s > 29 s): so the earliest deadline runs now
    s = Scheduler(Budget(frames=10_000, rows=1))
    s.add(B, deadline_entries("tts", [100], deadline=30.0))
    s.add(A, deadline_entries("e1", [100], deadline=10.0) + deadline_entries("e2", [100], deadline=12.0))
    need = {"tts": 16.0, "e1": 4.0, "e2": 4.0}.__getitem__
    assert s.next(0.0).key == B  # without a need function: the oldest work (fair share tie-break)
    s2 = Scheduler(Budget(frames=10_000, rows=1))
    s2.add(B, deadline_entries("tts", [100], deadline=29.0))
    s2.add(A, deadline_entries("e1", [100], deadline=10.0) + deadline_entries("e2", [100], deadline=12.0))
    assert s2.next(0.0, need).key == A
    s3 = Scheduler(Budget(frames=10_000, rows=1))  # one second more for the TTS: safe, the fair share decides
    s3.add(B, deadline_entries("tts", [100], deadline=31.0))
    s3.add(A, deadline_entries("e1", [100], deadline=10.0) + deadline_entries("e2", [100], deadline=12.0))
    assert s3.next(0.0, need).key == B
