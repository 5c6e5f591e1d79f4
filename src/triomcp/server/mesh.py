"""The mesh: the built-in ``tool.call`` task type, and workers that claim from authorized peers.

A node's workers claim from its own queue and, in mesh mode, from the queue of
every connected authorized peer, each through a :class:`RemoteSource` that
speaks the ``taskqueue_*`` worker tools over MCP over libp2p. Claims long-poll
on the owner (event-driven there), so idle workers wake on new work without
polling; at most :data:`MAX_CLAIM_WAITS` of them per peer, so idle workers never
use up the peer's in-flight request budget that renewals and outcomes need. A
busy worker's ``taskqueue_complete`` also claims its next task (``claim_next``),
so a steady stream of tasks costs one round trip each, not two. A peer that
disconnects takes its workers with it; their leases expire on the owner and
another worker finishes the tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import trio

from triomcp.errors import LeaseLost, PeerError, RemoteError
from triomcp.p2p.mcp_client import call_peer_tool
from triomcp.server.seams import MeshNode
from triomcp.taskqueue import (
    HandlerRegistry,
    Lease,
    Task,
    TaskState,
    run_workers,
)

__all__ = ["RemoteSource", "run_mesh_workers"]

log = logging.getLogger("triomcp.mesh")

CLAIM_WAIT_SECONDS = 55.0
"""A mesh worker's long-poll on a peer (the peer answers at once when work arrives); longer means
less idle traffic: a mesh of N nodes re-issues about N x (N-1) x types of them per period."""
MAX_CLAIM_WAITS = 16
"""Long-polls one node keeps open on one peer at once (the peer answers at most 64 requests in
flight per peer; the rest of them are for renewals, progress and outcomes)."""


def _task_from_dict(data: dict[str, Any], token: str | None) -> Task:
    fields = dict(data)
    fields["state"] = TaskState(fields["state"])
    fields["lease_token"] = token
    fields.setdefault("seq", 0)
    return Task(**{k: v for k, v in fields.items() if k in Task.__dataclass_fields__})


def _lease_from_dict(lease: dict[str, Any]) -> Lease:
    return Lease(_task_from_dict(lease["task"], lease["token"]), lease["token"], lease["expires_at"])


class RemoteSource:
    """A peer's queue, worked through its ``taskqueue_*`` tools (a ``TaskSource``)."""

    def __init__(self, node: MeshNode, peer_id: str) -> None:
        self.node = node
        self.peer_id = peer_id
        self.name = f"peer:{peer_id}"
        self._waits = trio.Semaphore(MAX_CLAIM_WAITS)
        self._claimed_for: dict[str, tuple[str, tuple[str, ...]]] = {}
        """task id -> (holder, task types) of the worker running it, for ``claim_next``."""
        self._next: dict[tuple[str, tuple[str, ...]], list[Lease]] = {}
        """Leases claimed along with an outcome, waiting for that worker's next ``wait_claim``."""

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

    async def wait_claim(self, holder: str, task_types: Sequence[str]) -> Lease:
        key = (holder, tuple(task_types))
        while True:
            if self._next.get(key):
                lease = self._next[key].pop()
            else:
                async with self._waits:
                    if self._next.get(key):  # another worker's outcome claimed one meanwhile
                        continue
                    try:
                        with trio.fail_after(CLAIM_WAIT_SECONDS + self.node.settings.call_timeout):
                            out = await self._call("taskqueue_claim", {"task_types": list(task_types),
                                                                       "holder": holder, "wait_s": CLAIM_WAIT_SECONDS})
                    except trio.TooSlowError:
                        raise PeerError(f"claiming from {self.peer_id} timed out") from None
                if not out.get("lease"):
                    continue
                lease = _lease_from_dict(out["lease"])
            self._claimed_for[lease.task.id] = key
            return lease

    async def release_unclaimed(self) -> None:
        """Give back the leases ``claim_next`` fetched that no worker took (the workers stopped)."""
        leases = [lease for waiting in self._next.values() for lease in waiting]
        self._next.clear()
        for lease in leases:
            try:
                await self.release(lease.task.id, lease.token)
            except Exception as exc:  # the lease expires on the owner, and the task runs again
                log.info("giving back %s to %s failed: %s", lease.task.id, self.peer_id, exc)

    async def renew(self, task_id: str, token: str) -> Lease:
        try:
            out = await self._call("taskqueue_renew", {"task_id": task_id, "token": token})
        except LeaseLost:
            self._claimed_for.pop(task_id, None)  # the worker stops without recording an outcome
            raise
        lease = out["lease"]
        return Lease(_task_from_dict(lease["task"], token), token, lease["expires_at"])

    async def report_progress(self, task_id: str, token: str, fraction: float, message: str | None = None) -> Any:
        args: dict[str, Any] = {"task_id": task_id, "token": token, "fraction": fraction}
        if message is not None:
            args["message"] = message
        return await self._call("taskqueue_progress", args)

    async def complete(self, task_id: str, token: str, result: Any) -> Any:
        args: dict[str, Any] = {"task_id": task_id, "token": token, "result": result}
        key = self._claimed_for.pop(task_id, None)
        if key is not None:
            args["claim_next"] = {"task_types": list(key[1]), "holder": key[0]}
        out = await self._call("taskqueue_complete", args)
        if key is not None and out.get("next_lease"):
            self._next.setdefault(key, []).append(_lease_from_dict(out["next_lease"]))
        return out

    async def fail(self, task_id: str, token: str, error: dict[str, Any], *, retry: bool = True) -> Any:
        self._claimed_for.pop(task_id, None)
        return await self._call("taskqueue_fail", {"task_id": task_id, "token": token, "error": error,
                                                   "retry": retry})

    async def release(self, task_id: str, token: str) -> Any:
        self._claimed_for.pop(task_id, None)
        return await self._call("taskqueue_release", {"task_id": task_id, "token": token})

    async def confirm_cancelled(self, task_id: str, token: str) -> Any:
        self._claimed_for.pop(task_id, None)
        return await self._call("taskqueue_release", {"task_id": task_id, "token": token, "cancelled": True})

    async def suspend(self, task_id: str, token: str, requests: dict[str, Any]) -> Any:
        self._claimed_for.pop(task_id, None)
        return await self._call("taskqueue_suspend", {"task_id": task_id, "token": token, "requests": requests})


async def run_mesh_workers(
    node: MeshNode,
    registry: HandlerRegistry,
    *,
    concurrency: dict[str, int],
    lease_seconds: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep one set of workers per connected authorized peer (event-driven on connection changes)."""
    running: dict[str, trio.CancelScope] = {}

    async def work_for(peer: str, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                source = RemoteSource(node, peer)
                try:
                    await run_workers(source, registry, holder=f"{node.peer_id}",
                                      concurrency=concurrency, lease_seconds=lease_seconds)
                except* Exception as group:  # the peer went away or refused us: retry on the next change
                    log.info("claiming from %s stopped: %s", peer, group.exceptions[0])
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(5):
                        await source.release_unclaimed()
                with trio.move_on_after(30):
                    await node.wait_peers_changed()
        running.pop(peer, None)

    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            wanted = {p for p in node.connected_peers() if node.authorized.is_listed(p)}
            for peer in wanted - running.keys():
                scope = trio.CancelScope()
                running[peer] = scope
                nursery.start_soon(work_for, peer, scope)
            for peer in running.keys() - wanted:
                running[peer].cancel()
            await node.wait_peers_changed()
