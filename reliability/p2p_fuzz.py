"""Raw frames to a live node's ``/triomcp/mcp/1.0.0`` from a py-libp2p client host.

The client host uses the data dir's CLI identity (``identity-cli.key``), which the node always
authorizes, and the node's own transport settings (TCP + Noise + yamux, via
:func:`triomcp.p2p.open_node`). Inputs come from :mod:`reliability.p2p_inputs`, in streams of
:data:`~reliability.p2p_inputs.STREAM_INPUTS`; ``streams`` of them run at once on the one
connection. On a stream, each input is written together with a probe (a valid ``tools/call``),
and the next input waits for the probe's answer: so each input is bounded in time, and the
input that broke a stream is known exactly. Replies are read with the fuzzer's own frame
parser, not the node's.

What counts, per input:

- **crash**: the node process exited (the caller checks);
- **hung**: the probe after it (or a reply it is owed) did not come within :data:`DEADLINE`
  seconds, the stream still open; after an ending, the node did not end the stream in time;
- **stream killed**: the stream ended before the probe after a frame it must survive;
- **unanswered**: a stream got fewer replies than JSON-RPC owes its inputs (every frame that is
  not a notification gets one: a ``notifications/cancelled`` carrying an ``id`` too); the inputs
  still owed are named;
- **internal error**: a reply with code -32603 (the libp2p face's 500);
- **malformed reply**: a reply that is not a JSON-RPC 2.0 response with a spec-shaped error.

A probe answered ``-32010`` (the peer's request budget, or its requests in flight) shows the stream
alive as well as a result does: it is counted apart (``probes_refused``). Every failure keeps its
``SEED:INDEX``: ``python -m reliability --only p2p --replay SEED:INDEX`` sends that input again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import operator
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio
from libp2p.abc import INotifee
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from harness.progress import Progress
from reliability.checks import spec_shaped_error
from reliability.p2p_inputs import STREAM_INPUTS, FrameInput, frame_input, probe
from triomcp.p2p import CLI_IDENTITY_FILE, MCP_PROTOCOL, open_node
from triomcp.settings import P2PSettings

__all__ = ["DEADLINE", "P2PTally", "fuzz_node", "send_one", "still_serving", "summary"]

DEADLINE = 10.0
"""Seconds an input's probe (or an ending's close) may take."""
TOO_MANY = -32010
INTERNAL = -32603
MAX_REPLY = 16 * 1024 * 1024
MAX_FAILURES = 50


@dataclass
class P2PTally:
    inputs: int = 0
    """Fuzz inputs written (endings included; probes and the flood not)."""
    frames_sent: int = 0
    """Every frame written: inputs, probes, the flood."""
    replies: int = 0
    error_replies: int = 0
    probes_sent: int = 0
    probes_answered: int = 0
    """Probes answered with a result."""
    probes_refused: int = 0
    """Probes answered -32010 (budget or in-flight limit): the stream is alive."""
    streams: int = 0
    streams_failed: int = 0
    """Streams that could not be opened."""
    streams_killed: int = 0
    hung: int = 0
    unanswered: int = 0
    internal_errors: int = 0
    malformed_replies: int = 0
    skipped: int = 0
    """Inputs not written: their stream could not be opened, or an input before them broke it."""
    connection_lost: int = 0
    """Inputs whose stream died because the whole connection did (not because of the input)."""
    connection_losses: list[dict[str, Any]] = field(default_factory=list)
    """Each time the client's connection to the node went away: when, and the endings written
    on any stream in the seconds before (where the cause is to be looked for)."""
    reconnects: int = 0
    fuzz_seconds: float = 0.0
    """The inputs' time (not the flood's, nor the final check's)."""
    serving_after: bool = False
    flood_sent: int = 0
    flood_answered: int = 0
    flood_rate_limited: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fail(self, item: FrameInput, outcome: str, detail: str = "") -> None:
        if len(self.failures) < MAX_FAILURES:
            self.failures.append({"seed": item.seed, "index": item.index, "kind": item.kind, "outcome": outcome,
                                  "detail": detail[:300]})

    @property
    def bad(self) -> int:
        return (self.hung + self.streams_killed + self.unanswered + self.internal_errors + self.malformed_replies
                + self.streams_failed + self.connection_lost + len(self.connection_losses))


