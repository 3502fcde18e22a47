-- wrk script for benches/run.sh: sends pre-signed, distinct SignalWire form callbacks.
--
-- Usage: wrk -t2 -c32 -d15s -s benches/wrk/callbacks.lua URL -- FILE THREADS
--
-- FILE holds one request per line, `<signature><TAB><form body>`, as written by
-- `cargo run --example gen_callbacks` (signed for URL). THREADS must equal wrk's -t.
-- The file is dealt out between threads by thread id: thread k owns the k-th of THREADS
-- equal byte ranges (each line belongs to the range its first byte is in), so no two
-- threads ever send the same body. Each thread cycles through its own lines; if it has to
-- start over, the later requests are duplicates, and done() prints a WARNING.
--
-- Lines are read as they are sent, not loaded up front: wrk starts thread 0 sending while
-- later threads run init(), before it starts its clock, so a slow init() would let thread 0
-- send uncounted-time requests and inflate requests/s. Reading a line and building the
-- request costs well under a microsecond.

local next_id = 0
local threads = {}

-- Runs in the main Lua state, once per thread, before that thread's init().
function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

local file, first, last, pos
local prefix
-- Globals, so that done() can read them through thread:get():
-- requests sent, and the number of distinct lines once this thread had to wrap (else 0).
sent = 0
distinct = 0
local lines_read = 0

function init(args)
   local path = args[1] or os.getenv("CALLBACKS_FILE")
   local nthreads = tonumber(args[2] or os.getenv("WRK_THREADS") or "1")
   if not path then
      error("callbacks.lua: pass the request file: wrk ... -s callbacks.lua URL -- FILE THREADS")
   end
   file = assert(io.open(path, "rb"))
   local size = file:seek("end")
   first = math.floor(size * id / nthreads)
   last = math.floor(size * (id + 1) / nthreads)
   -- Everything before the signature is the same for every request.
   prefix = "POST " .. wrk.path .. " HTTP/1.1\r\n"
      .. "Host: " .. wrk.headers["Host"] .. "\r\n"
      .. "Content-Type: application/x-www-form-urlencoded\r\n"
      .. "X-SignalWire-Signature: "
   rewind()
end

-- Positions the file at the first line that starts inside [first, last).
function rewind()
   if first == 0 then
      file:seek("set", 0)
      pos = 0
   else
      -- The line containing byte first-1 belongs to the previous range (or ends exactly
      -- there, when that byte is the newline): skip it.
      file:seek("set", first - 1)
      local partial = file:read("*l") or ""
      pos = first - 1 + #partial + 1
   end
end

local function next_line()
   if pos < last then
      local line = file:read("*l")
      if line then
         pos = pos + #line + 1
         return line
      end
   end
   return nil
end

function request()
   local line = next_line()
   if not line then
      if distinct == 0 then
         distinct = lines_read
      end
      rewind()
      line = next_line()
      if not line then
         error("callbacks.lua: no requests for thread " .. id)
      end
   end
   lines_read = lines_read + 1
   sent = sent + 1
   local tab = line:find("\t", 1, true)
   local body = line:sub(tab + 1)
   return prefix .. line:sub(1, tab - 1) .. "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
end

-- Runs in the main Lua state after the run.
function done(summary, latency, requests)
   local total_sent, duplicates = 0, 0
   for _, thread in ipairs(threads) do
      local s, d = thread:get("sent"), thread:get("distinct")
      total_sent = total_sent + s
      if d > 0 and s > d then
         duplicates = duplicates + (s - d)
      end
   end
   io.write(string.format("callbacks: %d requests sent, %d of them duplicates\n", total_sent, duplicates))
   if duplicates > 0 then
      io.write("WARNING: the request file wrapped: duplicate requests were sent; generate more lines\n")
   end
end
