"""``make bench`` part 1, second table: a tool call answered with SSE, and large results, side by side.

    .venv/bin/python -m bench.shapes [--quick]      (``python -m bench foundation`` runs it too)

Table 1 (bench/foundation.py) measures the smallest call, answered JSON. These are the shapes it
does not reach, measured as regression guards (issue 18: "check that nothing regressed
elsewhere"), not goals: what they print has no target. The tools are in bench/servers.py.

- ``sse``: ``progress_add(a, b)``, which reports progress once and then returns the sum; the
  request carries a ``progressToken`` in ``_meta`` and ``Accept: application/json,
  text/event-stream``, so the answer is ``text/event-stream``: the progress event, then the
  result. triomcp in both eras (the legacy answer opens with its priming event, as a 2025-11-25
  stream does), the SDK on Hypercorn-trio with ``json_response=False``, and a bare SSE floor.
- ``big_text``: one text content of 256 KiB (``servers.BIG_BYTES``).
- ``big_structured``: 256 KiB of records as ``structuredContent``, with the text mirror each
  server writes beside it. The SDK writes its mirror indented (``to_json(..., indent=2)``), so
  its answer is about 1.5x triomcp's: the bytes column says how large each answer was.

For the large results: triomcp in both eras, the SDK on Hypercorn-trio as table 1 runs it
(``json_response=True``), and a floor that answers a pre-encoded body of triomcp's shape and size.

How each server decides to stream, and why the SDK's SSE case is its own process: triomcp
(server/call_writer.py) answers JSON unless the handler sends something first; a notification
then turns the answer to SSE when the client accepts it (a JSON-only client gets no
notifications). The SDK's modern entry (mcp/server/_streamable_http_modern.py) does the same only
with ``json_response=False``: with ``True`` it answers JSON and drops every notification. Before
anything is measured, one call of each case checks its answer: the content type (a server that
answers JSON where SSE is meant stops the run), the result itself (the sum, the text, the number
of records), and the test the wrk script applies to every answer of the run (bench/mcp_shape.lua,
:func:`expected`).

Measured as table 1 is: every server started first, every case warmed up (excluded), then each
repetition measures every (shape, server) case in turn, starting with a different one each time,
at 16 connections (calls/s) and at 1 connection (p50, p99); min/median/max over the repetitions.
A case with any answer that was not as expected (a non-2xx status, an answer the script refused,
or a socket error: a call that got no answer) is invalid: printed as such, its ratios not
computed, and the run's ``valid`` false.
The ratios: triomcp (each era) over the SDK and over the floor, per shape. Results: the
``shapes`` key of bench/results/foundation.json (the other keys are part 1's table 1 and queue).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.servers import BIG_BYTES, big_items, big_text
from bench.stats import quick_run, rotated, summary
from harness import wrk
from harness.mcp_http import modern_headers, open_session, tool_call
from harness.measure import settle
from harness.procs import Process, env_for, free_port, spawn, stop, wait_until
from triomcp.mcp.results import modern_meta

__all__ = ["SERVERS", "SHAPES", "Shape", "expected", "main", "measure", "print_report"]

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LUA = HERE / "mcp_shape.lua"
"""wrk's request: ``TOOL`` with a new id (and progressToken) each time; checks every answer."""
HEAD_BYTES = 64
"""How far into a large answer :func:`expected` (and the wrk script) look for ``"result":``."""

SERVERS = [
    # (label, server kind of bench/servers.py, era)
    ("triomcp modern", "triomcp", "modern"),
    ("triomcp legacy", "triomcp", "legacy"),
    ("SDK on Hypercorn-trio", "sdk-hypercorn", "modern"),
    ("SDK on Hypercorn-trio, json_response=False", "sdk-hypercorn-sse", "modern"),
    ("floor: bare Hypercorn-trio", "floor-shapes", "modern"),
]
OURS = ("triomcp modern", "triomcp legacy")
FLOOR = "floor: bare Hypercorn-trio"


@dataclass(frozen=True)
class Shape:
    """One shape of ``tools/call``, and what every answer to it must be."""

    key: str
    what: str
    tool: str
    arguments: dict[str, Any]
    progress: bool
    """The request carries a ``progressToken`` (a new one per call)."""
    content_type: str
    sdk: str
    """The SDK's case for this shape (a label of :data:`SERVERS`)."""
    min_bytes: int = 0
    head: str = ""
    """Within the answer's first :data:`HEAD_BYTES` bytes (a JSON-RPC error has ``"error"`` there)."""
    needles: tuple[str, ...] = ()
    """Each somewhere in the answer (small answers only: the wrk script scans them per answer)."""

    @property
    def servers(self) -> list[str]:
        return [*OURS, self.sdk, FLOOR]


