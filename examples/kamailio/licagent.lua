-- licagent.lua: asks the licagent daemon whether a PBX user may work, for
-- Kamailio's app_lua (Debian: kamailio-lua-modules, lua-socket, lua-cjson).
--
-- kamailio.cfg puts the extension into $var(lic_ext) and calls
--
--     lua_run("licagent_check", "/run/licagent/api.sock");
--
-- (lua_run passes its arguments as plain strings, so the extension goes
-- through a script variable). The verdict comes back in script variables:
--
--   $var(lic)       ok           licensed: let the request through
--                   denied       not licensed: answer 403
--                   unknown      licagent has no user with this extension: 404
--                   unreachable  socket missing, connect refused, timeout, or
--                                the agent answered 5xx: 503 + Retry-After
--                   error        the agent refused the question itself (4xx
--                                other than an unknown user): a bug in the
--                                integration, answer 500 and log it
--   $var(lic_text)  denied: the codes the user lacks, comma-separated, or the
--                   reason code when no code is missing (no_profile,
--                   box_unlicensed, ...); other verdicts: a sentence for the log
--   $var(lic_reason) denied: the reason code when the agent sends one, else ""
--
-- The question is `GET /v1/entitlement?extension=EXT` over the Unix socket,
-- HTTP/1.1 with keep-alive: each Kamailio worker process keeps one
-- connection open (the agent closes it after 10 s idle; the helper then
-- reconnects once, transparently). Reading the answer is tolerant on
-- purpose, so that one helper works with every agent version since the
-- entitlement route exists:
--
--   * `licensed` (bool) decides. Anything but a JSON object with a boolean
--     `licensed` is treated like an unreachable agent (503), never as
--     licensed and never as "not licensed".
--   * The 403 text is `missing` (a list of codes) when it is not empty; else
--     the top-level `reason` code; else, for agents that send no top-level
--     reason, the profile's own `reason`, or `no_profile` when the user has
--     no profile.
--   * A 404 is an unknown user when `error.code` is `unknown_user`, or when
--     `error` is a plain sentence (agents before error codes; the path is
--     fixed here, so a 404 there can only mean the user). Any other code
--     (`not_found`: the path is wrong) is an integration error.

local ok_socket, socket = pcall(require, "socket")
local ok_unix, unix = pcall(require, "socket.unix")
local cjson = require("cjson.safe")

-- Seconds for each connect, send and receive. The agent answers from memory
-- in well under a millisecond; this only bounds how long a SIP worker can
-- hang when the agent is stuck, and a stuck agent then gets 503.
local TIMEOUT = 0.5
-- Largest answer read (a user report is a few hundred bytes).
local MAX_BODY = 65536

-- After a timeout (an agent that accepts but does not answer), this worker
-- stops asking for a while and answers "unreachable" at once, so that a
-- stuck agent cannot hold every SIP worker for TIMEOUT per request. The
-- pause doubles from BACKOFF_MIN up to BACKOFF_MAX while timeouts go on;
-- an answer resets it. Refused or missing sockets fail in microseconds and
-- need no pause: the next request simply tries again.
local BACKOFF_MIN, BACKOFF_MAX = 1, 16
local backoff, quiet_until = 0, 0

-- This worker's connection and the socket path it was opened for.
local conn, conn_path = nil, nil

local function close()
    if conn then
        conn:close()
    end
    conn, conn_path = nil, nil
end

local function connect(path)
    if not ok_unix then
        return nil, "lua-socket's socket.unix is not installed"
    end
    -- lua-socket 3.x: socket.unix is a table with stream(); 2.x: a function.
    local new = type(unix) == "table" and unix.stream or unix
    local c, err = new()
    if not c then
        return nil, err
    end
    c:settimeout(TIMEOUT)
    local ok, cerr = c:connect(path)
    if not ok then
        c:close()
        return nil, "connect " .. path .. ": " .. tostring(cerr)
    end
    return c
end

-- Percent-encodes a query value.
local function enc(s)
    return (s:gsub("[^%w%-%._~]", function(ch)
        return string.format("%%%02X", string.byte(ch))
    end))
end

