// The TypeScript SDK v2 (@modelcontextprotocol/client 2.4.0), both eras: its default legacy
// connect (initialize, a 2025-11-25 session) and the modern era pinned to 2026-07-28
// (server/discover, stateless requests with the `_meta` envelope). In each: tools/list, calls
// (with a mirrored `x-mcp-header` argument, progress, an isError result), a resource, a prompt,
// and input from the user: a server-to-client elicitation/create in the legacy era, multi
// round-trip requests (input_required results the client fulfils through the same
// elicitation/create handler, then retries) in the modern one, three kinds in one round
// included. The legacy era also asks the client's model (sampling) and resumes a call whose
// response stream the server closed (SSE polling: GET with Last-Event-ID).
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

import { Steps, check, checkToolList, equal, onlyText, serverUrl, show } from "./lib.mjs";

const MODERN = "2026-07-28";
const url = serverUrl();
const steps = new Steps("ts-sdk-v2");

/** What the user answers: one value per requested field, by the field's name. */
const ANSWERS = { username: "ada", email: "ada@example.org", name: "Ada", color: "teal", context: "release notes" };

function connectClient(era) {
  const elicitations = [];
  const client = new Client(
    { name: `triomcp-conformance-v2-${era}`, version: "1.0.0" },
    {
      capabilities: { elicitation: { form: {} }, sampling: {}, roots: {} },
      ...(era === "modern" ? { versionNegotiation: { mode: { pin: MODERN } } } : {}),
    },
  );
  client.setRequestHandler("elicitation/create", async (request) => {
    elicitations.push(request.params);
    const fields = Object.keys(request.params.requestedSchema?.properties ?? {});
    const missing = fields.filter((field) => !(field in ANSWERS));
    if (missing.length) return { action: "decline" };
    return { action: "accept", content: Object.fromEntries(fields.map((field) => [field, ANSWERS[field]])) };
  });
  client.setRequestHandler("sampling/createMessage", async () => ({
    model: "conformance-model", role: "assistant", content: { type: "text", text: "Bonjour" },
  }));
  client.setRequestHandler("roots/list", async () => ({ roots: [{ uri: "file:///srv/project", name: "project" }] }));
  const transport = new StreamableHTTPClientTransport(url);
  return { client, transport, elicitations };
}

