"""triomcp.testing, the public testing face: the in-process client (registry, engine and app targets,
both eras), the in-process ASGI driver, tool contexts, the pytest fixtures, and the docs' example."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

import pytest
import trio
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import triomcp.testing
from tests.toolkit import CANCELLED, CANCELLED_EVENTS, GATES, STARTED, Text, register_test_tools
from triomcp.conformance import mrtr
from triomcp.conformance import tasks as conformance_tasks
from triomcp.errors import ToolError
from triomcp.mcp import Registry, ToolContext
from triomcp.mcp.context import InputRequired
from triomcp.server.app import create_app
from triomcp.testing import (
    InProcessApp,
    McpError,
    McpTestClient,
    RecordingOutbound,
    make_settings,
    make_tool_context,
)

Era = Literal["modern", "legacy"]
ERAS: list[Era] = ["modern", "legacy"]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "mcp.md"


def test_the_facade_is_pinned() -> None:
    assert sorted(triomcp.testing.__all__) == sorted([
        "Exchange", "HttpResponse", "InProcessApp", "InputHandler", "McpError", "McpTestClient", "RecordingOutbound",
        "SseEvent", "StreamingResponse", "Subscription", "make_settings", "make_tool_context",
    ])
    for name in triomcp.testing.__all__:
        assert hasattr(triomcp.testing, name)


def test_nothing_in_the_package_imports_the_testing_face() -> None:
    """triomcp.testing sits on top (it drives the server); no layer below may lean on it."""
    src = Path(triomcp.testing.__file__).resolve().parents[1]
    offenders = [str(path.relative_to(src)) for path in src.rglob("*.py")
                 if path.parent.name != "testing" and re.search(r"^\s*(from|import) triomcp\.testing\b",
                                                                path.read_text(), re.M)]
    assert offenders == []


def accept(**content: Any) -> dict[str, Any]:
    return {"action": "accept", "content": content}


def registry_of(*registers: Callable[[Registry], None]) -> Registry:
    registry = Registry()
    for register in registers or (register_test_tools,):
        register(registry)
    return registry


def both(*registers: Callable[[Registry], None]) -> Callable[[Registry], None]:
    """One ``configure`` that runs each of ``registers``."""
    def configure(registry: Registry) -> None:
        for register in registers:
            register(registry)
    return configure


@contextlib.asynccontextmanager
async def client_of(target: str, era: Era, tmp_path: Path, **options: Any) -> AsyncIterator[McpTestClient]:
    """The same client over an in-process engine ("registry") or a whole node ("app")."""
    if target == "registry":
        async with McpTestClient(registry_of(register_test_tools, mrtr.register), era=era, **options) as client:
            yield client
        return
    app = create_app(make_settings(tmp_path), configure=both(register_test_tools, mrtr.register))
    async with McpTestClient(app, era=era, **options) as client:
        yield client


TARGETS = pytest.mark.parametrize(("target", "era"), [(t, e) for t in ("registry", "app") for e in ERAS])


@TARGETS
async def test_calls_resources_prompts_and_errors(target: str, era: Era, tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with client_of(target, era, tmp_path) as client:
            assert client.server_info["name"] == "triomcp"
            names = [t["name"] for t in await client.list_tools()]
            assert {"echo", "progress", "keyed"} <= set(names)
            echoed = await client.call_tool("echo", {"text": "hi"})
            assert echoed["structuredContent"] == {"ok": True, "text": "hi"}
            # x-mcp-header arguments travel in Mcp-Param-* headers too (modern era), as the client learnt
            # from tools/list; the engine refuses a call whose headers disagree.
            keyed = await client.call_tool("keyed", {"key": "ä b", "region": "eu"})
            assert keyed["isError"] is False
            failed = await client.call_tool("fail", {"text": "x"})
            assert failed["isError"] is True and failed["structuredContent"]["error"]["code"] == "on_purpose"
            with pytest.raises(McpError) as unknown:
                await client.call_tool("nope")
            assert unknown.value.jsonrpc_code == -32602 and "Unknown tool" in unknown.value.message
            read = await client.read_resource("test://items/7")
            assert read["contents"][0]["uri"] == "test://items/7"
            assert {"test://blob", "test://doc"} <= {r["uri"] for r in await client.list_resources()}
            prompt = await client.get_prompt("greet", {"name": "Ada"})
            assert "Ada" in prompt["messages"][0]["content"]["text"]
            assert "greet" in [p["name"] for p in await client.list_prompts()]


@TARGETS
async def test_progress_and_logs_are_kept_and_passed_on(target: str, era: Era, tmp_path: Path) -> None:
    seen: list[str] = []
    with trio.fail_after(20):
        async with client_of(target, era, tmp_path) as client:
            result = await client.call_tool("progress", {"steps": 3},
                                            on_notification=lambda message: seen.append(message["method"]))
            assert result["structuredContent"] == {"ok": True, "steps": 3}
            assert [(p["progress"], p["total"], p["message"]) for p in client.progress] == [
                (1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]
            assert len({p["progressToken"] for p in client.progress}) == 1
            assert [entry["data"] for entry in client.logs] == [{"step": 1}, {"step": 2}, {"step": 3}]
            assert seen == ["notifications/progress", "notifications/message"] * 3
            client.notifications.clear()
            await client.set_log_level("error")
            await client.call_tool("progress", {"steps": 1})
            assert client.logs == [] and len(client.progress) == 1


@TARGETS
async def test_elicitation_and_sampling_are_answered_by_the_handlers(target: str, era: Era, tmp_path: Path) -> None:
    async def sample(params: dict[str, Any]) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()  # handlers may be async
        return {"role": "assistant", "content": {"type": "text", "text": "4"}, "model": "m"}

    def elicit(params: dict[str, Any]) -> dict[str, Any]:
        field = next(iter(params["requestedSchema"]["properties"]))
        return accept(**{field: {"name": "Ada", "color": "blue", "ok": True}[field]})

    with trio.fail_after(20):
        async with client_of(target, era, tmp_path, elicitation=elicit, sampling=sample) as client:
            assert client.capabilities == {"elicitation": {}, "sampling": {}}
            confirmed = await client.call_tool("confirm", {"text": "sure?"})
            assert confirmed["structuredContent"] == {"ok": True, "action": "accept", "content": {"ok": True}}
            sampled = await client.call_tool("ask_model", {"text": "2+2?"})
            assert sampled["structuredContent"]["content"] == {"text": "4"}
            assert [method for method, _ in client.input_requests] == ["elicitation/create", "sampling/createMessage"]
            if era == "modern":  # two input-required rounds, the first answer carried in the requestState
                rounds = await client.call_tool("test_input_required_result_multi_round")
                assert rounds["content"][0]["text"] == "Ada likes blue"
        async with client_of(target, era, tmp_path) as bare:  # declares nothing, so it is asked nothing
            refused = bare.call_tool("confirm", {"text": "?"})
            if era == "legacy":
                result = await refused
                assert result["structuredContent"]["error"]["code"] == "capability_missing"
            else:
                with pytest.raises(McpError) as missing:
                    await refused
                assert missing.value.jsonrpc_code == -32021


@pytest.mark.parametrize("target", ["registry", "app"])
async def test_a_legacy_client_answers_what_it_cannot_or_will_not_with_an_error(target: str, tmp_path: Path) -> None:
    def refuse(params: dict[str, Any]) -> dict[str, Any]:
        raise McpError({"code": -1, "message": "the user closed the dialog"})

    with trio.fail_after(20):
        # Declared without a handler: answered -32601, as a client without it would.
        async with client_of(target, "legacy", tmp_path, capabilities={"elicitation": {}}) as client:
            result = await client.call_tool("confirm", {"text": "?"})
        assert result["structuredContent"]["error"]["code"] == "client_error"
        async with client_of(target, "legacy", tmp_path, elicitation=refuse) as client:
            result = await client.call_tool("confirm", {"text": "?"})
        assert result["structuredContent"]["error"]["code"] == "client_error"
        assert "the user closed the dialog" in result["structuredContent"]["error"]["message"]


@TARGETS
async def test_cancelling_the_caller_cancels_the_handler(target: str, era: Era, tmp_path: Path) -> None:
    text = f"cancel-{target}-{era}"
    with trio.fail_after(20):
        async with client_of(target, era, tmp_path) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.call_tool, "block", {"text": text})
                await STARTED.setdefault(text, trio.Event()).wait()
                nursery.cancel_scope.cancel()
            # The call returned only once the handler had stopped (its finally block ran).
            assert CANCELLED_EVENTS[text].is_set() and text in CANCELLED
            assert (await client.call_tool("echo", {"text": "after"}))["isError"] is False


async def test_legacy_sse_polling_is_resumed_with_last_event_id(tmp_path: Path) -> None:
    """The handler ends the response stream at once (``ctx.close_stream``); the client takes the rest
    of it, progress and result, with ``GET`` and ``Last-Event-ID``."""

    async def open_gate() -> None:
        await STARTED.setdefault("polled-1", trio.Event()).wait()
        GATES.setdefault("polled-1", trio.Event()).set()

    with trio.fail_after(20):
        async with McpTestClient(create_app(make_settings(tmp_path), configure=register_test_tools),
                                 era="legacy") as client, trio.open_nursery() as nursery:
            nursery.start_soon(open_gate)
            result = await client.call_tool("polled", {"text": "polled-1"})
    assert result["structuredContent"] == {"ok": True, "text": "polled-1"}
    assert [p["message"] for p in client.progress] == ["after the gate"]


@pytest.mark.parametrize("mcp_era", ERAS)
async def test_tasks_through_the_fixtures(mcp_client: McpTestClient, mcp_era: Era) -> None:
    """The pytest plugin's node (task queue on) with the test tools (``mcp_configure`` below)."""
    with trio.fail_after(20):
        task = await mcp_client.call_tool_as_task("gate", {"text": f"task-{mcp_era}"})
        assert task["status"] == "working"
        await STARTED.setdefault(f"task-{mcp_era}", trio.Event()).wait()
        assert (await mcp_client.get_task(task["taskId"]))["status"] == "working"
        GATES.setdefault(f"task-{mcp_era}", trio.Event()).set()
        done = await mcp_client.wait_task(task["taskId"])
        assert done["status"] == "completed"
        assert done["result"]["structuredContent"] == {"ok": True, "text": f"task-{mcp_era}"}
        failed = await mcp_client.wait_task((await mcp_client.call_tool_as_task("fail", {"text": "t"}))["taskId"])
        assert failed["status"] == "completed" and failed["result"]["isError"] is True


