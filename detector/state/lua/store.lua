-- The Redis store's one script (see detector/state/redis.py for the key layout and the round trips).
-- One script, so it is either loaded or not: a pipeline never finds half of the store's scripts missing.
-- Every call touches the keys of one hash tag ({shard}) only, all of them declared in KEYS.
local op = ARGV[1]

local function fetch()
  local values = {}
  local n = #KEYS
  for first = 1, n, 512 do
    local last = math.min(first + 511, n)
    local chunk = redis.call('MGET', unpack(KEYS, first, last))
    for j = 1, #chunk do values[first + j - 1] = chunk[j] end
  end
  return values
end

-- request records, one string each: resolved ('0'/'1'), ts, '\n', entity keys (JSON), '\n', decision.
-- SET on creation (with the TTL), SETRANGE to resolve, SET KEEPTTL to remember a decision.
-- `verdicts` (a fused call): what each claim turned out to be, for its entity operations: 0 new, 1 a
-- redelivery (not counted), 2 a reused request id (counted without a send slot).
local function records(values, op, ops, ttl, ttl_ms, verdicts)
  local parsed = {}
  local function record(k)
    local rec = parsed[k]
    if rec == nil then
      local v = values[k]
      if v then
        local a = string.find(v, '\n', 2, true)
        local b = string.find(v, '\n', a + 1, true)
        rec = {string.byte(v, 1) == 49, tonumber(string.sub(v, 2, a - 1)), string.sub(v, 2, a - 1),
               string.sub(v, a + 1, b - 1), string.sub(v, b + 1)}
      else
        rec = false
      end
      parsed[k] = rec
    end
    return rec
  end
  local out, o = {}, 0
  if op == 'R' then
    -- remember decisions. ARGV: 'R', (record key index, challenge key index or 0, expiry as text) of each
    -- (msgpack, flat), record_ttl (ms), then the decision of each (binary, so not in the msgpack: Redis's
    -- cmsgpack has no bin type). The record is rewritten whole (SET KEEPTTL) rather than APPENDed to, which
    -- would leave its string over-allocated. A challenge key holds its expiry (event time) until a result
    -- takes it ('done').
    local entries = ops
    for j = 1, #entries, 3 do
      local k = entries[j]
      local rec = record(k)
      if rec and rec[5] == '' then
        local decision = ARGV[3 + (j + 2) / 3]
        rec[5] = decision
        values[k] = values[k] .. decision
        redis.call('SET', KEYS[k], values[k], 'KEEPTTL')
        if entries[j + 1] ~= 0 then
          redis.call('SET', KEYS[entries[j + 1]], entries[j + 2], 'PX', ARGV[3])
        end
      end
    end
    return out
  end
  -- claim (1, k, ts, record), resolve (2, k, ts, resolved 1/0) and a challenge's result (3, k, ts,
  -- fingerprint or '', challenge key index) in batch order.
  -- ARGV: 'Q', operations (msgpack, flat), record_ttl (s), record_ttl (ms).
  -- Answers, flat, in order: a claim 0 (new) or 1, the stored decision (false for none) and the record's
  -- entity keys (with the request's fingerprint, which the client compares); a resolution
  -- 0 (unknown), 1 (failed), 2 (duplicate), or 3, the record's time and its entity keys (applied); a
  -- challenge's result 0 (no open challenge), 2 (already taken), 4 (expired), 5 (another request's
  -- fingerprint), or 3 and the record's entity keys (applied).
  local j, claims = 1, 0
  while j <= #ops do
    local k, ts = ops[j + 1], ops[j + 2]
    local rec = record(k)
    local code = ops[j]
    j = j + (code == 3 and 5 or 4)
    if code == 3 then
      local kc = ops[j - 1]
      local open = values[kc]
      local fingerprint = ops[j - 2]
      local recorded = rec and fingerprint ~= '' and cjson.decode(rec[4])['#fp']
      if not rec or rec[2] + ttl <= ts or not open then
        o = o + 1
        out[o] = 0
      elseif recorded and recorded ~= fingerprint then
        o = o + 1
        out[o] = 5
      elseif open == 'done' then
        o = o + 1
        out[o] = 2
      else
        values[kc] = 'done'
        redis.call('SET', KEYS[kc], 'done', 'KEEPTTL')
        if ts > tonumber(open) then
          o = o + 1
          out[o] = 4
        else
          out[o + 1], out[o + 2] = 3, rec[4]
          o = o + 2
        end
      end
    elseif code == 1 then
      claims = claims + 1
      if rec and rec[2] + ttl > ts then
        out[o + 1] = 1
        out[o + 2] = rec[5] ~= '' and rec[5]
        out[o + 3] = rec[4]
        o = o + 3
        if verdicts then  -- the client's rule: a record with no fingerprint, or this one, is a redelivery
          local recorded = cjson.decode(rec[4])['#fp']
          local claiming = cjson.decode(string.match(ops[j - 1], '\n(.*)\n'))['#fp'] or ''
          verdicts[claims] = (recorded == nil or recorded == '' or recorded == claiming) and 1 or 2
        end
      else
        redis.call('SET', KEYS[k], ops[j - 1], 'PX', ttl_ms)
        values[k] = ops[j - 1]
        parsed[k] = nil
        o = o + 1
        out[o] = 0
        if verdicts then verdicts[claims] = 0 end
      end
    elseif not rec or rec[2] + ttl <= ts then
      o = o + 1
      out[o] = 0
    elseif ops[j - 1] ~= 1 then
      o = o + 1
      out[o] = 1
    elseif rec[1] then
      o = o + 1
      out[o] = 2
    else
      rec[1] = true
      values[k] = '1' .. string.sub(values[k], 2)
      redis.call('SETRANGE', KEYS[k], 0, '1')
      out[o + 1], out[o + 2], out[o + 3] = 3, rec[3], rec[4]
      o = o + 3
    end
  end
  return out
