"""Task queue tools: submit and watch tasks on this node or any authorized peer; external workers."""

from __future__ import annotations

import json
from typing import Any

import trio
from pydantic import BaseModel, Field

from triomcp.errors import ResourceNotFound, TaskNotFound, ToolError
from triomcp.mcp.context import ToolContext
from triomcp.mcp.registry import AnyJson, Registry
from triomcp.server.services import Services
from triomcp.server.tools.forwarding import forward, is_remote
from triomcp.taskqueue import Task

__all__ = ["register", "visible_to"]

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
    peer: str | None = PEER


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


class ClaimArgs(BaseModel):
    task_types: list[str] = Field(min_length=1, max_length=32)
    holder: str = Field(default="worker", max_length=200)
    lease_s: float | None = Field(default=None, gt=0, le=3600)
    wait_s: float = Field(default=0.0, ge=0, le=60, description="wait this long for a task (event-driven)")


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


class Completed(TaskOut):
    next_lease: dict[str, Any] | None = Field(default=None, description="the lease claim_next asked for, if any")


def _owner(services: Services) -> str:
    return services.node.peer_id if services.node is not None else "local"


def register(registry: Registry) -> None:
    @registry.tool(description="Submit a task to this node's queue or a peer's (durable before it answers).",
                   group="tasks", idempotent=False)
    async def taskqueue_submit(args: SubmitArgs, ctx: ToolContext) -> Submitted:
        services: Services = ctx.app_state
        if is_remote(services, args.peer):
            return Submitted(**await forward(ctx, args.peer or "", "taskqueue_submit", args))
        task = await services.require_queue().submit(
            args.task_type, args.payload, priority=args.priority, idempotency_key=args.idempotency_key,
            max_attempts=args.max_attempts, submitter=ctx.principal)
        return Submitted(task_id=task.id, owner=_owner(services), state=task.state.value, task=task.to_dict())

    @registry.tool(description="A task's state, progress and result.", read_only=True, group="tasks")
    async def taskqueue_get(args: TaskRef, ctx: ToolContext) -> TaskOut:
        services: Services = ctx.app_state
        if is_remote(services, args.peer):
            return TaskOut(**await forward(ctx, args.peer or "", "taskqueue_get", args))
        return TaskOut(task=(await _owned(services, args.task_id, ctx.principal)).to_dict())

    @registry.tool(description="Wait until a task finishes or the timeout passes; sends progress meanwhile.",
                   read_only=True, group="tasks")
    async def taskqueue_wait(args: WaitArgs, ctx: ToolContext) -> Waited:
        services: Services = ctx.app_state
        if is_remote(services, args.peer):
            return Waited(**await forward(ctx, args.peer or "", "taskqueue_wait", args))
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

    @registry.tool(description="List your tasks (newest first), filtered by state and type.", read_only=True,
                   group="tasks")
    async def taskqueue_list(args: ListArgs, ctx: ToolContext) -> Listed:
        services: Services = ctx.app_state
        if is_remote(services, args.peer):
            return Listed(**await forward(ctx, args.peer or "", "taskqueue_list", args))
        try:
            tasks, cursor = await services.require_queue().list(
                state=args.state, task_type=args.task_type, submitter=ctx.principal, cursor=args.cursor,
                limit=args.limit)
        except ValueError as exc:
            raise ToolError(str(exc), code="invalid_cursor") from None
        return Listed(tasks=[t.to_dict() for t in tasks], next_cursor=cursor)

    @registry.tool(description="Cancel a task: at once when queued, by stopping its handler when running.",
                   group="tasks", destructive=True)
    async def taskqueue_cancel(args: TaskRef, ctx: ToolContext) -> TaskOut:
        services: Services = ctx.app_state
        if is_remote(services, args.peer):
            return TaskOut(**await forward(ctx, args.peer or "", "taskqueue_cancel", args))
        await _owned(services, args.task_id, ctx.principal)
        return TaskOut(task=(await services.require_queue().cancel(args.task_id)).to_dict())

    # -- external workers --------------------------------------------------------------------
    @registry.tool(description="Claim a task of the given types (waits up to wait_s); returns a lease.",
                   group="worker")
    async def taskqueue_claim(args: ClaimArgs, ctx: ToolContext) -> LeaseOut:
        queue = ctx.app_state.require_queue()
        holder = f"{ctx.principal or 'local'}/{args.holder}"
        if args.wait_s > 0:
            with trio.move_on_after(args.wait_s):
                lease = await queue.wait_claim(holder, args.task_types, lease_seconds=args.lease_s)
                return LeaseOut(lease=lease.to_dict())
            return LeaseOut(lease=None)
        lease = await queue.claim(holder, args.task_types, lease_seconds=args.lease_s)
        return LeaseOut(lease=lease.to_dict() if lease else None)

    @registry.tool(description="Renew a lease; says whether a cancel was requested.", group="worker")
    async def taskqueue_renew(args: LeaseRef, ctx: ToolContext) -> LeaseOut:
        lease = await ctx.app_state.require_queue().renew(args.task_id, args.token)
        return LeaseOut(lease=lease.to_dict(), cancel_requested=lease.task.cancel_requested)

    @registry.tool(description="Report a leased task's progress.", group="worker")
    async def taskqueue_progress(args: ProgressArgs, ctx: ToolContext) -> TaskOut:
        task = await ctx.app_state.require_queue().report_progress(args.task_id, args.token, args.fraction,
                                                                   args.message)
        return TaskOut(task=task.to_dict())

    @registry.tool(description="Complete a leased task with its result (only the lease holder can).",
                   group="worker")
    async def taskqueue_complete(args: CompleteArgs, ctx: ToolContext) -> Completed:
        queue = ctx.app_state.require_queue()
        task = await queue.complete(args.task_id, args.token, args.result)
        following = None
        if args.claim_next is not None:
            following = await queue.claim(f"{ctx.principal or 'local'}/{args.claim_next.holder}",
                                          args.claim_next.task_types, lease_seconds=args.claim_next.lease_s)
        return Completed(task=task.to_dict(), next_lease=following.to_dict() if following else None)

    @registry.tool(description="Fail a leased task: retried after a backoff unless retry is false.",
                   group="worker")
    async def taskqueue_fail(args: FailArgs, ctx: ToolContext) -> TaskOut:
        error: dict[str, Any] = {"code": str(args.error.get("code", "failed")),
                                 "message": str(args.error.get("message", ""))}
        data = args.error.get("data")
        if isinstance(data, dict) and isinstance(data.get("jsonrpc"), dict):
            error["data"] = {"jsonrpc": data["jsonrpc"]}  # an MCP task's JSON-RPC error, kept for tasks/get
        task = await ctx.app_state.require_queue().fail(args.task_id, args.token, error, retry=args.retry)
        return TaskOut(task=task.to_dict())

    @registry.tool(description="Give a lease back (shutdown), or confirm a cancel with cancelled=true.",
                   group="worker")
    async def taskqueue_release(args: ReleaseArgs, ctx: ToolContext) -> TaskOut:
        queue = ctx.app_state.require_queue()
        if args.cancelled:
            task = await queue.confirm_cancelled(args.task_id, args.token)
        else:
            task = await queue.release(args.task_id, args.token)
        return TaskOut(task=task.to_dict())

    @registry.tool(description="Park a leased task until the input its handler asked for is answered.",
                   group="worker")
    async def taskqueue_suspend(args: SuspendArgs, ctx: ToolContext) -> TaskOut:
        task = await ctx.app_state.require_queue().suspend(args.task_id, args.token, args.requests)
        return TaskOut(task=task.to_dict())

    @registry.resource_template("triomcp://tasks/{task_id}", name="task", description="One task, as JSON.",
                                mime_type="application/json")
    async def task_resource(variables: dict[str, str], ctx: ToolContext) -> str:
        services: Services = ctx.app_state
        try:
            task = await _owned(services, variables["task_id"], ctx.principal)
        except TaskNotFound:
            raise ResourceNotFound(f"Resource not found: triomcp://tasks/{variables['task_id']}") from None
        return json.dumps(task.to_dict(), indent=2)

