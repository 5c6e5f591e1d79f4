"""Malformed HTTP against a live server: inputs from :mod:`reliability.http_inputs`, each bounded
in time, outcomes counted.

The client is the fuzzer's own: bytes written on Trio TCP streams exactly as
:func:`~reliability.http_inputs.wire` makes them (no client library in between to refuse an
illegal header or fix a length), answers read with h11 (an independent HTTP/1.1 parser: a
response it cannot read is counted as a bad response). ``concurrency`` workers each keep one
keep-alive connection and take the next input; a raw exchange gets a fresh connection of its own.

What counts, per input:

- **hung**: no complete answer (or close) within :data:`DEADLINE` seconds from the connect;
- **unexpected 5xx** (``server_errors_5xx``): any 5xx status except (a) a 503 that carries a
  ``Retry-After`` header: deliberate admission control under load, counted apart
  (``overloaded_503``), never as a failure; and (b) a 501 to an input marked
  ``unimplemented`` (a transfer coding other than ``chunked``, an unknown method: RFC 9112
  section 6.1 and RFC 9110 section 9.1 say 501). A 503 without ``Retry-After`` is unexpected;
- **bad response**: bytes that are not a valid HTTP/1.1 response;
- **malformed error body**: a JSON (or SSE ``data:``) body with an ``error`` that is not a
  spec-shaped JSON-RPC error, or an unparsable JSON body on a 4xx/5xx;
- **dropped**: a well-framed request the server closed without answering (a raw exchange with
  broken framing may be closed unanswered: that is ``closed``, and fine);
- **pipelined missing**: fewer answers than pipelined requests, with no ``Connection: close``.

Every failure keeps its ``SEED:INDEX``: ``python -m reliability --only http --replay SEED:INDEX``
sends that one input again to a fresh server and prints the exchange.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import h11
import httpx
import trio

from harness.mcp_http import open_session_async
from harness.progress import Progress
from reliability.checks import spec_shaped_error
from reliability.http_inputs import Case, wire

__all__ = ["DEADLINE", "Answer", "Failure", "Tally", "exchange", "replay", "run", "summary"]

DEADLINE = 10.0
"""Seconds one input may take, from the connect to the end of its last answer."""
KEEP_BODY = 1 << 20
"""Bytes of an answer's body kept for the checks (the rest is read and dropped)."""
MAX_FAILURES = 50


@dataclass(frozen=True)
class Failure:
    seed: int
    index: int
    kind: str
    outcome: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Tally:
    tried: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    server_errors: int = 0
    """5xx other than a 503 with ``Retry-After``."""
    overloaded: int = 0
    """503 with ``Retry-After``: admission control, expected under load."""
    hung: int = 0
    closed: int = 0
    """Raw exchanges closed without an answer (acceptable for broken requests)."""
    dropped: int = 0
    """Well-framed requests closed without an answer."""
    bad_responses: int = 0
    bad_error_bodies: int = 0
    """JSON bodies carrying ``error`` that are not spec-shaped JSON-RPC errors."""
    pipelined_missing: int = 0
    retried: int = 0
    """Requests written again on a fresh connection: the reused one had closed before answering."""
    connections: int = 0
    connect_errors: int = 0
    failures: list[Failure] = field(default_factory=list)

    def count(self, outcome: str) -> None:
        self.by_status[outcome] = self.by_status.get(outcome, 0) + 1

    def fail(self, c: Case, outcome: str, detail: str = "") -> None:
        if len(self.failures) < MAX_FAILURES:
            self.failures.append(Failure(c.seed, c.index, c.kind, outcome, detail[:300]))

    @property
    def bad(self) -> int:
        """Inputs that show a server defect (every one of these is in :attr:`failures`, up to 50)."""
        return (self.server_errors + self.hung + self.bad_responses + self.bad_error_bodies + self.dropped
                + self.pipelined_missing + self.connect_errors)


@dataclass
class Answer:
    """What came back for one exchange."""

    responses: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    """(status, headers, body) of each final response, in order (interim 1xx left out)."""
    closed_before_answer: bool = False
    """The connection ended before the first byte of an answer."""
    reusable: bool = False
    """Both sides are done and the server keeps the connection: the next request can use it."""
    leftover: bytes = b""
    protocol_error: str = ""
    close_announced: bool = False
    """The last response said ``Connection: close`` (or the server closed after it)."""


class _Parser:
    """h11 as a client that reads answers to requests it did not write: each cycle it is told a
    request went out (only the method matters, to know a HEAD answer has no body)."""

    def __init__(self, method: str) -> None:
        self.method = "HEAD" if method == "HEAD" else "POST"
        self.conn = h11.Connection(h11.CLIENT)
        self._sent()

    def _sent(self) -> None:
        self.conn.send(h11.Request(method=self.method, target="/", headers=[("host", "fuzz")]))
        self.conn.send(h11.EndOfMessage())

    def next_cycle(self) -> bool:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            self._sent()
            return True
        return False