class _Reader:
    """Reads one stream's replies; attributes each to the input it answers."""

    def __init__(self, tally: P2PTally, *, count: bool = True, keep: bool = False) -> None:
        self.tally = tally
        self.count = count
        self.answered: dict[str, dict[str, Any]] = {}
        self.got: dict[int, int] = {}
        """Replies received per input index."""
        self.by_id: dict[Any, list[FrameInput]] = {}
        self.current: FrameInput | None = None
        self.kept: list[Any] | None = [] if keep else None
        """Every reply, in order (``keep``: a replay prints them)."""
        self.changed = trio.Event()
        self.ended = False

    def expect(self, item: FrameInput) -> None:
        self.current = item
        if item.ident is not None:
            self.by_id.setdefault(item.ident, []).extend([item] * item.owed)

    def _attribute(self, reply: dict[str, Any]) -> None:
        ident = reply.get("id")
        if isinstance(ident, str) and ident.startswith("probe:"):
            self.answered[ident] = reply
            return
        waiting = self.by_id.get(ident) if isinstance(ident, str | int) else None
        item = waiting.pop(0) if waiting else self.current
        if item is not None:
            self.got[item.index] = self.got.get(item.index, 0) + 1

    def replies(self) -> int:
        """Replies to inputs (not to probes) so far."""
        return sum(self.got.values())

    def _check(self, reply: Any) -> None:
        tally = self.tally
        if not (isinstance(reply, dict) and reply.get("jsonrpc") == "2.0" and "id" in reply
                and (("result" in reply) != ("error" in reply))
                and ("error" not in reply or spec_shaped_error(reply))):
            tally.malformed_replies += 1
            if self.current is not None:
                tally.fail(self.current, "malformed-reply", json.dumps(reply, default=str)[:200])
            return
        if "error" in reply:
            tally.error_replies += 1
            code = reply["error"]["code"]
            tally.errors_by_code[str(code)] = tally.errors_by_code.get(str(code), 0) + 1
            if code == INTERNAL:
                tally.internal_errors += 1
                if self.current is not None:
                    tally.fail(self.current, "internal-error", json.dumps(reply)[:200])

    async def run(self, stream: Any) -> None:
        buffer = bytearray()
        try:
            while True:
                data = await stream.read(65536)
                if not data:
                    break
                buffer += data
                while len(buffer) >= 4:
                    (length,) = struct.unpack_from(">I", buffer)
                    if length > MAX_REPLY:
                        self.tally.malformed_replies += 1
                        self.tally.notes.append(f"a reply frame of {length} bytes")
                        return
                    if len(buffer) < 4 + length:
                        break
                    body = bytes(buffer[4 : 4 + length])
                    del buffer[: 4 + length]
                    try:
                        reply = json.loads(body)
                    except ValueError:
                        reply = body
                    if self.kept is not None:
                        self.kept.append(reply)
                    if self.count:
                        self.tally.replies += 1
                        self._check(reply)
                    if isinstance(reply, dict):
                        self._attribute(reply)
                    self.changed.set()
                    self.changed = trio.Event()
        except Exception:  # StreamEOF / StreamReset: the stream is over
            pass
        finally:
            self.ended = True
            self.changed.set()

    async def wait_until(self, done: Callable[[], bool], seconds: float = DEADLINE) -> bool:
        """Wait until ``done()`` or the stream ends, at most ``seconds``; returns ``done()``."""
        with trio.move_on_after(seconds):
            while not done() and not self.ended:
                await self.changed.wait()
        return bool(done())


