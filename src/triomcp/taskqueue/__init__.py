"""The durable task queue: a sans-I/O lifecycle, a SQLite store, an async queue and workers.

It knows nothing of MCP, HTTP or libp2p.
"""

from triomcp.errors import NeedsInput, NonRetryable
from triomcp.taskqueue.machine import TRANSITIONS
from triomcp.taskqueue.model import FINISHED, Lease, QueueStatistics, Task, TaskState
from triomcp.taskqueue.queue import TaskQueue, open_task_queue
from triomcp.taskqueue.source import TaskSource
from triomcp.taskqueue.workers import Handler, HandlerRegistry, TaskContext, run_one, run_workers

__all__ = [
    "FINISHED",
    "TRANSITIONS",
    "Handler",
    "HandlerRegistry",
    "Lease",
    "NeedsInput",
    "NonRetryable",
    "QueueStatistics",
    "Task",
    "TaskContext",
    "TaskQueue",
    "TaskSource",
    "TaskState",
    "open_task_queue",
    "run_one",
    "run_workers",
]
