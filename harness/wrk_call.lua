-- One MCP tools/call of TOOL with the JSON arguments ARGS per request: modern era (2026-07-28), or,
-- when SESSION is set, legacy era (2025-11-25) inside that session (Mcp-Session-Id, no _meta). Sorts
-- the answers: served (200 with a result), refused (503 with JSON-RPC -32010: admission control) and
-- failed (anything else); prints ANSWERS with the three counts and FAILED_RESULTS (every answer not served).
local tool = os.getenv("TOOL")
local args = os.getenv("ARGS")
local session = os.getenv("SESSION")
local counter = 0
served, refused, failed = 0, 0, 0  -- globals: done() reads each thread's copy with thread:get()
local threads = {}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
local meta = ''
if session ~= nil and session ~= "" then
  wrk.headers["MCP-Protocol-Version"] = "2025-11-25"
  wrk.headers["Mcp-Session-Id"] = session
else
  wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
  wrk.headers["Mcp-Method"] = "tools/call"
  wrk.headers["Mcp-Name"] = tool
  meta = ',"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}'
end
function setup(thread)
  table.insert(threads, thread)
end
request = function()
  counter = counter + 1
  local body = '{"jsonrpc":"2.0","id":' .. counter .. ',"method":"tools/call","params":{"name":"' .. tool ..
    '","arguments":' .. args .. meta .. '}}'
  return wrk.format(nil, "/mcp", nil, body)
end
-- A JSON-RPC error is an object ("error":{...}); a result may hold a field named error (a task's "error":null).
response = function(status, headers, body)
  if status == 200 and not string.find(body, '"isError":true', 1, true) and not string.find(body, '"error":%s*{') then
    served = served + 1
  elseif status == 503 and string.find(body, '"code":-32010', 1, true) then
    refused = refused + 1
  else
    failed = failed + 1
  end
end
done = function(summary, latency, requests)
  local s, r, f = 0, 0, 0
  for _, thread in ipairs(threads) do
    s = s + (thread:get("served") or 0)
    r = r + (thread:get("refused") or 0)
    f = f + (thread:get("failed") or 0)
  end
  io.write(string.format("ANSWERS served %d refused %d failed %d\n", s, r, f))
  io.write(string.format("FAILED_RESULTS %d\n", r + f))
end