async function runEra(era) {
  const { client, transport, elicitations } = connectClient(era);
  const expectedVersion = era === "modern" ? MODERN : "2025-11-25";
  const connected = await steps.run(`${era}: connect`, async () => {
    await client.connect(transport);
    equal(client.getProtocolEra(), era, "getProtocolEra()");
    equal(client.getNegotiatedProtocolVersion(), expectedVersion, "negotiated protocol version");
    equal(client.getServerVersion()?.name, "triomcp", "serverInfo.name");
    if (era === "modern") {
      equal(transport.sessionId, undefined, "session id (none in the stateless era)");
      const discovered = client.getDiscoverResult();
      check(discovered?.supportedVersions?.includes(MODERN), `server/discover supportedVersions: ${show(discovered)}`);
      check(discovered?.capabilities?.extensions?.["io.modelcontextprotocol/tasks"] !== undefined,
        `server/discover capabilities lack the tasks extension: ${show(discovered?.capabilities)}`);
    } else {
      check(typeof transport.sessionId === "string", `Mcp-Session-Id: ${show(transport.sessionId)}`);
    }
    return `${client.getProtocolEra()} ${client.getNegotiatedProtocolVersion()}`;
  });
  if (!connected) return;

  await steps.run(`${era}: tools/list`, async () => {
    const { tools } = await client.listTools();
    checkToolList(tools, "tools/list");
    const header = tools.find((tool) => tool.name === "test_custom_header");
    equal(header.inputSchema.properties.region["x-mcp-header"], "Region", "test_custom_header region x-mcp-header");
    return `${tools.length} tools`;
  });

  await steps.run(`${era}: tools/call test_simple_text`, async () => {
    const result = await client.callTool({ name: "test_simple_text", arguments: {} });
    equal(result.isError, false, "isError");
    equal(onlyText(result, "test_simple_text"), "This is a simple text response for testing.", "text");
  });

  // In the modern era the client mirrors the argument into Mcp-Param-Region (from the cached
  // tools/list); the server refuses a call whose header and argument disagree (-32020).
  await steps.run(`${era}: tools/call test_custom_header (x-mcp-header argument)`, async () => {
    const result = await client.callTool({ name: "test_custom_header", arguments: { region: "eu-west-1" } });
    equal(onlyText(result, "test_custom_header"), "region=eu-west-1", "text");
  });

  await steps.run(`${era}: tools/call test_tool_with_progress (progress)`, async () => {
    const progress = [];
    const result = await client.callTool({ name: "test_tool_with_progress", arguments: {} }, {
      onprogress: (p) => progress.push([p.progress, p.total]),
    });
    equal(onlyText(result, "test_tool_with_progress"), "Tool with progress executed successfully", "text");
    equal(progress, [[0, 100], [50, 100], [100, 100]], "progress notifications (progress, total)");
    return `progress ${progress.map(([p]) => p).join(", ")}`;
  });

  await steps.run(`${era}: tools/call test_error_handling (isError)`, async () => {
    const result = await client.callTool({ name: "test_error_handling", arguments: {} });
    equal(result.isError, true, "isError");
    equal(onlyText(result, "test_error_handling"), "This tool intentionally returns an error for testing", "text");
  });

  await steps.run(`${era}: resources/read`, async () => {
    const read = await client.readResource({ uri: "test://template/7/data" });
    equal(read.contents.map((c) => [c.uri, c.mimeType]), [["test://template/7/data", "application/json"]],
      "contents (uri, mimeType)");
    equal(JSON.parse(read.contents[0].text), { id: "7", templateTest: true, data: "Data for ID: 7" }, "contents[0].text");
  });

  await steps.run(`${era}: prompts/get`, async () => {
    const prompt = await client.getPrompt({ name: "test_prompt_with_arguments", arguments: { arg1: "p", arg2: "q" } });
    equal(prompt.messages, [{ role: "user", content: { type: "text", text: "Prompt with arguments: arg1='p', arg2='q'" } }],
      "messages");
  });

  if (era === "legacy") {
    await steps.run("legacy: tools/call test_elicitation (server-to-client elicitation/create)", async () => {
      elicitations.length = 0;
      const result = await client.callTool({ name: "test_elicitation", arguments: { message: "Who are you?" } });
      equal(elicitations.map((e) => e.message), ["Who are you?"], "elicitation/create messages the handler saw");
      equal(onlyText(result, "test_elicitation"),
        'User response: action=accept, content={"username":"ada","email":"ada@example.org"}', "text");
    });
    await steps.run("legacy: tools/call test_sampling (server-to-client sampling/createMessage)", async () => {
      const result = await client.callTool({ name: "test_sampling", arguments: { prompt: "Say hello in French" } });
      equal(onlyText(result, "test_sampling"), "LLM response: Bonjour", "text");
    });

    await steps.run("legacy: tools/call test_reconnection (stream closed mid-call, resumed)", async () => {
      const result = await client.callTool({ name: "test_reconnection", arguments: {} });
      equal(onlyText(result, "test_reconnection"), "Reconnection test completed", "text");
    });
  } else {
    await steps.run("modern: MRTR tools/call test_input_required_result_elicitation (auto-fulfilled)", async () => {
      elicitations.length = 0;
      const result = await client.callTool({ name: "test_input_required_result_elicitation", arguments: {} });
      equal(elicitations.map((e) => e.message), ["What is your name?"], "input requests the handler answered");
      equal(onlyText(result, "test_input_required_result_elicitation"), "Hello, Ada!", "text");
    });

    await steps.run("modern: MRTR in two rounds (test_input_required_result_multi_round)", async () => {
      elicitations.length = 0;
      const result = await client.callTool({ name: "test_input_required_result_multi_round", arguments: {} });
      equal(elicitations.map((e) => e.message),
        ["Step 1: What is your name?", "Step 2: What is your favorite color?"], "rounds the handler answered");
      equal(onlyText(result, "test_input_required_result_multi_round"), "Ada likes teal", "text");
    });

    await steps.run("modern: MRTR with elicitation, sampling and roots in one round", async () => {
      elicitations.length = 0;
      const result = await client.callTool({ name: "test_input_required_result_multiple_inputs", arguments: {} });
      equal(elicitations.map((e) => e.message), ["What is your name?"], "elicitations the handler answered");
      equal(onlyText(result, "test_input_required_result_multiple_inputs"), "Bonjour Ada (1 root(s))", "text");
    });

    await steps.run("modern: MRTR prompts/get test_input_required_result_prompt", async () => {
      elicitations.length = 0;
      const prompt = await client.getPrompt({ name: "test_input_required_result_prompt", arguments: {} });
      equal(elicitations.map((e) => e.message), ["What context should the prompt use?"],
        "input requests the handler answered");
      equal(prompt.messages, [{ role: "user", content: { type: "text", text: "Use this context: release notes" } }],
        "messages");
    });

    // subscriptions/listen: each test_trigger_tool_change call adds test_dynamic_tool or removes
    // it, so two calls leave the list as it was and send two list_changed notifications.
    await steps.run("modern: subscriptions/listen, two tools list_changed notifications", async () => {
      const changed = [];
      client.setNotificationHandler("notifications/tools/list_changed", (notification) => changed.push(notification));
      const subscription = await client.listen({ toolsListChanged: true });
      equal(subscription.honoredFilter, { toolsListChanged: true }, "honoredFilter");
      const answers = [];
      for (let i = 0; i < 2; i += 1) {
        answers.push(onlyText(await client.callTool({ name: "test_trigger_tool_change", arguments: {} }), "trigger"));
      }
      equal([...answers].sort(), ["added test_dynamic_tool", "removed test_dynamic_tool"], "the trigger's answers");
      for (let waited = 0; changed.length < 2 && waited < 5_000; waited += 50) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      equal(changed.length, 2, "tools list_changed notifications on the listen stream");
      await subscription.close();
      equal(await subscription.closed, "local", "how the subscription ended");
    });
  }

  await client.close();
}

await runEra("legacy");
await runEra("modern");
steps.finish();
