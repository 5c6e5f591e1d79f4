"""The shared harness (harness/): its pure parts, synchronously; no servers, no sleeps."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import pytest

from harness import mcp_http, wrk
from harness.procs import PORTS, REPO, env_for, free_port
from harness.progress import Progress, clock
from triomcp.mcp.results import modern_meta

WRK_REPORT = """\
Running 1s test @ http://127.0.0.1:20001
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.51ms    1.75ms   9.67ms   84.09%
    Req/Sec     1.82k   557.66     2.48k    72.73%
  Latency Distribution
     50%  572.00us
     75%    2.09ms
     90%    4.18ms
     99%    1.02s
  1993 requests in 1.10s, 1.05MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   1811.23
Transfer/sec:      0.96MB
FAILED_RESULTS 9
"""


def test_the_wrk_report_is_read_whole() -> None:
    result = wrk.parse(WRK_REPORT)
    assert result.rps == 1811.23
    assert result.p50_ms == pytest.approx(0.572) and result.p99_ms == pytest.approx(1020.0)
    assert (result.non_2xx, result.failed) == (7, 9)
    assert result.socket_errors == {"connect": 0, "read": 2, "write": 0, "timeout": 3}
    assert result.socket_errors_total == 5 and result.to_dict()["socket_errors_total"] == 5


def test_a_quiet_wrk_report_has_no_errors_and_nan_latencies_when_none_were_printed() -> None:
    result = wrk.parse("Requests/sec:   10.00\n")
    assert (result.rps, result.non_2xx, result.failed, result.socket_errors) == (10.0, 0, 0, {})
    assert result.p50_ms != result.p50_ms  # NaN
    with pytest.raises(ValueError, match="not a wrk report"):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_wrk_scripts_exist() -> None:
    assert wrk.CALL_SCRIPT.is_file()


def test_free_ports_are_bindable_and_below_the_ephemeral_range() -> None:
    port = free_port()
    assert port in PORTS
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_a_child_environment_drops_ours_and_spells_settings_as_triomcp_variables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIOMCP_HTTP__MAX_BODY_BYTES", "1")
    env = env_for(tmp_path, "n1", log_level="WARNING", p2p={"enabled": False}, p2p__bootstrap=["/ip4/x"])
    assert "TRIOMCP_HTTP__MAX_BODY_BYTES" not in env
    assert env["TRIOMCP_DATA_DIR"] == str(tmp_path) and env["TRIOMCP_TEST_NODE_NAME"] == "n1"
    assert env["TRIOMCP_LOG_LEVEL"] == "WARNING"
    assert json.loads(env["TRIOMCP_P2P"]) == {"enabled": False}
    assert json.loads(env["TRIOMCP_P2P__BOOTSTRAP"]) == ["/ip4/x"]
    assert env["TRIOMCP_P2P__LISTEN"] == '["/ip4/127.0.0.1/tcp/0"]'
    assert env["PYTHONPATH"].split(":")[0] == str(REPO)
    assert "TRIOMCP_DATA_DIR" not in env_for()


def test_a_modern_call_carries_the_servers_own_meta_and_routing_headers() -> None:
    headers, body = mcp_http.modern_call("echo", {"text": "hi"}, 7, progressToken="p")
    assert body == {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": "hi"}, "_meta": modern_meta(progressToken="p")}}
    assert headers == {"content-type": "application/json", "accept": mcp_http.ACCEPT,
                       "mcp-protocol-version": mcp_http.MODERN, "mcp-method": "tools/call", "mcp-name": "echo"}
    assert mcp_http.tool_call("echo", {})["params"] == {"name": "echo", "arguments": {}}  # legacy: no _meta


def test_progress_says_the_section_the_step_how_far_and_the_figures() -> None:
    out = io.StringIO()
    progress = Progress(out, live=False)
    progress.section("http fuzz")
    progress.step("seed 7", total=200, unit="inputs")
    progress.advance(50)
    progress.figures(hung=0, **{"5xx": 1})
    line = progress.line()
    assert line.startswith("[ 0:00] http fuzz 0:00  seed 7  50/200 inputs (25%)")
    assert line.endswith("hung=0 5xx=1") and "eta" in line
    progress.step("wrk, 400 connections", seconds=20)
    assert progress.line().endswith("wrk, 400 connections  0/20 s")  # a new step: no count, no figures
    progress.say("http fuzz: done")
    assert out.getvalue() == "[ 0:00] http fuzz: done\n"


def test_live_progress_redraws_one_line_and_silent_progress_writes_nothing() -> None:
    out = io.StringIO()
    progress = Progress(out, live=True)
    progress.section("load")
    progress.say("load: done")
    assert out.getvalue() == "\r[ 0:00] load: done\x1b[K\n"
    quiet = io.StringIO()
    silent = Progress(quiet, enabled=False)
    with silent:
        silent.say("nothing")
    assert quiet.getvalue() == ""
    assert clock(59) == "0:59" and clock(61) == "1:01" and clock(3725) == "1:02:05"
