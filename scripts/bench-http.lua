-- wrk script for scripts/bench-http: signed-in requests from outside the server.
--
-- BENCH_MODE=get   each request GETs the next path of BENCH_LIST (one path a line).
-- BENCH_MODE=post  section POSTs: BENCH_LIST has "quote-id version" lines, the
--                  quotes' current versions. Each wrk thread takes its own share of
--                  the lines (line i goes to thread i mod BENCH_THREADS), and its
--                  k-th request goes to its quote k mod n with version
--                  base + floor(k / n): with n far above the thread's connections,
--                  two requests to one quote are never in flight together, and each
--                  POST is drawn from the version the one before it left.
--
-- Every request carries the session cookie (BENCH_COOKIE, "name=value") and, when
-- set, BENCH_ENCODING as Accept-Encoding. POSTs also carry the session's CSRF token
-- (BENCH_CSRF), an Origin header (BENCH_ORIGIN, for the cross-site check), a fresh
-- idempotency key (a UUID v7 of the moment, as a drawn form carries) and a new email
-- address each time, so every POST is a real change.

local thread_count = tonumber(os.getenv("BENCH_THREADS") or "1")
local threads = {}

function setup(thread)
   thread:set("thread_index", #threads)
   table.insert(threads, thread)
end

-- An idempotency key as the server draws one into a form: a UUID v7 of the moment
-- (to the second here; wrk's Lua has no finer clock), unique to the run, the thread
-- and the request.
function form_key()
   local millis = os.time() * 1000
   return string.format("%06x%02x-%04x-7%03x-8%03x-%012x",
      math.floor(millis / 2^24), math.floor(millis / 2^16) % 2^8, millis % 2^16,
      thread_index % 2^12, run_bits, sent)
end

function init(args)
   mode = os.getenv("BENCH_MODE") or "get"
   local list = assert(os.getenv("BENCH_LIST"), "BENCH_LIST names the list file")
   local lines = {}
   for line in io.lines(list) do
      if line ~= "" then
         table.insert(lines, line)
      end
   end
   -- Disjoint shares; a GET list shorter than the threads (one path) is everyone's.
   local shared = mode ~= "post" and #lines < thread_count
   items = {}
   for i, line in ipairs(lines) do
      if shared or (i - 1) % thread_count == thread_index then
         table.insert(items, line)
      end
   end
   n = #items
   verifying = thread_index == 0
   assert(n > 0, "thread " .. thread_index .. " has no line of " .. list)
   sent = 0
   headers = { ["Cookie"] = os.getenv("BENCH_COOKIE") }
   local encoding = os.getenv("BENCH_ENCODING")
   if encoding and encoding ~= "" then
      headers["Accept-Encoding"] = encoding
   end
   if mode == "post" then
      ids, versions = {}, {}
      for k, line in ipairs(items) do
         local id, version = line:match("^(%S+)%s+(%d+)$")
         assert(id, "not 'id version': " .. line)
         ids[k] = id
         versions[k] = tonumber(version)
      end
      headers["Content-Type"] = "application/x-www-form-urlencoded"
      headers["Origin"] = os.getenv("BENCH_ORIGIN")
      token = assert(os.getenv("BENCH_CSRF"), "BENCH_CSRF is the session's token")
      run = os.getenv("BENCH_RUN") or tostring(os.time())
      run_bits = tonumber(run:sub(-9, -7)) % 2^12
      -- Responses by status, for the POSTs only: wrk reads a response into Lua only
      -- when this function exists, which costs the GETs' load generator time.
      statuses = {}
      response = function(status, headers, body)
         statuses[status] = (statuses[status] or 0) + 1
      end
   end
end

function done(summary, latency, requests)
   local total = {}
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses") or {}) do
         total[status] = (total[status] or 0) + count
      end
   end
   local line = {}
   for status, count in pairs(total) do
      table.insert(line, status .. "=" .. count)
   end
   if #line > 0 then
      table.sort(line)
      print("Statuses: " .. table.concat(line, " "))
   end
end

function request()
   if verifying then
      -- wrk calls thread 1's request() once before the run, to check what it returns,
      -- and never sends that request: it must not use up a quote's version.
      verifying = false
      return wrk.format("GET", "/healthz", headers)
   end
   local k = sent % n + 1
   local round = math.floor(sent / n)
   sent = sent + 1
   if mode ~= "post" then
      return wrk.format("GET", items[k], headers)
   end
   local tag = run .. "-" .. thread_index .. "-" .. sent
   local body = "csrf_token=" .. token
      .. "&version=" .. (versions[k] + round)
      .. "&idempotency_key=" .. form_key()
      .. "&email=bench." .. tag .. "%40example.com"
      .. "&phone=%2B44+7700+900123"
   return wrk.format("POST", "/quotes/" .. ids[k] .. "/contact", headers, body)
end
