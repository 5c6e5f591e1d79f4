// The MCP Inspector CLI (@modelcontextprotocol/inspector 2.12.0), in both eras
// (`--protocol-era legacy|modern`): `tools/list --strict` must report no schema-portability
// finding (none on stderr, no `schemaFindings` in its JSON), and `tools/call` of fixtures, one
// with an `x-mcp-header` argument and one a task in the modern era, must answer what they do.
// The CLI runs on the same Node as this script, with HOME in a temporary directory (it keeps
// state under ~/.mcp-inspector).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { Steps, check, checkToolList, equal, onlyText, serverUrl, show } from "./lib.mjs";

const url = serverUrl();
const steps = new Steps("inspector-cli");
const modules =
  process.env.CONFORMANCE_NODE_MODULES ??
  join(dirname(fileURLToPath(import.meta.url)), "..", "..", ".cache", "conformance", "node_modules");
const packageDir = dirname(createRequire(join(modules, "..", "package.json")).resolve("@modelcontextprotocol/inspector/package.json"));
const launcher = join(packageDir, "clients", "launcher", "build", "index.js");
const home = mkdtempSync(join(tmpdir(), "triomcp-inspector-"));

/** Runs the CLI; resolves with its exit code, stdout and stderr (60 s at most). */
function inspector(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [launcher, "--cli", url.href, "--transport", "http", "--format", "json", ...args], {
      env: { ...process.env, HOME: home, NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 60_000,
    });
    const out = [];
    const err = [];
    child.stdout.on("data", (chunk) => out.push(chunk));
    child.stderr.on("data", (chunk) => err.push(chunk));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      resolve({ code: code ?? signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
  });
}

function parsed(run, what) {
  check(run.code === 0, `${what}: exit ${run.code}; stderr: ${run.stderr.slice(0, 600)}`);
  try {
    return JSON.parse(run.stdout);
  } catch {
    throw new Error(`${what}: stdout is not one JSON object: ${run.stdout.slice(0, 300)}`);
  }
}

const listed = {};
try {
  for (const era of ["legacy", "modern"]) {
    await steps.run(`${era}: tools/list --strict`, async () => {
      const run = await inspector(["--protocol-era", era, "--method", "tools/list", "--strict"]);
      const out = parsed(run, "tools/list --strict");
      const findings = run.stderr.split("\n").filter((line) => /^(Warning|Error): tool |portability/.test(line));
      check(findings.length === 0 && out.schemaFindings === undefined,
        `schema findings: ${show(out.schemaFindings)}; stderr: ${findings.join(" | ").slice(0, 600)}`);
      const names = checkToolList(out.result.tools, "tools/list");
      listed[era] = names;
      return `${names.length} tools, 0 warnings`;
    }, { timeoutMs: 70_000 });

    await steps.run(`${era}: tools/call test_simple_text`, async () => {
      const out = parsed(await inspector(["--protocol-era", era, "--method", "tools/call", "--tool-name", "test_simple_text"]),
        "tools/call");
      equal(onlyText(out.result, "test_simple_text"), "This is a simple text response for testing.", "text");
      if (era === "modern") equal(out.result.resultType, "complete", "resultType");
    }, { timeoutMs: 70_000 });

    await steps.run(`${era}: tools/call test_custom_header (x-mcp-header argument)`, async () => {
      const out = parsed(await inspector(["--protocol-era", era, "--method", "tools/call", "--tool-name", "test_custom_header",
        "--tool-args-json", JSON.stringify({ region: "ap-south-1" })]), "tools/call");
      equal(onlyText(out.result, "test_custom_header"), "region=ap-south-1", "text");
    }, { timeoutMs: 70_000 });

    // In the modern era the CLI declares the tasks extension: slow_compute runs as a task and the
    // CLI polls tasks/get for the inlined result.
    await steps.run(`${era}: tools/call slow_compute`, async () => {
      const out = parsed(await inspector(["--protocol-era", era, "--method", "tools/call", "--tool-name", "slow_compute",
        "--tool-args-json", JSON.stringify({ seconds: 0.1, label: "inspector" })]), "tools/call");
      equal(onlyText(out.result, "slow_compute"), "computed inspector after 0.1 s", "text");
      equal(out.result.isError, false, "isError");
    }, { timeoutMs: 70_000 });
  }
  if (listed.legacy && listed.modern) {
    await steps.run("both eras list the same tools", async () => {
      equal(listed.modern, listed.legacy, "tool names, modern vs legacy");
    });
  }
} finally {
  rmSync(home, { recursive: true, force: true });
}
steps.finish();
