// The tasks extension's own client (@modelcontextprotocol/ext-tasks 0.2.2 on
// @modelcontextprotocol/client 2.4.0). Modern era pinned to 2026-07-28: task creation, polling to
// completion and the inlined result (tasks/get), input inside a task (tasks/update), cancel
// (tasks/cancel), and the failed and isError outcomes. Legacy era (the 2025-11-25 tasks utility,
// which the package also drives): a task polled with tasks/get and read with tasks/result,
// tasks/list, tasks/cancel.
//
// A 2026-07-28 task session needs a host-owned `rawDispatch` (the package README: "a 2026-07-28
// Tasks server additionally requires `rawDispatch` and `v2RequestFraming` ... without them,
// session creation throws"; the SDK Client's codecs do not carry task results). `postModern`
// below is that dispatcher: one JSON-RPC POST with the modern headers, the answer read from JSON
// or SSE. The package frames every request itself (`_meta` protocol version, client info and
// capabilities with the tasks extension) and validates every answer with its own schemas.
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { DispatchError, createApplicationInputHandler, createTaskSessionFromClient } from "@modelcontextprotocol/ext-tasks/client";

import { Steps, check, equal, errorText, onlyText, serverUrl, show } from "./lib.mjs";

const MODERN = "2026-07-28";
const CLIENT_INFO = { name: "triomcp-conformance-ext-tasks", version: "1.0.0" };
const CLIENT_CAPABILITIES = { elicitation: { form: {} } };
const url = serverUrl();
const steps = new Steps("ext-tasks");

let nextId = 1;

/** The `Mcp-Name` header of a request: what the method names (a task's id comes in `headers`). */
function mcpName(method, params) {
  if (method === "tools/call" || method === "prompts/get") return params?.name;
  if (method === "resources/read") return params?.uri;
  return undefined;
}

/** Reads the JSON-RPC response with `id` from an SSE body. */
function fromEventStream(body, id) {
  for (const event of body.split(/\r?\n\r?\n/)) {
    const data = event.split(/\r?\n/).filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trimStart());
    if (!data.length || !data.join("")) continue;
    const message = JSON.parse(data.join("\n"));
    if (message.id === id && ("result" in message || "error" in message)) return message;
  }
  return undefined;
}

/** The ext-tasks `RawClientDispatch`: POSTs one framed request, returns its result or error. */
async function postModern(request, options = {}) {
  const id = nextId++;
  const headers = {
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    "mcp-protocol-version": MODERN,
    "mcp-method": request.method,
  };
  const name = mcpName(request.method, request.params);
  if (name !== undefined) headers["mcp-name"] = name;
  for (const [key, value] of Object.entries(options.context?.headers ?? {})) headers[key.toLowerCase()] = value;
  const timeout = AbortSignal.timeout(options.context?.requestTimeoutMs ?? 30_000);
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
  let response;
  try {
    response = await fetch(url, { method: "POST", headers, body: JSON.stringify({ jsonrpc: "2.0", id, ...request }), signal });
  } catch (error) {
    throw new DispatchError(`POST ${request.method} failed: ${errorText(error)}`, false, { cause: error });
  }
  const body = await response.text();
  const type = response.headers.get("content-type") ?? "";
  let message;
  try {
    message = type.startsWith("text/event-stream") ? fromEventStream(body, id) : JSON.parse(body);
  } catch {
    message = undefined;
  }
  if (message?.error) return { kind: "error", error: message.error };
  if (message && "result" in message) return { kind: "result", result: message.result };
  throw new DispatchError(`${request.method}: HTTP ${response.status} without a JSON-RPC answer: ${body.slice(0, 300)}`);
}

const seenInputs = [];
const client = new Client(CLIENT_INFO, { capabilities: CLIENT_CAPABILITIES, versionNegotiation: { mode: { pin: MODERN } } });
const transport = new StreamableHTTPClientTransport(url);
let session;

