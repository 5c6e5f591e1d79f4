"""Bounded live-HTTP fuzz: malformed inputs against the app under real Hypercorn; and the inputs
themselves: each regenerated from ``(seed, index)`` alone."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import trio

from harness.mcp_http import modern_call
from harness.procs import REPO
from reliability import http_fuzz, http_inputs
from reliability.checks import spec_shaped_error
from tests.conftest import run_app

MAX_BODY = 65536


async def test_malformed_inputs_get_no_5xx_and_spec_shaped_errors(app_factory: Callable[..., Any]) -> None:
    cases = list(http_inputs.generate(60, 7, MAX_BODY))
    assert {c.kind for c in cases} >= {"random-bytes", "oversized-body-chunked", "slow-body", "truncated-body",
                                        "last-event-id", "session-id", "deep-nesting", "pipelined", "chunked",
                                        "header-lines", "mutated-json", "mutated-value"}
    async with run_app(app_factory(http={"max_body_bytes": MAX_BODY})) as url:
        tally = await http_fuzz.run(url, cases)
        headers, body = modern_call("server_status", {})
        async with httpx.AsyncClient(timeout=10) as client:
            after = await client.post(f"{url}/mcp", json=body, headers=headers)
    assert tally.tried == 60
    assert tally.server_errors == 0, tally.failures
    assert tally.hung == 0, tally.failures
    assert tally.bad == 0, tally.failures  # no bad response, dropped request, malformed error body...
    assert sum(v for k, v in tally.by_status.items() if k.startswith("4")) >= 30  # they were refused, not ignored
    assert after.status_code == 200 and after.json()["result"]["structuredContent"]["ok"] is True


def test_the_shape_check_rejects_what_it_should() -> None:
    assert spec_shaped_error({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "x"}})
    assert not spec_shaped_error({"jsonrpc": "2.0", "id": 1, "error": {"code": "1", "message": "x"}})
    assert not spec_shaped_error({"jsonrpc": "2.0", "id": 1, "error": {"code": True, "message": "x"}})
    assert not spec_shaped_error({"id": 1, "error": {"code": 1, "message": "x"}})
    assert not spec_shaped_error({"jsonrpc": "2.0", "error": {"code": 1, "message": "x"}})


async def test_regressions_a_lone_surrogate_in_the_id_is_answered_not_500(app_factory: Callable[..., Any]) -> None:
    async with run_app(app_factory()) as url, httpx.AsyncClient(timeout=10) as client:
        for shape in http_inputs.REGRESSIONS:
            raw = json.dumps(shape).encode()  # "\udfff" stays an escape: valid JSON, a lone surrogate once parsed
            headers = {"content-type": "application/json", "accept": "application/json",
                       "mcp-protocol-version": "2026-07-28", "mcp-method": str(shape["method"])}
            reply = await client.post(f"{url}/mcp", content=raw, headers=headers)
            assert reply.status_code < 500, reply.text
            assert spec_shaped_error(reply.json()) and reply.json()["id"] == shape["id"]


def _digest(seed: int, indexes: list[int]) -> str:
    h = hashlib.sha256()
    for i in indexes:
        h.update(b"".join(http_inputs.wire(http_inputs.case(seed, i, MAX_BODY), "h:1", "S")))
    return h.hexdigest()


def test_seed_and_index_regenerate_the_same_input() -> None:
    in_a_run = list(http_inputs.generate(200, 11, MAX_BODY))
    for i in (0, 1, 28, 29, 57, 123, 199):  # alone, out of order: the same case and the same bytes
        alone = http_inputs.case(11, i, MAX_BODY)
        assert alone == in_a_run[i] and (alone.seed, alone.index, alone.ref) == (11, i, f"11:{i}")
        assert http_inputs.wire(alone, "h:1", "S") == http_inputs.wire(in_a_run[i], "h:1", "S")
    later = list(http_inputs.generate(10, 11, MAX_BODY, start=150))
    assert later == in_a_run[150:160]
    assert http_inputs.case(12, 5, MAX_BODY) != in_a_run[5]  # another seed, another input
    # Another interpreter, another hash seed: the same bytes (what a replay on another machine relies on).
    code = (f"from tests.reliability.test_http_fuzz import _digest; print(_digest(11, {list(range(0, 200, 7))}))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                           cwd=REPO, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert other.stdout.strip() == _digest(11, list(range(0, 200, 7)))


async def _closed_after_empty_connection(url: str) -> bool:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_eof()
        with trio.move_on_after(2):  # Hypercorn's keep_alive_timeout here is 5 s (75 s in triomcp serve)
            return await stream.receive_some(100) == b""
    return False


async def test_a_connection_that_sends_nothing_then_eof_is_closed_at_once(app_factory: Callable[..., Any]) -> None:
    """Found by the HTTP fuzzer (``20260728:34215``, an empty input): fixed in ``GatedTCPServer``."""
    async with run_app(app_factory()) as url:
        assert await _closed_after_empty_connection(url), "the server kept the connection open"


async def test_hypercorns_own_server_still_keeps_such_a_connection(app_factory: Callable[..., Any]) -> None:
    """The control: Hypercorn's own ``serve`` (what ``hypercorn triomcp.app:app`` runs) still keeps
    it open until keep_alive_timeout. When this fails, Hypercorn has fixed it: drop the
    ``_read_data`` override in ``triomcp.server.http_gate``."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.errorlog = None
    config.graceful_timeout = 0.5
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: hypercorn_serve(
            app_factory(), config, shutdown_trigger=stop.wait, task_status=task_status))
        assert not await _closed_after_empty_connection(binds[0])
        stop.set()


async def test_connections_refused_for_oversized_headers_are_let_go(app_factory: Callable[..., Any]) -> None:
    """Found by the HTTP fuzzer (server RSS 114 -> 253 MiB): after a 431 the connection's handler
    and its 64 KiB receive buffer lived on until keep_alive_timeout. Fixed in ``GatedTCPServer``."""
    from hypercorn.trio.tcp_server import TCPServer

    head = ("POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 2\r\n"
            f"x-big: {'a' * 70_000}\r\n\r\n").encode()
    async with run_app(app_factory()) as url:
        tally = await http_fuzz.run(url, [http_inputs.Case("oversized-headers", raw=(head, b"{}"))] * 20,
                                    concurrency=4)
        assert tally.by_status == {"431": 20}
        await trio.sleep(1)  # the clients have closed; Hypercorn's keep_alive_timeout here is 5 s
        gc.collect()
        handlers = sum(1 for o in gc.get_objects() if isinstance(o, TCPServer))
    assert handlers == 0, f"{handlers} connection handlers still alive"