async def _receive(stream: trio.SocketStream) -> bytes:
    try:
        return await stream.receive_some(65536)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return b""


async def _read_answers(stream: trio.SocketStream, method: str, wanted: int, leftover: bytes) -> Answer:
    answer = Answer()
    parser = _Parser(method)
    got_bytes = bool(leftover)
    if leftover:  # (b"" would tell h11 the connection ended)
        parser.conn.receive_data(leftover)
    status, headers, body = 0, {}, bytearray()
    try:
        while True:
            event = parser.conn.next_event()
            if event is h11.NEED_DATA:
                data = await _receive(stream)
                got_bytes = got_bytes or bool(data)
                if not data and not got_bytes:
                    answer.closed_before_answer = True
                    return answer
                parser.conn.receive_data(data)  # b"" tells h11 the connection ended
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
                body = bytearray()
                if method == "GET" and headers.get("content-type", "").startswith("text/event-stream"):
                    # A GET stream stays open: its status is the answer. The connection is done.
                    answer.responses.append((status, headers, b""))
                    return answer
            elif isinstance(event, h11.Data):
                if len(body) < KEEP_BODY:
                    body += event.data[: KEEP_BODY - len(body)]
            elif isinstance(event, h11.EndOfMessage):
                answer.responses.append((status, headers, bytes(body)))
                if len(answer.responses) >= wanted or not parser.next_cycle():
                    answer.close_announced = parser.conn.their_state is h11.MUST_CLOSE
                    answer.reusable = (parser.conn.our_state is h11.DONE and parser.conn.their_state is h11.DONE)
                    answer.leftover = bytes(parser.conn.trailing_data[0])
                    return answer
            elif isinstance(event, h11.ConnectionClosed):
                answer.close_announced = True
                return answer
            elif event is h11.PAUSED:  # cannot happen after next_cycle(); be safe
                return answer
            # InformationalResponse (100 Continue): the final answer follows
    except h11.RemoteProtocolError as exc:
        answer.protocol_error = str(exc)
        return answer


async def exchange(stream: trio.SocketStream, chunks: list[bytes], *, method: str = "POST", drip: float = 0.0,
                   half_close: bool = False, wanted: int = 1, leftover: bytes = b"") -> Answer:
    """Write ``chunks`` (``drip`` seconds apart; then EOF when ``half_close``) while reading the
    answers to ``wanted`` requests. The caller bounds it (``trio.fail_after``)."""
    written = False

    async def writer() -> None:
        nonlocal written
        try:
            for i, chunk in enumerate(chunks):
                if drip and i:
                    await trio.sleep(drip)
                await stream.send_all(chunk)
            if half_close:
                await stream.send_eof()
            written = True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the server closed first: its answer (or its silence) is what counts

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        answer = await _read_answers(stream, method, wanted, leftover)
        nursery.cancel_scope.cancel()
    answer.reusable = answer.reusable and written and not half_close
    return answer


# -- running ----------------------------------------------------------------------------------

def _check_body(tally: Tally, c: Case, content_type: str, body: bytes, status: int) -> None:
    messages: list[Any] = []
    if content_type.startswith("application/json"):
        try:
            messages = [json.loads(body)]
        except ValueError:
            if status >= 400 and body:
                tally.bad_error_bodies += 1
                tally.fail(c, "bad-body", repr(body[:120]))
            return
    elif content_type.startswith("text/event-stream"):
        for line in body.decode("utf-8", "replace").splitlines():
            if line.startswith("data:") and line[5:].strip():
                try:
                    messages.append(json.loads(line[5:]))
                except ValueError:
                    tally.bad_error_bodies += 1
                    tally.fail(c, "bad-sse-data", line[:200])
    for message in messages:
        for item in message if isinstance(message, list) else [message]:
            if isinstance(item, dict) and "error" in item and not spec_shaped_error(item):
                tally.bad_error_bodies += 1
                tally.fail(c, "bad-error-shape", json.dumps(item)[:200])


def _record(tally: Tally, c: Case, answer: Answer) -> None:
    for status, headers, body in answer.responses:
        tally.count(str(status))
        if status == 503 and "retry-after" in headers:
            tally.overloaded += 1
        elif status == 501 and c.unimplemented:
            pass  # what HTTP says to answer to a transfer coding or method the server lacks
        elif status >= 500:
            tally.server_errors += 1
            tally.fail(c, str(status), body[:200].decode("utf-8", "replace"))
        _check_body(tally, c, headers.get("content-type", ""), body, status)
    if answer.protocol_error:
        tally.bad_responses += 1
        tally.count("bad-response")
        tally.fail(c, "bad-response", answer.protocol_error)
    elif not answer.responses:
        tally.count("closed")
        if c.raw is None:
            tally.dropped += 1
            tally.fail(c, "dropped", "closed without an answer")
        else:
            tally.closed += 1
    elif c.requests > len(answer.responses) and not answer.close_announced:
        tally.pipelined_missing += 1
        tally.fail(c, "pipelined-missing", f"{len(answer.responses)} answers to {c.requests} requests")