/** Polls a task controller until `predicate(view)` holds (every 50 ms, at most `ms`). */
async function waitFor(controller, predicate, what, ms = 10_000) {
  const deadline = Date.now() + ms;
  let view;
  for (;;) {
    view = await controller.snapshot();
    if (predicate(view)) return view;
    check(Date.now() < deadline, `${what}: still ${view.status} after ${ms} ms (${show(view.raw)})`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function completedText(outcome, what) {
  check(outcome.status === "completed",
    `${what}: outcome ${outcome.status}${outcome.error ? ` (${errorText(outcome.error)})` : ""}`);
  return onlyText(outcome.result, what);
}

const connected = await steps.run("connect + task session", async () => {
  await client.connect(transport);
  equal(client.getProtocolEra(), "modern", "getProtocolEra()");
  session = createTaskSessionFromClient(client, {
    endpointId: `triomcp-conformance ${url}`,
    rawDispatch: postModern,
    v2RequestFraming: { protocolVersion: MODERN, clientInfo: CLIENT_INFO, clientCapabilities: CLIENT_CAPABILITIES },
    // Answers input inside a task (the driver sends it with tasks/update): keep the file.
    onInputRequest: createApplicationInputHandler({
      elicitation: (request, context) => {
        seenInputs.push({ message: request.params.message, scope: context.scope, delivery: context.delivery,
          taskId: context.taskId, inputId: context.inputId });
        return { action: "accept", content: { confirm: false } };
      },
      sampling: () => { throw new Error("no sampling expected"); },
      roots: () => ({ roots: [] }),
    }),
    onError: (error) => console.error(`ext-tasks background error: ${errorText(error)}`),
  });
  const { execution, cancellation, inputResponses } = session.capabilities;
  equal({ execution, cancellation, inputResponses }, { execution: true, cancellation: true, inputResponses: true },
    "session task capabilities");
  return show(session.capabilities);
});

if (connected) {
  // The case ext-tasks 0.2.2 once refused ("task outcome failed: Protocol value failed schema
  // validation"): the completed task's tasks/get inlines the result, which must carry resultType.
  await steps.run("slow_compute {seconds: 0.2}: task, polled to completion, result", async () => {
    const execution = await session.callTool("slow_compute", { seconds: 0.2 });
    equal(execution.kind, "task", "execution kind (slow_compute has taskSupport optional)");
    const statuses = [];
    const { outcome, lastTask } = await execution.settle({
      onEvent: (event) => { if (event.type === "task") statuses.push(event.task.status); },
    });
    equal(completedText(outcome, "slow_compute"), "computed result after 0.2 s", "result text");
    equal(outcome.result.isError, false, "result isError");
    equal(lastTask?.status, "completed", "last task status");
    equal(lastTask?.retentionMs, 3_600_000, "ttlMs (the default TTL)");
    equal(statuses[0], "working", "first status");
    return `task ${execution.handle.taskId.slice(0, 8)}…, statuses ${statuses.join(" → ")}`;
  });

  // Input answered by hand: the execution stops driving (detach) before its first poll, and a
  // task controller reads inputRequests from tasks/get and answers with tasks/update.
  await steps.run("confirm_delete: input_required, answered with the controller's update()", async () => {
    const execution = await session.callTool("confirm_delete", { filename: "notes.txt" });
    equal(execution.kind, "task", "execution kind");
    const { taskId } = execution.handle;
    await execution.detach();
    const controller = session.task(taskId);
    const waiting = await waitFor(controller, (view) => view.status === "input_required", "confirm_delete");
    const requests = waiting.raw.inputRequests ?? {};
    equal(Object.keys(requests), ["confirm_delete"], "inputRequests keys");
    equal(requests.confirm_delete.method, "elicitation/create", "input request method");
    equal(requests.confirm_delete.params.message, "Delete notes.txt?", "elicitation message");
    equal(requests.confirm_delete.params.requestedSchema?.required, ["confirm"], "requestedSchema.required");
    await controller.update({ confirm_delete: { action: "accept", content: { confirm: true } } });
    const outcome = await controller.result();
    equal(completedText(outcome, "confirm_delete"), "notes.txt deleted", "result text");
    equal(outcome.task?.status, "completed", "terminal task status");
  });

  // Input answered by the session's input handler, which the execution's driver calls when
  // tasks/get shows input_required, then sends the answer with tasks/update.
  await steps.run("confirm_delete: input answered by the session's input handler", async () => {
    seenInputs.length = 0;
    const execution = await session.callTool("confirm_delete", { filename: "draft.txt" });
    equal(execution.kind, "task", "execution kind");
    const { outcome } = await execution.settle();
    equal(completedText(outcome, "confirm_delete"), "draft.txt kept", "result text");
    equal(seenInputs, [{ message: "Delete draft.txt?", scope: "task", delivery: "task-update",
      taskId: execution.handle.taskId, inputId: "confirm_delete" }], "input requests the handler saw");
  });

  await steps.run("slow_compute {seconds: 60}: cancel", async () => {
    const started = Date.now();
    const execution = await session.callTool("slow_compute", { seconds: 60 });
    equal(execution.kind, "task", "execution kind");
    const controller = session.task(execution.handle.taskId);
    await waitFor(controller, (view) => view.status === "working", "slow_compute before cancel");
    await execution.cancel();
    const outcome = await execution.result();
    equal(outcome.status, "cancelled", "local outcome after the cancel ack");
    const settled = await waitFor(controller, (view) => view.status !== "working", "slow_compute after cancel", 5_000);
    equal(settled.status, "cancelled", "server-side status after tasks/cancel");
    const seconds = (Date.now() - started) / 1000;
    check(seconds < 10, `the 60 s task took ${seconds} s to cancel`);
    return `cancelled after ${seconds.toFixed(1)} s`;
  });

  await steps.run("protocol_error_job: failed, with the JSON-RPC error", async () => {
    const execution = await session.callTool("protocol_error_job", {});
    equal(execution.kind, "task", "execution kind");
    const { outcome } = await execution.settle();
    equal(outcome.status, "failed", "outcome status");
    equal(outcome.error.code, -32603, "error code");
    check(/protocol error on purpose/.test(outcome.error.message), `error message: ${show(outcome.error.message)}`);
  });

  await steps.run("failing_job (taskSupport required): completed with isError", async () => {
    const execution = await session.callTool("failing_job", {});
    equal(execution.kind, "task", "execution kind");
    const { outcome } = await execution.settle();
    check(outcome.status === "completed", `outcome ${outcome.status}`);
    equal(outcome.result.isError, true, "result isError");
  });

  await session.close();
}
await client.close().catch(() => {});

// -- legacy era: the 2025-11-25 tasks utility (tools/call with `task`, tasks/get|result|list|cancel)
const legacyClient = new Client(CLIENT_INFO, { capabilities: CLIENT_CAPABILITIES });
let legacy;
const legacyConnected = await steps.run("legacy: connect + task session", async () => {
  await legacyClient.connect(new StreamableHTTPClientTransport(url));
  equal(legacyClient.getProtocolEra(), "legacy", "getProtocolEra()");
  legacy = createTaskSessionFromClient(legacyClient, { endpointId: `triomcp-conformance legacy ${url}` });
  const { inventory, execution, cancellation } = legacy.capabilities;
  equal({ inventory, execution, cancellation }, { inventory: "server-list", execution: true, cancellation: true },
    "session task capabilities");
  return show(legacy.capabilities);
});

if (legacyConnected) {
  await steps.run("legacy: slow_compute as a task, tasks/result", async () => {
    const execution = await legacy.callTool("slow_compute", { seconds: 0.2, label: "legacy" }, { task: { preference: "require" } });
    equal(execution.kind, "task", "execution kind");
    const { outcome, lastTask } = await execution.settle();
    equal(completedText(outcome, "slow_compute"), "computed legacy after 0.2 s", "result text");
    equal(lastTask?.status, "completed", "last task status");
    const { tasks } = await legacy.listTasks();
    check(tasks.some((task) => task.taskId === execution.handle.taskId && task.status === "completed"),
      `tasks/list lacks the completed task ${execution.handle.taskId}: ${show(tasks.map((t) => [t.taskId, t.status]))}`);
    return `task ${execution.handle.taskId.slice(0, 8)}…, ${tasks.length} task(s) listed`;
  });

  await steps.run("legacy: slow_compute {seconds: 60}: tasks/cancel", async () => {
    const execution = await legacy.callTool("slow_compute", { seconds: 60 }, { task: { preference: "require" } });
    equal(execution.kind, "task", "execution kind");
    await execution.cancel();
    const outcome = await execution.result();
    equal(outcome.status, "cancelled", "local outcome");
    const settled = await waitFor(legacy.task(execution.handle.taskId), (view) => view.status !== "working",
      "slow_compute after cancel", 5_000);
    equal(settled.status, "cancelled", "server-side status after tasks/cancel");
  });

  await legacy.close();
}
await legacyClient.close().catch(() => {});
steps.finish();
