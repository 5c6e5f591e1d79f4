"""Load on a node from MCP clients of both eras spread over several processes (:func:`run_processes`),
and the requirement's verdicts on its steps (:func:`judge`). wrk and its probes are :mod:`reliability.load`.

**The clients.** One process with httpx under Trio fell behind past about 200 clients (its
calls/s fell from 299 to 31 while the node idled): one Trio loop for all, and one shared httpx pool,
whose bookkeeping (httpcore 1.0) scans its connections, in places once per connection, on every
request. So :func:`run_processes` splits the clients over worker processes, each ``python -m
reliability.load_clients`` running its share with :func:`run_clients` on its own Trio loop, at least
one process per core and at most :data:`CLIENTS_PER_PROCESS` in any one (:func:`process_count`), and
each client has its own connection, as each of wrk's connections is a client: no longer httpx but
the lean HTTP/1.1 client of :mod:`reliability.http1` (a ``trio.SocketStream`` framed by h11, each
request's head checked once and its body a template where only the JSON-RPC id changes, the answer
decoded by pydantic-core; see **CPU**). A connection the node closes is replaced before the next
request; a request that got no answer (its connection lost, or no answer in ``request_timeout``)
is an error of its kind (``ConnectError``, ``WriteError``, ``ReadError``, ``RemoteProtocolError``:
httpx's names for the same failures) or a timeout, and the next request goes on a new connection.
Even-numbered clients make modern-era stateless ``tools/call`` of ``server_status`` (the
2026-07-28 headers and ``_meta``); odd-numbered ones open a legacy session (``initialize``,
``notifications/initialized``), call in it, and close it (``DELETE``).

**Retry-After.** A client sends its next request as soon as it has an answer, except after a
deliberate refusal (503 with JSON-RPC -32010): then it first waits the refusal's ``Retry-After``
(at most 5 s, never past the step's end: :func:`reliability.load.retry_after_wait`), as a
well-behaved HTTP client does. Real clients honour it; wrk does not, and its steps stay the
adversary that retries at once. A refused client's idle second is not load hidden from the node
but the protocol: the node asked for it, and a client that ignored it would wait as long anyway,
on a connection the request gate does not read again for ``http.refusal_pause``, timing that pause
as its next request's latency. The refusal itself is counted with its own latency (sending it to
its answer), and a step reports the seconds its clients waited (``retry_after_wait_s``).

**The processes.** A worker writes ``ready`` on stdout once it has imported everything; when all
are ready the parent sends each ``go``, so every client of a step runs for the same ``seconds``. A
worker writes its counts every second and, at the end, one report with every latency; the parent
merges the reports: calls by era, served latencies p50/p99, deliberate refusals (of a call or of a
session's set-up or closing) with theirs, errors by kind, and timeouts (a request unanswered after
``request_timeout``) counted apart. Each worker is bounded in time: the parent waits at most
``seconds`` plus ``grace`` after ``go``, more than a worker can take (every request and every wait
is bounded, and past ``seconds`` only a session's set-up and closing go on, see :func:`_legacy`),
then SIGKILLs it. A worker that fails to start, exits without a report or is killed is an error of
its step (``worker ...``), never silence.

**CPU.** The workers share the machine's cores with the node. With httpx the clients spent about
as much CPU on a call as the node spends answering it (0.7-0.8 ms was measured at 20-40 clients),
so at the node's full rate they needed most of the other core of 2. Measured side by side on
2026-12-02 (2 cores; 20 clients in one process for 5 s against ``triomcp serve``, the module as it
was with httpx and this one taking turns, twice; each run's client CPU from
``resource.getrusage(RUSAGE_SELF)`` around its ``trio.run``, divided by the ``tools/call`` sent;
the node's from ``/proc``): httpx 0.48 ms of CPU per call, this client 0.11-0.12 ms, at 1,880-1,940
and 2,310-2,360 calls/s (load average under 1); at 40 clients 0.49 against 0.13 ms; in an earlier
pair of runs, with other work on the machine (load average 1-2), 0.50-0.52 against 0.13-0.14 ms.
The node spent 0.42-0.50 ms a call in all of them, so the clients now take about a quarter of
what the node takes. Each step records what both used (``client_cores``, ``server_cores``: CPU
seconds per second of the step). When they add up to the machine's cores, a latency includes time
a client waited for a CPU before it could read its answer, and calls/s is what the shared machine
sustained: the figures are then an upper bound on the node's latency and a lower bound on its
throughput. The wrk steps (C, much less CPU per call) give the node's own figures; these say
whether clients of both eras are served correctly, and how they see the node, at that load.

**Verdicts** (:func:`judge`), the requirement's: no timeouts and no errors other than deliberate
503s at every step; below capacity (a step in which the node refused nothing), p99 <= 3 x p50; past
capacity, refusals within 100 ms (p99), and served calls keeping their latency: p99 <= 3 x the p50
of the last step below capacity (or of the step itself, when none was).

Size: over 300 lines because the clients, the worker process that runs them and the parent that
starts, bounds and merges the workers share one protocol (the worker's lines, its report's fields);
the clients' half (to :func:`worker`) and the parent's (from :func:`process_count`) could stand apart.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import trio

from harness.mcp_http import (
    INITIALIZED,
    JSON_HEADERS,
    initialize,
    legacy_headers,
    modern_call,
    tool_call,
)
from harness.measure import cpu_seconds
from harness.procs import env_for
from harness.progress import Progress
from reliability import http1
from reliability.load import REFUSED, quantile_ms, retry_after_wait
from triomcp.mcp import jsonrpc

TOOL = "server_status"
ERAS = ("modern", "legacy")
CLIENTS_PER_PROCESS = 100
"""Most clients one worker process runs. One Trio loop with a shared httpx pool fell behind past
about 200; measured (with httpx) with 40 clients in one process, a shared pool gave 339 calls/s on
0.97 cores, a connection each 839 calls/s on 0.54 cores."""
REQUEST_TIMEOUT = 10.0
"""A call, or a session's opening or closing, unanswered after this many seconds is a timeout
(the wrk steps' ``--timeout``)."""
START_TIMEOUT = 60.0
"""Most seconds the workers of a step may take to be ready: each imports trio, h11 and triomcp
(and httpx, which :mod:`harness.mcp_http` and :mod:`reliability.load` import; about 0.7 s of CPU
in all), 16 of them at once on 2 cores at 1,600 clients."""
PROGRESS_INTERVAL = 1.0
"""Seconds between a worker's progress lines."""
TAIL_BOUND = 3.0
"""The requirement's p99 <= 3 x p50."""
REFUSAL_BOUND_MS = 100.0
"""The requirement's bound on a refusal's latency past capacity (p99)."""
WORKER = [sys.executable, "-m", "reliability.load_clients"]
"""The command of one worker process (:func:`worker`)."""


# -- one process's clients --------------------------------------------------------------------------

@dataclass
class Tally:
    """What the clients of one process saw; latencies in seconds. ``what`` names a request:
    ``modern call``, ``legacy call`` (``tools/call``), ``initialize``, ``initialized`` (the
    notification) or ``close-session`` (``DELETE``)."""

    calls: Counter[str] = field(default_factory=Counter)
    """``tools/call`` requests sent (served, refused, failed or timed out), by era."""
    served: dict[str, list[float]] = field(default_factory=lambda: {era: [] for era in ERAS})
    refused: list[float] = field(default_factory=list)
    """Every deliberate refusal's latency, whatever the request."""
    refused_by: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    timeouts: Counter[str] = field(default_factory=Counter)
    sessions_opened: int = 0
    sessions_closed: int = 0
    waited: float = 0.0
    """Seconds the clients waited after refusals, as their ``Retry-After`` asked."""
    connections: int = 0
    """Connections the clients opened: one each, and one more each time one was closed (by the
    node, or after a request without an answer)."""

    def counts(self) -> dict[str, int]:
        """The totals so far (a worker's progress line)."""
        return {"calls": sum(self.calls.values()), "served": sum(len(v) for v in self.served.values()),
                "refused": len(self.refused), "errors": sum(self.errors.values()),
                "timeouts": sum(self.timeouts.values())}

    def to_json(self) -> dict[str, Any]:
        return {"calls": dict(self.calls), "served": {era: [round(s, 6) for s in v] for era, v in self.served.items()},
                "refused": [round(s, 6) for s in self.refused], "refused_by": dict(self.refused_by),
                "errors": dict(self.errors), "timeouts": dict(self.timeouts),
                "sessions_opened": self.sessions_opened, "sessions_closed": self.sessions_closed,
                "retry_after_wait_s": round(self.waited, 3), "connections": self.connections}


def era_of(k: int) -> str:
    """Client ``k``'s era: even numbers modern, odd ones legacy (so any two consecutive clients hold both)."""
    return "legacy" if k % 2 else "modern"


def _json_error_code(r: http1.Response) -> object:
    """The JSON-RPC error code of an answer's body, or None (no body, not JSON, no error)."""
    try:
        data = r.json()
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def _refused(r: http1.Response) -> bool:
    """A deliberate refusal: 503 with JSON-RPC error -32010 (admission control)."""
    return r.status == 503 and _json_error_code(r) == REFUSED


def _served(r: http1.Response) -> bool:
    """A call served: 200 with a JSON-RPC ``result``."""
    if r.status != 200:
        return False
    try:
        data = r.json()
    except ValueError:
        return False
    return isinstance(data, dict) and "result" in data


def _what_it_was(r: http1.Response) -> str:
    """An answer that is neither served nor refused, as an error kind: its status, and its JSON-RPC code."""
    code = _json_error_code(r)
    return str(r.status) if code is None else f"{r.status} {code}"


@dataclass(frozen=True)
class Requests:
    """What the clients of one process send to the node at ``host:port``, encoded once
    (:mod:`reliability.http1`): each head checked once, each body a template whose only hole is
    the JSON-RPC id, or bytes when even that is fixed."""

    host: str
    port: int
    modern_call: http1.Head
    modern_body: http1.Body
    initialize: http1.Head
    initialize_body: bytes
    legacy_body: http1.Body
    initialized_body: bytes

    @classmethod
    def to(cls, url: str) -> Requests:
        host, port = http1.address(url)
        authority = f"{host}:{port}"
        headers, body = modern_call(TOOL, {}, 0)
        return cls(host, port, http1.Head("POST", "/mcp", authority, headers), http1.Body(body),
                   http1.Head("POST", "/mcp", authority, JSON_HEADERS), jsonrpc.dumps(initialize(client="load")),
                   http1.Body(tool_call(TOOL, {}, 0)), jsonrpc.dumps(INITIALIZED))

    def session(self, session_id: str) -> tuple[http1.Head, http1.Head]:
        """The heads of a POST and of the ``DELETE`` inside the session ``session_id``."""
        headers, authority = legacy_headers(session_id), f"{self.host}:{self.port}"
        return http1.Head("POST", "/mcp", authority, headers), http1.Head("DELETE", "/mcp", authority, headers)


Outcome = Literal["answered", "refused", "failed"]


async def _exchange(conn: http1.Connection, what: str, head: http1.Head, body: bytes, end: float,
                    request_timeout: float, tally: Tally) -> tuple[Outcome, http1.Response | None, float]:
    """One request, bounded by ``request_timeout``: (outcome, answer, seconds from sending it to its
    answer). A refusal is tallied here, then waited out: its ``Retry-After``, bounded by
    :func:`~reliability.load.retry_after_wait` and by ``end`` (past which the client sends nothing
    new). A request that failed (no answer: an exception or a timeout, after which ``conn`` opens
    a new connection for the next request) is tallied here too; an answer that was neither is the
    caller's to judge."""
    response: http1.Response | None = None
    failure = ""
    t0 = time.perf_counter()
    with trio.move_on_after(request_timeout) as scope:
        try:
            response = await conn.request(head, body)
        except http1.HTTPError as exc:
            failure = type(exc).__name__
    elapsed = time.perf_counter() - t0
    if scope.cancelled_caught:
        tally.timeouts[what] += 1
    elif response is None:
        tally.errors[f"{what} {failure}"] += 1
    elif _refused(response):
        tally.refused.append(elapsed)
        tally.refused_by[what] += 1
        wait = retry_after_wait(response.header(b"retry-after"), end - trio.current_time())
        tally.waited += wait
        await trio.sleep(wait)
        return "refused", response, elapsed
    else:
        return "answered", response, elapsed
    return "failed", None, elapsed


async def _until_answered(conn: http1.Connection, what: str, head: http1.Head, body: bytes, end: float,
                          request_timeout: float, tally: Tally) -> http1.Response | None:
    """A session's set-up or closing request, sent again after each refusal's ``Retry-After`` (each
    refusal counted) until ``end``: its answer, or None (it failed, or it was still refused at ``end``)."""
    while True:
        outcome, response, _ = await _exchange(conn, what, head, body, end, request_timeout, tally)
        if outcome != "refused" or trio.current_time() >= end:
            return response if outcome == "answered" else None


async def _calls(conn: http1.Connection, era: str, head: http1.Head, body: http1.Body, end: float,
                 request_timeout: float, tally: Tally) -> None:
    """``tools/call`` after ``tools/call`` until ``end`` (ids 1, 2, ...), modern or inside a session
    (``head``)."""
    what = f"{era} call"
    n = 0
    while trio.current_time() < end:
        n += 1
        tally.calls[era] += 1
        outcome, r, elapsed = await _exchange(conn, what, head, body.with_id(n), end, request_timeout, tally)
        if outcome != "answered" or r is None:
            continue
        if _served(r):
            tally.served[era].append(elapsed)
        else:
            tally.errors[f"{what} {_what_it_was(r)}"] += 1


async def _legacy(conn: http1.Connection, requests: Requests, end: float, request_timeout: float,
                  tally: Tally) -> None:
    """A legacy client: open a session (``initialize``, ``notifications/initialized``), call in it
    until ``end``, close it (a refused set-up or closing request is sent again after its
    ``Retry-After``). Done by ``end`` plus four ``request_timeout``: an ``initialize`` sent just
    before ``end``, the notification, then closing requests (and their waits) for one
    ``request_timeout`` and the last one's own."""
    r = await _until_answered(conn, "initialize", requests.initialize, requests.initialize_body, end,
                              request_timeout, tally)
    if r is None:
        return
    session_id = r.header(b"mcp-session-id")
    if r.status != 200 or session_id is None:
        tally.errors[f"initialize {_what_it_was(r)}"] += 1
        return
    tally.sessions_opened += 1
    post, delete = requests.session(session_id)
    r = await _until_answered(conn, "initialized", post, requests.initialized_body, end, request_timeout, tally)
    if r is not None and not r.is_success:
        tally.errors[f"initialized {_what_it_was(r)}"] += 1
    elif r is not None:
        await _calls(conn, "legacy", post, requests.legacy_body, end, request_timeout, tally)
    # Closing: past ``end`` already, so a refused DELETE is sent again for at most ``request_timeout``.
    r = await _until_answered(conn, "close-session", delete, b"", max(end, trio.current_time()) + request_timeout,
                              request_timeout, tally)
    if r is not None and r.is_success:
        tally.sessions_closed += 1
    elif r is not None:
        tally.errors[f"close-session {_what_it_was(r)}"] += 1


async def _client(requests: Requests, k: int, end: float, request_timeout: float, tally: Tally) -> None:
    """Client ``k``, on a connection of its own (replaced when the node closes it)."""
    conn = http1.Connection(requests.host, requests.port)
    try:
        if era_of(k) == "legacy":
            await _legacy(conn, requests, end, request_timeout, tally)
        else:
            await _calls(conn, "modern", requests.modern_call, requests.modern_body, end, request_timeout, tally)
    finally:
        tally.connections += conn.opened
        conn.close()


async def _every(interval: float, report: Callable[[Tally], None], tally: Tally) -> None:
    while True:
        await trio.sleep(interval)
        report(tally)


async def run_clients(url: str, first: int, count: int, seconds: float, *, request_timeout: float = REQUEST_TIMEOUT,
                      report: Callable[[Tally], None] | None = None) -> Tally:
    """Clients ``first`` to ``first + count - 1`` (:func:`era_of`) calling ``server_status`` at
    ``url`` (``http://host:port``) for ``seconds``, each on a connection of its own
    (:class:`reliability.http1.Connection`); ``report`` gets the tally every
    :data:`PROGRESS_INTERVAL` seconds. Each exchange is bounded by ``request_timeout`` here, with
    one ``trio.move_on_after``: past it, it is a timeout."""
    tally = Tally()
    requests = Requests.to(url)
    async with trio.open_nursery() as outer:
        if report is not None:
            outer.start_soon(_every, PROGRESS_INTERVAL, report, tally)
        end = trio.current_time() + seconds
        async with trio.open_nursery() as nursery:
            for k in range(first, first + count):
                nursery.start_soon(_client, requests, k, end, request_timeout, tally)
        outer.cancel_scope.cancel()
    return tally


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _emit_progress(tally: Tally) -> None:
    _emit({"progress": tally.counts()})


def worker(argv: Sequence[str] | None = None) -> int:
    """One worker of :func:`run_processes`: ``ready`` on stdout, wait for ``go`` on stdin, run
    :func:`run_clients`, write a progress line every second and the report at the end."""
    parser = argparse.ArgumentParser(prog="python -m reliability.load_clients", description=worker.__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--first", type=int, required=True, help="the number of its first client")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT)
    args = parser.parse_args(argv)
    _emit({"ready": True})
    if sys.stdin.readline().strip() != "go":
        return 2  # the parent has gone
    cpu, started = time.process_time(), time.monotonic()
    tally = trio.run(functools.partial(run_clients, args.url, args.first, args.clients, args.seconds,
                                       request_timeout=args.request_timeout, report=_emit_progress))
    _emit({"report": {**tally.to_json(), "cpu_s": round(time.process_time() - cpu, 3),
                      "seconds": round(time.monotonic() - started, 3)}})
    return 0


# -- the processes ------------------------------------------------------------------------------------

def process_count(clients: int, cpus: int | None = None) -> int:
    """Worker processes for ``clients``: one per core at least (so the clients can use every core
    the node leaves), enough that none runs more than :data:`CLIENTS_PER_PROCESS`, no more than clients."""
    cpus = cpus if cpus is not None else os.cpu_count() or 1
    return max(1, min(clients, max(cpus, -(-clients // CLIENTS_PER_PROCESS))))


def shares(clients: int, processes: int) -> list[int]:
    """``clients`` split over ``processes`` as evenly as can be."""
    if not 1 <= processes <= clients:
        raise ValueError(f"{processes} processes for {clients} clients")
    q, r = divmod(clients, processes)
    return [q + (i < r) for i in range(processes)]


@dataclass
class _Worker:
    """The parent's view of one worker process."""

    index: int
    first: int
    clients: int
    log: IO[bytes]
    """Its stderr (a file: a pipe nobody drains would block it, see :mod:`harness.procs`)."""
    process: trio.Process | None = None
    pending: bytes = b""
    ready: bool = False
    report: dict[str, Any] | None = None
    last: dict[str, int] = field(default_factory=dict)
    """Its last progress line's counts."""
    failure: str | None = None
    stderr: str = ""
    """The end of its stderr, when it failed."""

    async def message(self) -> dict[str, Any] | None:
        """The next JSON object the worker writes on stdout (other lines are skipped); None at EOF."""
        assert self.process is not None and self.process.stdout is not None
        while True:
            line, newline, rest = self.pending.partition(b"\n")
            if newline:
                self.pending = rest
                with contextlib.suppress(ValueError):
                    message = json.loads(line)
                    if isinstance(message, dict):
                        return message
                continue
            data = await self.process.stdout.receive_some(1 << 16)
            if not data:
                return None
            self.pending += data

    def stderr_tail(self, limit: int = 2000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-limit:]


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exited with {code}"


def _log_file(log_dir: Path | None, index: int) -> IO[bytes]:
    if log_dir is None:
        return tempfile.TemporaryFile()
    log_dir.mkdir(parents=True, exist_ok=True)
    return open(log_dir / f"worker-{index}.log", "w+b")  # closed by run_processes


def _cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        return cpu_seconds(pid)
    except OSError:  # the process has gone
        return 0.0


async def _wait_ready(w: _Worker) -> None:
    assert w.process is not None
    message = await w.message()
    while message is not None and not message.get("ready"):
        message = await w.message()
    if message is None:
        w.failure = f"{_exit_text(await w.process.wait())} before it was ready"
    else:
        w.ready = True


async def _collect(w: _Worker, workers: Sequence[_Worker], progress: Progress) -> None:
    """Read ``w``'s progress lines and report until it exits; the step's totals go to ``progress``."""
    assert w.process is not None
    while (message := await w.message()) is not None:
        if isinstance(message.get("progress"), dict):
            w.last = message["progress"]
            total: Counter[str] = Counter()
            for other in workers:
                total.update(other.last)
            failed = sum(other.failure is not None for other in workers)
            progress.figures(calls=total["calls"], **{"503": total["refused"]},
                             errors=total["errors"] + failed, timeouts=total["timeouts"])
        elif isinstance(message.get("report"), dict):
            w.report = message["report"]
    code = await w.process.wait()
    if code != 0 or w.report is None:
        w.failure = f"{_exit_text(code)}{' without a report' if w.report is None else ''}"


async def run_processes(url: str, clients: int, seconds: float, *, processes: int | None = None,
                        request_timeout: float = REQUEST_TIMEOUT, grace: float | None = None,
                        start_timeout: float = START_TIMEOUT, server_pid: int | None = None,
                        progress: Progress | None = None, label: str = "", log_dir: Path | None = None,
                        task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED) -> dict[str, Any]:
    """``clients`` MCP clients of both eras calling the node at ``url`` for ``seconds``, in
    ``processes`` worker processes (default :func:`process_count`), merged (see the module's doc).

    ``grace``: how long past ``seconds`` a worker may run before it is killed (default: four
    ``request_timeout`` and 5 s, see :func:`_legacy`). ``server_pid``: the node's process, whose CPU the step records.
    ``progress`` shows the step (``label``) and its running totals. Each worker's stderr goes to
    ``log_dir/worker-N.log`` (or a temporary file). Started (``task_status``) with the workers' pids
    once they have been told to go."""
    progress = progress if progress is not None else Progress.silent()
    label = label or f"{clients} Python clients"
    grace = grace if grace is not None else 4 * request_timeout + 5
    workers: list[_Worker] = []
    first = 0
    for i, share in enumerate(shares(clients, processes if processes is not None else process_count(clients))):
        workers.append(_Worker(i, first, share, _log_file(log_dir, i)))
        first += share
    progress.step(f"{label}: starting {len(workers)} processes")
    env = env_for()
    wall = server_cpu = 0.0
    try:
        for w in workers:
            w.process = await trio.lowlevel.open_process(
                [*WORKER, "--url", url, "--first", str(w.first), "--clients", str(w.clients),
                 "--seconds", f"{seconds:g}", "--request-timeout", f"{request_timeout:g}"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=w.log, env=env, start_new_session=True)
        with trio.move_on_after(start_timeout):
            async with trio.open_nursery() as nursery:
                for w in workers:
                    nursery.start_soon(_wait_ready, w)
        cpu_before = _cpu(server_pid)
        for w in workers:
            assert w.process is not None and w.process.stdin is not None
            if not w.ready:
                w.failure = w.failure or f"not ready within {start_timeout:g} s"
                continue
            try:
                await w.process.stdin.send_all(b"go\n")
                await w.process.stdin.aclose()
            except trio.BrokenResourceError:
                w.failure = "gone before it was told to go"
        go = trio.current_time()
        running = [w for w in workers if w.failure is None]
        progress.step(f"{label}, {len(workers)} processes", seconds=seconds)
        task_status.started([w.process.pid for w in running if w.process is not None])
        with trio.move_on_after(seconds + grace):
            async with trio.open_nursery() as nursery:
                for w in running:
                    nursery.start_soon(_collect, w, workers, progress)
        wall = trio.current_time() - go
        server_cpu = _cpu(server_pid) - cpu_before
        for w in running:
            if w.failure is None and w.report is None:
                w.failure = f"still running {seconds + grace:g} s after go: killed"
    finally:
        with trio.CancelScope(shield=True):
            for w in workers:
                await _reap(w)
    return _merge(workers, clients, seconds, wall, server_cpu)


async def _reap(w: _Worker) -> None:
    """Kill ``w`` if it still runs, wait for it (bounded), keep its stderr's end if it failed, close it."""
    try:
        if w.process is not None:
            if w.process.poll() is None:
                w.process.kill()
            with trio.move_on_after(10):
                await w.process.wait()
        if w.failure is not None:
            w.stderr = w.stderr_tail()
    finally:
        w.log.close()


def _merge(workers: Sequence[_Worker], clients: int, seconds: float, wall: float,
           server_cpu: float) -> dict[str, Any]:
    """One step's figures from the reports of the workers that finished. A failed worker is an error
    of the step, and its calls are not in the totals (its last progress counts are kept, apart)."""
    calls: Counter[str] = Counter()
    served: dict[str, list[float]] = {era: [] for era in ERAS}
    refused: list[float] = []
    refused_by: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    timeouts: Counter[str] = Counter()
    opened = closed = 0
    client_cpu = waited = 0.0
    reported = [w.report for w in workers if w.failure is None and w.report is not None]
    for r in reported:
        calls.update(r["calls"])
        for era in ERAS:
            served[era] += r["served"][era]
        refused += r["refused"]
        refused_by.update(r["refused_by"])
        errors.update(r["errors"])
        timeouts.update(r["timeouts"])
        opened += r["sessions_opened"]
        closed += r["sessions_closed"]
        client_cpu += r["cpu_s"]
        waited += r["retry_after_wait_s"]
    failed = [w for w in workers if w.failure is not None]
    for w in failed:
        errors[f"worker {w.failure}"] += 1
    every = served["modern"] + served["legacy"]
    legacy = sum(era_of(k) == "legacy" for k in range(clients))
    return {
        "clients": clients, "modern_clients": clients - legacy, "legacy_clients": legacy,
        "processes": len(workers), "seconds": seconds, "wall_s": round(wall, 1),
        "workers_reported": len(reported),
        "workers_failed": [{"worker": w.index, "clients": w.clients, "why": w.failure, "last_progress": w.last,
                            "stderr": w.stderr} for w in failed],
        "calls": sum(calls.values()), "calls_by_era": {era: calls[era] for era in ERAS},
        "served": len(every), "served_by_era": {era: len(served[era]) for era in ERAS},
        "served_per_s": round(len(every) / seconds, 1),
        "p50_ms": quantile_ms(every, 0.50), "p99_ms": quantile_ms(every, 0.99),
        "p50_ms_by_era": {era: quantile_ms(served[era], 0.50) for era in ERAS},
        "p99_ms_by_era": {era: quantile_ms(served[era], 0.99) for era in ERAS},
        "refused_503": len(refused), "refused_per_s": round(len(refused) / seconds, 1),
        "refused_by_kind": dict(sorted(refused_by.items())),
        "refusal_p50_ms": quantile_ms(refused, 0.50), "refusal_p99_ms": quantile_ms(refused, 0.99),
        "errors": sum(errors.values()), "errors_by_kind": dict(sorted(errors.items())),
        "timeouts": sum(timeouts.values()), "timeouts_by_kind": dict(sorted(timeouts.items())),
        "sessions_opened": opened, "sessions_closed": closed, "retry_after_wait_s": round(waited, 1),
        "cores": os.cpu_count(), "client_cpu_s": round(client_cpu, 1),
        "client_cores": round(client_cpu / wall, 2) if wall > 0 else None,
        "server_cpu_s": round(server_cpu, 1), "server_cores": round(server_cpu / wall, 2) if wall > 0 else None,
    }


def judge(steps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The steps (of :func:`run_processes`, in order of load) with the requirement's verdicts:
    ``below_capacity`` (the node refused none of the step's calls), ``p99_within_3x_p50``;
    past capacity ``refusal_p99_within_100ms`` and ``served_latency_kept`` (p99 <= 3 x
    ``reference_p50_ms``: the p50 of the last step below capacity, else the step's own); and
    ``ok``: no errors, no timeouts, both eras served, and the verdicts of its side of capacity."""
    judged: list[dict[str, Any]] = []
    reference: float | None = None
    for step in steps:
        p50, p99 = step["p50_ms"], step["p99_ms"]
        clean = (step["errors"] == 0 and step["timeouts"] == 0
                 and all(step["served_by_era"][era] > 0 for era in ERAS if step[f"{era}_clients"]))
        below = step["refused_503"] == 0
        tail = p50 is not None and p99 is not None and p99 <= TAIL_BOUND * p50
        verdicts: dict[str, Any] = {"below_capacity": below, "p99_within_3x_p50": tail,
                                    "refusal_p99_within_100ms": None, "served_latency_kept": None,
                                    "reference_p50_ms": None}
        if below:
            ok = clean and tail
            reference = p50 if p50 is not None else reference
        else:
            base = reference if reference is not None else p50
            fast = step["refusal_p99_ms"] is not None and step["refusal_p99_ms"] <= REFUSAL_BOUND_MS
            kept = base is not None and p99 is not None and p99 <= TAIL_BOUND * base
            verdicts.update(refusal_p99_within_100ms=fast, served_latency_kept=kept, reference_p50_ms=base)
            ok = clean and fast and kept
        judged.append({**step, **verdicts, "ok": ok})
    return judged




if __name__ == "__main__":
    sys.exit(worker())
