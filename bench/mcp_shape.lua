-- One MCP tools/call of TOOL with the JSON arguments ARGS per request, each with its own JSON-RPC id
-- (bench/shapes.py). MODE=modern: a 2026-07-28 request; MODE=legacy: a 2025-11-25 request in the
-- session SESSION. PROGRESS=1: the request carries a progressToken in _meta (a new one per call), so
-- a tool that reports progress answers with SSE.
-- Every answer is checked, as bench/shapes.py's startup check does in Python (`expected`): status
-- 200, a Content-Type starting with EXPECT, at least MIN_BYTES of body, HEAD (when set) within its
-- first 64 bytes, and each of NEEDLES ("|"-separated, when set) somewhere in it. Large answers are
-- checked at their size and head only (a JSON-RPC error or a failed tool is small), small ones all
-- through. Prints ANSWERS with the counts, FAILED_RESULTS (answers not as expected) and the first
-- such answer's status, type and length (FIRST_FAILURE).
local mode = os.getenv("MODE") or "modern"
local session = os.getenv("SESSION")
local tool = os.getenv("TOOL")
local args = os.getenv("ARGS") or "{}"
local progress = os.getenv("PROGRESS") == "1"
local expect = os.getenv("EXPECT") or "application/json"
local min_bytes = tonumber(os.getenv("MIN_BYTES") or "0")
local head = os.getenv("HEAD") or ""
local needles = {}
for needle in string.gmatch(os.getenv("NEEDLES") or "", "[^|]+") do
  table.insert(needles, needle)
end
local counter = 0
expected, unexpected, first_failure = 0, 0, ""  -- globals: done() reads each thread's copy with thread:get()
local threads = {}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
if mode == "modern" then
  wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
  wrk.headers["Mcp-Method"] = "tools/call"
  wrk.headers["Mcp-Name"] = tool
else
  wrk.headers["MCP-Protocol-Version"] = "2025-11-25"
  wrk.headers["Mcp-Session-Id"] = session
end
function setup(thread)
  table.insert(threads, thread)
end
request = function()
  counter = counter + 1
  local meta = {}
  if mode == "modern" then
    table.insert(meta, '"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}')
  end
  if progress then
    table.insert(meta, '"progressToken":' .. counter)
  end
  local extra = ""
  if #meta > 0 then extra = ',"_meta":{' .. table.concat(meta, ",") .. '}' end
  local body = '{"jsonrpc":"2.0","id":' .. counter .. ',"method":"tools/call","params":{"name":"' .. tool ..
    '","arguments":' .. args .. extra .. '}}'
  return wrk.format(nil, "/mcp", nil, body)
end
local function content_type(headers)
  for name, value in pairs(headers) do
    if string.lower(name) == "content-type" then return value end
  end
  return ""
end
response = function(status, headers, body)
  local kind = content_type(headers)
  local ok = status == 200 and string.sub(kind, 1, #expect) == expect and #body >= min_bytes
  if ok and head ~= "" then
    ok = string.find(string.sub(body, 1, 64), head, 1, true) ~= nil
  end
  if ok then
    for _, needle in ipairs(needles) do
      if not string.find(body, needle, 1, true) then ok = false break end
    end
  end
  if ok then
    expected = expected + 1
  else
    unexpected = unexpected + 1
    if first_failure == "" then
      local start = string.gsub(string.sub(body, 1, 200), "%c", " ")  -- one line: done() prints it as one
      first_failure = string.format("status %d, content-type %s, %d bytes: %s", status, kind, #body, start)
    end
  end
end
done = function(summary, latency, requests)
  local e, u, first = 0, 0, ""
  for _, thread in ipairs(threads) do
    e = e + (thread:get("expected") or 0)
    u = u + (thread:get("unexpected") or 0)
    if first == "" then first = thread:get("first_failure") or "" end
  end
  io.write(string.format("ANSWERS expected %d unexpected %d\n", e, u))
  io.write(string.format("FAILED_RESULTS %d\n", u))
  if first ~= "" then io.write("FIRST_FAILURE " .. first .. "\n") end
end
