"""The node and the queue as the built-in tools, mesh workers and MCP tasks use them.

Small Protocols, so that a test can hand a tool an in-memory node or queue; the real ones are
:class:`triomcp.p2p.Node` and :class:`triomcp.taskqueue.TaskQueue`, which satisfy them as they are.

- :class:`MeshNode`: who this node is, which peers it sees and may serve, dialing, pinging,
  and MCP calls to a peer (``call``, from :class:`~triomcp.p2p.mcp_client.PeerCaller`).
- :class:`WorkQueue`: :class:`Submissions` (submit, read, watch, cancel, answer a waiting task),
  what the ``taskqueue_*`` client tools and MCP tasks call; and :class:`Leases` (claim, renew,
  report, record the outcome), what the worker tools call.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any, Protocol

from triomcp.p2p import NodeStatistics
from triomcp.p2p.mcp_client import PeerCaller
from triomcp.settings import P2PSettings
from triomcp.taskqueue import Lease, QueueStatistics, Task

__all__ = ["AllowList", "Leases", "MeshNode", "Submissions", "WorkQueue"]


class AllowList(Protocol):
    """The authorized-peers file, as seen by whoever decides whom to serve or claim from."""

    def is_authorized(self, peer_id: str) -> bool:
        """May ``peer_id`` submit, claim and call tools here (listed, or a local key)?"""
        ...

    def is_listed(self, peer_id: str) -> bool:
        """Is ``peer_id`` in the file itself (the peers this node's mesh workers claim from)?"""
        ...

    def is_delegate(self, peer_id: str) -> bool:
        """Listed as a ``delegate``: may act for peers this node does not authorize itself?"""
        ...

    def is_local(self, peer_id: str) -> bool:
        """One of this node's own identities (its CLI's, its HTTP front end's)?"""
        ...


class MeshNode(PeerCaller, Protocol):
    """A libp2p node: identity, peers, dialing, pings and MCP calls (the caller owns timeouts)."""

    @property
    def peer_id(self) -> str: ...

    @property
    def settings(self) -> P2PSettings: ...

    @property
    def authorized(self) -> AllowList: ...

    def listen_addrs(self) -> list[str]: ...

    def connected_peers(self) -> list[str]: ...

    def known_peers(self) -> list[dict[str, Any]]:
        """Every peer in the peerstore: ``{peer_id, addrs, connected, connections, authorized}``
        (``connections``: each open one, ``{kind: "direct", addr}`` or ``{kind: "relayed", relay}``)."""
        ...

    def statistics(self) -> NodeStatistics: ...

    def relay_status(self) -> dict[str, Any]:
        """Circuit relay: the service's reservations and refusals, this node's own reservations."""
        ...

    async def connect(self, multiaddr: str) -> str:
        """Dial a full multiaddr (ending in ``/p2p/<id>``); returns the peer id."""
        ...

    async def ping(self, peer_id: str) -> float:
        """The round-trip time in seconds."""
        ...

    async def wait_peers_changed(self) -> None:
        """Return once the set of connected peers has changed."""
        ...


class Submissions(Protocol):
    """The submitter's side of a queue: tasks in, their state out."""

    async def submit(
        self,
        task_type: str,
        payload: Any,
        *,
        priority: int = 0,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        submitter: str | None = None,
        ttl_seconds: float | None = None,
    ) -> Task:
        """Store a task durably and return it (the same task again for a repeated idempotency key)."""
        ...

    async def get(self, task_id: str) -> Task:
        """The task, or :class:`~triomcp.errors.TaskNotFound`."""
        ...

    async def cancel(self, task_id: str) -> Task: ...

    async def wait_changed(self, task_id: str, after_version: int) -> Task:
        """The task once its version is past ``after_version``."""
        ...

    async def wait_finished(self, task_id: str) -> Task: ...

    async def provide_input(self, task_id: str, responses: dict[str, Any]) -> Task:
        """Answer a waiting task's input requests."""
        ...

    def statistics(self) -> QueueStatistics: ...

    async def list_tasks(
        self,
        *,
        state: str | None = None,
        task_type: str | None = None,
        submitter: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[builtins.list[Task], str | None]:
        """Newest first; a bad cursor raises ValueError."""
        ...


class Leases(Protocol):
    """The worker's side of a queue: only the lease holder (its token) records an outcome."""

    async def claim(self, holder: str, task_types: Sequence[str], *,
                    lease_seconds: float | None = None) -> Lease | None: ...

    async def claim_many(self, holder: str, task_types: Sequence[str], count: int, *,
                         lease_seconds: float | None = None) -> tuple[list[Lease], int]:
        """Up to ``count`` tasks claimable now, and how many claimable now are left."""
        ...

    async def wait_claim(self, holder: str, task_types: Sequence[str], *,
                         lease_seconds: float | None = None) -> Lease:
        """Claim, waiting (without polling) until a task is there."""
        ...

    async def renew(self, task_id: str, token: str) -> Lease: ...

    async def report_progress(self, task_id: str, token: str, fraction: float,
                              message: str | None = None) -> Task: ...

    async def complete(self, task_id: str, token: str, result: Any) -> Task: ...

    async def fail(self, task_id: str, token: str, error: dict[str, Any], *, retry: bool = True) -> Task: ...

    async def release(self, task_id: str, token: str) -> Task: ...

    async def confirm_cancelled(self, task_id: str, token: str) -> Task: ...

    async def suspend(self, task_id: str, token: str, requests: dict[str, Any]) -> Task:
        """Park the task until every request is answered (:meth:`Submissions.provide_input`)."""
        ...


class WorkQueue(Submissions, Leases, Protocol):
    """A task queue, both sides (``Services.queue``)."""
