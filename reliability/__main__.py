"""``python -m reliability [--quick]``: bounded long runs against real processes, one table, results.json.

While it runs it says what it is doing on stderr (:mod:`harness.progress`): the section, the
step, how far (inputs done of the total, the load step, the fault round), the elapsed time, and
the resident memory of the process under test; a line every 5 s, or one line redrawn in place on
a terminal. ``--replay SEED:INDEX`` with ``--only http`` or ``--only p2p`` sends one fuzz input
again, alone, to a fresh server, and prints the exchange."""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from harness import wrk
from harness.measure import rss_kib, settle
from harness.procs import env_for, free_port, started, wait_for_announce, wait_http
from harness.progress import Progress, clock
from reliability import faults, http_fuzz, http_inputs, load, load_clients, p2p_fuzz, p2p_inputs
from reliability.checks import answers_valid_call
from reliability.faults import QUIET

RESULTS = Path(__file__).resolve().parent / "results.json"
MAX_BODY = 65536
MAX_FRAME = 65536


HTTP_SEED = 20260728
P2P_SEED = 1
HTTP_CONCURRENCY = 32
"""Fuzzer connections at once: past about 32 the one-core server is saturated and only latency grows."""
P2P_STREAMS = 16
"""Streams at once on the fuzzer's one connection to the node."""
FUZZ_INPUTS = (100_000, 3_000)
"""Inputs per fuzzer: a full run, ``--quick``."""


def _http_env(base: Path) -> dict[str, str]:
    return env_for(base / "http", "fuzz", log_level=QUIET, p2p={"enabled": False}, http={"max_body_bytes": MAX_BODY})


