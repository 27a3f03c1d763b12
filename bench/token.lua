-- POST /oauth2/token with client_credentials, spreading requests over the seeded agents.
local credentials = {}
local counter = 0

function init(args)
  for line in io.lines(args[1]) do
    credentials[#credentials + 1] = line
  end
  counter = math.random(#credentials)
end

function request()
  counter = counter % #credentials + 1
  return wrk.format("POST", "/oauth2/token", {
    ["Authorization"] = "Basic " .. credentials[counter],
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, "grant_type=client_credentials")
end

function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("token endpoint answered " .. status .. ": " .. body .. "\n")
  end
end
