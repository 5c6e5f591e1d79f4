"""The public face of ``triomcp.taskqueue``: pinned, so that a change to it is a decision, not an accident."""

from __future__ import annotations

import triomcp.taskqueue
from triomcp import errors


def test_taskqueue_facade_is_pinned() -> None:
    assert sorted(triomcp.taskqueue.__all__) == sorted([
        "FINISHED", "TRANSITIONS", "Handler", "HandlerRegistry", "Lease", "NeedsInput", "NonRetryable",
        "QueueStatistics", "Task", "TaskContext", "TaskQueue", "TaskSource", "TaskState", "open_task_queue",
        "run_one", "run_workers",
    ])
    for name in triomcp.taskqueue.__all__:
        assert hasattr(triomcp.taskqueue, name)


def test_the_errors_a_handler_raises_belong_to_the_one_hierarchy() -> None:
    assert triomcp.taskqueue.NonRetryable is errors.NonRetryable
    assert triomcp.taskqueue.NeedsInput is errors.NeedsInput
    for error in (errors.NonRetryable, errors.NeedsInput):
        assert issubclass(error, errors.TaskQueueError) and error.__name__ in errors.__all__
        assert error.__name__ in (errors.__doc__ or "")  # drawn in the tree
    assert errors.NeedsInput({"b": 1, "a": 2}).to_dict() == {"code": "needs_input",
                                                              "message": "waiting for input: a, b"}
