"""Task queue tools: submit and watch tasks on this node or any authorized peer; external workers.

A client's tool names the node that serves it by ``peer`` or by its task id's owner tag, and is
served there as the same caller (:mod:`triomcp.server.tools.owners`); ``taskqueue_list`` without
``peer`` lists the caller's tasks on every node of the mesh (:mod:`triomcp.server.tools.task_listing`).

Size: a little over 300 lines: twelve tools (five for clients, seven for external workers), each an
argument model and a few lines over the queue; splitting them would scatter one wire contract.
"""

from __future__ import annotations

import json
from typing import Any

import trio
from pydantic import BaseModel, Field

from triomcp.errors import ResourceNotFound, TaskNotFound, ToolError
from triomcp.mcp.context import ToolContext
from triomcp.mcp.registry import AnyJson, Registry
from triomcp.server.services import Services, services_of
from triomcp.server.tools.owners import on_owner, serving_relay
from triomcp.server.tools.task_listing import Page, list_mesh
from triomcp.server.tools.toolset import BuiltinTool, add_tools
from triomcp.taskqueue import Lease, Task

__all__ = [
    "TOOLS", "register", "task_resource", "taskqueue_cancel", "taskqueue_claim", "taskqueue_complete",
    "taskqueue_fail", "taskqueue_get", "taskqueue_list", "taskqueue_progress", "taskqueue_release",
    "taskqueue_renew", "taskqueue_submit", "taskqueue_suspend", "taskqueue_wait", "visible_to",
]

PEER = Field(default=None, description="peer id of the node whose queue holds the task (default: this node)")
TASK_TYPE = Field(pattern=r"^[a-zA-Z0-9_.:-]{1,128}$", description="registered task type, e.g. tool.call")


def visible_to(task: Task, principal: str | None) -> bool:
    """A task is visible to whoever submitted it; a local caller with no principal sees all."""
    return principal is None or task.submitter == principal


async def _owned(services: Services, task_id: str, principal: str | None) -> Task:
    task = await services.require_queue().get(task_id)
    if not visible_to(task, principal):
        raise TaskNotFound(f"no task {task_id}")  # do not reveal other principals' tasks
    return task


class SubmitArgs(BaseModel):
    task_type: str = TASK_TYPE
    payload: AnyJson = Field(default=None, description="JSON payload for the handler")
    priority: int = Field(default=0, ge=-1000, le=1000, description="higher runs first; FIFO among equals")
    peer: str | None = PEER
    idempotency_key: str | None = Field(default=None, max_length=200,
                                        description="same key and payload returns the same task")
    max_attempts: int | None = Field(default=None, ge=0, le=1000, description="0 = unlimited")


class TaskRef(BaseModel):
    task_id: str = Field(min_length=1, max_length=64)
    peer: str | None = PEER


class WaitArgs(TaskRef):
    timeout_s: float = Field(default=30.0, gt=0, le=3600)


class ListArgs(BaseModel):
    state: str | None = Field(default=None, pattern=r"^(queued|leased|waiting|succeeded|failed|cancelled|dead)$")
    task_type: str | None = None
    cursor: str | None = None
    limit: int = Field(default=50, ge=1, le=500)
    peer: str | None = Field(default=None, description="peer id of the one node to list (default: every node of "
                                                       "the mesh, for an HTTP client; this node, for a peer)")


class TaskOut(BaseModel):
    task: dict[str, Any]


class Submitted(BaseModel):
    task_id: str
    owner: str = Field(description="peer id of the node whose queue holds the task ('local' without p2p)")
    state: str
    task: dict[str, Any]


class Waited(BaseModel):
    task: dict[str, Any]
    finished: bool


class Listed(BaseModel):
    tasks: list[dict[str, Any]]
    next_cursor: str | None
    partial: bool = Field(default=False, description="some node of the mesh did not answer: see unreachable")
    unreachable: list[dict[str, str]] = Field(default_factory=list, description="{peer, error} of each node that "
                                              "did not answer; it is asked again on the next page")


