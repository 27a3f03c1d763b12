-- POST /oauth2/token with client_credentials, spreading requests over the seeded agents.
local credentials = {}
local counter = 0
-- The token path: the product's unless BENCH_TOKEN_PATH names the peer's.
local path = os.getenv("BENCH_TOKEN_PATH") or "/oauth2/token"
-- With BENCH_TOKEN_SCOPE, each request asks for that scope (openid: an id_token too).
local scope = os.getenv("BENCH_TOKEN_SCOPE")
local body = "grant_type=client_credentials"
if scope then
  body = body .. "&scope=" .. (scope:gsub(" ", "+"))
end

function init(args)
  for line in io.lines(args[1]) do
    credentials[#credentials + 1] = line
  end
  counter = math.random(#credentials)
end

function request()
  counter = counter % #credentials + 1
  return wrk.format("POST", path, {
    ["Authorization"] = "Basic " .. credentials[counter],
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, body)
end

function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("token endpoint answered " .. status .. ": " .. body .. "\n")
  end
end
