-- One MCP tools/call per request, each with its own JSON-RPC id.
-- MODE=modern: a 2026-07-28 request; MODE=legacy: a 2025-11-25 request in the session SESSION.
local mode = os.getenv("MODE") or "modern"
local session = os.getenv("SESSION")
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
if mode == "modern" then
  wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
  wrk.headers["Mcp-Method"] = "tools/call"
  wrk.headers["Mcp-Name"] = "add"
else
  wrk.headers["MCP-Protocol-Version"] = "2025-11-25"
  wrk.headers["Mcp-Session-Id"] = session
end
local meta = ',"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}'
if mode ~= "modern" then meta = "" end
request = function()
  counter = counter + 1
  local body = '{"jsonrpc":"2.0","id":' .. counter .. ',"method":"tools/call","params":{"name":"add","arguments":{"a":' .. counter .. ',"b":2}' .. meta .. '}}'
  return wrk.format(nil, "/mcp", nil, body)
end