end

if op == 'Q' then return records(fetch(), op, cmsgpack.unpack(ARGV[2]), tonumber(ARGV[3]), ARGV[4]) end
if op == 'R' then return records(fetch(), op, cmsgpack.unpack(ARGV[2])) end

if op == 'L' then
  -- lift the quarantine of every key (ARGV: 'L'); answer 1 for each key that had one, else 0.
  local out = {}
  for k = 1, #KEYS do
    local v = redis.call('GET', KEYS[k])
    local state = v and cmsgpack.unpack(v)
    if state and state.Q then
      state.Q = nil
      redis.call('SET', KEYS[k], cmsgpack.pack(state), 'KEEPTTL')
      out[k] = 1
    else
      out[k] = 0
    end
  end
  return out
end

if op ~= 'E' and op ~= 'F' then return redis.error_reply('unknown op ' .. tostring(op)) end

-- entities. ARGV: 'E', the dimension index of each key (msgpack), operations (msgpack, flat, batch order),
-- configuration (msgpack): {limit, limit seconds, limit buckets, distinct window, then per dimension
-- {ttl (ms), refresh (s), n, quarantinable (1/0), seconds, buckets, peak (1/0) of each of its n windows,
-- then seconds, buckets of each of its windows of challenges passed}, and last {forget after, ttl of the 1st
-- offence, of the 2nd, ...} of quarantines}.
-- operation: key index, code, event time ts, then for code 5 the member, for code 7 the label:
--   1  count a request in every window; answer requests, verified (and the peak) of each, then the
--      challenges passed in each pass window, then (quarantinable) the end and the offences of its last
--      quarantine, or 0, 0
--   2  count a verification in every window
--   3  answer the previous request time (false for none), keep the latest
--   4  as 3, then take a send-limit slot if one is free; answer taken (1/0) and the slots used
--   5  add the distinct member seen at ts; answer how many were seen after ts - distinct window
--   6  count a challenge passed in every pass window; answer the passes of each
--   7  an offence: quarantine it (unless it is), for the next TTL of the ladder when the last quarantine
--      ended less than `forget after` ago, else the first (CounterPlan.next_quarantine); answer its end
-- A bucket is floor(ts / (seconds / buckets)), the same IEEE double operations as `Window.bucket`.
-- state: {[seconds] = window, L = send-limit window, p = previous time, d = {member, ts, member, ts, ...},
--         P = {[seconds] = window of challenges passed (counted as requests)},
--         Q = {until, offences, since, label} of its quarantine, e = server time (s) its TTL was last set}
-- window: {buckets B, head, requests, verified, then bucket, requests, verified of every kept bucket};
-- buckets older than head - B are dropped, as in detector.windows.BucketCounter.
-- Each key is read (MGET) and decoded once, and encoded and written (SET) once, per call.

