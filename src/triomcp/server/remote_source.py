"""A peer's queue as a worker sees it: its ``taskqueue_*`` tools over MCP over libp2p.

:class:`RemoteSource` is a :class:`~triomcp.taskqueue.TaskSource` for
:func:`~triomcp.taskqueue.run_one`: the mesh scheduler (``mesh.py``) runs the tasks it leases from
an owner through it, and an external worker may long-poll with :meth:`RemoteSource.wait_claim`.
Outcomes may carry the claim of the next task (``claim_next``), so a busy slot costs one round
trip per task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from triomcp.errors import LeaseLost, PeerError, RemoteError
from triomcp.p2p.mcp_client import call_peer_tool
from triomcp.server.seams import MeshNode
from triomcp.taskqueue import Lease, Task, TaskState
from triomcp.taskqueue.scheduling import Claim

__all__ = ["RemoteSource"]


def _task_from_dict(data: dict[str, Any], token: str | None) -> Task:
    fields = dict(data)
    fields["state"] = TaskState(fields["state"])
    fields["lease_token"] = token
    fields.setdefault("seq", 0)
    return Task(**{k: v for k, v in fields.items() if k in Task.__dataclass_fields__})


def _lease_from_dict(lease: dict[str, Any]) -> Lease:
    return Lease(_task_from_dict(lease["task"], lease["token"]), lease["token"], lease["expires_at"])


class RemoteSource:
    """A peer's queue, worked through its ``taskqueue_*`` tools (a ``TaskSource`` for
    :func:`~triomcp.taskqueue.run_one`).

    ``follow_on(task)``, called as a task's outcome is recorded, says whether to ask for the next
    task in the same call (the :class:`Claim` to send, or None); ``answered(claim, leases,
    remaining)`` is told what came of it, ``answered(claim, None, None)`` that the call failed
    (every claim gets exactly one answer)."""

    def __init__(self, node: MeshNode, peer_id: str, *, holder: str | None = None) -> None:
        self.node = node
        self.peer_id = peer_id
        self.name = f"peer:{peer_id}"
        self.holder = holder or node.peer_id
        self.follow_on: Any = None
        self.answered: Any = None
        self._following: dict[str, Lease] = {}
        """task id -> the lease claimed along with that task's outcome."""
        self.accounted: set[str] = set()
        """Tasks whose outcome went through ``follow_on`` (their slot is already accounted for)."""

    async def _call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            result = await call_peer_tool(self.node, self.peer_id, tool, arguments)
        except RemoteError as err:
            raise PeerError(str(err)) from None
        structured = result.get("structuredContent") or {}
        if result.get("isError"):
            error = structured.get("error") or {}
            if error.get("code") in ("lease_lost", "invalid_transition"):
                raise LeaseLost(error.get("message", "lease lost"))
            raise PeerError(f"{tool} on {self.peer_id}: {error.get('message', 'failed')}")
        return dict(structured)

    async def claim(self, task_types: Sequence[str], count: int, *, wait_s: float = 0.0) -> tuple[list[Lease], int | None]:
        """Lease up to ``count`` tasks on the peer in one call; the leases and what remains there."""
        out = await self._call("taskqueue_claim", {"task_types": list(task_types), "holder": self.holder,
                                                   "max_tasks": count, "wait_s": wait_s})
        raw = out.get("leases") or ([out["lease"]] if out.get("lease") else [])
        remaining = out.get("remaining")
        return [_lease_from_dict(lease) for lease in raw], remaining if isinstance(remaining, int) else None

    async def wait_claim(self, holder: str, task_types: Sequence[str]) -> Lease:
        """Claim one task, long-polling the peer (an external worker's way; the mesh claims on announcements)."""
        while True:
            with trio.fail_after(55.0 + self.node.settings.call_timeout):
                leases, _ = await self.claim(task_types, 1, wait_s=55.0)
            if leases:
                return leases[0]

    def take_following(self, task_id: str) -> Lease | None:
        return self._following.pop(task_id, None)

    async def renew(self, task_id: str, token: str) -> Lease:
        out = await self._call("taskqueue_renew", {"task_id": task_id, "token": token})
        lease = out["lease"]
        return Lease(_task_from_dict(lease["task"], token), token, lease["expires_at"])

    async def report_progress(self, task_id: str, token: str, fraction: float, message: str | None = None) -> Any:
        args: dict[str, Any] = {"task_id": task_id, "token": token, "fraction": fraction}
        if message is not None:
            args["message"] = message
        return await self._call("taskqueue_progress", args)

    async def complete(self, task_id: str, token: str, result: Any) -> Any:
        args: dict[str, Any] = {"task_id": task_id, "token": token, "result": result}
        claim: Claim | None = None
        if self.follow_on is not None and task_id not in self.accounted:
            claim = self.follow_on(task_id)
            self.accounted.add(task_id)
            if claim is not None:
                args["claim_next"] = {"task_types": [claim.task_type], "holder": self.holder}
        try:
            out = await self._call("taskqueue_complete", args)
        except BaseException:
            if claim is not None:
                self.answered(claim, None, None)
            raise
        if claim is not None:
            following = [_lease_from_dict(out["next_lease"])] if out.get("next_lease") else []
            if following:
                self._following[task_id] = following[0]
            remaining = out.get("remaining")
            self.answered(claim, following, remaining if isinstance(remaining, int) else None)
        return out

    async def fail(self, task_id: str, token: str, error: dict[str, Any], *, retry: bool = True) -> Any:
        return await self._call("taskqueue_fail", {"task_id": task_id, "token": token, "error": error,
                                                   "retry": retry})

    async def release(self, task_id: str, token: str) -> Any:
        return await self._call("taskqueue_release", {"task_id": task_id, "token": token})

    async def confirm_cancelled(self, task_id: str, token: str) -> Any:
        return await self._call("taskqueue_release", {"task_id": task_id, "token": token, "cancelled": True})

    async def suspend(self, task_id: str, token: str, requests: dict[str, Any]) -> Any:
        return await self._call("taskqueue_suspend", {"task_id": task_id, "token": token, "requests": requests})
