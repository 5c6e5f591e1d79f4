"""The task lifecycle table, tested directly (synchronous, no store)."""

from __future__ import annotations

import random

import pytest

from triomcp._retry import Backoff
from triomcp.errors import InvalidTransition, LeaseLost
from triomcp.taskqueue.machine import TRANSITIONS, expire, fail, transition
from triomcp.taskqueue.model import FINISHED, Task, TaskState


def queued(**kw: object) -> Task:
    return Task(id="t1", type="x", payload={}, priority=0, seq=1, state=TaskState.QUEUED, **kw)  # type: ignore[arg-type]


def leased(now: float = 0.0, **kw: object) -> Task:
    return transition(queued(**kw), "claim", now=now, holder="w1", lease_seconds=10)


def test_no_transition_leaves_a_finished_state() -> None:
    assert not any(state in FINISHED for state, _ in TRANSITIONS)


def test_claim_counts_the_attempt_and_issues_a_token() -> None:
    task = leased()
    assert task.state is TaskState.LEASED and task.attempts == 1 and task.lease_holder == "w1"
    assert task.lease_token and task.lease_expires_at == 10
    assert leased().lease_token != task.lease_token


def test_only_the_holder_with_a_live_lease_may_finish() -> None:
    task = leased()
    with pytest.raises(LeaseLost):
        transition(task, "complete", now=1, token="forged", result=1)
    with pytest.raises(LeaseLost, match="expired"):
        transition(task, "complete", now=10, token=task.lease_token, result=1)
    done = transition(task, "complete", now=1, token=task.lease_token, result={"v": 1})
    assert done.state is TaskState.SUCCEEDED and done.result == {"v": 1} and done.lease_token is None
    with pytest.raises(InvalidTransition):
        transition(done, "complete", now=2, token=task.lease_token, result=2)


def test_retry_backoff_and_exhaustion() -> None:
    task = leased(max_attempts=2)
    again = transition(task, "fail_retry", now=1, token=task.lease_token, error={"code": "e"}, delay=5)
    assert again.state is TaskState.QUEUED and again.not_before == 6
    second = transition(again, "claim", now=7, holder="w2", lease_seconds=10)
    assert second.attempts == 2
    dead = expire(second, now=100, backoff=Backoff())
    assert dead.state is TaskState.DEAD and dead.error["code"] == "lease_expired"  # type: ignore[index]


def test_a_failed_attempt_is_retried_failed_for_good_or_dead_lettered() -> None:
    backoff = Backoff(base=4, cap=4, rng=random.Random(0))
    task = leased(max_attempts=2)
    token, error = task.lease_token or "", {"code": "e"}
    retried = fail(task, now=1, token=token, error=error, retry=True, backoff=backoff)
    assert retried.state is TaskState.QUEUED and 1 <= retried.not_before <= 5 and retried.error == error
    final = fail(task, now=1, token=token, error=error, retry=False, backoff=backoff)
    assert final.state is TaskState.FAILED and final.finished_at == 1
    second = transition(retried, "claim", now=6, holder="w", lease_seconds=10)
    dead = fail(second, now=7, token=second.lease_token or "", error=error, retry=True, backoff=backoff)
    assert dead.state is TaskState.DEAD and dead.attempts == 2
    with pytest.raises(LeaseLost):
        fail(second, now=7, token="forged", error=error, retry=True, backoff=backoff)


def test_expired_lease_goes_back_to_the_queue() -> None:
    task = expire(leased(max_attempts=3), now=11, backoff=Backoff(base=1, cap=1, rng=random.Random(0)))
    assert task.state is TaskState.QUEUED and task.lease_holder is None and 11 <= task.not_before <= 12


def test_cancel_queued_at_once_and_running_by_request() -> None:
    assert transition(queued(), "cancel", now=1).state is TaskState.CANCELLED
    running = transition(leased(), "cancel", now=1)
    assert running.state is TaskState.LEASED and running.cancel_requested
    assert transition(running, "cancelled", now=2, token=running.lease_token).state is TaskState.CANCELLED
    assert expire(running, now=11, backoff=Backoff()).state is TaskState.CANCELLED


def test_release_gives_the_attempt_back() -> None:
    task = leased()
    released = transition(task, "release", now=1, token=task.lease_token)
    assert released.state is TaskState.QUEUED and released.attempts == 0


def test_backoff_is_bounded_full_jitter() -> None:
    backoff = Backoff(base=1, cap=8, rng=random.Random(1))
    delays = [backoff.delay(a) for a in range(1, 12) for _ in range(50)]
    assert all(0 <= d <= 8 for d in delays) and max(delays) > 4


def test_a_task_waits_for_input_and_runs_again_once_every_request_is_answered() -> None:
    task = leased()
    waiting = transition(task, "suspend", now=1, token=task.lease_token,
                         requests={"a": {"method": "elicitation/create"}, "b": {"method": "roots/list"}})
    assert waiting.state is TaskState.WAITING and waiting.lease_token is None and waiting.attempts == 0
    assert set(waiting.pending_requests) == {"a", "b"}
    # Keys that are not open are ignored; a partial answer keeps it waiting for the rest.
    same = transition(waiting, "provide", now=2, responses={"zzz": {}})
    assert same == waiting
    partial = transition(waiting, "provide", now=2, responses={"a": {"action": "accept"}, "zzz": {}})
    assert partial.state is TaskState.WAITING and list(partial.pending_requests) == ["b"]
    assert partial.responses == {"a": {"action": "accept"}}
    ready = transition(partial, "provide", now=3, responses={"b": {"roots": []}, "a": {"action": "decline"}})
    assert ready.state is TaskState.QUEUED and ready.pending_requests == {}
    assert ready.responses == {"a": {"action": "accept"}, "b": {"roots": []}}  # an answer, once given, stays
    # The next run asks again under answered keys (and a new one): only the new one is open.
    again = transition(ready, "claim", now=4, holder="w2", lease_seconds=10)
    waiting2 = transition(again, "suspend", now=5, token=again.lease_token,
                          requests={"a": {"method": "x"}, "c": {"method": "elicitation/create"}})
    assert list(waiting2.pending_requests) == ["c"]
    with pytest.raises(InvalidTransition):  # nothing unanswered: the handler must not park
        transition(again, "suspend", now=5, token=again.lease_token, requests={"a": {"method": "x"}})
    with pytest.raises(LeaseLost):  # only the lease holder may park it
        transition(again, "suspend", now=5, token="forged", requests={"c": {}})


def test_a_waiting_task_is_cancelled_at_once_and_is_not_claimable() -> None:
    task = leased()
    waiting = transition(task, "suspend", now=1, token=task.lease_token, requests={"a": {}})
    cancelled = transition(waiting, "cancel", now=2)
    assert cancelled.state is TaskState.CANCELLED and cancelled.error == {
        "code": "cancelled", "message": "cancelled while waiting for input"}
    with pytest.raises(InvalidTransition):
        transition(waiting, "claim", now=2, holder="w", lease_seconds=1)