@pytest.fixture
def mcp_configure() -> Callable[[Registry], None]:
    return both(register_test_tools, conformance_tasks.register)


async def test_a_task_that_asks_is_answered_by_the_handlers(mcp_app: InProcessApp) -> None:
    """Modern: the task waits (input_required); ``wait_task`` answers with ``tasks/update``."""
    names = {"First input?": "one", "Second input?": "two", "What is your name?": "Alice"}
    async with McpTestClient(mcp_app, elicitation=lambda params: accept(name=names[params["message"]])) as client:
        with trio.fail_after(20):
            task = await client.call_tool_as_task("multi_input")
            done = await client.wait_task(task["taskId"])
            assert done["status"] == "completed" and done["result"]["content"][0]["text"] == "got one and two"
            # Input first (over input-required rounds), then the task (task_start="handler").
            task = await client.call_tool_as_task("test_tool_with_task")
            done = await client.wait_task(task["taskId"])
    assert done["result"]["content"][0]["text"] == "Hello, Alice! (from a task)"
    assert [method for method, _ in client.input_requests] == ["elicitation/create"] * 3


async def test_listen_delivers_list_changes_and_shutdown_ends_it(tmp_path: Path) -> None:
    registry: list[Registry] = []
    app = create_app(make_settings(tmp_path), configure=registry.append)
    with trio.fail_after(20):
        async with InProcessApp(app) as node, McpTestClient(node) as client:
            async with client.listen({"toolsListChanged": True}) as subscription:
                assert subscription.acknowledgement["params"]["notifications"] == {"toolsListChanged": True}

                @registry[0].tool(description="Added at run time.")
                async def late(args: Text, ctx: ToolContext) -> Text:
                    return args

                note = await subscription.next()
                assert note is not None and note["method"] == "notifications/tools/list_changed"
            assert "late" in [t["name"] for t in await client.list_tools()]
            readiness = await node.request("GET", "/readyz")
            assert readiness.status == 200 and readiness.json() == {"ready": True}
        services = app.state.services
        assert services.stopping.is_set() and not services.ready  # the lifespan's shutdown ran


