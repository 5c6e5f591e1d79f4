"""``python -m reliability [--quick]``: bounded long runs against real processes, one table, results.json."""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from harness import wrk
from harness.measure import rss_kib
from harness.procs import env_for, free_port, started, wait_for_announce, wait_http
from reliability import faults, http_fuzz, load, p2p_fuzz
from reliability.checks import answers_valid_call
from reliability.faults import QUIET

RESULTS = Path(__file__).resolve().parent / "results.json"
MAX_BODY = 65536
MAX_FRAME = 65536


def http_section(base: Path, n: int) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = env_for(base / "http", "fuzz", log_level=QUIET, p2p={"enabled": False}, http={"max_body_bytes": MAX_BODY})
    with started(["serve", "--bind", f"127.0.0.1:{port}"], env, base / "http.log") as proc:
        wait_http(url, proc)
        before = rss_kib(proc.pid)
        t0 = time.monotonic()
        tally = trio.run(http_fuzz.run, url, http_fuzz.generate(n, 20260728, MAX_BODY))
        out = http_fuzz.summary(tally, time.monotonic() - t0)
        out.update(alive_after=proc.poll() is None and answers_valid_call(url), rss_kib_before=before,
                   rss_kib_after=rss_kib(proc.pid))
    return out


def p2p_section(base: Path, batches: int, flood: int) -> dict[str, Any]:
    data = base / "p2p"
    env = env_for(data, "node", log_level=QUIET, p2p={"max_frame_bytes": MAX_FRAME})
    with started(["node"], env, base / "p2p.log") as proc:
        info = wait_for_announce(data, proc)
        before = rss_kib(proc.pid)
        tally = trio.run(lambda: p2p_fuzz.fuzz_node(data, info["multiaddrs"][0], batches=batches, flood=flood,
                                                    seed=1, max_frame_bytes=MAX_FRAME))
        out = p2p_fuzz.summary(tally)
        out.update(crashes=0 if proc.poll() is None else 1, rss_kib_before=before, rss_kib_after=rss_kib(proc.pid))
    log = (base / "p2p.log").read_text(errors="replace")
    out["stream_handler_failures_logged"] = log.count("MCP stream handler failed")
    return out


SOAK_GROWTH_KIB = 5 * 1024
"""Most RSS growth allowed over the soak's last rounds (after the first has warmed every cache)."""


def load_section(base: Path, steps: list[int], seconds: float, soak_rounds: int) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    max_sessions = max(steps)
    env = env_for(base / "load", "load", log_level=QUIET, p2p={"enabled": False}, mcp={"max_sessions": max_sessions})
    with started(["serve", "--bind", f"127.0.0.1:{port}"], env, base / "load.log") as proc:
        wait_http(url, proc)
        before = rss_kib(proc.pid)
        runs = [trio.run(load.run, url, c, seconds) for c in steps]
        # The same steps from wrk (C, its own process): the Python clients above saturate their own
        # process past a few hundred connections, so these say what the server itself sustains.
        wrk_runs = []
        if shutil.which("wrk"):
            for c in steps:
                step = wrk.call_tool(url, "server_status", {}, connections=c, seconds=seconds)
                wrk_runs.append({"connections": c, **step.to_dict(), "rss_kib_after": rss_kib(proc.pid)})
        # Soak: the first step again and again; a leak shows as RSS that keeps growing.
        soak_rss = []
        if shutil.which("wrk"):
            for _ in range(soak_rounds):
                wrk.call_tool(url, "server_status", {}, connections=steps[0], seconds=seconds)
                soak_rss.append(rss_kib(proc.pid))
        after = rss_kib(proc.pid)
        over = trio.run(load.past_the_limit, url, 2 * max_sessions)
        alive = proc.poll() is None and answers_valid_call(url)
    return {"steps": runs, "wrk_steps": wrk_runs, "soak_connections": steps[0], "soak_rss_kib": soak_rss,
            "rss_kib_before": before, "rss_kib_after": after, "past_limit": over,
            "alive_after": alive, "max_sessions": max_sessions}


def _row(name: str, inputs: Any, bad: Any, verdict: bool, note: str) -> tuple[str, str, str, str, str]:
    return name, str(inputs), str(bad), "ok" if verdict else "FAIL", note