class _Watch(INotifee):
    """The client host's connection events (a libp2p notifee), and the recent endings, so a stream
    that died with its connection is not blamed on the input it was carrying."""

    LOOKBACK = 3.0

    def __init__(self, tally: P2PTally) -> None:
        self.tally = tally
        self.started = trio.current_time()
        self.armed = True
        self.lost: list[float] = []
        self.endings: deque[tuple[float, FrameInput]] = deque(maxlen=256)
        self.killed: list[tuple[float, FrameInput]] = []

    async def disconnected(self, network: Any, conn: Any) -> None:
        if not self.armed:
            return
        now = trio.current_time()
        self.lost.append(now)
        recent = [f"{i.kind} {i.ref}" for t, i in self.endings if now - t <= self.LOOKBACK]
        self.tally.connection_losses.append({"at_s": round(now - self.started, 1), "recent_endings": recent[-20:]})

    async def opened_stream(self, network: Any, stream: Any) -> None:
        pass

    async def closed_stream(self, network: Any, stream: Any) -> None:
        pass

    async def connected(self, network: Any, conn: Any) -> None:
        pass

    async def listen(self, network: Any, multiaddr: Any) -> None:
        pass

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        pass

    def settle(self) -> None:
        """Blame each killed stream on its input, unless the connection went within seconds of it."""
        self.armed = False
        for at, item in self.killed:
            if any(abs(at - lost) <= self.LOOKBACK for lost in self.lost):
                self.tally.connection_lost += 1
                self.tally.fail(item, "connection-lost", "the stream died with the whole connection")
            else:
                self.tally.streams_killed += 1
                self.tally.fail(item, "stream-killed", "the stream ended before the probe after this input")


async def _open(node: Any, peer: str, multiaddr: str, tally: P2PTally) -> Any:
    """A new MCP stream to the node. When that fails the connection may be gone while py-libp2p
    still lists it: drop it, dial again, try again (three attempts in all)."""
    pid = ID.from_base58(peer)
    for attempt in range(3):
        try:
            with trio.fail_after(DEADLINE):
                if attempt:
                    tally.reconnects += 1
                    with contextlib.suppress(Exception):
                        await node.host.disconnect(pid)
                    await trio.sleep(0.5 * attempt)
                    await node.connect(multiaddr)
                elif not node.is_connected(peer):
                    await node.connect(multiaddr)
                return await node.host.new_stream(pid, [TProtocol(MCP_PROTOCOL)])
        except Exception:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _write(stream: Any, data: bytes) -> bool:
    """Write ``data``, bounded: False when the node would not take it within the deadline."""
    with trio.move_on_after(DEADLINE):
        await stream.write(data)
        return True
    return False


async def _run_stream(node: Any, peer: str, multiaddr: str, items: Sequence[FrameInput], tally: P2PTally,
                      progress: Progress, watch: _Watch) -> None:
    """One stream: each input with its probe, in lockstep; the replies owed; then its ending."""
    tally.streams += 1
    try:
        stream = await _open(node, peer, multiaddr, tally)
    except Exception as exc:
        tally.streams_failed += 1
        tally.skipped += len(items)
        tally.fail(items[0], "open-failed", f"{type(exc).__name__}: {exc}")
        progress.advance(len(items))
        return
    reader = _Reader(tally)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.run, stream)
            sent = await _survivable(stream, reader, items, tally, progress, watch)
            if sent == len(items) or items[sent].ending:
                await _owed(reader, items[:sent], tally)
                if sent < len(items):
                    watch.endings.append((trio.current_time(), items[sent]))
                    await _end(stream, reader, items[sent], tally)
                    sent += 1
                    progress.advance()
                else:  # a short last stream: no ending, a clean close
                    with contextlib.suppress(Exception), trio.move_on_after(DEADLINE):
                        await stream.close_write()
                    await reader.wait_until(lambda: reader.ended)
            else:
                tally.skipped += len(items) - sent - 1
                progress.advance(len(items) - sent - 1)
            nursery.cancel_scope.cancel()
    finally:
        with contextlib.suppress(Exception), trio.move_on_after(DEADLINE):
            await stream.reset()