async def test_in_process_app_streams_and_reports_app_errors(tmp_path: Path) -> None:
    async def boom(request: Request) -> JSONResponse:
        raise ValueError("broken route")

    app = Starlette(routes=[Route("/boom", boom)])
    with trio.fail_after(10):
        async with InProcessApp(app) as node:
            with pytest.raises(ValueError, match="broken route"):
                await node.request("GET", "/boom")
            missing = await node.request("GET", "/nowhere")
            assert missing.status == 404

        registries: list[Registry] = []
        node = InProcessApp(create_app(make_settings(tmp_path), configure=registries.append))
        async with node, McpTestClient(node, era="legacy") as client:
            headers = {"mcp-session-id": str(client.session_id), "mcp-protocol-version": client.version,
                       "content-type": "application/json", "accept": "application/json, text/event-stream"}
            call = {"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {
                "name": "server_status", "arguments": {}, "_meta": {"progressToken": "p"}}}
            async with node.stream("POST", "/mcp", headers=headers, body=call) as answer:
                assert answer.headers["content-type"].startswith("application/json")  # sent nothing first: JSON
                assert (await answer.read()).startswith(b'{"jsonrpc":"2.0","id":99')
            get = {**headers, "accept": "text/event-stream"}
            async with node.stream("GET", "/mcp", headers=get) as stream:  # the session's own stream
                assert stream.status == 200 and stream.headers["content-type"] == "text/event-stream"
                registries[0].remove_tool("server_status")  # a list change, pushed to every session
                event = await stream.next_event()
                assert event is not None and event.id and event.json()["method"] == "notifications/tools/list_changed"


