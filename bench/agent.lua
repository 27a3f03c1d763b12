-- GET /agents/{id} with a bearer token, spreading requests over the seeded agents.
local lines = {}
local counter = 0

function init(args)
  for line in io.lines(args[1]) do
    lines[#lines + 1] = line
  end
  counter = math.random(#lines)
end

function request()
  counter = counter % #lines + 1
  local id, token = lines[counter]:match("([^ ]+) ([^ ]+)")
  return wrk.format("GET", "/agents/" .. id, { ["Authorization"] = "Bearer " .. token })
end

function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("GET /agents/{id} answered " .. status .. ": " .. body .. "\n")
  end
end
