"""The layers of DESIGN.md stay clean, and the public facades stay what they are."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "triomcp"


def test_engine_imports_no_io_library() -> None:
    code = (
        "import sys, triomcp.mcp, triomcp.mcp.engine, triomcp.mcp.dispatch\n"
        "bad = [m for m in ('trio', 'starlette', 'libp2p', 'hypercorn', 'anyio', 'asyncio', 'sqlite3') "
        "if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "", f"triomcp.mcp pulled in: {out.stdout.strip()}"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("mcp", ("trio", "starlette", "libp2p", "hypercorn", "triomcp.server", "triomcp.p2p", "triomcp.taskqueue")),
        ("taskqueue", ("starlette", "libp2p", "hypercorn", "triomcp.server", "triomcp.p2p", "triomcp.mcp")),
        ("p2p", ("starlette", "hypercorn", "triomcp.server", "triomcp.mcp")),
    ],
)
def test_layer_imports(layer: str, forbidden: tuple[str, ...]) -> None:
    offenders = []
    for path in sorted((SRC / layer).rglob("*.py")):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                offenders.append(f"{path.relative_to(SRC)} imports {name}")
    assert offenders == []


def test_nothing_below_imports_server() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.parts[0] in ("server", "testing") or rel.name in ("app.py", "cli.py"):  # testing: the top
            continue
        for name in _imports(path):
            if name.startswith("triomcp.server"):
                offenders.append(f"{rel} imports {name}")
    assert offenders == []


def test_mcp_facade_is_pinned() -> None:
    import triomcp.mcp

    assert sorted(triomcp.mcp.__all__) == sorted([
        "LEGACY_VERSIONS", "MODERN_VERSIONS", "PLUGIN_GROUP", "SUPPORTED_VERSIONS", "Call", "Engine",
        "EngineConfig", "EngineHooks", "EngineStatistics", "Era", "Forwarder", "HttpRequest", "Listen", "Plugin", "Registry", "Reply",
        "StreamGrant", "ToolContext", "ToolDef", "ToolResult", "content", "load_plugins",
    ])
    for name in triomcp.mcp.__all__:
        assert hasattr(triomcp.mcp, name)


def test_errors_know_their_wire_mapping() -> None:
    from triomcp import errors

    assert errors.MethodNotFound("x").jsonrpc_code == -32601 and errors.MethodNotFound("x").http_status == 404
    assert errors.UnsupportedVersion("x").jsonrpc_code == -32022
    assert errors.HeaderMismatch("x").jsonrpc_code == -32020
    assert errors.MissingCapability("x").jsonrpc_code == -32021
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.TriomcpError)


MAX_MODULE_LINES = 300
"""STYLE.md: small files that each hold one concept. A module over this says why in its docstring,
in a line starting with "Size:"."""


def test_modules_stay_small_or_say_why() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        lines = text.count("\n")
        if lines > MAX_MODULE_LINES and "\nSize: " not in (ast.get_docstring(ast.parse(text)) or "\n"):
            offenders.append(f"{path.relative_to(SRC)}: {lines} lines")
    assert offenders == []


def test_the_engine_is_split_by_feature_area() -> None:
    """One concept per module (DESIGN.md layers; docs/architecture.md draws them)."""
    modules = {p.stem for p in (SRC / "mcp").glob("*.py")}
    assert {"engine", "config", "core", "dispatch", "negotiation", "legacy", "lifecycle", "tools", "resources",
            "prompts", "task_methods", "listeners", "inputs", "pagination", "results", "registry",
            "definitions"} <= modules
    assert "methods" not in modules