def http_section(base: Path, n: int, seed: int, progress: Progress) -> dict[str, Any]:
    progress.section("http fuzz")
    progress.step("starting the server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with started(["serve", "--bind", f"127.0.0.1:{port}"], _http_env(base), base / "http.log") as proc:
        wait_http(url, proc)
        before = rss_kib(proc.pid)
        progress.watch(proc.pid, "server")
        progress.step(f"seed {seed}, {HTTP_CONCURRENCY} connections", total=n, unit="inputs")
        t0 = time.monotonic()
        tally = trio.run(lambda: http_fuzz.run(url, http_inputs.generate(n, seed, MAX_BODY),
                                               concurrency=HTTP_CONCURRENCY, progress=progress))
        seconds = time.monotonic() - t0
        out = {"seed": seed, "concurrency": HTTP_CONCURRENCY, **http_fuzz.summary(tally, seconds)}
        out.update(alive_after=proc.poll() is None and answers_valid_call(url), rss_kib_before=before,
                   rss_kib_after=rss_kib(proc.pid), rss_kib_peak_sampled=progress.peak_rss_kib)
        progress.watch(None)
    progress.say(f"http fuzz: {out['inputs']} inputs in {clock(seconds)} ({out['inputs_per_s']}/s): "
                 f"unexpected 5xx {out['server_errors_5xx']}, hung {out['hung']}, 503 {out['overloaded_503']}, "
                 f"other failures {tally.bad - tally.server_errors - tally.hung}; server RSS "
                 f"{_mib(before)} -> {_mib(out['rss_kib_after'])} MiB")
    return out


def p2p_section(base: Path, n: int, flood: int, seed: int, progress: Progress) -> dict[str, Any]:
    progress.section("p2p fuzz")
    progress.step("starting the node")
    data = base / "p2p"
    env = env_for(data, "node", log_level=QUIET, p2p={"max_frame_bytes": MAX_FRAME})
    with started(["node"], env, base / "p2p.log") as proc:
        info = wait_for_announce(data, proc)
        before = rss_kib(proc.pid)
        progress.watch(proc.pid)
        progress.step(f"seed {seed}, {P2P_STREAMS} streams", total=n, unit="inputs")
        t0 = time.monotonic()
        tally = trio.run(lambda: p2p_fuzz.fuzz_node(data, info["multiaddrs"][0], inputs=n, flood=flood, seed=seed,
                                                    max_frame_bytes=MAX_FRAME, streams=P2P_STREAMS,
                                                    progress=progress))
        seconds = time.monotonic() - t0
        out = {"seed": seed, "streams_at_once": P2P_STREAMS, **p2p_fuzz.summary(tally, seconds)}
        out.update(crashes=0 if proc.poll() is None else 1, rss_kib_before=before, rss_kib_after=rss_kib(proc.pid),
                   rss_kib_peak_sampled=progress.peak_rss_kib)
        progress.watch(None)
    log = (base / "p2p.log").read_text(errors="replace")
    out["stream_handler_failures_logged"] = log.count("MCP stream handler failed")
    out["tracebacks_logged"] = log.count("Traceback")
    progress.say(f"p2p fuzz: {tally.inputs} inputs in {clock(tally.fuzz_seconds)} ({out['inputs_per_s']}/s): crashes "
                 f"{out['crashes']}, hung {tally.hung}, streams killed {tally.streams_killed}, connections lost "
                 f"{len(tally.connection_losses)}, other failures {tally.bad - tally.hung - tally.streams_killed}; "
                 f"node RSS {_mib(before)} -> {_mib(out['rss_kib_after'])} MiB")
    return out


def _mib(kib: int | None) -> str:
    return "?" if kib is None else f"{kib / 1024:.0f}"


def _ref(text: str) -> tuple[int, int]:
    seed, _, index = text.partition(":")
    if not (seed.isdigit() and index.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not SEED:INDEX")
    return int(seed), int(index)


def replay(fuzzer: str, seed: int, index: int, base: Path) -> int:
    """Regenerate input ``index`` of ``seed``, send it alone to a fresh server, print the exchange."""
    if fuzzer == "http":
        c = http_inputs.case(seed, index, MAX_BODY)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with started(["serve", "--bind", f"127.0.0.1:{port}"], _http_env(base), base / "http.log") as proc:
            wait_http(url, proc)
            chunks, answer = trio.run(http_fuzz.replay, url, c)
            alive = proc.poll() is None and answers_valid_call(url)
        written = b"".join(chunks)
        print(f"http input {c.ref} ({c.kind}): {len(written)} bytes in {len(chunks)} chunk(s)"
              f"{f', {c.drip:g} s apart' if c.drip else ''}{', then EOF' if c.raw is not None else ''}:")
        print(f"  {written[:4000]!r}{' ...' if len(written) > 4000 else ''}")
        if answer is None:
            print(f"answer: none within {http_fuzz.DEADLINE:g} s (hung)")
        for status, headers, body in answer.responses if answer else []:
            print(f"answer: {status} {headers}\n  {body[:2000]!r}")
        if answer is not None and not answer.responses:
            print(f"answer: none, the connection closed{f' ({answer.protocol_error})' if answer.protocol_error else ''}")
        print(f"server alive and answering after it: {alive}")
        return 0
    item = p2p_inputs.frame_input(seed, index, MAX_FRAME)
    data = base / "p2p"
    env = env_for(data, "node", log_level=QUIET, p2p={"max_frame_bytes": MAX_FRAME})
    with started(["node"], env, base / "p2p.log") as proc:
        info = wait_for_announce(data, proc)
        replies = trio.run(lambda: p2p_fuzz.send_one(data, info["multiaddrs"][0], item.data, ending=item.ending))
        alive = proc.poll() is None
        serving = alive and trio.run(p2p_fuzz.still_serving, data, info["multiaddrs"][0])
    first = index - index % p2p_inputs.STREAM_INPUTS
    print(f"p2p input {item.ref} ({item.kind}; in a run it is on stream {index // p2p_inputs.STREAM_INPUTS}, "
          f"inputs {first}-{first + p2p_inputs.STREAM_INPUTS - 1}): {len(item.data)} bytes"
          f"{f', then {item.ending}' if item.ending else ', then a probe'}; replies owed {item.owed}:")
    print(f"  {item.data[:4000]!r}{' ...' if len(item.data) > 4000 else ''}")
    for reply in replies:
        print(f"reply: {json.dumps(reply, default=repr)[:500]}")
    print(f"node alive: {alive}; a fresh client served after it: {serving}")
    return 0


SOAK_GROWTH_KIB = 5 * 1024
"""Most RSS growth allowed over the soak's last rounds (after the first has warmed every cache)."""


def load_section(base: Path, steps: list[int], seconds: float, soak_rounds: int,
                 progress: Progress | None = None, python_steps: list[int] | None = None) -> dict[str, Any]:
    """The load steps: ``python_steps`` (default ``steps``) clients of both eras in several
    processes (:func:`reliability.load_clients.run_processes`), then wrk at ``steps`` and twice the last,
    the soak (wrk at the first step, ``soak_rounds`` times) and past ``mcp.max_sessions``."""
    progress = progress if progress is not None else Progress.silent()
    python_steps = python_steps if python_steps is not None else steps
    progress.section("load")
    progress.step("starting the server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Room for the legacy half of the largest Python step; "past max_sessions" tries twice this.
    max_sessions = max(*steps, *(c // 2 for c in python_steps))
    env = env_for(base / "load", "load", log_level=QUIET, p2p={"enabled": False}, mcp={"max_sessions": max_sessions})
    with started(["serve", "--bind", f"127.0.0.1:{port}"], env, base / "load.log") as proc:
        wait_http(url, proc)
        before = rss_kib(proc.pid)
        progress.watch(proc.pid, "server")
        runs = []
        for k, c in enumerate(python_steps):
            settle([proc.pid], limit=10)  # the previous step's last answers are not this one's load
            runs.append(trio.run(functools.partial(
                load_clients.run_processes, url, c, seconds, server_pid=proc.pid, progress=progress,
                label=f"step {k + 1}/{len(python_steps)}: {c} Python clients", log_dir=base / "load-clients" / str(c))))
            progress.say(_python_step_line(runs[-1]))
        runs = load_clients.judge(runs)
        # The same load from wrk (C, its own process, far less CPU per call than the Python clients,
        # which share the cores with the server): these say what the server itself sustains.
        wrk_runs = []
        if shutil.which("wrk"):
            for c in [*steps, 2 * steps[-1]]:  # and past it: admission control refuses with 503, -32010
                progress.step(f"wrk, {c} connections", seconds=seconds)
                wrk_runs.append({**load.wrk_overload(url, c, seconds), "rss_kib_after": rss_kib(proc.pid)})
        # Soak: the first step again and again; a leak shows as RSS that keeps growing.
        soak_rss = []
        if shutil.which("wrk"):
            for r in range(soak_rounds):
                progress.step(f"soak round {r + 1}/{soak_rounds}: wrk, {steps[0]} connections", seconds=seconds)
                wrk.call_tool(url, "server_status", {}, connections=steps[0], seconds=seconds)
                soak_rss.append(rss_kib(proc.pid))
        after = rss_kib(proc.pid)
        progress.step(f"past max_sessions: {2 * max_sessions} legacy sessions")
        over = trio.run(load.past_the_limit, url, 2 * max_sessions)
        alive = proc.poll() is None and answers_valid_call(url)
    return {"steps": runs, "wrk_steps": wrk_runs, "soak_connections": steps[0], "soak_rss_kib": soak_rss,
            "rss_kib_before": before, "rss_kib_after": after, "past_limit": over,
            "alive_after": alive, "max_sessions": max_sessions}


def _ms(value: float | None) -> str:
    """Milliseconds as the summaries print them: ``359 ms``, ``5.40 s``, ``-`` for none."""
    return "-" if value is None else f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def _python_step_line(step: dict[str, Any]) -> str:
    """The progress summary of one Python-client load step."""
    era = step["calls_by_era"]
    return (f"load: {step['clients']} Python clients in {step['processes']} processes: {step['calls']} calls "
            f"(modern {era['modern']}, legacy {era['legacy']}), served {step['served_per_s']}/s p50 "
            f"{_ms(step['p50_ms'])} p99 {_ms(step['p99_ms'])}, refused {step['refused_503']} (p50 "
            f"{_ms(step['refusal_p50_ms'])} p99 {_ms(step['refusal_p99_ms'])}), errors {step['errors']}, timeouts "
            f"{step['timeouts']}; CPU cores: clients {step['client_cores']}, server {step['server_cores']} "
            f"of {step['cores']}")


def _python_step_row(step: dict[str, Any]) -> tuple[str, str, str, str, str]:
    """The table's row of a Python-client load step, with the requirement's verdicts (:func:`load_clients.judge`)."""

    def yes(value: bool | None) -> str:
        return "yes" if value else "NO"

    if step["below_capacity"]:
        verdict = f"below capacity: p99<=3x p50 {yes(step['p99_within_3x_p50'])}"
    else:
        verdict = (f"past capacity: refusal p99<=100ms {yes(step['refusal_p99_within_100ms'])}, served p99<=3x "
                   f"the p50 below capacity ({_ms(step['reference_p50_ms'])}) {yes(step['served_latency_kept'])}")
    era = step["calls_by_era"]
    return _row(f"load {step['clients']} Python clients", f"{step['calls']} calls",
                f"errors={step['errors']} timeouts={step['timeouts']}", step["ok"],
                f"{step['processes']} processes ({step['workers_reported']} reported); modern {era['modern']} + "
                f"legacy {era['legacy']} calls; served {step['served_per_s']}/s p50={_ms(step['p50_ms'])} "
                f"p99={_ms(step['p99_ms'])}; refused (503) {step['refused_503']} p50={_ms(step['refusal_p50_ms'])} "
                f"p99={_ms(step['refusal_p99_ms'])}, then waited Retry-After {step['retry_after_wait_s']} client-s; "
                f"{verdict}; CPU cores: clients {step['client_cores']}, server "
                f"{step['server_cores']} of {step['cores']}"
                + (f"; errors {step['errors_by_kind']}" if step["errors"] else "")
                + (f"; timeouts {step['timeouts_by_kind']}" if step["timeouts"] else ""))


def _row(name: str, inputs: Any, bad: Any, verdict: bool, note: str) -> tuple[str, str, str, str, str]:
    return name, str(inputs), str(bad), "ok" if verdict else "FAIL", note


def table(results: dict[str, Any]) -> str:
    rows = [("check", "inputs", "bad", "verdict", "figures")]
    h = results.get("http_fuzz")
    if h:
        bad = (h["server_errors_5xx"] + h["hung"] + h["dropped"] + h["bad_responses"] + h["malformed_error_bodies"]
               + h["pipelined_missing"] + h["connect_errors"])
        rows.append(_row("http fuzz", h["inputs"], f"5xx={h['server_errors_5xx']} hung={h['hung']}",
                         bad == 0 and h["alive_after"],
                         f"seed {h['seed']}, {h['inputs_per_s']}/s over {h['concurrency']} connections; "
                         f"503+Retry-After={h['overloaded_503']} dropped={h['dropped']} "
                         f"bad-responses={h['bad_responses']} bad-error-bodies={h['malformed_error_bodies']} "
                         f"pipelined-missing={h['pipelined_missing']} closed(raw)={h['closed_without_response']} "
                         f"alive={h['alive_after']} rss {h['rss_kib_before']}->{h['rss_kib_after']} KiB"))
    p = results.get("p2p_fuzz")
    if p:
        bad = (p["hung"] + p["streams_killed"] + p["unanswered"] + p["internal_errors"] + p["malformed_replies"]
               + p["streams_failed"] + p["connection_lost"] + len(p["connection_losses"]))
        rows.append(_row("p2p frame fuzz", p["inputs"], f"crashes={p['crashes']} hung={p['hung']}",
                         p["crashes"] == 0 and bad == 0 and p["serving_after"]
                         and p["stream_handler_failures_logged"] == 0 and p["flood_answered"] == p["flood_sent"],
                         f"seed {p['seed']}, {p['inputs_per_s']}/s over {p['streams_at_once']} streams; "
                         f"killed={p['streams_killed']} connections-lost={len(p['connection_losses'])} "
                         f"unanswered={p['unanswered']} internal-errors={p['internal_errors']} "
                         f"malformed={p['malformed_replies']} probes {p['probes_answered']}+{p['probes_refused']}"
                         f"(-32010)/{p['probes_sent']} streams {p['streams']} (failed {p['streams_failed']}) "
                         f"handler-failures={p['stream_handler_failures_logged']} "
                         f"flood {p['flood_answered']}/{p['flood_sent']} (-32010: {p['flood_rate_limited']}) "
                         f"serving-after={p['serving_after']} rss {p['rss_kib_before']}->{p['rss_kib_after']} KiB"))
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
            rows.append(_python_step_row(step))
        for step in lo.get("wrk_steps", []):
            bad = step["failed"] + step["socket_errors_total"]
            rows.append(_row(f"load {step['connections']} conns (wrk)", f"{step['rps']:.0f}/s", f"errors={bad:.0f}",
                             bad == 0, f"served {step.get('served_per_s')}/s p50={step.get('served_p50_ms')}ms "
                             f"p99={step.get('served_p99_ms')}ms; refused (503) {step.get('refused_per_s')}/s "
                             f"p50={step.get('refusal_p50_ms')}ms p99={step.get('refusal_p99_ms')}ms; another "
                             f"address p50={step.get('other_served_p50_ms')}ms; socket errors {step['socket_errors']}"))
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
    parser.add_argument("--output", type=Path, default=None,
                        help="where the figures go (default: reliability/results.json for a full run; a run of "
                             "some sections or a quick one: results-SECTIONS[-quick].json beside it, so it never "
                             "overwrites the full run's file)")
    parser.add_argument("--seed", type=int, help=f"the fuzzers' seed (default: http {HTTP_SEED}, p2p {P2P_SEED})")
    parser.add_argument("--fuzz-inputs", type=int, metavar="N",
                        help=f"inputs per fuzzer (default {FUZZ_INPUTS[0]}, {FUZZ_INPUTS[1]} with --quick)")
    parser.add_argument("--replay", type=_ref, metavar="SEED:INDEX",
                        help="send one fuzz input again to a fresh server and print the exchange "
                             "(with --only http or --only p2p)")
    args = parser.parse_args(argv)
    # The p2p fuzzer's client host is py-libp2p: when the fuzz breaks a connection it logs each failed
    # stream at length. The fuzzer counts those failures itself (results.json); keep stderr to progress.
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    quick = args.quick
    only = set(args.only or ["http", "p2p", "faults", "load"])
    if args.replay is not None:
        if len(only) != 1 or not only <= {"http", "p2p"}:
            parser.error("--replay needs --only http or --only p2p")
        seed, index = args.replay
        with tempfile.TemporaryDirectory(prefix="triomcp-replay-") as tmp:
            return replay(only.pop(), seed, index, Path(tmp))
    if args.output is None:
        every = only == {"http", "p2p", "faults", "load"}
        name = "-".join(s for s in ("http", "p2p", "faults", "load") if s in only and not every)
        parts = [p for p in (name, "quick" if quick else "") if p]
        args.output = RESULTS.with_name(f"results-{'-'.join(parts)}.json") if parts else RESULTS
    n = args.fuzz_inputs if args.fuzz_inputs is not None else FUZZ_INPUTS[1 if quick else 0]
    results: dict[str, Any] = {"command": " ".join(["python -m reliability", *(argv if argv is not None
                                                                                 else sys.argv[1:])]),
                               "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                               "quick": quick}
    started_at = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="triomcp-reliability-") as tmp, Progress() as progress:
        base = Path(tmp)
        if "http" in only:
            results["http_fuzz"] = http_section(base, n, HTTP_SEED if args.seed is None else args.seed, progress)
        if "p2p" in only:
            results["p2p_fuzz"] = p2p_section(base, n, 1500 if quick else 5000,
                                              P2P_SEED if args.seed is None else args.seed, progress)
        if "faults" in only:
            progress.section("faults")
            results["worker_kill"] = faults.worker_killed_mid_task(base / "wk", 3 if quick else 20, progress=progress)
            results["owner_kill"] = faults.owner_killed_after_ack(base / "ok", 40 if quick else 200,
                                                                  rounds=1 if quick else 3, progress=progress)
            results["sigterm"] = faults.sigterm_under_load(base / "st", 20 if quick else 100, progress=progress)
            progress.say("faults: done")
        if "load" in only:
            results["load"] = load_section(base, [50] if quick else [200, 400, 800], 5.0 if quick else 20.0,
                                           soak_rounds=2 if quick else 6, progress=progress,
                                           python_steps=[20, 40] if quick else [200, 400, 800, 1600])
            progress.say("load: done")
    results["seconds"] = round(time.monotonic() - started_at)
    rendered = table(results)
    results["table"] = rendered.splitlines()
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(rendered)
    print(f"\n(figures written to {args.output})")
    return 0 if "FAIL" not in rendered else 1


if __name__ == "__main__":
    sys.exit(main())