SHAPES = [
    Shape("sse", "SSE response: progress_add, one progress event then the result", "progress_add", {"a": 1, "b": 2},
          True, "text/event-stream", "SDK on Hypercorn-trio, json_response=False",
          needles=('"notifications/progress"', '"isError":false')),
    Shape("big_text", f"large result: one text content of {BIG_BYTES // 1024} KiB", "big_text", {}, False,
          "application/json", "SDK on Hypercorn-trio", min_bytes=BIG_BYTES, head='"result":'),
    Shape("big_structured", f"large result: {BIG_BYTES // 1024} KiB of records as structuredContent (+ its text)",
          "big_structured", {}, False, "application/json", "SDK on Hypercorn-trio", min_bytes=BIG_BYTES,
          head='"result":'),
]


def expected(shape: Shape, status: int, content_type: str, body: bytes) -> bool:
    """The test bench/mcp_shape.lua applies to every answer of a run, in Python (the startup check
    applies it too, so the script's test is known to pass on a good answer of each server)."""
    return (status == 200 and content_type.startswith(shape.content_type) and len(body) >= shape.min_bytes
            and (not shape.head or shape.head.encode() in body[:HEAD_BYTES])
            and all(needle.encode() in body for needle in shape.needles))


def sse_messages(body: bytes) -> list[dict[str, Any]]:
    """The JSON-RPC messages of an SSE body, in order (events without data, a priming event, skipped)."""
    messages = []
    for event in re.split(r"\r?\n\r?\n", body.decode()):
        data = "\n".join(line[5:].removeprefix(" ") for line in event.splitlines() if line.startswith("data:"))
        if data.strip():
            messages.append(json.loads(data))
    return messages


def _request(url: str, era: str, headers: dict[str, str], shape: Shape, ident: int) -> httpx.Response:
    """One call of ``shape`` as the wrk script sends it (legacy: inside the session of ``headers``)."""
    extra: dict[str, Any] = {"progressToken": ident} if shape.progress else {}
    if era == "legacy":
        body = tool_call(shape.tool, shape.arguments, ident, meta=extra or None)
    else:
        headers = modern_headers("tools/call", shape.tool)
        body = tool_call(shape.tool, shape.arguments, ident, meta=modern_meta(**extra))
    return httpx.post(f"{url}/mcp", timeout=10, headers=headers, json=body)


def ready(url: str, era: str, proc: Process, timeout: float = 30) -> dict[str, str]:
    """Wait until the server answers a call of the first shape; the headers of a call (legacy: in a
    session opened for the run, as table 1 does)."""

    def answered() -> dict[str, str] | None:
        try:
            headers = open_session(url) if era == "legacy" else {}
            reply = _request(url, era, headers, SHAPES[0], 1)
        except httpx.HTTPError:
            return None
        return headers if reply.status_code == 200 else None

    return wait_until(answered, proc, what=f"{url} to answer {SHAPES[0].tool} ({era})", timeout=timeout,
                      interval=0.1)