async def _survivable(stream: Any, reader: _Reader, items: Sequence[FrameInput], tally: P2PTally,
                      progress: Progress, watch: _Watch) -> int:
    """Write each input up to the ending, each with its probe, waiting for the probe's answer;
    returns how many were survived (the index of the ending, or of the input that broke the stream)."""
    for n, item in enumerate(items):
        if item.ending:
            return n
        reader.expect(item)
        ident = f"probe:{item.index}"
        tally.inputs += 1
        tally.probes_sent += 1
        tally.frames_sent += 2
        try:
            written = await _write(stream, item.data + probe(ident))
        except Exception:  # the stream is gone: the probe will say so
            written = True
        answered = written and await reader.wait_until(functools.partial(operator.contains, reader.answered, ident))
        progress.advance()
        if not answered:
            if reader.ended:
                watch.killed.append((trio.current_time(), item))
            elif not written:
                tally.hung += 1
                tally.fail(item, "hung", f"the node did not take this input within {DEADLINE:g} s")
            else:
                tally.hung += 1
                tally.fail(item, "hung", f"the probe after this input got no answer within {DEADLINE:g} s")
            return n
        reply = reader.answered[ident]
        if "result" in reply:
            tally.probes_answered += 1
        elif (reply.get("error") or {}).get("code") == TOO_MANY:
            tally.probes_refused += 1
        else:
            tally.fail(item, "probe-error", json.dumps(reply)[:200])
    return len(items)


async def _owed(reader: _Reader, items: Sequence[FrameInput], tally: P2PTally) -> None:
    """Wait for every reply these inputs are owed; when some are missing, name the inputs short of theirs."""
    owed = sum(i.owed for i in items)
    await reader.wait_until(lambda: reader.replies() >= owed)
    if reader.replies() >= owed:
        return
    for item in items:
        if reader.got.get(item.index, 0) < item.owed:
            tally.unanswered += 1
            tally.fail(item, "unanswered", f"{reader.got.get(item.index, 0)} of {item.owed} replies")


async def _end(stream: Any, reader: _Reader, item: FrameInput, tally: P2PTally) -> None:
    reader.expect(item)
    tally.inputs += 1
    tally.frames_sent += 1
    try:
        if item.data and not await _write(stream, item.data):
            tally.hung += 1
            tally.fail(item, "hung", f"the node did not take this ending within {DEADLINE:g} s")
            return
        with trio.move_on_after(DEADLINE):
            if item.ending == "reset":
                await stream.reset()
                return
            if item.ending == "eof":
                await stream.close_write()
    except Exception as exc:
        tally.notes.append(f"ending {item.kind}: {type(exc).__name__}: {exc}"[:200])
        return
    if not await reader.wait_until(lambda: reader.ended):
        tally.hung += 1
        tally.fail(item, "not-closed", f"the node kept the stream open {DEADLINE:g} s after this ending")
    elif reader.got.get(item.index, 0) < item.owed:
        tally.unanswered += 1
        tally.fail(item, "unanswered", f"{reader.got.get(item.index, 0)} of {item.owed} replies before the end")


