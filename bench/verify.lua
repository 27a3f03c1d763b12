-- POST /federation/verify: a verifier's bearer token and a partner's token per line, spread
-- over the seeded tokens; every answer must be {"valid": true, ...} (the JWKS cache is warm).
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
  local bearer, token = lines[counter]:match("([^ ]+) ([^ ]+)")
  local headers = {}
  headers["Authorization"] = "Bearer " .. bearer
  headers["Content-Type"] = "application/json"
  return wrk.format("POST", "/federation/verify", headers, '{"token": "' .. token .. '"}')
end

function response(status, headers, body)
  if status ~= 200 or not body:find('"valid":true', 1, true) then
    io.stderr:write("POST /federation/verify answered " .. status .. ": " .. body .. "\n")
  end
end