class ClaimArgs(BaseModel):
    task_types: list[str] = Field(min_length=1, max_length=32)
    holder: str = Field(default="worker", max_length=200)
    lease_s: float | None = Field(default=None, gt=0, le=3600)
    wait_s: float = Field(default=0.0, ge=0, le=60, description="wait this long for a task (event-driven)")
    max_tasks: int = Field(default=1, ge=1, le=32, description="claim up to this many tasks at once (each its "
                                                               "own lease, in `leases`)")


class LeaseRef(BaseModel):
    task_id: str = Field(min_length=1, max_length=64)
    token: str = Field(min_length=1, max_length=128)


class ClaimNext(BaseModel):
    task_types: list[str] = Field(min_length=1, max_length=32)
    holder: str = Field(default="worker", max_length=200)
    lease_s: float | None = Field(default=None, gt=0, le=3600)


class CompleteArgs(LeaseRef):
    result: AnyJson = None
    claim_next: ClaimNext | None = Field(
        default=None, description="once the outcome is recorded, also claim the next task of these types "
                                  "(no wait): one round trip per task for a busy remote worker")


class FailArgs(LeaseRef):
    error: dict[str, Any] = Field(description="{code, message}")
    retry: bool = True


class ProgressArgs(LeaseRef):
    fraction: float = Field(ge=0, le=1)
    message: str | None = Field(default=None, max_length=1000)


class ReleaseArgs(LeaseRef):
    cancelled: bool = Field(default=False, description="true: the handler stopped after a cancel request")


class SuspendArgs(LeaseRef):
    requests: dict[str, dict[str, Any]] = Field(
        min_length=1, max_length=64,
        description="what the handler waits for, by key (unique over the task's life); the task is queued "
                    "again once every key is answered")


class LeaseOut(BaseModel):
    lease: dict[str, Any] | None
    cancel_requested: bool = False


class Claimed(LeaseOut):
    leases: list[dict[str, Any]] = Field(default_factory=list, description="every lease claimed (the first is "
                                                                           "`lease`)")
    remaining: int | None = Field(default=None, description="tasks of these types still claimable here now")


class Completed(TaskOut):
    next_lease: dict[str, Any] | None = Field(default=None, description="the lease claim_next asked for, if any")
    remaining: int | None = Field(default=None, description="with claim_next: tasks of those types still "
                                                            "claimable here now")


def _owner(services: Services) -> str:
    return services.node.peer_id if services.node is not None else "local"


def _holder(ctx: ToolContext, holder: str) -> str:
    return f"{ctx.principal or 'local'}/{holder}"


# -- submitting and watching, on this node or the peer the arguments name ------------------
async def taskqueue_submit(args: SubmitArgs, ctx: ToolContext) -> Submitted:
    if (remote := await on_owner(ctx, "taskqueue_submit", args, Submitted)) is not None:
        return remote
    services = services_of(ctx)
    task = await services.require_queue().submit(
        args.task_type, args.payload, priority=args.priority, idempotency_key=args.idempotency_key,
        max_attempts=args.max_attempts, submitter=ctx.principal)
    return Submitted(task_id=task.id, owner=_owner(services), state=task.state.value, task=task.to_dict())


async def taskqueue_get(args: TaskRef, ctx: ToolContext) -> TaskOut:
    if (remote := await on_owner(ctx, "taskqueue_get", args, TaskOut, task_id=args.task_id)) is not None:
        return remote
    return TaskOut(task=(await _owned(services_of(ctx), args.task_id, ctx.principal)).to_dict())


async def taskqueue_wait(args: WaitArgs, ctx: ToolContext) -> Waited:
    if (remote := await on_owner(ctx, "taskqueue_wait", args, Waited, task_id=args.task_id,
                                 runs_for=args.timeout_s)) is not None:
        return remote
    services = services_of(ctx)
    queue = services.require_queue()
    task = await _owned(services, args.task_id, ctx.principal)
    reported = 0.0
    with trio.move_on_after(args.timeout_s):
        while not task.finished:
            task = await queue.wait_changed(task.id, task.version)
            if task.progress is not None and task.progress > reported:
                reported = task.progress
                await ctx.report_progress(task.progress, 1.0, task.progress_message or task.state.value)
    return Waited(task=task.to_dict(), finished=task.finished)


