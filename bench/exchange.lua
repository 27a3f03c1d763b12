-- POST /oauth2/token with RFC 8693 token exchange between two agents of one organization: the
-- actor authenticates (Basic) and presents a token of another agent as subject_token. Each
-- line of the data file: the actor's Basic credentials and a subject token.
local lines = {}
local counter = 0
local grant = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
local access = "urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token"

function init(args)
  for line in io.lines(args[1]) do
    lines[#lines + 1] = line
  end
  counter = math.random(#lines)
end

function request()
  counter = counter % #lines + 1
  local basic, subject = lines[counter]:match("([^ ]+) ([^ ]+)")
  return wrk.format("POST", "/oauth2/token", {
    ["Authorization"] = "Basic " .. basic,
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, "grant_type=" .. grant .. "&subject_token=" .. subject .. "&subject_token_type=" .. access)
end

function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("token exchange answered " .. status .. ": " .. body .. "\n")
  end
end