local function advance(w, b)
  if b <= w[2] then return end
  w[2] = b
  local oldest = b - w[1]
  local n = #w
  local stale = false
  for c = 5, n, 3 do
    if w[c] < oldest then
      stale = true
      break
    end
  end
  if not stale then return end
  local j = 5
  for c = 5, n, 3 do
    if w[c] < oldest then
      w[3] = w[3] - w[c + 1]
      w[4] = w[4] - w[c + 2]
    else
      w[j], w[j + 1], w[j + 2] = w[c], w[c + 1], w[c + 2]
      j = j + 3
    end
  end
  for c = n, j, -1 do w[c] = nil end
end

local function add(w, b, dr, dv)
  advance(w, b)
  if b < w[2] - w[1] then b = w[2] - w[1] end  -- too late for its own bucket: the oldest kept one
  w[3] = w[3] + dr
  w[4] = w[4] + dv
  local n = #w
  for c = n - 2, 5, -3 do  -- newest first: nearly every event lands in the newest bucket
    if w[c] == b then
      w[c + 1] = w[c + 1] + dr
      w[c + 2] = w[c + 2] + dv
      return
    end
  end
  w[n + 1], w[n + 2], w[n + 3] = b, dr, dv
end

local function peak(w)
  local best = 0
  for c = 7, #w, 3 do
    if w[c] > best then best = w[c] end
  end
  return best
end

local floor = math.floor