def check(label: str, url: str, era: str, headers: dict[str, str], shape: Shape) -> dict[str, Any]:
    """One call of ``shape``, its answer checked through (raises RuntimeError when it is not what the
    shape is: JSON where SSE is meant, a wrong result, an answer the wrk script would refuse);
    returns its content type and size."""
    reply = _request(url, era, headers, shape, 1)
    content_type = reply.headers.get("content-type", "")
    where = f"{label}, {shape.key} ({shape.tool})"
    if reply.status_code != 200 or not content_type.startswith(shape.content_type):
        raise RuntimeError(f"{where}: answered {reply.status_code} {content_type!r}, not 200 {shape.content_type!r}: "
                           f"{reply.content[:300]!r}")
    messages = sse_messages(reply.content) if shape.content_type == "text/event-stream" else [reply.json()]
    answer = messages[-1]
    result = answer.get("result")
    if answer.get("id") != 1 or not isinstance(result, dict) or result.get("isError"):
        raise RuntimeError(f"{where}: not a successful result: {str(answer)[:300]}")
    if shape.progress:
        progress = [m for m in messages[:-1] if m.get("method") == "notifications/progress"]
        if len(progress) != 1 or progress[0]["params"]["progressToken"] != 1:
            raise RuntimeError(f"{where}: expected one progress notification before the result, got {messages[:-1]}")
        if result["structuredContent"]["sum"] != shape.arguments["a"] + shape.arguments["b"]:
            raise RuntimeError(f"{where}: wrong sum: {result}")
    if shape.tool == "big_text" and [c.get("text") for c in result["content"]] != [big_text()]:
        raise RuntimeError(f"{where}: the content is not the one {BIG_BYTES}-character text")
    if shape.tool == "big_structured" and result["structuredContent"]["items"] != big_items()["items"]:
        raise RuntimeError(f"{where}: structuredContent does not hold the records")
    if not expected(shape, reply.status_code, content_type, reply.content):
        raise RuntimeError(f"{where}: a good answer that bench/mcp_shape.lua would count as failed "
                           f"(head {reply.content[:HEAD_BYTES]!r}); fix the shape's test")
    return {"content_type": content_type, "response_bytes": len(reply.content)}


def load(case: dict[str, Any], connections: int, seconds: float) -> tuple[wrk.WrkResult, str]:
    """wrk on one case; its result, and the first answer its script refused ("" when none)."""
    shape: Shape = case["shape"]
    server = case["server"]
    env = {"MODE": server["era"], "SESSION": server["headers"].get("mcp-session-id", ""), "TOOL": shape.tool,
           "ARGS": json.dumps(shape.arguments, separators=(",", ":")), "PROGRESS": "1" if shape.progress else "0",
           "EXPECT": shape.content_type, "MIN_BYTES": str(shape.min_bytes), "HEAD": shape.head,
           "NEEDLES": "|".join(shape.needles)}
    out = wrk.report(server["url"], LUA, connections=connections, seconds=seconds, env=env)
    first = re.search(r"^FIRST_FAILURE (.*)$", out, re.M)
    return wrk.parse(out), first.group(1) if first else ""


def measure(*, reps: int, seconds: float) -> dict[str, Any]:
    """Every server started up front, every case checked and warmed up; then each repetition
    measures each case in turn (interleaved, as table 1: the machine's drift spread over all)."""
    servers: dict[str, dict[str, Any]] = {}
    try:
        for label, kind, era in SERVERS:
            port = free_port()
            servers[label] = {"label": label, "kind": kind, "era": era, "url": f"http://127.0.0.1:{port}",
                              "proc": start(kind, port)}
        for s in servers.values():
            s["headers"] = ready(s["url"], s["era"], s["proc"])
        cases: list[dict[str, Any]] = [
            {"shape": shape, "server": servers[label], "rps": [], "p50": [], "p99": [], "non_2xx": 0, "failed": 0,
             "socket_errors": 0, "first_failure": ""}
            for shape in SHAPES for label in shape.servers]
        for case in cases:
            server = case["server"]
            case.update(check(server["label"], server["url"], server["era"], server["headers"], case["shape"]))
            load(case, 4, 1)  # warm-up, excluded
        pids = [s["proc"].pid for s in servers.values()]
        for rep in range(reps):
            for case in rotated(cases, rep):
                settle(pids)
                for connections in (16, 1):
                    result, first = load(case, connections, seconds)
                    if connections == 16:
                        case["rps"].append(result.rps)
                    else:
                        case["p50"].append(result.p50_ms)
                        case["p99"].append(result.p99_ms)
                    case["non_2xx"] += result.non_2xx
                    case["failed"] += result.failed
                    case["socket_errors"] += result.socket_errors_total
                    case["first_failure"] = case["first_failure"] or first
    finally:
        for s in servers.values():
            stop(s["proc"], kill=True)
    report: dict[str, Any] = {}
    for shape in SHAPES:
        rows = {}
        for case in (c for c in cases if c["shape"] is shape):
            server = case["server"]
            rows[server["label"]] = {
                "server": server["kind"], "era": server["era"], "content_type": case["content_type"],
                "response_bytes": case["response_bytes"], "rps_c16": summary(case["rps"]),
                "p50_ms_c1": summary(case["p50"]), "p99_ms_c1": summary(case["p99"]), "non_2xx": case["non_2xx"],
                "failed": case["failed"], "socket_errors": case["socket_errors"],
                "first_failure": case["first_failure"],
                "valid": case["non_2xx"] == 0 and case["failed"] == 0 and case["socket_errors"] == 0}
        report[shape.key] = {"what": shape.what, "tool": shape.tool, "servers": rows, "ratios": ratios(shape, rows)}
    return {"repetitions": reps, "seconds": seconds, "goals": "none: regression guards",
            "valid": all(row["valid"] for shape in report.values() for row in shape["servers"].values()),
            "shapes": report}


