"""The ``wrk`` load generator (C, its own process): run it against an MCP server, read its report.

:data:`CALL_SCRIPT` sends one modern ``tools/call`` of ``TOOL`` with the JSON arguments ``ARGS``
per request and counts answers that are errors (``FAILED_RESULTS``); :func:`call_tool` runs it.
Other scripts (the benchmarks' own) go through :func:`run`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CALL_SCRIPT", "WrkResult", "call_tool", "parse", "report", "run"]

CALL_SCRIPT = Path(__file__).with_name("wrk_call.lua")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_SOCKET_ERRORS = ("connect", "read", "write", "timeout")


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run reported. Latencies in milliseconds (NaN when wrk printed none)."""

    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int = 0
    """Answers with a status other than 2xx or 3xx."""
    failed: int = 0
    """Answers the script counted as failed (``FAILED_RESULTS``; 0 for a script that does not count)."""
    socket_errors: dict[str, int] = field(default_factory=dict)
    """wrk's ``Socket errors`` line: connect, read, write, timeout (empty when there were none)."""

    @property
    def socket_errors_total(self) -> int:
        return sum(self.socket_errors.values())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "socket_errors_total": self.socket_errors_total}


def parse(out: str) -> WrkResult:
    """Read wrk's report (run with ``--latency``)."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise ValueError(f"not a wrk report: {out[-2000:]}")
    latency = {pct: float(value) * _UNIT_MS[unit]
               for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = re.search(r"FAILED_RESULTS (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        rps=float(rps.group(1)), p50_ms=latency.get("50", float("nan")), p99_ms=latency.get("99", float("nan")),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0, failed=int(failed.group(1)) if failed else 0,
        socket_errors=dict(zip(_SOCKET_ERRORS, (int(n) for n in sockets.groups()), strict=True)) if sockets else {})


def report(base_url: str, script: Path, *, connections: int, seconds: float, env: Mapping[str, str] | None = None,
           request_timeout: float | None = None) -> str:
    """One thread, ``connections`` connections, for ``seconds`` (at least 1) against ``base_url``
    (the script picks the path); ``env`` is added to the script's environment. wrk's report as it
    printed it, with what the script's ``done`` wrote (:func:`run` parses it)."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, int(seconds))}s", "--latency", "-s", str(script)]
    if request_timeout is not None:
        argv += ["--timeout", f"{request_timeout:g}s"]
    return subprocess.run([*argv, base_url], env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=seconds + 60, check=True).stdout


def run(base_url: str, script: Path, *, connections: int, seconds: float, env: Mapping[str, str] | None = None,
        request_timeout: float | None = None) -> WrkResult:
    """:func:`report`, parsed."""
    return parse(report(base_url, script, connections=connections, seconds=seconds, env=env,
                        request_timeout=request_timeout))


def call_tool(base_url: str, tool: str, arguments: dict[str, Any], *, connections: int, seconds: float,
              request_timeout: float = 10.0) -> WrkResult:
    """:data:`CALL_SCRIPT`: modern ``tools/call`` of ``tool`` as fast as ``connections`` allow."""
    env = {"TOOL": tool, "ARGS": json.dumps(arguments, separators=(",", ":"))}
    return run(base_url, CALL_SCRIPT, connections=connections, seconds=seconds, env=env,
               request_timeout=request_timeout)
