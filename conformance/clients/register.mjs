// Lets the client scripts import the npm packages `make conformance` installed under .cache/conformance/
// (`node --import ./conformance/clients/register.mjs conformance/clients/<script>.mjs URL`): a bare
// `@modelcontextprotocol/...` specifier resolves from there instead of from beside the script.
// CONFORMANCE_NODE_MODULES names another node_modules (`python -m conformance --cache DIR` sets it).
import { register } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const modules =
  process.env.CONFORMANCE_NODE_MODULES ??
  join(dirname(fileURLToPath(import.meta.url)), "..", "..", ".cache", "conformance", "node_modules");

register("./hooks.mjs", import.meta.url, {
  data: { parentURL: pathToFileURL(join(dirname(modules), "package.json")).href },
});
