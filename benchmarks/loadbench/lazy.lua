-- wrk script of the lazy models' benchmark (lazy.py): POST one row to a model
-- of the bench plugin, lazy-NN, chosen uniformly at random for each request
-- among LOAD_COUNT models from LOAD_FIRST; count the answers that are not 2xx.
--   LOAD_FIRST  number of the first model (default 0)
--   LOAD_COUNT  how many models (default 1: one model, a static request, as post.lua sends)
-- At the end it prints the line post.lua prints, which load.py parses:
--   LOAD_RESULT {"requests": ..., "non_2xx": ..., "p50_us": ..., ...}

local first = tonumber(os.getenv("LOAD_FIRST") or "0")
local count = tonumber(os.getenv("LOAD_COUNT") or "1")

local function path_of(number)
   return string.format("/models/lazy-%02d/predict", number)
end

wrk.method = "POST"
wrk.body = "[[1, 2]]"
wrk.headers["Content-Type"] = "application/json"
wrk.path = path_of(first)

local paths = {}
for index = 1, count do
   paths[index] = path_of(first + index - 1)
end

local threads = {}

function setup(thread)
   thread:set("seed", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   non_2xx = 0
   -- Each thread its own sequence: two threads drawing the same models in step would not be uniform load.
   math.randomseed(os.time() * 1000 + seed)
end

-- Defined only for more than one model: without it wrk sends its one request pre-formatted, as with post.lua,
-- so a single model's latency here compares with the other targets'.
if count > 1 then
   function request()
      return wrk.format(nil, paths[math.random(count)])
   end
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
