"""Change notifications: modern ``subscriptions/listen`` streams and legacy GET streams.

One fan-out for every kind (list changes, resource updates, task status): each modern listener
gets only the types it asked for, each carrying its ``subscriptionId``; each legacy session gets
them on its GET stream (resource updates only for URIs it subscribed to).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from mcp_types import SERVER_INFO_META_KEY

from triomcp.mcp import jsonrpc
from triomcp.mcp.core import Core, Request
from triomcp.mcp.outcomes import Listen
from triomcp.mcp.session import Session
from triomcp.mcp.tasks import TaskRecord, legacy_task, modern_task

__all__ = ["SUBSCRIPTION_ID_META_KEY", "Deliver", "Listeners"]

SUBSCRIPTION_ID_META_KEY = "io.modelcontextprotocol/subscriptionId"
Deliver = Callable[[dict[str, Any] | None], None]
"""Puts one message on a listen stream; ``None`` ends it."""


class Listeners:
    """The open modern listen streams, and the legacy sessions' GET streams."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._open: dict[int, tuple[Listen, Deliver]] = {}
        self._next = 0
        core.registry.on_change(self.registry_changed)

    def __len__(self) -> int:
        return len(self._open)

    # -- subscriptions/listen -----------------------------------------------------------------
    def listen(self, req: Request) -> Listen:
        """The acknowledgement names the subset of what was asked that this server honours."""
        wanted = dict(req.params.get("notifications") or {})
        honoured: dict[str, Any] = {key: True for key in ("toolsListChanged", "promptsListChanged",
                                                          "resourcesListChanged") if wanted.get(key) is True}
        uris = wanted.get("resourceSubscriptions")
        if isinstance(uris, list) and uris:
            honoured["resourceSubscriptions"] = [str(u) for u in uris]
        task_ids = wanted.get("taskIds")
        if isinstance(task_ids, list) and task_ids and self.core.tasks is not None:
            req.require_tasks_extension("task notifications are part of the tasks extension")
            honoured["taskIds"] = [str(t) for t in task_ids]
        ack = jsonrpc.notification("notifications/subscriptions/acknowledged",
                                   {"notifications": honoured, "_meta": {SUBSCRIPTION_ID_META_KEY: req.id}})
        return Listen(request_id=req.id, subscription_id=str(req.id), notifications=honoured, acknowledgement=ack)

    def attach(self, listen: Listen, deliver: Deliver) -> Callable[[], None]:
        """Register an open listen stream; returns the function that detaches it."""
        self._next += 1
        key = self._next
        self._open[key] = (listen, deliver)

        def detach() -> None:
            self._open.pop(key, None)

        return detach

    def close_all(self) -> None:
        """End every listen stream gracefully (shutdown): the listen request's completion result, then
        the end of the stream. A stream that ends without that result was cut, and the client may
        reconnect."""
        for listen, deliver in list(self._open.values()):
            deliver(jsonrpc.result_response(listen.request_id, {"resultType": "complete", "_meta": {
                SERVER_INFO_META_KEY: self.core.server_info(), SUBSCRIPTION_ID_META_KEY: listen.request_id}}))
            deliver(None)
        self._open.clear()

    # -- fan-out ---------------------------------------------------------------------------------
    def _to_listeners(self, wants: Callable[[Listen], bool], method: str, params: dict[str, Any]) -> None:
        for listen, deliver in list(self._open.values()):
            if wants(listen):
                deliver(jsonrpc.notification(method, {**params, "_meta": {SUBSCRIPTION_ID_META_KEY: listen.request_id}}))

    @staticmethod
    def _to_sessions(sessions: Iterable[Session], message: dict[str, Any]) -> None:
        for session in sessions:
            session.open_stream("get").push(message)

    def registry_changed(self, kind: str) -> None:
        method = f"notifications/{kind}/list_changed"
        self._to_listeners(lambda listen: bool(listen.notifications.get(f"{kind}ListChanged")), method, {})
        self._to_sessions(self.core.sessions.sessions(), jsonrpc.notification(method))

    def resource_updated(self, uri: str) -> None:
        method = "notifications/resources/updated"
        self._to_listeners(lambda listen: uri in listen.notifications.get("resourceSubscriptions", ()),
                           method, {"uri": uri})
        subscribed = [s for s in self.core.sessions.sessions() if uri in s.subscriptions]
        self._to_sessions(subscribed, jsonrpc.notification(method, {"uri": uri}))

    def task_changed(self, record: TaskRecord, session_id: str | None) -> None:
        """Status notifications: the legacy session that created the task, modern listeners on it."""
        session = self.core.sessions.peek(session_id) if session_id is not None else None
        if session is not None:
            self._to_sessions([session], jsonrpc.notification("notifications/tasks/status", legacy_task(record)))
        self._to_listeners(lambda listen: record.task_id in listen.notifications.get("taskIds", ()),
                           "notifications/tasks", modern_task(record))
