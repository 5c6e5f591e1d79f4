"""Hypercorn's Trio server, with listeners that take every waiting connection each time they run.

Why (measured, docs/reliability.md "Why some connections waited seconds"): ``trio.serve_listeners``
accepts one connection, starts its handler, and accepts the next; every accept that succeeds ends
in a checkpoint, so a busy loop takes **one new connection per scheduler batch**. With 800 wrk
connections a batch ran about 430 task steps and lasted 30 ms (p50), so connections were taken at
33 a second while the kernel's accept queue stayed full: the last of wrk's connections was taken
19.5 s after it connected, its first request timed out, and a ``/healthz`` on a new connection
waited 2.1 s (p50) in the queue while the same request on an open connection took 0.2 s. Nothing
in the app sees a connection before it is accepted, so no admission control could refuse it.
Trio knows the trade-off (python-trio/trio#14, "do we need batched accept?", open); asyncio's
selector loop, by contrast, accepts up to ``backlog`` connections per readiness event.

:class:`DrainingListener` accepts the first connection the way Trio does (one checkpoint) and then
every other connection already waiting, up to the listen backlog, without blocking; the following
``accept()`` calls hand those out without a checkpoint, so ``serve_listeners`` starts all their
handlers in the same turn. :func:`serve` is ``hypercorn.trio.serve`` (0.18, ``worker_serve``) with
these listeners in place of ``trio.SocketListener``: the same lifespan, connection handling,
graceful shutdown and task-status protocol. ``hypercorn triomcp.app:app`` still works, with
Hypercorn's own one-per-turn accept.

:class:`GatedTCPServer` is Hypercorn's ``TCPServer`` with a
:class:`~triomcp.server.http_gate.RequestGate` in front of its protocol (the protocol object is
wrapped as Hypercorn assigns it), and with a fix to Hypercorn 0.18: a connection whose reading
ended (EOF, a refused head such as a 431 or a 400, a read timeout) stops its keep-alive timer, so
its task and buffers go at once instead of after ``keep_alive_timeout`` (75 s). The HTTP fuzzer
found it (docs/reliability.md, "Defects found"): 14,000 oversized-header requests in 70 s had
taken the server from 114 to 876 MiB, and a connection that sent nothing lived 75 s.
"""

from __future__ import annotations

import contextlib
import random
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import h11
import trio
from hypercorn.config import Config
from hypercorn.events import Event, RawData, Updated
from hypercorn.protocol import ProtocolWrapper
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.udp_server import UDPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, Framework, LifespanState
from hypercorn.utils import ShutdownError, raise_shutdown, repr_socket_addr, wrap_app

from triomcp.server.admission import principal_key
from triomcp.server.http_gate import RequestGate, never_gated, request_extent

__all__ = ["DrainingListener", "GatedTCPServer", "serve"]


class DrainingListener(trio.abc.Listener[trio.SocketStream]):
    """A listening socket whose ``accept()`` takes, each time it has to wait, every connection
    already waiting (at most ``max_batch``), and hands them out without further checkpoints."""

    def __init__(self, sock: socket.socket, *, max_batch: int) -> None:
        self._listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        self._sock = sock  # the same socket, non-blocking now
        self._max_batch = max(1, max_batch)
        self._ready: deque[trio.SocketStream] = deque()

    async def accept(self) -> trio.SocketStream:
        if self._ready:
            await trio.lowlevel.checkpoint_if_cancelled()
            return self._ready.popleft()
        stream = await self._listener.accept()  # waits when nothing is there: the batch's one checkpoint
        while len(self._ready) < self._max_batch - 1:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                # EAGAIN: all taken. Anything else (a reset connection, EMFILE): stop here and let
                # trio's accept() deal with it the next time, as it would have.
                break
            self._ready.append(trio.SocketStream(trio.socket.from_stdlib_socket(conn)))
        return stream

    async def aclose(self) -> None:
        ready, self._ready = self._ready, deque()
        for stream in ready:  # taken from the kernel but never handed to a handler: close them
            stream.socket.close()
        await self._listener.aclose()


class _GatedProtocol:
    """The connection's Hypercorn protocol, with the gate in front of the data it is handed."""

    __slots__ = ("_connection", "_inner")

    def __init__(self, inner: ProtocolWrapper, connection: GatedTCPServer) -> None:
        self._inner = inner
        self._connection = connection

    async def initiate(self) -> None:
        await self._inner.initiate()

    def _between_requests(self) -> bool:
        """HTTP/1.1 with the last request read whole and its response written whole: the next bytes
        begin a new request, although Hypercorn has not recycled the connection yet (it does once the
        previous request's ASGI task has ended, and only then says ``Updated(idle=True)``). A client
        sends its next request as soon as it has its answer, so under load most requests arrive in
        that gap: gating only idle connections let them all past the gate."""
        h11_connection = getattr(getattr(self._inner, "protocol", None), "connection", None)
        return (isinstance(h11_connection, h11.Connection) and h11_connection.our_state is h11.DONE
                and h11_connection.their_state is h11.DONE)

    async def handle(self, event: Event) -> None:
        connection = self._connection
        if (connection.gate is not None and connection.token is None and not connection.refused
                and isinstance(event, RawData) and event.data
                and (connection.idle or self._between_requests())):
            if not await connection.admit(event.data):
                return
        elif connection.refused:
            return  # what a refused client sends after its refusal is not read
        await self._inner.handle(event)


