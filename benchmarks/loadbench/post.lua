-- wrk script of the benchmark: POST one request over and over and count the
-- answers that are not 2xx (wrk itself counts only socket errors).
--   LOAD_BODY     file holding the request body (may be binary)
--   LOAD_HEADERS  file of request headers, one "Name: value" a line
-- At the end it prints one line for the harness:
--   LOAD_RESULT {"requests": ..., "non_2xx": ..., "p50_us": ..., ...}

local function read_all(path)
   local file = assert(io.open(path, "rb"))
   local content = file:read("*a")
   file:close()
   return content
end

wrk.method = "POST"
wrk.body = read_all(os.getenv("LOAD_BODY"))
for line in io.lines(os.getenv("LOAD_HEADERS")) do
   local name, value = line:match("^([^:]+):%s*(.-)%s*$")
   if name then
      wrk.headers[name] = value
   end
end

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   non_2xx = 0
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      non_2xx = non_2xx + 1
   end
end

function done(summary, latency, requests)
   local non_2xx_total = 0
   for _, thread in ipairs(threads) do
      non_2xx_total = non_2xx_total + thread:get("non_2xx")
   end
   local errors = summary.errors
   io.write(string.format(
      'LOAD_RESULT {"requests": %d, "duration_us": %d, "non_2xx": %d, "connect_errors": %d, ' ..
      '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, ' ..
      '"p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
      summary.requests, summary.duration, non_2xx_total, errors.connect, errors.read,
      errors.write, errors.timeout, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.mean, latency.max))
end
