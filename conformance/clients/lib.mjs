// What the client scripts share: a step runner that records each step's verdict, and the checks.
//
// A script runs its steps in order; each step passes (its function returned, the detail is what
// it returns), fails (it threw: the message says what differed) or is skipped (excluded, with the
// reason). A failed step does not stop the next ones. At the end the script prints one line per
// step, writes them as JSON to $CONFORMANCE_CLIENT_RESULTS when that is set (python -m
// conformance reads it), and exits 1 if any step failed.
import { writeFileSync } from "node:fs";
import { isDeepStrictEqual } from "node:util";

export const STEP_TIMEOUT_MS = 30_000;

/** The server URL from the command line (`node ... script.mjs http://127.0.0.1:PORT/mcp`). */
export function serverUrl() {
  const url = process.argv[2];
  if (!url) {
    console.error(`usage: node --import ./conformance/clients/register.mjs ${process.argv[1]} URL`);
    process.exit(2);
  }
  return new URL(url);
}

export class Mismatch extends Error {}

/** Fails the step with `message` unless `condition` holds. */
export function check(condition, message) {
  if (!condition) throw new Mismatch(message);
}

/** Fails the step unless `actual` deep-equals `expected`. */
export function equal(actual, expected, what) {
  if (!isDeepStrictEqual(actual, expected)) {
    throw new Mismatch(`${what}: expected ${show(expected)}, got ${show(actual)}`);
  }
}

export function show(value) {
  const text = JSON.stringify(value);
  return text === undefined ? String(value) : text.length > 400 ? `${text.slice(0, 400)}...` : text;
}

/** The text of a result's only text block (a tool result or a prompt message's content). */
export function onlyText(result, what) {
  const blocks = (result?.content ?? []).filter((block) => block.type === "text");
  check(blocks.length === 1, `${what}: expected one text block, got ${show(result?.content)}`);
  return blocks[0].text;
}

export async function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Mismatch(`${what}: no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export class Steps {
  constructor(client) {
    this.client = client;
    this.results = [];
  }

  /** Runs `fn`; its return value (a string) is the detail of a passed step. */
  async run(name, fn, { timeoutMs = STEP_TIMEOUT_MS } = {}) {
    const started = Date.now();
    try {
      const detail = await withTimeout(Promise.resolve().then(fn), timeoutMs, name);
      this.record(name, "pass", `${detail ?? ""} (${Date.now() - started} ms)`.trim());
      return true;
    } catch (error) {
      const why = error instanceof Mismatch ? error.message : errorText(error);
      this.record(name, "fail", why);
      return false;
    }
  }

  /** A step left out on purpose; `reason` quotes the evidence. */
  skip(name, reason) {
    this.record(name, "skip", reason);
  }

  record(step, status, detail) {
    this.results.push({ step, status, detail });
    console.log(`${status.toUpperCase().padEnd(4)}  ${this.client}: ${step}${detail ? ` — ${detail}` : ""}`);
  }

  /** Writes the results and ends the process (1 if a step failed). */
  finish() {
    const failed = this.results.filter((r) => r.status === "fail").length;
    const out = process.env.CONFORMANCE_CLIENT_RESULTS;
    if (out) writeFileSync(out, JSON.stringify({ client: this.client, steps: this.results }, null, 2));
    const passed = this.results.filter((r) => r.status === "pass").length;
    console.log(`${this.client}: ${passed} passed, ${failed} failed`);
    process.exit(failed ? 1 : 0);
  }
}

/** An error as one line: its class, message, code and data (protocol errors carry both). */
export function errorText(error) {
  if (!(error instanceof Error)) return `thrown: ${show(error)}`;
  const parts = [`${error.name}: ${error.message}`];
  if (error.code !== undefined) parts.push(`code=${show(error.code)}`);
  if (error.data !== undefined) parts.push(`data=${show(error.data)}`);
  let cause = error.cause;
  for (let depth = 0; cause && depth < 3; depth += 1) {
    parts.push(`cause: ${cause instanceof Error ? `${cause.name}: ${cause.message}` : show(cause)}`);
    cause = cause instanceof Error ? cause.cause : undefined;
  }
  return parts.join("; ");
}

/** Tool names every fixture node serves (a few of each kind the scripts call). */
export const FIXTURE_TOOLS = [
  "confirm_delete",
  "json_schema_2020_12_tool",
  "slow_compute",
  "test_custom_header",
  "test_elicitation",
  "test_input_required_result_elicitation",
  "test_simple_text",
  "test_tool_with_progress",
];

/** Checks a `tools/list` result: the fixtures are there, names are unique and sorted, schemas are objects. */
export function checkToolList(tools, what) {
  const names = tools.map((tool) => tool.name);
  const missing = FIXTURE_TOOLS.filter((name) => !names.includes(name));
  check(missing.length === 0, `${what}: fixtures missing from tools/list: ${show(missing)}`);
  check(new Set(names).size === names.length, `${what}: duplicate tool names in ${show(names)}`);
  equal(names, [...names].sort(), `${what}: tool order (the server sorts by name)`);
  for (const tool of tools) {
    check(tool.inputSchema?.type === "object", `${what}: ${tool.name}.inputSchema.type is ${show(tool.inputSchema?.type)}`);
  }
  return names;
}