class GatedTCPServer(TCPServer):
    """Hypercorn's connection handler with :class:`RequestGate` in front (see the module)."""

    def __init__(self, app: Any, config: Any, context: Any, state: Any, stream: Any, *,
                 gate: RequestGate | None = None) -> None:
        super().__init__(app, config, context, state, stream)
        self.gate = gate
        self.idle = True
        """No request in progress on this connection (Hypercorn's ``Updated`` events say)."""
        self.token: int | None = None
        self.refused = False
        self._address: str | None = None

    # Hypercorn's run() assigns self.protocol once it knows the connection; wrap it as it does.
    @property  # type: ignore[override]
    def protocol(self) -> _GatedProtocol:
        return self._protocol

    @protocol.setter
    def protocol(self, value: ProtocolWrapper) -> None:
        self._protocol = _GatedProtocol(value, self)

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            self._release()

    async def admit(self, data: bytes) -> bool:
        """Take a slot for the request these bytes begin; False once it has been refused."""
        gate = self.gate
        assert gate is not None
        if never_gated(data):
            return True
        if self._address is None:
            self._address = principal_key({"client": self._peer()})
        token = await gate.enter(self._address)
        if token is not None:
            self.token = token
            return True
        extent = request_extent(data)
        if extent is not None and extent > len(data):  # the rest of a small body is on its way: skip it too
            with trio.move_on_after(1.0), contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while len(data) < extent:
                    more = await self.stream.receive_some(extent - len(data))
                    if not more:
                        break
                    data += more
        keep = extent == len(data)
        self.refused = not keep
        sent = False
        async with self.send_lock:
            with (trio.CancelScope(shield=True), trio.move_on_after(1.0),
                  contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError)):
                await self.stream.send_all(gate.refusal_keeping if keep else gate.refusal)
                sent = True
        if not (keep and sent):
            self.refused = True
            await self.stream.aclose()  # the read loop then ends, and the connection with it
        elif gate.pause > 0:
            await trio.sleep(gate.pause)  # the connection is not read again before its Retry-After
        return False

    def _peer(self) -> tuple[str, int] | None:
        stream = getattr(self.stream, "transport_stream", self.stream)
        try:
            peer = stream.socket.getpeername()
        except (OSError, AttributeError):
            return None
        return (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None

    def _release(self) -> None:
        if self.token is not None and self.gate is not None:
            self.gate.leave(self.token)
        self.token = None

    async def protocol_send(self, event: Event) -> None:
        if self.token is not None and isinstance(event, RawData):
            self._release()  # the response has begun: the request no longer holds the loop
        elif isinstance(event, Updated):
            self.idle = event.idle
        await super().protocol_send(event)

    async def _read_data(self) -> None:
        try:
            await super()._read_data()
        finally:
            # Reading is over (EOF, a refused head, a timeout): Hypercorn 0.18 leaves the keep-alive
            # timer running, and the connection's task with it, for keep_alive_timeout.
            await self.idle_task.stop()


async def serve(
    app: Framework,
    config: Config,
    *,
    shutdown_trigger: Callable[..., Awaitable[Any]] | None = None,
    gate: RequestGate | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``hypercorn.trio.serve(app, config, ...)`` with :class:`DrainingListener` listeners, and
    connections handled by :class:`~triomcp.server.http_gate.GatedTCPServer` (Hypercorn's handler
    with ``gate``, when given, in front, and without Hypercorn's lingering of connections that
    ended before a request)."""
    wrapped = wrap_app(app, config.wsgi_max_body_size, None)
    config.set_statsd_logger_class(StatsdLogger)
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    max_requests = None
    if config.max_requests is not None:
        max_requests = config.max_requests + random.randint(0, config.max_requests_jitter)
    context = WorkerContext(max_requests)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            sockets = config.create_sockets()
            for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
                sock.listen(config.backlog)
            ssl_context = config.create_ssl_context()
            listeners: list[trio.abc.Listener[Any]] = []
            binds = []
            for sock in sockets.secure_sockets:
                assert ssl_context is not None  # there are secure sockets only when TLS is configured
                listeners.append(trio.SSLListener(DrainingListener(sock, max_batch=config.backlog), ssl_context,
                                                  https_compatible=True))
                binds.append(f"https://{repr_socket_addr(sock.family, sock.getsockname())}")
            for sock in sockets.insecure_sockets:
                listeners.append(DrainingListener(sock, max_batch=config.backlog))
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            for bind in binds:
                await config.log.info(f"Running on {bind} (CTRL + C to quit)")
            for sock in sockets.quic_sockets:
                await server_nursery.start(
                    UDPServer(wrapped, config, context, ConnectionState(lifespan_state.copy()), sock).run)
            task_status.started(binds)
            try:
                async with trio.open_nursery(strict_exception_groups=True) as nursery:
                    if shutdown_trigger is not None:
                        nursery.start_soon(raise_shutdown, shutdown_trigger)
                    nursery.start_soon(raise_shutdown, context.terminate.wait)
                    handler = partial(GatedTCPServer, wrapped, config, context, ConnectionState(lifespan_state.copy()),
                                      gate=gate)
                    nursery.start_soon(partial(trio.serve_listeners, handler, listeners,
                                               handler_nursery=server_nursery))
                    await trio.sleep_forever()
            except* ShutdownError:
                pass  # the shutdown trigger fired: drain
            finally:
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