-- `base`: how many KEYS (records, in a fused call) come before the entities' (key indices count from it);
-- `owners` and `verdicts` (a fused call): the claim of each operation, and what each claim turned out to be.
local function entities(values, base, dims, ops, cfg, owners, verdicts)
  local limit, limit_buckets, distinct_window = cfg[1], cfg[3], cfg[4]
  local limit_width = cfg[2] / limit_buckets
  local quarantine = cfg[#cfg]
  local states, touched = {}, {}
  local out, o = {}, 0
  local p, total, m = 1, #ops, 0
  while p <= total do
    local k, code, ts = ops[p], ops[p + 1], ops[p + 2]
    p = p + 3
    m = m + 1
    local verdict = verdicts and verdicts[owners[m]] or 0
    if verdict == 1 then  -- a redelivery: not counted
      if code == 5 or code == 7 then p = p + 1 end
    else
      if verdict == 2 and code == 4 then code = 3 end  -- a reused request id takes no send slot
      local state = states[k]
      if state == nil then
        local v = values[base + k]
        if v then state = cmsgpack.unpack(v) else state = {} end
        states[k] = state
        touched[#touched + 1] = k
      end
      if code == 1 or code == 2 then
        local c = cfg[4 + dims[k]]
        local last = 4 + 3 * c[3]
        for w = 5, last, 3 do
          local seconds, buckets = c[w], c[w + 1]
          local b = floor(ts / (seconds / buckets))
          local s = state[seconds]
          if s == nil or s[1] ~= buckets then
            s = {buckets, b, 0, 0}
            state[seconds] = s
          end
          if code == 1 then
            add(s, b, 1, 0)
            out[o + 1], out[o + 2] = s[3], s[4]
            o = o + 2
            if c[w + 2] == 1 then
              o = o + 1
              out[o] = peak(s)
            end
          else
            add(s, b, 0, 1)
          end
        end
        if code == 1 then
          for w = last + 1, #c, 2 do
            local passed = state.P and state.P[c[w]]
            if passed and passed[1] == c[w + 1] then
              advance(passed, floor(ts / (c[w] / c[w + 1])))
              o = o + 1
              out[o] = passed[3]
            else
              o = o + 1
              out[o] = 0
            end
          end
          if c[4] == 1 then
            local q = state.Q
            out[o + 1], out[o + 2] = q and q[1] or 0, q and q[2] or 0
            o = o + 2
          end
        end
      elseif code == 6 then
        local c = cfg[4 + dims[k]]
        local passes = state.P or {}
        state.P = passes
        for w = 5 + 3 * c[3], #c, 2 do
          local seconds, buckets = c[w], c[w + 1]
          local b = floor(ts / (seconds / buckets))
          local s = passes[seconds]
          if s == nil or s[1] ~= buckets then
            s = {buckets, b, 0, 0}
            passes[seconds] = s
          end
          add(s, b, 1, 0)
          o = o + 1
          out[o] = s[3]
        end
      elseif code == 7 then
        local label = ops[p]
        p = p + 1
        local q = state.Q
        if not (q and q[1] > ts) then
          local offences = (q and ts - q[1] < quarantine[1]) and q[2] or 0
          offences = offences + 1
          local ttl = quarantine[1 + math.min(offences, #quarantine - 1)]
          state.Q = {ts + ttl, offences, ts, label}
        end
        o = o + 1
        out[o] = state.Q[1]
      elseif code == 3 or code == 4 then
        local previous = state.p
        if previous == nil or ts > previous then state.p = ts end
        o = o + 1
        out[o] = previous or false
        if code == 4 then
          local b = floor(ts / limit_width)
          local s = state.L
          if s == nil or s[1] ~= limit_buckets then
            s = {limit_buckets, b, 0, 0}
            state.L = s
          end
          advance(s, b)
          local used = s[3]
          if used < limit then
            add(s, b, 1, 0)
            out[o + 1], out[o + 2] = 1, used + 1
          else
            out[o + 1], out[o + 2] = 0, used
          end
          o = o + 2
        end
      elseif code == 5 then
        local member, horizon = ops[p], ts - distinct_window
        p = p + 1
        local seen = state.d or {}
        local kept = {}
        local found = false
        for j = 1, #seen, 2 do
          local m, t = seen[j], seen[j + 1]
          if m == member then
            found = true
            if ts > t then t = ts end
          end
          if t > horizon then
            kept[#kept + 1] = m
            kept[#kept + 1] = t
          end
        end
        if not found and ts > horizon then
          kept[#kept + 1] = member
          kept[#kept + 1] = ts
        end
        state.d = kept
        o = o + 1
        out[o] = #kept / 2
      else
        return redis.error_reply('unknown entity operation ' .. tostring(code))
      end
    end
  end
  -- The TTL is set (PX) when a key is created and again once `refresh` seconds of wall-clock time have
  -- passed since it last was (kept in the state as e); every other write keeps it (KEEPTTL), which costs
  -- Redis half as much.
  local now = tonumber(redis.call('TIME')[1])
  for j = 1, #touched do
    local k = touched[j]
    local state, c = states[k], cfg[4 + dims[k]]
    local e = state.e
    if e and now - e < c[2] and now >= e then
      redis.call('SET', KEYS[base + k], cmsgpack.pack(state), 'KEEPTTL')
    else
      state.e = now
      redis.call('SET', KEYS[base + k], cmsgpack.pack(state), 'PX', c[1])
    end
  end
  return cmsgpack.pack(out)
end

if op == 'E' then
  return entities(fetch(), 0, cmsgpack.unpack(ARGV[2]), cmsgpack.unpack(ARGV[3]), cmsgpack.unpack(ARGV[4]))
end
-- fused (one server, a batch of requests only): a chunk's claims, then the entity operations of the claims
-- that count, in one call. ARGV: 'F', claims and record TTLs as for 'Q', the number of record keys (they come
-- first in KEYS), then dimensions, operations and configuration as for 'E', and the claim (its position among
-- the claims) of each operation. Answers: those of the claims, then the entity answers (msgpack) of what
-- counted.
local values = fetch()
local verdicts = {}
local out = records(values, 'Q', cmsgpack.unpack(ARGV[2]), tonumber(ARGV[3]), ARGV[4], verdicts)
local counted = entities(values, tonumber(ARGV[5]), cmsgpack.unpack(ARGV[6]), cmsgpack.unpack(ARGV[7]),
                         cmsgpack.unpack(ARGV[9]), cmsgpack.unpack(ARGV[8]), verdicts)
if type(counted) == 'table' then return counted end  -- an error
out[#out + 1] = counted
return out