async def taskqueue_list(args: ListArgs, ctx: ToolContext) -> Listed:
    if (remote := await on_owner(ctx, "taskqueue_list", args, Listed)) is not None:
        return remote
    queue = services_of(ctx).require_queue()

    async def here(cursor: str | None, limit: int) -> Page:
        try:
            tasks, after = await queue.list_tasks(state=args.state, task_type=args.task_type,
                                                  submitter=ctx.principal, cursor=cursor, limit=limit)
        except ValueError as exc:
            raise ToolError(str(exc), code="invalid_cursor") from None
        return Page([t.to_dict() for t in tasks], after)

    serving = serving_relay(ctx)
    if args.peer is None and serving is not None:  # an HTTP client: its tasks on every node
        filters = args.model_dump(mode="json", include={"state", "task_type"}, exclude_none=True)
        found = await list_mesh(ctx, *serving, filters, cursor=args.cursor, limit=args.limit, local=here)
        return Listed(tasks=found.tasks, next_cursor=found.next_cursor, partial=bool(found.unreachable),
                      unreachable=found.unreachable)
    page = await here(args.cursor, args.limit)
    return Listed(tasks=page.tasks, next_cursor=page.next_cursor)


async def taskqueue_cancel(args: TaskRef, ctx: ToolContext) -> TaskOut:
    if (remote := await on_owner(ctx, "taskqueue_cancel", args, TaskOut, task_id=args.task_id)) is not None:
        return remote
    services = services_of(ctx)
    await _owned(services, args.task_id, ctx.principal)
    return TaskOut(task=(await services.require_queue().cancel(args.task_id)).to_dict())


# -- external workers ------------------------------------------------------------------------
async def taskqueue_claim(args: ClaimArgs, ctx: ToolContext) -> Claimed:
    queue = services_of(ctx).require_queue()
    holder = _holder(ctx, args.holder)
    leases, remaining = await queue.claim_many(holder, args.task_types, args.max_tasks, lease_seconds=args.lease_s)
    if not leases and args.wait_s > 0:
        with trio.move_on_after(args.wait_s):
            leases = [await queue.wait_claim(holder, args.task_types, lease_seconds=args.lease_s)]
            if args.max_tasks > 1:
                more, remaining = await queue.claim_many(holder, args.task_types, args.max_tasks - 1,
                                                         lease_seconds=args.lease_s)
                leases += more
    out = [lease.to_dict() for lease in leases]
    return Claimed(lease=out[0] if out else None, leases=out, remaining=remaining)


async def taskqueue_renew(args: LeaseRef, ctx: ToolContext) -> LeaseOut:
    lease = await services_of(ctx).require_queue().renew(args.task_id, args.token)
    return LeaseOut(lease=lease.to_dict(), cancel_requested=lease.task.cancel_requested)


async def taskqueue_progress(args: ProgressArgs, ctx: ToolContext) -> TaskOut:
    task = await services_of(ctx).require_queue().report_progress(args.task_id, args.token, args.fraction,
                                                                  args.message)
    return TaskOut(task=task.to_dict())


async def taskqueue_complete(args: CompleteArgs, ctx: ToolContext) -> Completed:
    queue = services_of(ctx).require_queue()
    task = await queue.complete(args.task_id, args.token, args.result)
    following: list[Lease] = []
    remaining = None
    if args.claim_next is not None:
        following, remaining = await queue.claim_many(_holder(ctx, args.claim_next.holder),
                                                      args.claim_next.task_types, 1,
                                                      lease_seconds=args.claim_next.lease_s)
    return Completed(task=task.to_dict(), next_lease=following[0].to_dict() if following else None,
                     remaining=remaining)