-- Reads one HTTP/1.1 answer: status, lower-cased headers, body.
local function read_response(c)
    local line, err = c:receive("*l")
    if not line then
        return nil, err
    end
    local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
    if not status then
        return nil, "not an HTTP answer: " .. line:sub(1, 80)
    end
    local headers = {}
    while true do
        local h, herr = c:receive("*l")
        if not h then
            return nil, herr
        end
        if h == "" then
            break
        end
        local name, value = h:match("^([^:]+):%s*(.-)%s*$")
        if name then
            headers[name:lower()] = value
        end
    end
    local body = ""
    local len = tonumber(headers["content-length"] or "")
    if len then
        if len > MAX_BODY then
            return nil, "answer too large"
        end
        if len > 0 then
            local b, berr = c:receive(len)
            if not b then
                return nil, berr
            end
            body = b
        end
    elseif (headers["transfer-encoding"] or ""):lower():find("chunked") then
        local parts = {}
        local total = 0
        while true do
            local size_line, serr = c:receive("*l")
            if not size_line then
                return nil, serr
            end
            local size = tonumber(size_line:match("^%x+"), 16)
            if not size then
                return nil, "bad chunk"
            end
            total = total + size
            if total > MAX_BODY then
                return nil, "answer too large"
            end
            if size == 0 then
                -- Trailers, up to the empty line.
                repeat
                    local t = c:receive("*l")
                until not t or t == ""
                break
            end
            local chunk, cerr = c:receive(size)
            if not chunk then
                return nil, cerr
            end
            parts[#parts + 1] = chunk
            c:receive("*l")
        end
        body = table.concat(parts)
        headers["connection"] = headers["connection"] or "keep-alive"
    else
        -- No length: the body ends when the agent closes.
        local b, _, partial = c:receive("*a")
        body = b or partial or ""
        headers["connection"] = "close"
    end
    return status, headers, body
end

-- GET target over the socket at path: status and body, or nil and why.
local function get(path, target)
    local request = "GET " .. target .. " HTTP/1.1\r\nHost: licagent\r\n"
        .. "User-Agent: kamailio-licagent\r\nAccept: application/json\r\n\r\n"
    for attempt = 1, 2 do
        local reused = conn ~= nil and conn_path == path
        if not reused then
            close()
            local c, err = connect(path)
            if not c then
                return nil, err
            end
            conn, conn_path = c, path
        end
        local sent, serr = conn:send(request)
        local status, headers, body
        if sent then
            status, headers, body = read_response(conn)
        else
            headers = serr
        end
        if status then
            if (headers["connection"] or ""):lower() == "close" then
                close()
            end
            return status, body
        end
        local err = tostring(headers)
        close()
        -- A kept connection the agent closed meanwhile: ask again once on a
        -- new one. A timeout is not retried: the agent is stuck.
        if not reused or err == "timeout" or attempt == 2 then
            return nil, err
        end
    end
end

local function set(name, value)
    KSR.pv.sets("$var(" .. name .. ")", value)
end

local function verdict(v, text, reason)
    set("lic", v)
    set("lic_text", text or "")
    set("lic_reason", reason or "")
end

-- The 403 text: the missing codes, else a reason code.
local function denial(report)
    local reason = type(report.reason) == "string" and report.reason or nil
    if type(report.missing) == "table" and #report.missing > 0 then
        local codes = {}
        for _, c in ipairs(report.missing) do
            codes[#codes + 1] = tostring(c)
        end
        return table.concat(codes, ","), reason
    end
    if reason then
        return reason, reason
    end
    if type(report.profile) ~= "table" then
        return "no_profile", ""
    end
    if type(report.profile.reason) == "string" then
        return report.profile.reason, ""
    end
    return "not_licensed", ""
end

-- The error code of an error body: error.code, or nil for the older
-- {"error": "sentence"} shape.
local function error_code(body)
    local doc = cjson.decode(body or "")
    if type(doc) == "table" and type(doc.error) == "table" then
        return tostring(doc.error.code or ""), tostring(doc.error.message or "")
    end
    if type(doc) == "table" and type(doc.error) == "string" then
        return nil, doc.error
    end
    return nil, tostring(body or ""):sub(1, 200)
end

-- Entry point for lua_run: socket path, then the extension in $var(lic_ext).
function licagent_check(socket_path)
    local ext = KSR.pv.get("$var(lic_ext)")
    if type(ext) ~= "string" or ext == "" then
        return verdict("error", "no extension to check")
    end
    local now = ok_socket and socket.gettime() or os.time()
    if now < quiet_until then
        return verdict("unreachable", "licagent timed out recently; asking again in "
            .. string.format("%.1f", quiet_until - now) .. " s")
    end
    local status, body = get(socket_path, "/v1/entitlement?extension=" .. enc(ext))
    if not status then
        if body == "timeout" then
            backoff = math.min(math.max(backoff * 2, BACKOFF_MIN), BACKOFF_MAX)
            quiet_until = now + backoff
        end
        return verdict("unreachable", "licagent unreachable: " .. tostring(body))
    end
    backoff, quiet_until = 0, 0
    if status == 200 then
        local report = cjson.decode(body)
        if type(report) ~= "table" or type(report.licensed) ~= "boolean" then
            return verdict("unreachable", "licagent answered 200 without a boolean 'licensed'")
        end
        if report.licensed then
            return verdict("ok")
        end
        local text, reason = denial(report)
        return verdict("denied", text, reason)
    end
    local code, message = error_code(body)
    if status == 404 and (code == "unknown_user" or code == nil) then
        return verdict("unknown", message)
    end
    if status >= 500 then
        return verdict("unreachable", "licagent answered " .. status .. ": " .. message)
    end
    return verdict("error", "licagent answered " .. status .. " " .. (code or "") .. ": " .. message)
end
