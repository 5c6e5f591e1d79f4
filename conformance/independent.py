"""Independent clients against the node the suite ran on: one script per client in ``clients/``.

Each script (an ES module run on the suite's Node 22 with ``--import clients/register.mjs``, so the
packages ``make conformance`` installed under ``.cache/conformance/`` resolve) takes the server URL,
runs its steps, and writes them to ``$CONFORMANCE_CLIENT_RESULTS`` as ``{client, steps: [{step,
status, detail}]}`` with ``status`` one of ``pass``, ``fail``, ``skip``. Each client becomes one row
of the table (requirement set ``clients``): a passed step counts as a passed check, a failed one as
a failed check; a script that crashed, timed out or wrote no results is one failed check.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from conformance.results import Outcome

__all__ = ["CLIENTS", "CLIENT_REQUIREMENTS", "Client", "missing_packages", "run_client"]

HERE = Path(__file__).resolve().parent / "clients"
CLIENT_REQUIREMENTS = "clients"
"""The requirement-set column of the clients' rows."""
TIMEOUT = 180.0
"""Seconds one script may take (its steps time out after 30 s each, the Inspector's after 70 s)."""


@dataclass(frozen=True)
class Client:
    name: str
    script: str
    packages: tuple[str, ...]
    """The npm packages it needs (installed by the Makefile's pinned ``npm install``)."""


CLIENTS = (
    Client("ts-sdk-v1", "ts_sdk_v1.mjs", ("@modelcontextprotocol/sdk",)),
    Client("ts-sdk-v2", "ts_sdk_v2.mjs", ("@modelcontextprotocol/client",)),
    Client("ext-tasks", "ext_tasks.mjs", ("@modelcontextprotocol/ext-tasks", "@modelcontextprotocol/client")),
    Client("inspector-cli", "inspector_cli.mjs", ("@modelcontextprotocol/inspector",)),
)


def missing_packages(node_modules: Path, clients: list[Client]) -> list[str]:
    """The packages ``clients`` need that are not installed in ``node_modules``."""
    needed = dict.fromkeys(p for c in clients for p in c.packages)
    return [p for p in needed if not (node_modules / p / "package.json").is_file()]


def run_client(client: Client, node: Path, node_modules: Path, url: str, out_dir: Path,
               timeout: float = TIMEOUT) -> Outcome:
    """Run one client's script against ``url``; its output goes to ``out_dir/<name>.log``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / f"{client.name}.json"
    results.unlink(missing_ok=True)
    log_path = out_dir / f"{client.name}.log"
    env = {**os.environ, "CONFORMANCE_NODE_MODULES": str(node_modules.resolve()),
           "CONFORMANCE_CLIENT_RESULTS": str(results.resolve())}
    command = [str(node.resolve()), "--import", str(HERE / "register.mjs"), str(HERE / client.script), url]
    timed_out = False
    with open(log_path, "w") as log, subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out_dir, start_new_session=True,
    ) as proc:
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            returncode = proc.wait()
    return outcome_of(client.name, results, returncode, timed_out, log_path, timeout)


def outcome_of(name: str, results: Path, returncode: int, timed_out: bool, log_path: Path,
               timeout: float) -> Outcome:
    """The table row of one script's run, from the steps it wrote and how it ended."""
    try:
        steps = json.loads(results.read_text())["steps"]
    except (OSError, ValueError, KeyError, TypeError):
        steps = None
    if not isinstance(steps, list):
        why = f"timed out after {timeout:.0f} s" if timed_out else f"exited {returncode}"
        return Outcome(CLIENT_REQUIREMENTS, name, 0, 1, 0, 0, f"the script {why} without results; see {log_path}",
                       (f"(script): {why} without writing its results",))
    rows = [s for s in steps if isinstance(s, dict)]
    status = [str(s.get("status")) for s in rows]
    failures = [f"{s.get('step')}: {s.get('detail')}" for s in rows if s.get("status") == "fail"]
    skipped = [f"{s.get('step')} ({s.get('detail')})" for s in rows if s.get("status") == "skip"]
    if timed_out:
        failures.append(f"(script): timed out after {timeout:.0f} s")
    elif returncode != 0 and not failures:
        failures.append(f"(script): exited {returncode} although no step failed; see {log_path}")
    note = f"excluded: {'; '.join(skipped)}" if skipped else ""
    return Outcome(CLIENT_REQUIREMENTS, name, status.count("pass"), len(failures), 0, status.count("skip"), note,
                   tuple(failures))