async def fuzz_node(data_dir: Path, multiaddr: str, *, inputs: int, seed: int, max_frame_bytes: int,
                    flood: int = 0, streams: int = 16, progress: Progress | None = None) -> P2PTally:
    """Send inputs ``0 .. inputs-1`` of ``seed`` to the node at ``multiaddr`` as this data dir's CLI
    identity, ``streams`` streams at a time; then ``flood`` probes in one write; then check that a
    fresh client is served."""
    progress = progress if progress is not None else Progress.silent()
    tally = P2PTally()
    settings = P2PSettings(listen=["/ip4/127.0.0.1/tcp/0"], peer_exchange=False, mdns=False)
    count = -(-inputs // STREAM_INPUTS)
    numbers = iter(range(count))
    async with open_node(settings, data_dir, identity_file=CLI_IDENTITY_FILE, announce=False) as node:
        with trio.fail_after(DEADLINE):
            peer = await node.connect(multiaddr)
        watch = _Watch(tally)
        node.host.get_network().register_notifee(watch)

        async def work() -> None:
            for s in numbers:  # shared: each worker takes the next stream
                first = s * STREAM_INPUTS
                items = [frame_input(seed, i, max_frame_bytes) for i in range(first, min(first + STREAM_INPUTS,
                                                                                          inputs))]
                await _run_stream(node, peer, multiaddr, items, tally, progress, watch)
                progress.figures(killed=len(watch.killed), lost=len(watch.lost), hung=tally.hung,
                                 unanswered=tally.unanswered, internal=tally.internal_errors,
                                 refused=tally.probes_refused)

        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(min(streams, count)):
                nursery.start_soon(work)
        tally.fuzz_seconds = round(trio.current_time() - t0, 1)
        if flood:
            await _flood(node, peer, multiaddr, flood, tally)
        watch.settle()
    tally.serving_after = await still_serving(data_dir, multiaddr)
    return tally


async def _flood(node: Any, peer: str, multiaddr: str, flood: int, tally: P2PTally) -> None:
    """``flood`` probes in one write on one stream: every one answered, a result or -32010."""
    tally.flood_sent = flood
    tally.frames_sent += flood
    tally.streams += 1
    try:
        stream = await _open(node, peer, multiaddr, tally)
    except Exception as exc:
        tally.streams_failed += 1
        tally.notes.append(f"flood: open stream: {exc}"[:200])
        return
    reader = _Reader(tally, count=False)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.run, stream)
            if not await _write(stream, b"".join(probe(f"probe:flood-{i}") for i in range(flood))):
                tally.notes.append(f"flood: the node did not take {flood} probes within {DEADLINE:g} s")
            await reader.wait_until(lambda: len(reader.answered) >= flood, 2 * DEADLINE)
            nursery.cancel_scope.cancel()
    finally:
        with contextlib.suppress(Exception), trio.move_on_after(DEADLINE):
            await stream.reset()
    tally.flood_answered = len(reader.answered)
    tally.flood_rate_limited = sum(1 for r in reader.answered.values()
                                   if (r.get("error") or {}).get("code") == TOO_MANY)


async def still_serving(data_dir: Path, multiaddr: str) -> bool:
    """A fresh client host (the CLI identity) gets a ``server_status`` result from the node."""
    replies = await send_one(data_dir, multiaddr, b"")
    return any(r.get("id") == "probe:final" and "result" in r for r in replies if isinstance(r, dict))


async def send_one(data_dir: Path, multiaddr: str, data: bytes, *, ending: str = "") -> list[Any]:
    """From a fresh client host, write ``data`` then a probe (``probe:final``) on a new stream (for
    an ending: ``data`` alone, then as the ending says); the replies until the stream ends or
    :data:`DEADLINE` passes (a replay)."""
    settings = P2PSettings(listen=["/ip4/127.0.0.1/tcp/0"], peer_exchange=False, mdns=False)
    tally = P2PTally()
    reader = _Reader(tally, count=False, keep=True)
    with trio.move_on_after(3 * DEADLINE):
        async with open_node(settings, data_dir, identity_file=CLI_IDENTITY_FILE, announce=False) as node:
            with trio.fail_after(DEADLINE):
                peer = await node.connect(multiaddr)
            stream = await _open(node, peer, multiaddr, tally)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(reader.run, stream)
                    if ending:
                        with contextlib.suppress(Exception):
                            await stream.write(data)
                            if ending == "reset":
                                await stream.reset()
                            elif ending == "eof":
                                await stream.close_write()
                        await reader.wait_until(lambda: reader.ended)
                    else:
                        await stream.write(data + probe("probe:final"))
                        await reader.wait_until(lambda: "probe:final" in reader.answered)
                    nursery.cancel_scope.cancel()
            finally:
                with contextlib.suppress(Exception):
                    await stream.reset()
    return reader.kept or []


def summary(tally: P2PTally, seconds: float | None = None) -> dict[str, Any]:
    """The figures; ``seconds``: the whole run (inputs, flood, final check); ``inputs_per_s`` is
    over the inputs' time alone."""
    out = {k: v for k, v in asdict(tally).items() if k not in ("failures", "notes", "errors_by_code")}
    out["errors_by_code"] = dict(sorted(tally.errors_by_code.items()))
    out["inputs_per_s"] = round(tally.inputs / tally.fuzz_seconds) if tally.fuzz_seconds > 0 else None
    if seconds is not None:
        out["seconds"] = round(seconds, 1)
    out["failures"] = tally.failures
    out["notes"] = tally.notes[:20]
    return out
