// The TypeScript SDK v1 (@modelcontextprotocol/sdk 1.32.2), legacy era only (2025-11-25 sessions):
// initialize, tools/list, tool calls (progress, logging, an isError result, an elicitation and a
// sampling request the client answers, a response stream the server closes mid-call that the
// client resumes), a task (the SDK's experimental 2025-11-25 tasks API), resources, prompts,
// completion, and the session's end (DELETE).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  CallToolResultSchema, CreateMessageRequestSchema, ElicitRequestSchema, LoggingMessageNotificationSchema,
} from "@modelcontextprotocol/sdk/types.js";

import { Steps, check, checkToolList, equal, onlyText, serverUrl, show } from "./lib.mjs";

const url = serverUrl();
const steps = new Steps("ts-sdk-v1");
const logs = [];
const elicitations = [];

const client = new Client({ name: "triomcp-conformance-v1", version: "1.0.0" },
  { capabilities: { elicitation: {}, sampling: {} } });
client.setNotificationHandler(LoggingMessageNotificationSchema, (notification) => {
  logs.push(notification.params);
});
client.setRequestHandler(ElicitRequestSchema, async (request) => {
  elicitations.push(request.params);
  return { action: "accept", content: { username: "ada", email: "ada@example.org" } };
});
client.setRequestHandler(CreateMessageRequestSchema, async () => ({
  model: "conformance-model", role: "assistant", content: { type: "text", text: "Bonjour" },
}));
const transport = new StreamableHTTPClientTransport(url);

const connected = await steps.run("initialize", async () => {
  await client.connect(transport);
  equal(client.getServerVersion()?.name, "triomcp", "serverInfo.name");
  equal(transport.protocolVersion, "2025-11-25", "negotiated protocol version");
  check(typeof transport.sessionId === "string" && transport.sessionId.length >= 32,
    `Mcp-Session-Id: ${show(transport.sessionId)}`);
  const capabilities = client.getServerCapabilities() ?? {};
  for (const name of ["tools", "resources", "prompts", "logging", "completions", "tasks"]) {
    check(name in capabilities, `server capabilities lack ${name}: ${show(capabilities)}`);
  }
  return `session ${transport.sessionId.slice(0, 8)}…, capabilities ${Object.keys(capabilities).sort().join(",")}`;
});

