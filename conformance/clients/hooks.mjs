// Module resolution hooks (registered by register.mjs): the MCP packages resolve as if imported
// from .cache/conformance/, where `make conformance` installed them.
let parentURL;

export async function initialize(data) {
  parentURL = data.parentURL;
}

export async function resolve(specifier, context, nextResolve) {
  if (specifier.startsWith("@modelcontextprotocol/")) {
    return nextResolve(specifier, { ...context, parentURL });
  }
  return nextResolve(specifier, context);
}
