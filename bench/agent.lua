-- GET /agents/{id} with a bearer token, spreading requests over the seeded agents.
local lines = {}
local counter = 0
-- The path before the agent id: the product's /agents/ unless BENCH_PATH_PREFIX says otherwise
-- (the bearer floor).
local prefix = os.getenv("BENCH_PATH_PREFIX") or "/agents/"
-- After the id: nothing, or BENCH_PATH_SUFFIX (/did.json: the public DID document, no token).
local suffix = os.getenv("BENCH_PATH_SUFFIX") or ""
local anonymous = os.getenv("BENCH_ANONYMOUS") == "1"

function init(args)
  for line in io.lines(args[1]) do
    lines[#lines + 1] = line
  end
  counter = math.random(#lines)
end

function request()
  counter = counter % #lines + 1
  local id, token = lines[counter]:match("([^ ]+) ([^ ]+)")
  local headers = {}
  if not anonymous then
    headers["Authorization"] = "Bearer " .. token
  end
  return wrk.format("GET", prefix .. id .. suffix, headers)
end

function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("GET " .. prefix .. "{id}" .. suffix .. " answered " .. status .. ": " .. body .. "\n")
  end
end