if (connected) {
  await steps.run("tools/list", async () => {
    const { tools } = await client.listTools();
    checkToolList(tools, "tools/list");
    const slow = tools.find((tool) => tool.name === "slow_compute");
    equal(slow.execution?.taskSupport, "optional", "slow_compute execution.taskSupport");
    return `${tools.length} tools`;
  });

  await steps.run("tools/call test_simple_text", async () => {
    const result = await client.callTool({ name: "test_simple_text", arguments: {} });
    equal(result.isError, false, "isError");
    equal(onlyText(result, "test_simple_text"), "This is a simple text response for testing.", "text");
  });

  await steps.run("tools/call test_tool_with_progress (progress)", async () => {
    const progress = [];
    const result = await client.callTool({ name: "test_tool_with_progress", arguments: {} }, undefined, {
      onprogress: (p) => progress.push([p.progress, p.total]),
    });
    equal(onlyText(result, "test_tool_with_progress"), "Tool with progress executed successfully", "text");
    equal(progress, [[0, 100], [50, 100], [100, 100]], "progress notifications (progress, total)");
    return `progress ${progress.map(([p]) => p).join(", ")}`;
  });

  await steps.run("logging/setLevel + tools/call test_tool_with_logging", async () => {
    await client.setLoggingLevel("info");
    logs.length = 0;
    const result = await client.callTool({ name: "test_tool_with_logging", arguments: {} });
    equal(onlyText(result, "test_tool_with_logging"), "Tool with logging executed successfully", "text");
    equal(logs.map((l) => [l.level, l.data]), [
      ["info", "Tool execution started"], ["info", "Tool processing data"], ["info", "Tool execution completed"],
    ], "notifications/message (level, data)");
    return `${logs.length} log messages`;
  });

  await steps.run("tools/call test_error_handling (isError)", async () => {
    const result = await client.callTool({ name: "test_error_handling", arguments: {} });
    equal(result.isError, true, "isError");
    equal(onlyText(result, "test_error_handling"), "This tool intentionally returns an error for testing", "text");
  });

  await steps.run("tools/call test_elicitation (server-to-client elicitation/create)", async () => {
    elicitations.length = 0;
    const result = await client.callTool({ name: "test_elicitation", arguments: { message: "Who are you?" } });
    equal(elicitations.map((e) => e.message), ["Who are you?"], "elicitation/create messages");
    equal(elicitations[0].requestedSchema?.required, ["username", "email"], "requestedSchema.required");
    equal(onlyText(result, "test_elicitation"),
      'User response: action=accept, content={"username":"ada","email":"ada@example.org"}', "text");
  });

  await steps.run("tools/call test_sampling (server-to-client sampling/createMessage)", async () => {
    const result = await client.callTool({ name: "test_sampling", arguments: { prompt: "Say hello in French" } });
    equal(onlyText(result, "test_sampling"), "LLM response: Bonjour", "text");
  });

  // The server closes the response stream after a log message (SSE polling); the transport
  // resumes with GET and Last-Event-ID after the priming event's `retry` and gets the result.
  await steps.run("tools/call test_reconnection (stream closed mid-call, resumed)", async () => {
    const result = await client.callTool({ name: "test_reconnection", arguments: {} });
    equal(onlyText(result, "test_reconnection"), "Reconnection test completed", "text");
  });

  await steps.run("tasks: experimental callToolStream(slow_compute) to its result", async () => {
    const seen = [];
    let result;
    let taskId;
    const stream = client.experimental.tasks.callToolStream(
      { name: "slow_compute", arguments: { seconds: 0.2, label: "v1" } }, CallToolResultSchema, { task: { ttl: 60_000 } });
    for await (const message of stream) {
      seen.push(message.type === "result" || message.type === "error" ? message.type : `${message.type}:${message.task.status}`);
      if (message.type === "taskCreated") taskId = message.task.taskId;
      if (message.type === "result") result = message.result;
      if (message.type === "error") throw message.error;
    }
    equal(seen[0], "taskCreated:working", "first message");
    equal(seen.at(-2), "taskStatus:completed", "last status");
    equal(onlyText(result, "slow_compute"), "computed v1 after 0.2 s", "result text");
    equal(result._meta?.["io.modelcontextprotocol/related-task"]?.taskId, taskId, "related-task _meta of tasks/result");
    return seen.join(" → ");
  });

  await steps.run("resources/list + resources/read", async () => {
    const { resources } = await client.listResources();
    const uris = resources.map((r) => r.uri);
    for (const uri of ["test://static-text", "test://static-binary", "test://watched-resource"]) {
      check(uris.includes(uri), `resources/list lacks ${uri}: ${show(uris)}`);
    }
    const text = await client.readResource({ uri: "test://static-text" });
    equal(text.contents, [{ uri: "test://static-text", mimeType: "text/plain",
      text: "This is the content of the static text resource." }], "test://static-text contents");
    const binary = await client.readResource({ uri: "test://static-binary" });
    equal(binary.contents[0]?.mimeType, "image/png", "test://static-binary mimeType");
    const png = Buffer.from(binary.contents[0]?.blob ?? "", "base64");
    equal([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], "PNG signature of the blob");
    const templated = await client.readResource({ uri: "test://template/42/data" });
    equal(JSON.parse(templated.contents[0]?.text ?? "null"), { id: "42", templateTest: true, data: "Data for ID: 42" },
      "test://template/42/data");
    return `${resources.length} resources, ${png.length}-byte PNG`;
  });

  await steps.run("prompts/list + prompts/get", async () => {
    const { prompts } = await client.listPrompts();
    const withArgs = prompts.find((p) => p.name === "test_prompt_with_arguments");
    check(withArgs, `prompts/list lacks test_prompt_with_arguments: ${show(prompts.map((p) => p.name))}`);
    equal(withArgs.arguments.map((a) => [a.name, a.required]), [["arg1", true], ["arg2", true]], "its arguments");
    const prompt = await client.getPrompt({ name: "test_prompt_with_arguments", arguments: { arg1: "x", arg2: "y" } });
    equal(prompt.messages, [{ role: "user", content: { type: "text", text: "Prompt with arguments: arg1='x', arg2='y'" } }],
      "messages");
    return `${prompts.length} prompts`;
  });

  await steps.run("completion/complete", async () => {
    const { completion } = await client.complete({
      ref: { type: "ref/prompt", name: "test_prompt_with_arguments" }, argument: { name: "arg1", value: "pa" },
    });
    equal(completion.values, ["paris", "park", "party"], "completion values for 'pa'");
  });

  await steps.run("DELETE ends the session", async () => {
    const session = transport.sessionId;
    await transport.terminateSession();
    const response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json, text/event-stream",
        "mcp-session-id": session, "mcp-protocol-version": "2025-11-25" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 99, method: "ping" }),
    });
    equal(response.status, 404, "HTTP status of a request on the ended session");
  });
}

await client.close().catch(() => {});
steps.finish();