async def test_a_failing_startup_and_the_blocks_own_errors_are_raised_as_they_are() -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        raise OSError("no disk")
        yield  # pragma: no cover

    with pytest.raises(OSError, match="no disk"):
        async with InProcessApp(Starlette(lifespan=lifespan)):
            pass  # pragma: no cover
    with pytest.raises(AssertionError, match="mine"):  # not an ExceptionGroup
        async with McpTestClient(registry_of()):
            raise AssertionError("mine")


async def test_a_principal_reaches_the_handler() -> None:
    async with McpTestClient(registry_of(), principal="alice") as client:
        assert (await client.call_tool("whoami"))["structuredContent"]["principal"] == "alice"
    with pytest.raises(ValueError, match="principal"):
        McpTestClient(Starlette(), principal="alice")


# -- a handler alone --------------------------------------------------------------------------------------
class Question(BaseModel):
    text: str


async def asking(args: Question, ctx: ToolContext) -> dict[str, Any]:
    await ctx.report_progress(1, 2, "asking")
    await ctx.log("debug", "about to ask")
    answer = await ctx.elicit(args.text, {"type": "object", "properties": {"ok": {"type": "boolean"}}})
    await ctx.close_stream()
    return answer


async def test_make_tool_context_records_and_answers() -> None:
    outbound = RecordingOutbound(elicitation=lambda params: accept(ok=params["message"] == "yes?"))
    assert await asking(Question(text="yes?"), make_tool_context(outbound=outbound)) == accept(ok=True)
    assert outbound.progress == [{"progressToken": "progress-1", "progress": 1, "total": 2, "message": "asking"}]
    assert outbound.logs == [{"level": "debug", "data": "about to ask"}] and outbound.closed
    assert [method for method, _ in outbound.requests] == ["elicitation/create"]
    # Scripted answers come first; with nothing to answer, the ask fails as without a back channel.
    scripted = RecordingOutbound(answers=[{"action": "decline"}])
    assert await asking(Question(text="?"), make_tool_context(outbound=scripted)) == {"action": "decline"}
    with pytest.raises(ToolError) as no_answer:
        await asking(Question(text="?"), make_tool_context())
    assert no_answer.value.code == "no_back_channel"
    # What the client declares and what the era is are overrides like any other.
    with pytest.raises(ToolError) as undeclared:
        await asking(Question(text="?"), make_tool_context(client_capabilities={}))
    assert undeclared.value.code == "capability_missing"
    with pytest.raises(InputRequired) as modern:
        await asking(Question(text="?"), make_tool_context(era="modern"))
    assert list(modern.value.requests) == ["input-0"]
    answered = make_tool_context(era="modern", input_responses={"input-0": accept(ok=False)}, log_level=None)
    assert await asking(Question(text="?"), answered) == accept(ok=False)


# -- the docs --------------------------------------------------------------------------------------------------
def python_block_after(heading: str) -> str:
    text = DOCS.read_text()
    section = text[text.index(heading):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, f"no python block after {heading!r}"
    return match.group(1)


async def test_the_docs_example_runs() -> None:
    """docs/mcp.md: the "Writing tools" example, tested as "Testing your tools" shows."""
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(python_block_after("## Writing tools"), "docs/mcp.md (Writing tools)", "exec"), namespace)
    exec(compile(python_block_after("## Testing your tools"), "docs/mcp.md (Testing your tools)", "exec"), namespace)
    with trio.fail_after(10):
        await namespace["test_temperature"]()