def start(kind: str, port: int) -> Process:
    return spawn([sys.executable, "-m", "bench.servers", kind, str(port)], env_for())


def ratios(shape: Shape, rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """triomcp (each era) over the SDK and over the floor: calls/s at 16 connections and p50 at 1
    (medians); None where either case was invalid."""
    out = []
    for ours in OURS:
        for other in (shape.sdk, FLOOR):
            valid = rows[ours]["valid"] and rows[other]["valid"]
            out.append({"triomcp": ours, "other": other,
                        "rps_c16": round(rows[ours]["rps_c16"]["median"] / rows[other]["rps_c16"]["median"], 3)
                        if valid else None,
                        "p50_c1": round(rows[ours]["p50_ms_c1"]["median"] / rows[other]["p50_ms_c1"]["median"], 3)
                        if valid else None})
    return out


def print_report(report: dict[str, Any]) -> None:
    print()
    print("an SSE answer and large results (regression guards: no goals)")
    print(f"{'server':44} {'calls/s c=16 (min/med/max)':>27} {'p50 ms c=1':>11} {'p99 ms c=1':>11} "
          f"{'answer':>7} {'bytes':>8} {'bad':>5}")
    for shape in report["shapes"].values():
        print(shape["what"])
        for label, r in shape["servers"].items():
            rps = r["rps_c16"]
            kind = "SSE" if r["content_type"].startswith("text/event-stream") else "JSON"
            bad = r["non_2xx"] + r["failed"] + r["socket_errors"]
            print(f"  {label:42} {rps['min']:8.0f} {rps['median']:8.0f} {rps['max']:9.0f} "
                  f"{r['p50_ms_c1']['median']:11.3f} {r['p99_ms_c1']['median']:11.3f} {kind:>7} "
                  f"{r['response_bytes']:8d} {bad:5d}")
    names = [(key, row, f"{key}: {row['triomcp']} / {row['other']}")
             for key, shape in report["shapes"].items() for row in shape["ratios"]]
    width = max(len(name) for _, _, name in names)
    print()
    print(f"{'ratio (triomcp / other, medians)':{width}} {'calls/s c=16':>12} {'p50 c=1':>9}")
    for _, row, name in names:
        rps = "invalid" if row["rps_c16"] is None else f"{row['rps_c16']:.3f}"
        p50 = "invalid" if row["p50_c1"] is None else f"{row['p50_c1']:.3f}"
        print(f"{name:{width}} {rps:>12} {p50:>9}")
    if not report["valid"]:
        print("\nINVALID RUN: some calls were not answered as the shape is (non-2xx, refused by bench/mcp_shape.lua, "
              "or no answer): their ratios are not computed")
        for key, shape in report["shapes"].items():
            for label, r in shape["servers"].items():
                if not r["valid"]:
                    print(f"  {key}, {label}: {r['non_2xx']} non-2xx, {r['failed']} refused, "
                          f"{r['socket_errors']} socket errors; first refused: "
                          f"{r['first_failure'] or '-'}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """This table alone: measured, printed, and written into bench/results/foundation.json under
    ``shapes`` (the file's other keys, table 1's, kept)."""
    quick = quick_run(__doc__, argv, quick="shorter runs, fewer repetitions")
    reps, seconds = (2, 1.0) if quick else (3, 5.0)
    load_avg = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}; "
          f"{reps} repetitions of {seconds:.0f}s per measurement after a 1s warm-up (excluded); "
          "cases interleaved within each repetition")
    report = {**measure(reps=reps, seconds=seconds), "quick": quick, "machine": {"cores": os.cpu_count(),
              "loadavg": load_avg}, "command": "python -m bench.shapes" + (" --quick" if quick else ""),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print_report(report)
    path = RESULTS / "foundation.json"
    RESULTS.mkdir(exist_ok=True)
    existing = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**existing, "shapes": report}, indent=2) + "\n")
    print(f"\nwrote the shapes key of {path}")
    return report


if __name__ == "__main__":
    main()