class _Worker:
    """One connection, reused across requests while the server keeps it."""

    def __init__(self, host: str, port: int, session: str, tally: Tally) -> None:
        self.host, self.port, self.session, self.tally = host, port, session, tally
        self.stream: trio.SocketStream | None = None
        self.leftover = b""

    async def _connect(self) -> trio.SocketStream:
        self.tally.connections += 1
        return await trio.open_tcp_stream(self.host, self.port)

    async def drop(self) -> None:
        if self.stream is not None:
            stream, self.stream, self.leftover = self.stream, None, b""
            await stream.aclose()

    async def one(self, c: Case) -> None:
        chunks = wire(c, f"{self.host}:{self.port}", self.session)
        answer: Answer | None = None
        with trio.move_on_after(DEADLINE):
            try:
                if c.raw is not None:
                    stream = await self._connect()
                    async with stream:
                        answer = await exchange(stream, chunks, drip=c.drip, half_close=True, wanted=c.requests)
                else:
                    answer = await self._request(c, chunks)
            except OSError as exc:
                await self.drop()
                self.tally.connect_errors += 1
                self.tally.count("connect-error")
                self.tally.fail(c, "connect-error", str(exc))
                return
        if answer is None:
            await self.drop()
            self.tally.hung += 1
            self.tally.count("hung")
            self.tally.fail(c, "hung", f"no complete answer within {DEADLINE:g} s")
            return
        _record(self.tally, c, answer)

    async def _request(self, c: Case, chunks: list[bytes]) -> Answer:
        for attempt in range(2):
            reused = self.stream is not None
            if self.stream is None:
                self.stream = await self._connect()
            answer = await exchange(self.stream, chunks, method=c.method, leftover=self.leftover)
            if answer.reusable:
                self.leftover = answer.leftover
            else:
                await self.drop()
            if answer.closed_before_answer and reused and attempt == 0:
                self.tally.retried += 1  # the server had closed the idle connection: a fresh one
                continue
            return answer
        raise AssertionError("unreachable")


async def run(url: str, cases: Iterable[Case], *, concurrency: int = 32, progress: Progress | None = None) -> Tally:
    """Send every case (``concurrency`` at a time, each worker on its own keep-alive connection);
    the tally of outcomes. ``progress`` counts inputs and shows the failures so far."""
    progress = progress if progress is not None else Progress.silent()
    tally = Tally()
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    async with httpx.AsyncClient(timeout=DEADLINE) as client:
        session = (await open_session_async(client, url))["mcp-session-id"]
    feed: Iterator[Case] = iter(cases)

    async def work() -> None:
        worker = _Worker(host, int(port), session, tally)
        try:
            for c in feed:  # shared: each worker takes the next input
                tally.tried += 1
                await worker.one(c)
                progress.advance()
                progress.figures(**{"5xx": tally.server_errors, "hung": tally.hung, "503": tally.overloaded,
                                    "bad": tally.bad})
        finally:
            with trio.CancelScope(shield=True):
                await worker.drop()

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(work)
    return tally


def summary(tally: Tally, seconds: float) -> dict[str, Any]:
    return {"inputs": tally.tried, "seconds": round(seconds, 1),
            "inputs_per_s": round(tally.tried / seconds) if seconds > 0 else None,
            "server_errors_5xx": tally.server_errors, "overloaded_503": tally.overloaded, "hung": tally.hung,
            "dropped": tally.dropped, "bad_responses": tally.bad_responses,
            "malformed_error_bodies": tally.bad_error_bodies, "pipelined_missing": tally.pipelined_missing,
            "closed_without_response": tally.closed, "retried_on_fresh_connection": tally.retried,
            "connections": tally.connections, "connect_errors": tally.connect_errors, "by_status": dict(sorted(tally.by_status.items())),
            "failures": [f.to_dict() for f in tally.failures]}


async def replay(url: str, c: Case) -> tuple[list[bytes], Answer | None]:
    """Send ``c`` alone on a fresh connection (``{SESSION}``: a legacy session opened for it):
    the chunks written and the answer (None when it hung past :data:`DEADLINE`)."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    async with httpx.AsyncClient(timeout=DEADLINE) as client:
        session = (await open_session_async(client, url))["mcp-session-id"]
    chunks = wire(c, f"{host}:{port}", session)
    with trio.move_on_after(DEADLINE):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            return chunks, await exchange(stream, chunks, method=c.method, drip=c.drip, half_close=c.raw is not None,
                                          wanted=c.requests)
    return chunks, None
