"""Fault injection with real processes: SIGKILLed workers and owners, SIGTERM under load.

Tasks run ``reliability.handlers:record``, which logs each start and finish to a file, so
"run more than once" is counted from what the handlers did, not from what the queue says.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from harness.mcp_http import call, modern_call, structured
from harness.procs import env_for, free_port, run_cli, started, wait_for_announce, wait_http
from harness.progress import Progress
from reliability.handlers import HANDLERS, read_log

FINAL = ("succeeded", "failed", "dead", "cancelled")
QUIET = "WARNING"
"""The nodes' log level: warnings and errors only, in each node's log file."""


def get_task(url: str, task_id: str) -> dict[str, Any]:
    return dict(structured(call(url, "taskqueue_get", {"task_id": task_id}, timeout=10))["task"])


def wait_final(url: str, task_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    task = get_task(url, task_id)
    while task["state"] not in FINAL and time.monotonic() < deadline:
        time.sleep(0.2)
        task = get_task(url, task_id)
    return task


def submit(url: str, log: Path, seconds: float, **extra: Any) -> str:
    out = structured(call(url, "taskqueue_submit", {"task_type": "rel.record",
                                                   "payload": {"log": str(log), "seconds": seconds}, **extra}))
    return str(out["task_id"])


def worker_killed_mid_task(base: Path, rounds: int, *, lease: float = 1.5, seconds: float = 2.0,
                           progress: Progress | None = None) -> dict[str, Any]:
    """An owner that runs nothing itself, two workers; each round SIGKILLs the worker holding the task."""
    progress = progress if progress is not None else Progress.silent()
    progress.step("worker SIGKILL mid-task: starting an owner and two workers")
    log = base / "runs.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    owner_env = env_for(base / "owner", "owner", log_level=QUIET, taskqueue={
        "lease_seconds": lease, "handlers": HANDLERS, "concurrency": {"*": 1, "rel.record": 0}, "max_attempts": 0})
    dirs = {name: base / name for name in ("w1", "w2")}
    result: dict[str, Any] = {"faults": 0, "submitted": 0, "acknowledged": 0, "lost": 0, "finished_elsewhere": 0,
                              "not_finished": [], "rounds": rounds}
    task_ids: list[str] = []
    with started(["serve", "--bind", f"127.0.0.1:{port}"], owner_env, base / "owner.log") as owner:
        info = wait_for_announce(base / "owner", owner)
        wait_http(url, owner)
        worker_ids = {n: run_cli(["id"], env_for(d, n)).stdout.split()[0] for n, d in dirs.items()}
        for name, peer in worker_ids.items():
            run_cli(["peers", "authorize", peer, "--label", name], owner_env)
            run_cli(["peers", "authorize", info["peer_id"]], env_for(dirs[name], name))
        wenv = {n: env_for(d, n, log_level=QUIET, p2p__bootstrap=[info["multiaddrs"][0]],
                           taskqueue={"lease_seconds": lease, "handlers": HANDLERS, "concurrency": {"*": 1}})
                for n, d in dirs.items()}
        procs: dict[str, Any] = {}
        stack: list[Any] = []
        try:
            for name in dirs:
                cm = started(["node"], wenv[name], base / f"{name}.log")
                procs[name] = cm.__enter__()
                stack.append(cm)
                wait_for_announce(dirs[name], procs[name])
            progress.step("worker SIGKILL mid-task", total=rounds, unit="faults")
            for _ in range(rounds):
                progress.figures(lost=len(result["not_finished"]))
                result["submitted"] += 1
                task_id = submit(url, log, seconds)
                result["acknowledged"] += 1
                task_ids.append(task_id)
                deadline = time.monotonic() + 30
                task = get_task(url, task_id)
                while task["state"] != "leased" and time.monotonic() < deadline:
                    time.sleep(0.1)
                    task = get_task(url, task_id)
                if task["state"] != "leased":
                    result["not_finished"].append(task_id)
                    continue
                victim = next(n for n, p in worker_ids.items() if p in str(task["lease_holder"]))
                os.kill(procs[victim].pid, signal.SIGKILL)
                procs[victim].wait(timeout=10)
                result["faults"] += 1
                task = wait_final(url, task_id, 60)
                if task["state"] != "succeeded":
                    result["not_finished"].append(task_id)
                elif (task.get("result") or {}).get("node") != victim:
                    result["finished_elsewhere"] += 1
                # bring the victim back for the next round, same data dir
                cm = started(["node"], wenv[victim], base / f"{victim}.log")
                procs[victim] = cm.__enter__()
                stack.append(cm)
                wait_for_announce(dirs[victim], procs[victim])
                progress.advance()
        finally:
            for cm in reversed(stack):
                cm.__exit__(None, None, None)
        result.update(_outcomes(url, task_ids, log))
    return result


def _outcomes(url: str, task_ids: list[str], log: Path) -> dict[str, Any]:
    starts, done = read_log(log)
    tasks = {t: get_task(url, t) for t in task_ids}
    return {
        "lost": sum(1 for t in task_ids if tasks[t]["state"] != "succeeded"),
        "handler_starts": sum(starts.values()),
        "run_more_than_once": sum(1 for t in task_ids if starts.get(t, 0) > 1),
        "completed_more_than_once": sum(1 for t in task_ids if done.get(t, 0) > 1),
        "single_outcome": all(tasks[t]["state"] == "succeeded" and isinstance(tasks[t].get("result"), dict)
                              for t in task_ids),
        "max_attempts_seen": max((int(tasks[t].get("attempts", 0)) for t in task_ids), default=0),
    }


def owner_killed_after_ack(base: Path, tasks: int, *, rounds: int = 1, progress: Progress | None = None) -> dict[str, Any]:
    """Submit ``tasks`` (nothing runs them), SIGKILL the owner right after the last ack, restart it
    with the same data dir and a worker for the type: every acknowledged task must run."""
    progress = progress if progress is not None else Progress.silent()
    log = base / "runs.log"
    data = base / "owner"
    result: dict[str, Any] = {"faults": 0, "submitted": 0, "acknowledged": 0}
    acked: list[str] = []
    for r in range(rounds):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = env_for(data, "owner", log_level=QUIET, p2p={"enabled": False}, taskqueue={
            "handlers": HANDLERS, "concurrency": {"*": 1, "rel.record": 0}})
        with started(["serve", "--bind", f"127.0.0.1:{port}"], env, base / f"owner-{r}.log") as owner:
            wait_http(url, owner)
            progress.step(f"owner SIGKILL after ack: round {r + 1}/{rounds}, submitting", total=4 * (tasks // 4 + 1),
                          unit="tasks")
            headers, _ = modern_call("taskqueue_submit", {})
            lock = threading.Lock()

            def submitter(start: int, count: int, url: str = url, headers: dict[str, str] = headers,
                          lock: threading.Lock = lock) -> None:
                with httpx.Client(timeout=10) as client:
                    for i in range(start, start + count):
                        _, body = modern_call("taskqueue_submit", {
                            "task_type": "rel.record", "payload": {"log": str(log), "seconds": 0, "i": i}}, i)
                        with lock:
                            result["submitted"] += 1
                        try:
                            response = client.post(f"{url}/mcp", json=body, headers=headers)
                            task_id = response.json()["result"]["structuredContent"]["task_id"]
                        except Exception:
                            continue
                        with lock:
                            acked.append(task_id)
                        progress.advance()

            threads = [threading.Thread(target=submitter, args=(k * tasks, tasks // 4 + 1)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            os.kill(owner.pid, signal.SIGKILL)  # right after the last acknowledgement
            owner.wait(timeout=10)
            result["faults"] += 1
    result["acknowledged"] = len(acked)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = env_for(data, "owner", log_level=QUIET, p2p={"enabled": False},
                  taskqueue={"handlers": HANDLERS, "concurrency": {"*": 4}})
    with started(["serve", "--bind", f"127.0.0.1:{port}"], env, base / "owner-restart.log") as owner:
        wait_http(url, owner)
        progress.step("owner SIGKILL after ack: restarted, every acknowledged task runs", total=len(acked),
                      unit="tasks")
        present = 0
        deadline = time.monotonic() + 120
        for task_id in acked:
            progress.advance()
            try:
                task = get_task(url, task_id)
            except Exception:
                continue
            present += 1
            while task["state"] not in FINAL and time.monotonic() < deadline:
                time.sleep(0.1)
                task = get_task(url, task_id)
        result["present_after_restart"] = present
        result.update(_outcomes(url, acked, log))
        owner.send_signal(signal.SIGTERM)
        owner.wait(timeout=30)
    return result


def sigterm_under_load(base: Path, clients: int, *, hold: float = 1.0, progress: Progress | None = None) -> dict[str, Any]:
    """``clients`` threads keep calls in flight (half ``taskqueue_wait`` of ``hold`` s, half
    ``server_status``); SIGTERM lands mid-load: exit code 0 and every call in flight answered."""
    progress = progress if progress is not None else Progress.silent()
    progress.step(f"SIGTERM under load: {clients} clients")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = env_for(base / "drain", "drain", log_level=QUIET, p2p={"enabled": False}, http={"graceful_timeout": 10.0})
    records: list[tuple[float, float, int | str]] = []
    lock = threading.Lock()
    with started(["serve", "--bind", f"127.0.0.1:{port}"], env, base / "drain.log") as proc:
        wait_http(url, proc)
        parked = structured(call(url, "taskqueue_submit", {"task_type": "nobody.runs.this", "payload": {}}))
        stop = threading.Event()

        def client(k: int) -> None:
            tool, args = (("taskqueue_wait", {"task_id": parked["task_id"], "timeout_s": hold}) if k % 2 == 0
                          else ("server_status", {}))
            headers, body = modern_call(tool, args)
            with httpx.Client(timeout=30) as c:
                while not stop.is_set():
                    t0 = time.monotonic()
                    try:
                        r = c.post(f"{url}/mcp", json=body, headers=headers)
                        outcome: int | str = r.status_code
                    except httpx.HTTPError as exc:
                        outcome = type(exc).__name__
                    with lock:
                        records.append((t0, time.monotonic(), outcome))
                    if outcome != 200:
                        return

        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        progress.step(f"SIGTERM under load: {clients} clients calling", seconds=1.5 * hold + 0.5)
        time.sleep(1.5 * hold + 0.5)
        progress.step("SIGTERM under load: signalled, draining")
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    in_flight = [r for r in records if r[0] < signalled - 0.05 and r[1] > signalled]
    return {"faults": 1, "exit_code": code, "calls": len(records),
            "in_flight_at_sigterm": len(in_flight),
            "in_flight_answered": sum(1 for r in in_flight if r[2] == 200),
            "server_errors_5xx": sum(1 for r in records if isinstance(r[2], int) and r[2] >= 500 and r[2] != 503)}
