-- One MCP tools/call (modern era) of TOOL with the JSON arguments ARGS; counts results that are errors.
local tool = os.getenv("TOOL")
local args = os.getenv("ARGS")
local counter = 0
failures = 0  -- a global: done() reads each thread's copy with thread:get("failures")
local threads = {}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
wrk.headers["Mcp-Method"] = "tools/call"
wrk.headers["Mcp-Name"] = tool
local meta = ',"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}'
function setup(thread)
  table.insert(threads, thread)
end
request = function()
  counter = counter + 1
  local body = '{"jsonrpc":"2.0","id":' .. counter .. ',"method":"tools/call","params":{"name":"' .. tool ..
    '","arguments":' .. args .. meta .. '}}'
  return wrk.format(nil, "/mcp", nil, body)
end
response = function(status, headers, body)
  if status ~= 200 or string.find(body, '"isError":true', 1, true) or string.find(body, '"error":', 1, true) then
    failures = failures + 1
  end
end
done = function(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + (thread:get("failures") or 0)
  end
  io.write(string.format("FAILED_RESULTS %d\n", total))
end