def table(results: dict[str, Any]) -> str:
    rows = [("check", "inputs", "bad", "verdict", "figures")]
    h = results.get("http_fuzz")
    if h:
        rows.append(_row("http fuzz", h["inputs"], f"5xx={h['server_errors_5xx']} hung={h['hung']}",
                         h["server_errors_5xx"] == 0 and h["hung"] == 0 and h["alive_after"]
                         and h["malformed_error_bodies"] == 0,
                         f"503={h['overloaded_503']} closed={h['closed_without_response']} "
                         f"bad-error-bodies={h['malformed_error_bodies']} alive={h['alive_after']} "
                         f"rss {h['rss_kib_before']}->{h['rss_kib_after']} KiB"))
    p = results.get("p2p_fuzz")
    if p:
        rows.append(_row("p2p frame fuzz", p["frames_sent"], f"crashes={p['crashes']}",
                         p["crashes"] == 0 and p["serving_after"] and p["streams_failed"] == 0,
                         f"replies={p['replies']} errors={p['error_replies']} probes {p['probes_answered']}/"
                         f"{p['probes_sent']} streams-failed={p['streams_failed']}/{p['streams']} "
                         f"handler-failures={p['stream_handler_failures_logged']} "
                         f"flood {p['flood_answered']}/{p['flood_sent']} (-32010: {p['flood_rate_limited']}) "
                         f"serving-after={p['serving_after']}"))
    for key, name in (("worker_kill", "worker SIGKILL"), ("owner_kill", "owner SIGKILL")):
        f = results.get(key)
        if f:
            rows.append(_row(name, f"{f['faults']} faults", f"lost={f['lost']}",
                             f["lost"] == 0 and f["single_outcome"] and f["completed_more_than_once"] == 0,
                             f"submitted={f['submitted']} acked={f['acknowledged']} "
                             f"ran>1={f['run_more_than_once']} completed>1={f['completed_more_than_once']} "
                             f"single-outcome={f['single_outcome']}"))
    s = results.get("sigterm")
    if s:
        rows.append(_row("SIGTERM under load", f"{s['calls']} calls", f"exit={s['exit_code']}",
                         s["exit_code"] == 0 and s["in_flight_answered"] == s["in_flight_at_sigterm"]
                         and s["server_errors_5xx"] == 0,
                         f"in-flight answered {s['in_flight_answered']}/{s['in_flight_at_sigterm']}"))
    lo = results.get("load")
    if lo:
        for step in lo["steps"]:
            rows.append(_row(f"load {step['clients']} clients", f"{step['calls']} calls", f"errors={step['errors']}",
                             step["errors"] == 0, f"p50={step['p50_ms']}ms p99={step['p99_ms']}ms "
                             f"{step['calls_per_s']}/s"))
        for step in lo.get("wrk_steps", []):
            bad = step["failed"] + step["socket_errors_total"]
            rows.append(_row(f"load {step['connections']} conns (wrk)", f"{step['rps']:.0f}/s", f"errors={bad:.0f}",
                             bad == 0, f"p50={step['p50_ms']}ms p99={step['p99_ms']}ms socket errors {step.get('socket_errors', {})}"))
        soak = lo.get("soak_rss_kib") or []
        if len(soak) >= 2:
            growth = soak[-1] - soak[0]
            rows.append(_row(f"soak {lo['soak_connections']} conns (wrk)", f"{len(soak)} rounds",
                             f"growth={growth} KiB", growth <= SOAK_GROWTH_KIB,
                             f"RSS after each round (KiB): {' '.join(str(r) for r in soak)}"))
        over = lo["past_limit"]
        rows.append(_row("past max_sessions", over["sessions_tried"], f"5xx={over['server_errors_5xx']}",
                         over["server_errors_5xx"] == 0 and lo["alive_after"],
                         f"{over['by_status']} rss {lo['rss_kib_before']}->{lo['rss_kib_after']} KiB "
                         f"alive={lo['alive_after']}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small bounded runs (about two minutes)")
    parser.add_argument("--only", action="append", choices=["http", "p2p", "faults", "load"],
                        help="run only these sections (repeatable)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    quick = args.quick
    only = set(args.only or ["http", "p2p", "faults", "load"])
    results: dict[str, Any] = {"command": " ".join(["python -m reliability", *(argv if argv is not None
                                                                                 else sys.argv[1:])]),
                               "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                               "quick": quick}
    with tempfile.TemporaryDirectory(prefix="triomcp-reliability-") as tmp:
        base = Path(tmp)
        if "http" in only:
            results["http_fuzz"] = http_section(base, 300 if quick else 3000)
        if "p2p" in only:
            results["p2p_fuzz"] = p2p_section(base, 8 if quick else 80, 1500 if quick else 5000)
        if "faults" in only:
            results["worker_kill"] = faults.worker_killed_mid_task(base / "wk", 3 if quick else 20)
            results["owner_kill"] = faults.owner_killed_after_ack(base / "ok", 40 if quick else 200,
                                                                  rounds=1 if quick else 3)
            results["sigterm"] = faults.sigterm_under_load(base / "st", 20 if quick else 100)
        if "load" in only:
            results["load"] = load_section(base, [50] if quick else [200, 400, 800], 5.0 if quick else 20.0,
                                           soak_rounds=2 if quick else 6)
    rendered = table(results)
    results["table"] = rendered.splitlines()
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(rendered)
    print(f"\n(figures written to {args.output})")
    return 0 if "FAIL" not in rendered else 1


if __name__ == "__main__":
    sys.exit(main())
