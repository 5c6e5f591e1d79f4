"""Bounded live-HTTP fuzz: malformed inputs against the app under real Hypercorn."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from harness.mcp_http import modern_call
from reliability import http_fuzz
from reliability.checks import spec_shaped_error
from tests.conftest import run_app

MAX_BODY = 65536


async def test_malformed_inputs_get_no_5xx_and_spec_shaped_errors(app_factory: Callable[..., Any]) -> None:
    cases = http_fuzz.generate(60, 7, MAX_BODY)
    assert {c.kind for c in cases} >= {"random-bytes", "oversized-body", "slow-body", "truncated-body",
                                        "last-event-id", "session-id", "deep-nesting"}
    async with run_app(app_factory(http={"max_body_bytes": MAX_BODY})) as url:
        tally = await http_fuzz.run(url, cases)
        headers, body = modern_call("server_status", {})
        async with httpx.AsyncClient(timeout=10) as client:
            after = await client.post(f"{url}/mcp", json=body, headers=headers)
    assert tally.tried == 60
    assert tally.server_errors == 0, tally.examples
    assert tally.hung == 0, tally.examples
    assert tally.bad_error_bodies == 0, tally.examples
    assert sum(v for k, v in tally.by_status.items() if k.startswith("4")) >= 30  # they were refused, not ignored
    assert after.status_code == 200 and after.json()["result"]["structuredContent"]["ok"] is True


def test_the_shape_check_rejects_what_it_should() -> None:
    assert spec_shaped_error({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "x"}})
    assert not spec_shaped_error({"jsonrpc": "2.0", "id": 1, "error": {"code": "1", "message": "x"}})
    assert not spec_shaped_error({"jsonrpc": "2.0", "id": 1, "error": {"code": True, "message": "x"}})
    assert not spec_shaped_error({"id": 1, "error": {"code": 1, "message": "x"}})
    assert not spec_shaped_error({"jsonrpc": "2.0", "error": {"code": 1, "message": "x"}})


async def test_regressions_a_lone_surrogate_in_the_id_is_answered_not_500(app_factory: Callable[..., Any]) -> None:
    import json

    async with run_app(app_factory()) as url, httpx.AsyncClient(timeout=10) as client:
        for shape in http_fuzz.REGRESSIONS:
            raw = json.dumps(shape).encode()  # "\udfff" stays an escape: valid JSON, a lone surrogate once parsed
            headers = {"content-type": "application/json", "accept": "application/json",
                       "mcp-protocol-version": "2026-07-28", "mcp-method": str(shape["method"])}
            reply = await client.post(f"{url}/mcp", content=raw, headers=headers)
            assert reply.status_code < 500, reply.text
            assert spec_shaped_error(reply.json()) and reply.json()["id"] == shape["id"]
