"""Nodes behind a real load balancer (:func:`harness.balancer.cluster`): their counters, and small
calls the balancer tests share (official SDK client)."""

from __future__ import annotations

import warnings

import httpx
from mcp.client import Client
from mcp.shared.exceptions import MCPDeprecationWarning

from harness.balancer import Cluster

__all__ = ["metric", "never_task", "subscribe"]


def metric(c: Cluster, name: str, **labels: str) -> float:
    """A counter or gauge summed over every live node (its ``/metrics``), with these labels."""
    total = 0.0
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for node in c.nodes:
        if not node.alive:
            continue
        text = httpx.get(f"{node.url}/metrics", timeout=5).text
        for line in text.splitlines():
            if (line.startswith(name + "{") or line.startswith(name + " ")) and all(w in line for w in want):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def never_task(client: Client) -> str:
    """A task no worker has a handler for: it stays queued (a call waiting on it waits)."""
    submitted = await client.call_tool("taskqueue_submit", {"task_type": "test.never", "payload": {}})
    assert submitted.is_error is False, submitted
    return str(submitted.structured_content["task_id"])  # type: ignore[index]


async def subscribe(client: Client, uri: str) -> None:
    """``resources/subscribe``, a legacy-era request (the SDK warns that the modern era dropped it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        await client.subscribe_resource(uri)