async def taskqueue_fail(args: FailArgs, ctx: ToolContext) -> TaskOut:
    error: dict[str, Any] = {"code": str(args.error.get("code", "failed")),
                             "message": str(args.error.get("message", ""))}
    data = args.error.get("data")
    if isinstance(data, dict) and isinstance(data.get("jsonrpc"), dict):
        error["data"] = {"jsonrpc": data["jsonrpc"]}  # an MCP task's JSON-RPC error, kept for tasks/get
    task = await services_of(ctx).require_queue().fail(args.task_id, args.token, error, retry=args.retry)
    return TaskOut(task=task.to_dict())


async def taskqueue_release(args: ReleaseArgs, ctx: ToolContext) -> TaskOut:
    queue = services_of(ctx).require_queue()
    if args.cancelled:
        task = await queue.confirm_cancelled(args.task_id, args.token)
    else:
        task = await queue.release(args.task_id, args.token)
    return TaskOut(task=task.to_dict())


async def taskqueue_suspend(args: SuspendArgs, ctx: ToolContext) -> TaskOut:
    task = await services_of(ctx).require_queue().suspend(args.task_id, args.token, args.requests)
    return TaskOut(task=task.to_dict())


async def task_resource(variables: dict[str, str], ctx: ToolContext) -> str:
    task_id = variables["task_id"]
    try:  # inside a legacy session, another node's task is read there (as taskqueue_get is)
        remote = await on_owner(ctx, "taskqueue_get", TaskRef(task_id=task_id), TaskOut,
                                task_id=task_id) if 0 < len(task_id) <= 64 else None
        task = remote.task if remote is not None else (await _owned(services_of(ctx), task_id, ctx.principal)).to_dict()
    except (TaskNotFound, ToolError) as exc:
        if isinstance(exc, ToolError) and exc.code != TaskNotFound.code:
            raise
        raise ResourceNotFound(f"Resource not found: triomcp://tasks/{task_id}") from None
    return json.dumps(task, indent=2)


TOOLS = [
    BuiltinTool(taskqueue_submit, "Submit a task to this node's queue or a peer's (durable before it answers).",
                group="tasks", idempotent=False, peer_argument="peer"),
    BuiltinTool(taskqueue_get, "A task's state, progress and result.", group="tasks", read_only=True,
                owner_argument="task_id", peer_argument="peer"),
    BuiltinTool(taskqueue_wait, "Wait until a task finishes or the timeout passes; sends progress meanwhile.",
                group="tasks", read_only=True, owner_argument="task_id", peer_argument="peer"),
    BuiltinTool(taskqueue_list, "List your tasks (newest first) on every node of the mesh, filtered by state and "
                "type; `peer` lists one node's.", group="tasks", read_only=True, peer_argument="peer"),
    BuiltinTool(taskqueue_cancel, "Cancel a task: at once when queued, by stopping its handler when running.",
                group="tasks", destructive=True, owner_argument="task_id", peer_argument="peer"),
    BuiltinTool(taskqueue_claim, "Claim a task of the given types (waits up to wait_s); returns a lease.", "worker"),
    BuiltinTool(taskqueue_renew, "Renew a lease; says whether a cancel was requested.", "worker", owner_argument="task_id"),
    BuiltinTool(taskqueue_progress, "Report a leased task's progress.", group="worker", owner_argument="task_id"),
    BuiltinTool(taskqueue_complete, "Complete a leased task with its result (only the lease holder can).",
                group="worker", owner_argument="task_id"),
    BuiltinTool(taskqueue_fail, "Fail a leased task: retried after a backoff unless retry is false.",
                group="worker", owner_argument="task_id"),
    BuiltinTool(taskqueue_release, "Give a lease back (shutdown), or confirm a cancel with cancelled=true.",
                group="worker", owner_argument="task_id"),
    BuiltinTool(taskqueue_suspend, "Park a leased task until the input its handler asked for is answered.",
                group="worker", owner_argument="task_id"),
]


def register(registry: Registry) -> None:
    add_tools(registry, TOOLS)
    registry.resource_template("triomcp://tasks/{task_id}", name="task", description="One task, as JSON.",
                               mime_type="application/json", owner_variable="task_id")(task_resource)
