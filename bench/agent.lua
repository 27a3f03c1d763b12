-- GET /agents/{id} with a bearer token, spreading requests over the seeded agents.
local lines = {}
local counter = 0
-- The path before the agent id: the product's /agents/ unless BENCH_PATH_PREFIX says otherwise
-- (the bearer floor).
local prefix = os.getenv("BENCH_PATH_PREFIX") or "/agents/"

function init(args)
  for line in io.lines(args[1]) do
    lines[#lines + 1] = line
  end
  counter = math.random(#lines)
end

function request()
  counter = counter % #lines + 1
  local id, token = lines[counter]:match("([^ ]+) ([^ ]+)")
  return wrk.format("GET", prefix .. id, { ["Authorization"] = "Bearer " .. token })
end

function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("GET " .. prefix .. "{id} answered " .. status .. ": " .. body .. "\n")
  end
end
