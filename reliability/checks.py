"""What the reliability runs call a healthy answer."""

from __future__ import annotations

from typing import Any

import httpx

from harness.mcp_http import call

__all__ = ["answers_valid_call", "spec_shaped_error"]


def answers_valid_call(url: str) -> bool:
    """The server at ``url`` answers ``server_status`` with a result."""
    try:
        response = call(url, "server_status", {}, timeout=10)
        return response.status_code == 200 and "result" in response.json()
    except (httpx.HTTPError, ValueError):
        return False


def spec_shaped_error(data: Any) -> bool:
    """A JSON-RPC 2.0 error response: ``jsonrpc`` "2.0", ``error.code`` int, ``error.message`` str."""
    if not isinstance(data, dict) or data.get("jsonrpc") != "2.0" or "id" not in data:
        return False
    error = data.get("error")
    return (isinstance(error, dict) and isinstance(error.get("code"), int) and not isinstance(error.get("code"), bool)
            and isinstance(error.get("message"), str))
