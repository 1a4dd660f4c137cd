
/*
 * Copyright (C) timpush authors
 *
 * The Redis store: one pipelined connection per worker (redis.c owns its
 * life: connect, TLS, AUTH, reconnect with backoff), and a second one for
 * the async reader's blocking reads.  On a Redis Cluster, one per master
 * instead, each command sent by store_cluster.c to the master of its
 * keys' slot (every key of one call in the same slot).  Every command
 * has a deadline on an nginx timer; a reply that comes after it is
 * dropped.
 *
 * A user's devices are one hash, "<prefix>:u:{<user>}"; each token has a
 * reverse index, "<prefix>:t:{<token>}" (owner.c); each msg_id a hash of
 * the devices it went to, "<prefix>:m:{<msg_id>}" (push.c).  They are
 * changed by Lua scripts (EVALSHA, with EVAL when Redis has forgotten the
 * script): atomic, one round trip each; the msg_id's marks by plain HSET
 * too.
 *
 * On a Redis Cluster, a write whose success a caller is told (a device
 * registered or removed, a push queued) is answered once WAIT, sent after
 * it on the same connection, says that the master's replicas have it
 * (wait=): a failover then promotes a replica that has it.
 */


#include "ngx_http_timpush.h"
#include "ngx_http_timpush_metrics.h"
#include "ngx_http_timpush_store_cluster.h"

#include <openssl/sha.h>


/*
 * WAIT's own timeout ends this much before the command's deadline: Redis
 * looks at a blocked client's timeout on its clock tick (100 ms at its
 * default hz 10), and its answer, not the deadline, is to tell the caller.
 */
#define NGX_HTTP_TIMPUSH_STORE_WAIT_MARGIN  200


struct ngx_http_timpush_store_cmd_s {
    ngx_http_timpush_redis_req_t         req;
    ngx_event_t                          deadline;
    struct ngx_http_timpush_store_s     *st;
    ngx_msec_t                           timeout;
    ngx_http_timpush_store_handler_pt    handler;
    void                                *data;
    ngx_msec_t                           sent;
    ngx_http_timpush_script_e            script;
    int                                  argc;
    const char                         **argv;
    size_t                              *argvlen;
    ngx_http_timpush_store_route_t       route;    /* on a Cluster */
    ngx_http_timpush_redis_req_t         wait;     /* WAIT, after it */
    redisReply                          *reply;    /* kept until WAIT's */
    ngx_uint_t                           replicas; /* WAIT asked for */
    ngx_msec_t                           waited;   /* WAIT's timeout */
    unsigned                             answered:1;
    unsigned                             counted:1; /* in st->pending */
    unsigned                             replicate:1; /* WAIT on a Cluster */
};


typedef struct ngx_http_timpush_store_s {
    ngx_http_timpush_redis_t            *rd;
    ngx_http_timpush_store_cluster_t    *cluster;  /* or that */
    ngx_http_timpush_redis_conf_t       *conf;
    ngx_log_t                           *log;
    ngx_uint_t                           pending;
    ngx_uint_t                           exiting;
    ngx_uint_t                           blocking;  /* the async reader's */
    u_char                               sha[NGX_HTTP_TIMPUSH_SCRIPT_LAST]
                                             [SHA_DIGEST_LENGTH * 2];
} ngx_http_timpush_store_t;


static void ngx_http_timpush_store_state(void *data, ngx_uint_t up,
    const char *error);
static ngx_int_t ngx_http_timpush_store_send(ngx_http_timpush_store_t *st,
    ngx_http_timpush_store_cmd_t *cmd, ngx_uint_t eval);
static void ngx_http_timpush_store_reply(ngx_http_timpush_redis_req_t *req,
    redisReply *reply);
static void ngx_http_timpush_store_deadline_handler(ngx_event_t *ev);
static void ngx_http_timpush_store_answer(ngx_http_timpush_store_cmd_t *cmd,
    redisReply *reply, ngx_int_t rc);
static void ngx_http_timpush_store_free_cmd(
    ngx_http_timpush_store_cmd_t *cmd);
static void ngx_http_timpush_store_uncount(ngx_http_timpush_store_cmd_t *cmd);
static ngx_int_t ngx_http_timpush_store_make_key(ngx_pool_t *pool,
    u_char kind, ngx_str_t *name, ngx_str_t *key);
static ngx_http_timpush_store_t *ngx_http_timpush_store_make(
    ngx_cycle_t *cycle, ngx_http_timpush_main_conf_t *tmcf,
    ngx_uint_t blocking);
static void ngx_http_timpush_store_close(ngx_http_timpush_store_t *st);
static void ngx_http_timpush_store_error(ngx_http_timpush_store_t *st,
    const char *kind);
static ngx_http_timpush_store_cmd_t *ngx_http_timpush_store_alloc(
    ngx_http_timpush_store_t *st, ngx_uint_t argc, size_t extra,
    ngx_str_t *a, ngx_uint_t na, ngx_str_t *b, ngx_uint_t nb,
    ngx_http_timpush_store_handler_pt handler, void *data, u_char **pp);
static u_char *ngx_http_timpush_store_copy(ngx_http_timpush_store_cmd_t *cmd,
    ngx_uint_t i, u_char *p, ngx_str_t *s, ngx_uint_t n);
static ngx_int_t ngx_http_timpush_store_queue(ngx_http_timpush_store_t *st,
    ngx_http_timpush_store_cmd_t *cmd, ngx_msec_t timeout,
    ngx_http_timpush_store_cmd_t **cmdp);
static ngx_int_t ngx_http_timpush_store_ready(ngx_http_timpush_store_t *st);
static ngx_int_t ngx_http_timpush_store_make_tags(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_timpush_store_slot(ngx_http_timpush_store_t *st,
    ngx_http_timpush_store_cmd_t *cmd, ngx_str_t *keys, ngx_uint_t nkeys);
static void ngx_http_timpush_store_route_fail(
    ngx_http_timpush_store_route_t *sr, ngx_int_t rc);
static ngx_uint_t ngx_http_timpush_store_acknowledged(
    ngx_http_timpush_script_e script);
static ngx_int_t ngx_http_timpush_store_replicate(
    ngx_http_timpush_store_t *st, ngx_http_timpush_store_cmd_t *cmd,
    redisReply *reply);
static void ngx_http_timpush_store_replicated(
    ngx_http_timpush_redis_req_t *req, redisReply *reply);


static ngx_http_timpush_store_t  *ngx_http_timpush_store;
static ngx_http_timpush_store_t  *ngx_http_timpush_store_blocking;

/* on a Cluster: for each slot a short hash tag in it (msg_id marks) */
static u_char                   (*ngx_http_timpush_store_tags)[8];


/*
 * The hash of a user: t:<token> = business_id, r:<token> = registration
 * time (ms), b:<token> = badge, f:<token> = 1 while in the foreground.
 */

static ngx_str_t  ngx_http_timpush_scripts[] = {

    /* REGISTER token business_id now_ms max_per_app -> {kicked tokens} */
    ngx_string(
    "local k, tok, biz = KEYS[1], ARGV[1], ARGV[2]\n"
    "local max = tonumber(ARGV[4])\n"
    "if redis.call('HEXISTS', k, 't:' .. tok) == 0 then\n"
    "  redis.call('HSET', k, 'b:' .. tok, 0)\n"
    "end\n"
    "redis.call('HSET', k, 't:' .. tok, biz, 'r:' .. tok, ARGV[3])\n"
    "local all = redis.call('HGETALL', k)\n"
    "local reg, same = {}, {}\n"
    "for i = 1, #all, 2 do\n"
    "  local f = all[i]\n"
    "  if string.sub(f, 1, 2) == 'r:' then\n"
    "    reg[string.sub(f, 3)] = tonumber(all[i + 1]) or 0\n"
    "  elseif string.sub(f, 1, 2) == 't:' and all[i + 1] == biz\n"
    "         and string.sub(f, 3) ~= tok then\n"
    "    same[#same + 1] = string.sub(f, 3)\n"
    "  end\n"
    "end\n"
    "local kicked = {}\n"
    "if #same + 1 > max then\n"
    "  table.sort(same, function(a, b)\n"
    "    if reg[a] ~= reg[b] then return (reg[a] or 0) < (reg[b] or 0) end\n"
    "    return a < b\n"
    "  end)\n"
    "  for i = 1, #same + 1 - max do\n"
    "    local t = same[i]\n"
    "    redis.call('HDEL', k, 't:' .. t, 'r:' .. t, 'b:' .. t, 'f:' .. t)\n"
    "    kicked[#kicked + 1] = t\n"
    "  end\n"
    "end\n"
    "return kicked\n"),

    /* UNREGISTER token -> its business_id (a string) | 0 */
    ngx_string(
    "local t = ARGV[1]\n"
    "local biz = redis.call('HGET', KEYS[1], 't:' .. t)\n"
    "if not biz then\n"
    "  return 0\n"
    "end\n"
    "redis.call('HDEL', KEYS[1], 't:' .. t, 'r:' .. t, 'b:' .. t, 'f:' .. t)\n"
    "return biz\n"),

    /* LIST -> the whole hash */
    ngx_string(
    "return redis.call('HGETALL', KEYS[1])\n"),

    /* LOGOUT [token] -> {token, business_id, ...} of the devices removed */
    ngx_string(
    "local t = ARGV[1]\n"
    "if t ~= '' then\n"
    "  local biz = redis.call('HGET', KEYS[1], 't:' .. t)\n"
    "  if not biz then\n"
    "    return {}\n"
    "  end\n"
    "  redis.call('HDEL', KEYS[1], 't:' .. t, 'r:' .. t, 'b:' .. t,\n"
    "             'f:' .. t)\n"
    "  return {t, biz}\n"
    "end\n"
    "local out, all = {}, redis.call('HGETALL', KEYS[1])\n"
    "for i = 1, #all, 2 do\n"
    "  local f = all[i]\n"
    "  if string.sub(f, 1, 2) == 't:' then\n"
    "    out[#out + 1] = string.sub(f, 3)\n"
    "    out[#out + 1] = all[i + 1]\n"
    "  end\n"
    "end\n"
    "redis.call('DEL', KEYS[1])\n"
    "return out\n"),

    /* BACKGROUND token unread -> 1 | 0 (no such device) */
    ngx_string(
    "local t = ARGV[1]\n"
    "if redis.call('HEXISTS', KEYS[1], 't:' .. t) == 0 then\n"
    "  return 0\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'b:' .. t, ARGV[2])\n"
    "redis.call('HDEL', KEYS[1], 'f:' .. t)\n"
    "return 1\n"),

    /* FOREGROUND token -> 1 | 0 (no such device) */
    ngx_string(
    "local t = ARGV[1]\n"
    "if redis.call('HEXISTS', KEYS[1], 't:' .. t) == 0 then\n"
    "  return 0\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'f:' .. t, 1)\n"
    "return 1\n"),

    /*
     * PUSH inc [msg_id now until cutoff ttl owner] -> for each user key,
     * that user's hash as HGETALL gives it (field, value, ...), followed
     * by n:<token>, the new badge (an integer), for every device not in
     * the foreground whose badge is counted here; nil for a key that is
     * not a hash.  A badge that is not a number starts again at 1.
     * Several users per call, and Redis's work kept small: pairing,
     * ordering and checking the fields is done by the caller (push.c).
     *
     * With a msg_id (DESIGN §12) the keys are the users' hashes, then the
     * msg_id's marks, "<prefix>:m:{<msg_id>}": a hash.  Each call claims
     * the devices it sends as one claim, numbered by the hash's field "n":
     * field "<token>:<user key>" = -(claim * 2^20 + i), i the device's
     * place in the claim (from 1), and field "l:<claim>" =
     * "<now>:<until>:0": its devices being sent until "until" (ms).  The
     * caller rewrites the states as APNs answers, one digit per device, 0
     * being sent, 1 sent, 2 failed (one field per batch of users, not one
     * per device); a single digit is every device's.  A device sent, or
     * being sent by a push still within its time, is a duplicate:
     * d:<token> = 1, nothing counted.  Any other is claimed; its badge is
     * counted only the first time.  Marks older than "cutoff" (ms) count
     * as absent; the key lives "ttl" ms after its last claim.  The reply
     * ends with the claim's number (0: none) and its count of devices.
     *
     * Field "o" is the push that made the key ("owner", unique per push):
     * while every claim in it is that push's own, its devices cannot have
     * marks yet, and its calls claim them without looking, as one field
     * "c:<claim>" = "<token>:<user key>\n..." in their places instead of
     * a field per device (the cost of a msg_id, DESIGN §12).  Any other
     * push, or a key without "o" (an earlier version's), first turns those
     * lists into a field per device (a device with a mark of its own
     * keeps it), then sets "o" to "": from then on every call looks.
     * Marks of earlier versions are read too: a device's own mark, 4 * ms
     * + state (0 sent at ms, 1 being sent until ms, 2 failed at ms), and
     * a claim's number alone (its "l:" one digit for all).
     */
    ngx_string(
    "local inc, res, msg = ARGV[1] == '1', {}, ARGV[2]\n"
    "local n, nd, mb, js, ts, id = #KEYS, 0, {}, {}, {}, 0\n"
    "local now, cutoff, m, own, new\n"
    "if msg then\n"
    "  n, now, cutoff = n - 1, tonumber(ARGV[3]), tonumber(ARGV[5])\n"
    "  m = KEYS[n + 1]\n"
    "  local o = redis.call('HMGET', m, 'o', 'n')\n"
    "  if o[1] == ARGV[7] then\n"
    "    own = true\n"
    "  elseif not o[1] and redis.call('EXISTS', m) == 0 then\n"
    "    own, new = true, true\n"
    "  elseif o[1] ~= '' then\n"
    "    for c = 1, tonumber(o[2]) or 0, 100 do\n"
    "      local cs = {}\n"
    "      for k = c, math.min(c + 99, tonumber(o[2])) do\n"
    "        cs[#cs + 1] = 'c:' .. k\n"
    "      end\n"
    "      local ls = redis.call('HMGET', m, unpack(cs))\n"
    "      for q = 1, #cs do\n"
    "        if ls[q] then\n"
    "          local fs, base = {}, tonumber(string.sub(cs[q], 3)) * 1048576\n"
    "          for f in string.gmatch(ls[q], '[^\\n]+') do\n"
    "            fs[#fs + 1] = f\n"
    "          end\n"
    "          for a = 1, #fs, 1000 do\n"
    "            local b = math.min(a + 999, #fs)\n"
    "            local cur = redis.call('HMGET', m, unpack(fs, a, b))\n"
    "            local add = {}\n"
    "            for x = a, b do\n"
    "              if not cur[x - a + 1] then\n"
    "                add[#add + 1], add[#add + 2] = fs[x], -(base + x)\n"
    "              end\n"
    "            end\n"
    "            if #add > 0 then\n"
    "              redis.call('HSET', m, unpack(add))\n"
    "            end\n"
    "          end\n"
    "          redis.call('HDEL', m, cs[q])\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    redis.call('HSET', m, 'o', '')\n"
    "  end\n"
    "end\n"
    "local function count(j, t)\n"
    "  local k = KEYS[j]\n"
    "  local v = redis.pcall('HINCRBY', k, 'b:' .. t, 1)\n"
    "  if type(v) ~= 'number' then\n"
    "    v = 1\n"
    "    redis.call('HSET', k, 'b:' .. t, v)\n"
    "  end\n"
    "  local all = res[j]\n"
    "  all[#all + 1] = 'n:' .. t\n"
    "  all[#all + 1] = v\n"
    "end\n"
    "for j = 1, n do\n"
    "  local all = redis.pcall('HGETALL', KEYS[j])\n"
    "  if all.err then\n"
    "    res[j] = false\n"
    "  else\n"
    "    res[j] = all\n"
    "    if inc or msg then\n"
    "      local len, fg = #all\n"
    "      for i = 1, len, 2 do\n"
    "        local a, b = string.byte(all[i], 1, 2)\n"
    "        if a == 102 and b == 58 then\n"
    "          fg = fg or {}\n"
    "          fg[string.sub(all[i], 3)] = true\n"
    "        end\n"
    "      end\n"
    "      for i = 1, len, 2 do\n"
    "        local a, b = string.byte(all[i], 1, 2)\n"
    "        if a == 116 and b == 58 then\n"
    "          local t = string.sub(all[i], 3)\n"
    "          if not (fg and fg[t]) then\n"
    "            if not m then\n"
    "              count(j, t)\n"
    "            elseif own then\n"
    "              nd = nd + 1\n"
    "              mb[#mb + 1], mb[#mb + 2], mb[#mb + 3], mb[#mb + 4] =\n"
    "                t, ':', KEYS[j], '\\n'\n"
    "              if inc then\n"
    "                count(j, t)\n"
    "              end\n"
    "            else\n"
    "              nd = nd + 1\n"
    "              mb[nd], js[nd], ts[nd] = t .. ':' .. KEYS[j], j, t\n"
    "            end\n"
    "          end\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if not m then\n"
    "  return res\n"
    "end\n"
    "local cl, ncl = {}, 0\n"
    "if own then\n"
    "  if nd > 0 then\n"
    "    id = redis.call('HINCRBY', m, 'n', 1)\n"
    "    local add = {'c:' .. id, table.concat(mb),\n"
    "                 'l:' .. id, ARGV[3] .. ':' .. ARGV[4] .. ':0'}\n"
    "    if new then\n"
    "      add[5], add[6] = 'o', ARGV[7]\n"
    "    end\n"
    "    redis.call('HSET', m, unpack(add))\n"
    "  end\n"
    "  ncl = nd\n"
    "elseif nd > 0 then\n"
    "  local sv, ids, rf, recs = {}, {}, {}, {}\n"
    "  local function claim(s)\n"
    "    if s < 0 then\n"
    "      return tostring(math.floor(-s / 1048576)), -s % 1048576\n"
    "    elseif s > 0 and s < 4294967296 then\n"
    "      return tostring(s), 1\n"
    "    end\n"
    "  end\n"
    "  for c = 1, nd, 1000 do\n"
    "    local last = math.min(c + 999, nd)\n"
    "    local sc = redis.pcall('HMGET', m, unpack(mb, c, last))\n"
    "    if sc.err then\n"
    "      sc = {}\n"
    "    end\n"
    "    for i = c, last do\n"
    "      local s = tonumber(sc[i - c + 1])\n"
    "      sv[i] = s\n"
    "      local cid = s and claim(s)\n"
    "      if cid and not ids[cid] then\n"
    "        ids[cid] = true\n"
    "        rf[#rf + 1] = 'l:' .. cid\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  if #rf > 0 then\n"
    "    local r = redis.pcall('HMGET', m, unpack(rf))\n"
    "    if not r.err then\n"
    "      for i = 1, #rf do\n"
    "        local v, at, u, p = r[i]\n"
    "        if v then\n"
    "          at, u, p = string.match(v, '^(%d+):(%d+)():')\n"
    "        end\n"
    "        if p then\n"
    "          recs[string.sub(rf[i], 3)] = {tonumber(at), tonumber(u), v, p}\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  for i = 1, nd do\n"
    "    local j, t, s, cnt = js[i], ts[i], sv[i], inc\n"
    "    local dup, c, pos = false\n"
    "    if s then\n"
    "      c, pos = claim(s)\n"
    "    end\n"
    "    if c then\n"
    "      local rec = recs[c]\n"
    "      cnt = false\n"
    "      if rec then\n"
    "        if #rec[3] == rec[4] + 1 then\n"
    "          pos = 1\n"
    "        end\n"
    "        local ch = string.byte(rec[3], rec[4] + pos)\n"
    "        if rec[1] < cutoff then\n"
    "          cnt = inc\n"
    "        elseif ch == 49 or (ch == 48 and rec[2] > now) then\n"
    "          dup = true\n"
    "        end\n"
    "      end\n"
    "    elseif s and s >= cutoff * 4 then\n"
    "      local st = s % 4\n"
    "      if st == 0 or (st == 1 and (s - st) / 4 > now) then\n"
    "        dup = true\n"
    "      else\n"
    "        cnt = false\n"
    "      end\n"
    "    end\n"
    "    if dup then\n"
    "      local all = res[j]\n"
    "      all[#all + 1] = 'd:' .. t\n"
    "      all[#all + 1] = 1\n"
    "    else\n"
    "      ncl = ncl + 1\n"
    "      cl[ncl] = i\n"
    "      if cnt then\n"
    "        count(j, t)\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  if ncl > 0 then\n"
    "    id = redis.call('HINCRBY', m, 'n', 1)\n"
    "    local base = id * 1048576\n"
    "    for c = 1, ncl, 1000 do\n"
    "      local add, a = {}, 0\n"
    "      for k = c, math.min(c + 999, ncl) do\n"
    "        add[a + 1], add[a + 2], a = mb[cl[k]], -(base + k), a + 2\n"
    "      end\n"
    "      if c + 1000 > ncl then\n"
    "        add[a + 1] = 'l:' .. id\n"
    "        add[a + 2] = ARGV[3] .. ':' .. ARGV[4] .. ':0'\n"
    "      end\n"
    "      redis.call('HSET', m, unpack(add))\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if ncl > 0 then\n"
    "  redis.pcall('PEXPIRE', m, ARGV[6])\n"
    "end\n"
    "res[n + 1], res[n + 2] = id, ncl\n"
    "return res\n"),

    /* PRUNE token before_ms -> 1 if removed (registered before that) */
    ngx_string(
    "local t = ARGV[1]\n"
    "local r = tonumber(redis.call('HGET', KEYS[1], 'r:' .. t))\n"
    "if r == nil or r >= tonumber(ARGV[2]) then\n"
    "  return 0\n"
    "end\n"
    "redis.call('HDEL', KEYS[1], 't:' .. t, 'r:' .. t, 'b:' .. t,\n"
    "           'f:' .. t)\n"
    "return 1\n"),

    /*
     * Durable asynchronous pushes (async.c, DESIGN §14): the stream
     * "<prefix>:pushes", group "timpush"; each push's state and results
     * in "<prefix>:p:{<id>}" (state, created, done, and one field per
     * entry: "u:<n>" a user's, "d:<n>:<token>" a device's, n its place in
     * "to"; the value its kind, s, f or k, then the entry's JSON).
     *
     * ENQUEUE body now_ms p_prefix -> the push's id
     */
    ngx_string(
    "local id = redis.call('XADD', KEYS[1], '*', 'body', ARGV[1],\n"
    "                      'at', ARGV[2])\n"
    "local k = ARGV[3] .. id .. '}'\n"
    "redis.call('HSETNX', k, 'state', 'queued')\n"
    "redis.call('HSETNX', k, 'created', ARGV[2])\n"
    "return id\n"),

    /* GROUP: the consumer group, made once (from the stream's start) */
    ngx_string(
    "redis.pcall('XGROUP', 'CREATE', KEYS[1], 'timpush', '0', 'MKSTREAM')\n"
    "return 1\n"),

    /* RECORD (field value mode)... : mode "n" keeps an entry already there */
    ngx_string(
    "local k = KEYS[1]\n"
    "if redis.call('HGET', k, 'state') ~= 'done' then\n"
    "  redis.call('HSET', k, 'state', 'running')\n"
    "end\n"
    "for i = 1, #ARGV, 3 do\n"
    "  if ARGV[i + 2] == 'n' then\n"
    "    redis.call('HSETNX', k, ARGV[i], ARGV[i + 1])\n"
    "  else\n"
    "    redis.call('HSET', k, ARGV[i], ARGV[i + 1])\n"
    "  end\n"
    "end\n"
    "return 1\n"),

    /* FINISH id keep_ms now_ms: done, kept keep_ms, out of the stream */
    ngx_string(
    "redis.call('HSET', KEYS[1], 'state', 'done', 'done', ARGV[3])\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "redis.call('XACK', KEYS[2], 'timpush', ARGV[1])\n"
    "redis.call('XDEL', KEYS[2], ARGV[1])\n"
    "return 1\n"),

    /* FETCH id -> the push's hash; {state, queued} if only in the stream */
    ngx_string(
    "if redis.call('EXISTS', KEYS[1]) == 1 then\n"
    "  return redis.call('HGETALL', KEYS[1])\n"
    "end\n"
    "local r = redis.pcall('XRANGE', KEYS[2], ARGV[1], ARGV[1])\n"
    "if type(r) == 'table' and not r.err and r[1] then\n"
    "  return {'state', 'queued'}\n"
    "end\n"
    "return false\n"),

    /* AUTOCLAIM consumer min_idle_ms -> XAUTOCLAIM's reply (one entry) */
    ngx_string(
    "return redis.call('XAUTOCLAIM', KEYS[1], 'timpush', ARGV[1], ARGV[2],\n"
    "                  '0-0', 'COUNT', 1)\n"),

    /* TOUCH consumer id: still ours (its idle time starts again) */
    ngx_string(
    "redis.call('XCLAIM', KEYS[1], 'timpush', ARGV[1], 0, ARGV[2],\n"
    "           'JUSTID')\n"
    "return 1\n"),

    /* FEEDBACK field value...: appended, the stream capped */
    ngx_string(
    "return redis.call('XADD', KEYS[1], 'MAXLEN', '~', 100000, '*',\n"
    "                  unpack(ARGV))\n"),

    /*
     * The reverse index "<prefix>:t:{<token>}" (DESIGN §12): the user that
     * holds the token, then, one per line, users that may still hold it
     * in their hash and are to be cleaned (a registration cut short), and
     * last "\1<ms>", the stamp of the last registration claimed.
     *
     * CLAIM user now_ms -> {stamp, users to clean...}: the user becomes
     * the holder; its registration's stamp is now_ms, or one more than the
     * last one: registrations of a token are stamped in the order they
     * claimed it, whatever the clocks of the workers that made them, so a
     * former holder's registration claimed before is "no later than" ours
     * and one claimed after is not.
     */
    ngx_string(
    "local v, seen, out = redis.call('GET', KEYS[1]), {}, {ARGV[1]}\n"
    "local clean, last = {}, 0\n"
    "if v then\n"
    "  for o in string.gmatch(v, '[^\\n]+') do\n"
    "    if string.byte(o) == 1 then\n"
    "      last = tonumber(string.sub(o, 2)) or 0\n"
    "    elseif o ~= ARGV[1] and not seen[o] then\n"
    "      seen[o] = true\n"
    "      clean[#clean + 1] = o\n"
    "      out[#out + 1] = o\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local stamp = string.format('%.0f',\n"
    "                            math.max(tonumber(ARGV[2]) or 0, last + 1))\n"
    "out[#out + 1] = '\\1' .. stamp\n"
    "redis.call('SET', KEYS[1], table.concat(out, '\\n'))\n"
    "table.insert(clean, 1, stamp)\n"
    "return clean\n"),

    /*
     * SETTLE user cleaned... -> the holder ("" for none): if it is still
     * the user, the users cleaned are forgotten.
     */
    ngx_string(
    "local v = redis.call('GET', KEYS[1]) or ''\n"
    "local holder = string.match(v, '^[^\\n]*')\n"
    "if holder ~= ARGV[1] then\n"
    "  return holder\n"
    "end\n"
    "local done, out, first = {}, {holder}, true\n"
    "for i = 2, #ARGV do\n"
    "  done[ARGV[i]] = true\n"
    "end\n"
    "for o in string.gmatch(v, '[^\\n]+') do\n"
    "  if first then\n"
    "    first = false\n"
    "  elseif not done[o] then\n"
    "    out[#out + 1] = o\n"
    "  end\n"
    "end\n"
    "redis.call('SET', KEYS[1], table.concat(out, '\\n'))\n"
    "return holder\n"),

    /* RELEASE user -> 1 if the user held the token and no longer does */
    ngx_string(
    "local v = redis.call('GET', KEYS[1])\n"
    "if not v then\n"
    "  return 0\n"
    "end\n"
    "local holder = string.match(v, '^[^\\n]*')\n"
    "if holder ~= ARGV[1] then\n"
    "  return 0\n"
    "end\n"
    "local rest = string.sub(v, #holder + 1)\n"
    "if not string.find(rest, '\\n[^\\1\\n]') then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "else\n"
    "  redis.call('SET', KEYS[1], rest)\n"
    "end\n"
    "return 1\n"),

    /*
     * UNDO token registered_ms -> 1 if removed: a registration that lost
     * a race, taken back unless the user registered the token again since.
     */
    ngx_string(
    "local t = ARGV[1]\n"
    "if redis.call('HGET', KEYS[1], 'r:' .. t) ~= ARGV[2] then\n"
    "  return 0\n"
    "end\n"
    "redis.call('HDEL', KEYS[1], 't:' .. t, 'r:' .. t, 'b:' .. t,\n"
    "           'f:' .. t)\n"
    "return 1\n"),

    /*
     * On a Redis Cluster a push's hash and the stream are in two slots:
     * ENQUEUE, FINISH and FETCH are then steps of one key each (async.c).
     *
     * QUEUED now_ms: the push's hash once the stream has it
     */
    ngx_string(
    "redis.call('HSETNX', KEYS[1], 'state', 'queued')\n"
    "redis.call('HSETNX', KEYS[1], 'created', ARGV[1])\n"
    "return 1\n"),

    /* DONE keep_ms now_ms: the push's hash, done, kept keep_ms */
    ngx_string(
    "redis.call('HSET', KEYS[1], 'state', 'done', 'done', ARGV[2])\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[1])\n"
    "return 1\n"),

    /* ACK id: out of the stream, once its hash says done */
    ngx_string(
    "redis.call('XACK', KEYS[1], 'timpush', ARGV[1])\n"
    "redis.call('XDEL', KEYS[1], ARGV[1])\n"
    "return 1\n"),

};


ngx_int_t
ngx_http_timpush_store_init_process(ngx_cycle_t *cycle,
    ngx_http_timpush_main_conf_t *tmcf)
{
    ngx_http_timpush_store = ngx_http_timpush_store_make(cycle, tmcf, 0);

    if (ngx_http_timpush_store == NULL) {
        return NGX_ERROR;
    }

    if (tmcf->cluster && ngx_http_timpush_store_make_tags(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    /* the async reader's blocking XREADGROUP: a connection of its own */

    if (tmcf->async) {
        ngx_http_timpush_store_blocking = ngx_http_timpush_store_make(cycle,
                                                                     tmcf, 1);
        if (ngx_http_timpush_store_blocking == NULL) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_http_timpush_store_t *
ngx_http_timpush_store_make(ngx_cycle_t *cycle,
    ngx_http_timpush_main_conf_t *tmcf, ngx_uint_t blocking)
{
    ngx_uint_t                 i;
    u_char                     digest[SHA_DIGEST_LENGTH];
    ngx_http_timpush_store_t  *st;

    st = ngx_pcalloc(cycle->pool, sizeof(ngx_http_timpush_store_t));
    if (st == NULL) {
        return NULL;
    }

    st->conf = &tmcf->redis;
    st->log = cycle->log;
    st->blocking = blocking;

    for (i = 0; i < NGX_HTTP_TIMPUSH_SCRIPT_LAST; i++) {
        SHA1(ngx_http_timpush_scripts[i].data,
             ngx_http_timpush_scripts[i].len, digest);
        ngx_hex_dump(st->sha[i], digest, SHA_DIGEST_LENGTH);
    }

    if (tmcf->cluster) {
        st->cluster = ngx_http_timpush_store_cluster_create(cycle,
                                              tmcf->cluster, &st->conf->opts,
                                              ngx_http_timpush_store_state,
                                              st);
        if (st->cluster == NULL) {
            return NULL;
        }

        return st;
    }

    st->rd = ngx_http_timpush_redis_create(cycle->log, &st->conf->opts,
                                           &st->conf->name, &st->conf->host,
                                           &st->conf->addr,
                                           ngx_http_timpush_store_state, st);
    if (st->rd == NULL) {
        return NULL;
    }

    return st;
}


void
ngx_http_timpush_store_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_timpush_store_close(ngx_http_timpush_store_blocking);
    ngx_http_timpush_store_blocking = NULL;

    ngx_http_timpush_store_close(ngx_http_timpush_store);
    ngx_http_timpush_store = NULL;
}


static void
ngx_http_timpush_store_close(ngx_http_timpush_store_t *st)
{
    if (st == NULL) {
        return;
    }

    st->exiting = 1;

    /* answers the commands still waiting with NULL */
    ngx_http_timpush_redis_destroy(st->rd);
    st->rd = NULL;

    ngx_http_timpush_store_cluster_destroy(st->cluster);
    st->cluster = NULL;
}


static ngx_int_t
ngx_http_timpush_store_ready(ngx_http_timpush_store_t *st)
{
    if (st == NULL) {
        return NGX_DECLINED;
    }

    if (st->cluster) {
        return ngx_http_timpush_store_cluster_ready(st->cluster);
    }

    return ngx_http_timpush_redis_ready(st->rd);
}


/* is the store a Redis Cluster (callers make one call per slot)? */

ngx_uint_t
ngx_http_timpush_store_clustered(void)
{
    return ngx_http_timpush_store && ngx_http_timpush_store->cluster;
}


/* Redis as the metrics see it: the main connection's */

static void
ngx_http_timpush_store_state(void *data, ngx_uint_t up, const char *error)
{
    ngx_http_timpush_store_t *st = data;

    if (error) {
        ngx_http_timpush_store_error(st, error);
    }

    if (!st->blocking) {
        ngx_http_timpush_metric_redis_up(up);
    }
}


static void
ngx_http_timpush_store_error(ngx_http_timpush_store_t *st, const char *kind)
{
    if (!st->blocking) {
        ngx_http_timpush_metric_redis_error(kind);
    }
}


ngx_int_t
ngx_http_timpush_store_key(ngx_pool_t *pool, ngx_str_t *user, ngx_str_t *key)
{
    return ngx_http_timpush_store_make_key(pool, 'u', user, key);
}


/* the reverse index of a token: "<prefix>:t:{<token>}" */

ngx_int_t
ngx_http_timpush_store_token_key(ngx_pool_t *pool, ngx_str_t *token,
    ngx_str_t *key)
{
    return ngx_http_timpush_store_make_key(pool, 't', token, key);
}


/* a msg_id's marks: "<prefix>:m:{<msg_id>}" */

ngx_int_t
ngx_http_timpush_store_msg_key(ngx_pool_t *pool, ngx_str_t *msg_id,
    ngx_str_t *key)
{
    return ngx_http_timpush_store_make_key(pool, 'm', msg_id, key);
}


/*
 * On a Cluster, the marks of a msg_id for the users of one slot (they go
 * in the same script call): "<prefix>:m:{<tag>}<msg_id>", the tag one
 * that hashes to that slot.  On one Redis, "<prefix>:m:{<msg_id>}".
 */

ngx_int_t
ngx_http_timpush_store_msg_slot_key(ngx_pool_t *pool, ngx_str_t *msg_id,
    ngx_uint_t slot, ngx_str_t *key)
{
    u_char                    *tag;
    size_t                     len;
    ngx_http_timpush_store_t  *st;

    st = ngx_http_timpush_store;

    if (st == NULL || st->cluster == NULL
        || ngx_http_timpush_store_tags == NULL)
    {
        return ngx_http_timpush_store_msg_key(pool, msg_id, key);
    }

    tag = ngx_http_timpush_store_tags[slot % NGX_HTTP_TIMPUSH_CLUSTER_SLOTS];
    len = ngx_strlen(tag);

    key->len = st->conf->prefix.len + sizeof(":m:{}") - 1 + len
               + msg_id->len;
    key->data = ngx_pnalloc(pool, key->len);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(key->data, "%V:m:{%s}%V", &st->conf->prefix, tag, msg_id);

    return NGX_OK;
}


/*
 * Tags "0", "1", ... "z", "10", ... (base 36) until every slot has one:
 * about 160,000 tries, once per worker.
 */

static ngx_int_t
ngx_http_timpush_store_make_tags(ngx_cycle_t *cycle)
{
    u_char       buf[8], *p;
    ngx_uint_t   n, m, slot, left;

    ngx_http_timpush_store_tags = ngx_pcalloc(cycle->pool,
                                          NGX_HTTP_TIMPUSH_CLUSTER_SLOTS * 8);
    if (ngx_http_timpush_store_tags == NULL) {
        return NGX_ERROR;
    }

    left = NGX_HTTP_TIMPUSH_CLUSTER_SLOTS;

    for (n = 0; left && n < 36 * 36 * 36 * 36 * 36; n++) {
        p = buf + sizeof(buf) - 1;
        *p = '\0';
        m = n;

        do {
            *--p = "0123456789abcdefghijklmnopqrstuvwxyz"[m % 36];
            m /= 36;
        } while (m);

        slot = ngx_http_timpush_cluster_slot(p, buf + sizeof(buf) - 1 - p);

        if (ngx_http_timpush_store_tags[slot][0] == '\0') {
            ngx_cpystrn(ngx_http_timpush_store_tags[slot], p, 8);
            left--;
        }
    }

    if (left) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "timpush: %ui slots without a hash tag", left);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a key of its own: "<prefix>:<name>" ("pushes", "feedback", "p:{") */

ngx_int_t
ngx_http_timpush_store_plain_key(ngx_pool_t *pool, const char *name,
    ngx_str_t *key)
{
    size_t                     len;
    ngx_http_timpush_store_t  *st;

    st = ngx_http_timpush_store;
    if (st == NULL) {
        return NGX_ERROR;
    }

    len = ngx_strlen(name);

    key->len = st->conf->prefix.len + 1 + len;
    key->data = ngx_pnalloc(pool, key->len);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(key->data, "%V:%s", &st->conf->prefix, name);

    return NGX_OK;
}


/* an async push's state and results: "<prefix>:p:{<id>}" */

ngx_int_t
ngx_http_timpush_store_push_key(ngx_pool_t *pool, ngx_str_t *id,
    ngx_str_t *key)
{
    return ngx_http_timpush_store_make_key(pool, 'p', id, key);
}


static ngx_int_t
ngx_http_timpush_store_make_key(ngx_pool_t *pool, u_char kind,
    ngx_str_t *name, ngx_str_t *key)
{
    ngx_http_timpush_store_t  *st;

    st = ngx_http_timpush_store;
    if (st == NULL) {
        return NGX_ERROR;
    }

    key->len = st->conf->prefix.len + sizeof(":u:{}") - 1 + name->len;
    key->data = ngx_pnalloc(pool, key->len);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(key->data, "%V:%c:{%V}", &st->conf->prefix, kind, name);

    return NGX_OK;
}


/*
 * Queues a script.  NGX_OK: the handler will be called once, later.
 * NGX_DECLINED: Redis is not connected; NGX_BUSY: too many commands are
 * waiting already; NGX_ERROR: out of memory.  The handler is not called
 * in those cases.
 */

ngx_int_t
ngx_http_timpush_store_run(ngx_http_timpush_script_e script, ngx_str_t *keys,
    ngx_uint_t nkeys, ngx_str_t *args, ngx_uint_t nargs,
    ngx_http_timpush_store_handler_pt handler, void *data,
    ngx_http_timpush_store_cmd_t **cmdp)
{
    u_char                        *p;
    ngx_http_timpush_store_t      *st;
    ngx_http_timpush_store_cmd_t  *cmd;

    st = ngx_http_timpush_store;

    /* until Redis takes our password again, nothing is queued */
    if (ngx_http_timpush_store_ready(st) != NGX_OK) {
        return NGX_DECLINED;
    }

    if (st->pending >= st->conf->max_pending) {
        return NGX_BUSY;
    }

    /* EVALSHA|EVAL sha|script nkeys keys... args... */

    cmd = ngx_http_timpush_store_alloc(st, 3 + nkeys + nargs, NGX_INT_T_LEN,
                                       keys, nkeys, args, nargs, handler,
                                       data, &p);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    cmd->script = script;
    cmd->replicate = ngx_http_timpush_store_acknowledged(script);

    if (ngx_http_timpush_store_slot(st, cmd, keys, nkeys) != NGX_OK) {
        ngx_free(cmd);
        return NGX_ERROR;
    }

    cmd->argv[2] = (char *) p;
    p = ngx_sprintf(p, "%ui", nkeys);
    cmd->argvlen[2] = p - (u_char *) cmd->argv[2];
    *p++ = '\0';

    p = ngx_http_timpush_store_copy(cmd, 3, p, keys, nkeys);
    ngx_http_timpush_store_copy(cmd, 3 + nkeys, p, args, nargs);

    return ngx_http_timpush_store_queue(st, cmd, st->conf->timeout, cmdp);
}


/*
 * A command of argc arguments in one allocation: room for "extra" bytes
 * and the two lists' strings, each with its NUL; *pp where they go.
 */

static ngx_http_timpush_store_cmd_t *
ngx_http_timpush_store_alloc(ngx_http_timpush_store_t *st, ngx_uint_t argc,
    size_t extra, ngx_str_t *a, ngx_uint_t na, ngx_str_t *b, ngx_uint_t nb,
    ngx_http_timpush_store_handler_pt handler, void *data, u_char **pp)
{
    size_t                         size;
    ngx_uint_t                     i;
    ngx_http_timpush_store_cmd_t  *cmd;

    size = sizeof(ngx_http_timpush_store_cmd_t)
           + argc * (sizeof(char *) + sizeof(size_t)) + extra + 1;

    for (i = 0; i < na; i++) {
        size += a[i].len + 1;
    }

    for (i = 0; i < nb; i++) {
        size += b[i].len + 1;
    }

    cmd = ngx_alloc(size, st->log);
    if (cmd == NULL) {
        return NULL;
    }

    ngx_memzero(cmd, sizeof(ngx_http_timpush_store_cmd_t));

    cmd->req.handler = ngx_http_timpush_store_reply;
    cmd->req.data = cmd;
    cmd->handler = handler;
    cmd->data = data;
    cmd->argc = argc;
    cmd->argv = (const char **) (cmd + 1);
    cmd->argvlen = (size_t *) (cmd->argv + argc);

    *pp = (u_char *) (cmd->argvlen + argc);

    return cmd;
}


/* n strings as arguments from the i-th on, each with its NUL */

static u_char *
ngx_http_timpush_store_copy(ngx_http_timpush_store_cmd_t *cmd, ngx_uint_t i,
    u_char *p, ngx_str_t *s, ngx_uint_t n)
{
    ngx_uint_t  j;

    for (j = 0; j < n; j++) {
        cmd->argv[i + j] = (char *) p;
        cmd->argvlen[i + j] = s[j].len;
        p = ngx_cpymem(p, s[j].data, s[j].len);
        *p++ = '\0';
    }

    return p;
}


static ngx_int_t
ngx_http_timpush_store_queue(ngx_http_timpush_store_t *st,
    ngx_http_timpush_store_cmd_t *cmd, ngx_msec_t timeout,
    ngx_http_timpush_store_cmd_t **cmdp)
{
    ngx_int_t  rc;

    cmd->st = st;
    cmd->timeout = timeout;
    cmd->deadline.handler = ngx_http_timpush_store_deadline_handler;
    cmd->deadline.data = cmd;
    cmd->deadline.log = st->log;

    /* a worker that exits does not wait for a blocked read to return */
    cmd->deadline.cancelable = st->blocking;

    cmd->route.req = &cmd->req;
    cmd->route.argc = cmd->argc;
    cmd->route.argv = cmd->argv;
    cmd->route.argvlen = cmd->argvlen;
    cmd->route.fail = ngx_http_timpush_store_route_fail;
    cmd->route.cl = st->cluster;

    rc = ngx_http_timpush_store_send(st, cmd, 0);

    if (rc != NGX_OK) {
        ngx_http_timpush_store_cluster_cancel(&cmd->route);
        ngx_free(cmd);
        return rc;
    }

    st->pending++;
    cmd->counted = 1;

    ngx_add_timer(&cmd->deadline, timeout);

    if (cmdp) {
        *cmdp = cmd;
    }

    return NGX_OK;
}


/*
 * A command as given, not a script (XREADGROUP ... BLOCK, which a script
 * cannot do): on the async reader's own connection when "blocking", with
 * its own deadline.  As ngx_http_timpush_store_run() otherwise.
 */

ngx_int_t
ngx_http_timpush_store_command(ngx_uint_t blocking, ngx_str_t *argv,
    ngx_uint_t argc, ngx_msec_t timeout,
    ngx_http_timpush_store_handler_pt handler, void *data,
    ngx_http_timpush_store_cmd_t **cmdp)
{
    u_char                        *p;
    ngx_uint_t                     i;
    ngx_http_timpush_store_t      *st;
    ngx_http_timpush_store_cmd_t  *cmd;

    st = blocking ? ngx_http_timpush_store_blocking : ngx_http_timpush_store;

    if (ngx_http_timpush_store_ready(st) != NGX_OK) {
        return NGX_DECLINED;
    }

    if (st->pending >= st->conf->max_pending) {
        return NGX_BUSY;
    }

    cmd = ngx_http_timpush_store_alloc(st, argc, 0, argv, argc, NULL, 0,
                                       handler, data, &p);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    cmd->script = NGX_HTTP_TIMPUSH_SCRIPT_LAST;    /* none */

    /* a push queued on a Cluster's stream (async.c): answered 202 */
    cmd->replicate = (argc > 0 && argv[0].len == 4
                      && ngx_strncasecmp(argv[0].data, (u_char *) "XADD", 4)
                         == 0);

    /* the key: the stream of XREADGROUP ... STREAMS key id, else argv[1] */

    for (i = 1; i + 1 < argc; i++) {
        if (argv[i].len == 7
            && ngx_strncasecmp(argv[i].data, (u_char *) "STREAMS", 7) == 0)
        {
            break;
        }
    }

    i = (i + 1 < argc) ? i + 1 : 1;

    if (ngx_http_timpush_store_slot(st, cmd, &argv[i], argc > 1 ? 1 : 0)
        != NGX_OK)
    {
        ngx_free(cmd);
        return NGX_ERROR;
    }

    ngx_http_timpush_store_copy(cmd, 0, p, argv, argc);

    return ngx_http_timpush_store_queue(st, cmd, timeout, cmdp);
}


static ngx_int_t
ngx_http_timpush_store_send(ngx_http_timpush_store_t *st,
    ngx_http_timpush_store_cmd_t *cmd, ngx_uint_t eval)
{
    ngx_int_t   rc;
    ngx_str_t  *script;

    if (cmd->script == NGX_HTTP_TIMPUSH_SCRIPT_LAST) {
        /* a command of its own */

    } else if (eval) {
        script = &ngx_http_timpush_scripts[cmd->script];
        cmd->argv[0] = "EVAL";
        cmd->argvlen[0] = 4;
        cmd->argv[1] = (char *) script->data;
        cmd->argvlen[1] = script->len;

    } else {
        cmd->argv[0] = "EVALSHA";
        cmd->argvlen[0] = 7;
        cmd->argv[1] = (char *) st->sha[cmd->script];
        cmd->argvlen[1] = SHA_DIGEST_LENGTH * 2;
    }

    if (st->cluster) {
        rc = ngx_http_timpush_store_cluster_send(&cmd->route);

    } else {
        rc = ngx_http_timpush_redis_send(st->rd, &cmd->req, cmd->argc,
                                         cmd->argv, cmd->argvlen);
    }

    if (rc != NGX_OK) {
        return rc;
    }

    cmd->sent = ngx_current_msec;

    return NGX_OK;
}


/*
 * On a Cluster, the slot of a call's keys: all in one slot, else the call
 * is refused (a caller's bug: Redis would answer CROSSSLOT).
 */

static ngx_int_t
ngx_http_timpush_store_slot(ngx_http_timpush_store_t *st,
    ngx_http_timpush_store_cmd_t *cmd, ngx_str_t *keys, ngx_uint_t nkeys)
{
    ngx_uint_t  i, slot;

    if (st->cluster == NULL || nkeys == 0) {
        return NGX_OK;
    }

    slot = ngx_http_timpush_cluster_slot(keys[0].data, keys[0].len);

    for (i = 1; i < nkeys; i++) {
        if (ngx_http_timpush_cluster_slot(keys[i].data, keys[i].len)
            != slot)
        {
            ngx_log_error(NGX_LOG_ALERT, st->log, 0,
                          "timpush: Redis Cluster: keys \"%V\" and \"%V\" "
                          "of one call are in different slots",
                          &keys[0], &keys[i]);
            return NGX_ERROR;
        }
    }

    cmd->route.slot = slot;

    return NGX_OK;
}


/* not sent, and now never: the router gave up before Redis saw it */

static void
ngx_http_timpush_store_route_fail(ngx_http_timpush_store_route_t *sr,
    ngx_int_t rc)
{
    ngx_http_timpush_store_cmd_t  *cmd;

    cmd = (ngx_http_timpush_store_cmd_t *)
              ((u_char *) sr - offsetof(ngx_http_timpush_store_cmd_t, route));

    ngx_http_timpush_store_uncount(cmd);
    ngx_http_timpush_store_answer(cmd, NULL,
                                  rc == NGX_DECLINED ? NGX_DECLINED
                                                     : NGX_ERROR);
    ngx_http_timpush_store_free_cmd(cmd);
}


static void
ngx_http_timpush_store_reply(ngx_http_timpush_redis_req_t *req,
    redisReply *reply)
{
    ngx_http_timpush_store_cmd_t  *cmd = req->data;

    ngx_http_timpush_store_t  *st;

    st = cmd->st;

    if (reply == NULL || st->exiting) {
        if (st->cluster && !st->exiting) {
            /* the map asked again: the node may be gone */
            (void) ngx_http_timpush_store_cluster_reply(&cmd->route, NULL);
        }

        ngx_http_timpush_store_uncount(cmd);
        ngx_http_timpush_store_answer(cmd, NULL, NGX_DECLINED);
        ngx_http_timpush_store_free_cmd(cmd);
        return;
    }

    /*
     * Cluster: MOVED, ASK, TRYAGAIN, CLUSTERDOWN, the command not run,
     * and sent again while its caller waits (never for nobody).
     */

    if (st->cluster && reply->type == REDIS_REPLY_ERROR) {
        if (!cmd->answered && cmd->handler) {
            if (ngx_http_timpush_store_cluster_reply(&cmd->route, reply)
                == NGX_OK)
            {
                return;
            }

        } else {
            ngx_http_timpush_store_free_cmd(cmd);
            return;
        }
    }

    /*
     * Forgotten (its caller is gone, or its deadline passed): a script
     * that did not run is not run now, as EVAL, for nobody (a push's
     * batch would count badges for a push that no longer exists).
     */

    if (reply->type == REDIS_REPLY_ERROR
        && reply->len > 8 && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0
        && !cmd->answered && cmd->handler)
    {
        if (ngx_http_timpush_store_send(st, cmd, 1) == NGX_OK) {
            return;
        }
    }

    /* a write its caller is told of: once its master's replicas have it */

    if (cmd->replicate && st->cluster && reply->type != REDIS_REPLY_ERROR
        && !cmd->answered && cmd->handler)
    {
        switch (ngx_http_timpush_store_replicate(st, cmd, reply)) {

        case NGX_OK:
            return;

        case NGX_DECLINED:
            /* no replica to wait for */
            break;

        default: /* NGX_ERROR: WAIT not sent, the write's fate unknown */
            ngx_log_error(NGX_LOG_ERR, st->log, 0,
                          "timpush: Redis %V: WAIT not sent, the write is "
                          "not known to be replicated",
                          ngx_http_timpush_store_cluster_name(&cmd->route));
            ngx_http_timpush_store_error(st, "replication");

            ngx_http_timpush_store_uncount(cmd);
            ngx_http_timpush_store_answer(cmd, NULL, NGX_DECLINED);
            ngx_http_timpush_store_free_cmd(cmd);
            return;
        }
    }

    /* its place is free before its caller is told (who may queue more) */
    ngx_http_timpush_store_uncount(cmd);

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, st->log, 0,
                      "timpush: Redis %V: %*s",
                      st->cluster
                      ? ngx_http_timpush_store_cluster_name(&cmd->route)
                      : &st->conf->name,
                      (size_t) reply->len, reply->str);
        ngx_http_timpush_store_error(st, "reply");

        ngx_http_timpush_store_answer(cmd, NULL, NGX_ERROR);

    } else {
        ngx_http_timpush_store_answer(cmd, reply, NGX_OK);
    }

    ngx_http_timpush_store_free_cmd(cmd);
}


/*
 * Writes whose success a caller is told (DESIGN §15: no registration that
 * was acknowledged lost in a failover): the devices and accounts of the
 * API (owner.c's sequence, the badge and state of a device), and a push
 * queued (async.c, 202).  Not a push's batches nor its marks: costly, and
 * nobody is told they are kept.
 */

static ngx_uint_t
ngx_http_timpush_store_acknowledged(ngx_http_timpush_script_e script)
{
    switch (script) {

    case NGX_HTTP_TIMPUSH_SCRIPT_REGISTER:
    case NGX_HTTP_TIMPUSH_SCRIPT_UNREGISTER:
    case NGX_HTTP_TIMPUSH_SCRIPT_LOGOUT:
    case NGX_HTTP_TIMPUSH_SCRIPT_BACKGROUND:
    case NGX_HTTP_TIMPUSH_SCRIPT_FOREGROUND:
    case NGX_HTTP_TIMPUSH_SCRIPT_PRUNE:       /* a registration's move */
    case NGX_HTTP_TIMPUSH_SCRIPT_CLAIM:
    case NGX_HTTP_TIMPUSH_SCRIPT_SETTLE:
    case NGX_HTTP_TIMPUSH_SCRIPT_RELEASE:
    case NGX_HTTP_TIMPUSH_SCRIPT_UNDO:
    case NGX_HTTP_TIMPUSH_SCRIPT_ENQUEUE:
    case NGX_HTTP_TIMPUSH_SCRIPT_QUEUED:
        return 1;

    default:
        return 0;
    }
}


/*
 * WAIT after the write, on its node's connection, within what is left of
 * the command's time; the reply kept for the caller until WAIT answers.
 * NGX_OK: sent; NGX_DECLINED: the master has no replica to wait for (or
 * wait=0); NGX_ERROR: not sent.
 */

static ngx_int_t
ngx_http_timpush_store_replicate(ngx_http_timpush_store_t *st,
    ngx_http_timpush_store_cmd_t *cmd, redisReply *reply)
{
    ngx_int_t       rc;
    ngx_msec_t      left;
    ngx_msec_int_t  d;

    left = st->conf->timeout;

    if (cmd->deadline.timer_set) {
        d = (ngx_msec_int_t) (cmd->deadline.timer.key - ngx_current_msec);
        left = ngx_min(left, (ngx_msec_t) ngx_max(d, 1));
    }

    cmd->waited = left - ngx_min(left / 2,
                                 NGX_HTTP_TIMPUSH_STORE_WAIT_MARGIN);

    cmd->wait.handler = ngx_http_timpush_store_replicated;
    cmd->wait.data = cmd;

    rc = ngx_http_timpush_store_cluster_wait(&cmd->route, &cmd->wait,
                                             cmd->waited, &cmd->replicas);
    if (rc != NGX_OK) {
        return rc;
    }

    ngx_http_timpush_redis_keep(reply);
    cmd->reply = reply;

    return NGX_OK;
}


/*
 * WAIT's answer: the number of replicas that have the connection's writes.
 * Fewer than asked: the caller is told the store failed (the write may be
 * on the master; what the API writes can be written again).
 */

static void
ngx_http_timpush_store_replicated(ngx_http_timpush_redis_req_t *req,
    redisReply *reply)
{
    ngx_http_timpush_store_cmd_t  *cmd = req->data;

    redisReply                *kept;
    ngx_http_timpush_store_t  *st;

    st = cmd->st;
    kept = cmd->reply;
    cmd->reply = NULL;

    if (reply == NULL || st->exiting) {
        /* the connection lost, or the worker exits: not known */

        if (st->cluster && !st->exiting) {
            (void) ngx_http_timpush_store_cluster_reply(&cmd->route, NULL);
        }

        ngx_http_timpush_store_uncount(cmd);
        ngx_http_timpush_store_answer(cmd, NULL, NGX_DECLINED);

    } else if (reply->type == REDIS_REPLY_INTEGER
               && reply->integer >= (long long) cmd->replicas)
    {
        ngx_http_timpush_store_uncount(cmd);
        ngx_http_timpush_store_answer(cmd, kept, NGX_OK);

    } else {
        ngx_log_error(NGX_LOG_ERR, st->log, 0,
                      "timpush: Redis %V: not replicated to %ui replica(s) "
                      "within %M ms%s%*s",
                      ngx_http_timpush_store_cluster_name(&cmd->route),
                      cmd->replicas, cmd->waited,
                      reply->type == REDIS_REPLY_ERROR ? ": " : "",
                      reply->type == REDIS_REPLY_ERROR ? (size_t) reply->len
                                                       : (size_t) 0,
                      reply->type == REDIS_REPLY_ERROR ? reply->str : "");
        ngx_http_timpush_store_error(st, "replication");

        /* a replica the cluster has marked failed: the map says so */
        ngx_http_timpush_store_cluster_unreplicated(&cmd->route);

        ngx_http_timpush_store_uncount(cmd);
        ngx_http_timpush_store_answer(cmd, NULL, NGX_ABORT);
    }

    freeReplyObject(kept);
    ngx_http_timpush_store_free_cmd(cmd);
}


/*
 * The reply is late: the caller gets an error now and the reply, if it
 * ever comes, is dropped.  A connection that has answered nothing for a
 * whole timeout is taken as dead and re-made.
 */

static void
ngx_http_timpush_store_deadline_handler(ngx_event_t *ev)
{
    ngx_http_timpush_store_cmd_t  *cmd = ev->data;

    ngx_http_timpush_store_t  *st;

    st = cmd->st;

    ngx_log_error(NGX_LOG_ERR, st->log, 0,
                  "timpush: Redis %V: no reply within %M ms",
                  &st->conf->name, cmd->timeout);
    ngx_http_timpush_store_error(st, "timeout");

    ngx_http_timpush_store_answer(cmd, NULL, NGX_AGAIN);

    if (st->cluster) {
        if (ngx_http_timpush_store_cluster_waiting(&cmd->route)) {
            /* not written: never will be */
            ngx_http_timpush_store_free_cmd(cmd);
            return;
        }

        ngx_http_timpush_store_cluster_stuck(&cmd->route, st->conf->timeout);
        return;
    }

    if (ngx_http_timpush_redis_ready(st->rd) == NGX_OK
        && ngx_http_timpush_redis_idle(st->rd) >= st->conf->timeout)
    {
        ngx_log_error(NGX_LOG_ERR, st->log, 0,
                      "timpush: Redis %V: not answering, reconnecting",
                      &st->conf->name);

        /* this calls back every waiting command, this one included */
        ngx_http_timpush_redis_reset(st->rd);
    }
}


static void
ngx_http_timpush_store_answer(ngx_http_timpush_store_cmd_t *cmd,
    redisReply *reply, ngx_int_t rc)
{
    if (cmd->answered) {
        return;
    }

    cmd->answered = 1;

    if (cmd->deadline.timer_set) {
        ngx_del_timer(&cmd->deadline);
    }

    if (cmd->handler && !ngx_http_timpush_store->exiting) {
        cmd->handler(cmd->data, reply, rc);
    }
}


static void
ngx_http_timpush_store_free_cmd(ngx_http_timpush_store_cmd_t *cmd)
{
    if (cmd->deadline.timer_set) {
        ngx_del_timer(&cmd->deadline);
    }

    ngx_http_timpush_store_cluster_cancel(&cmd->route);
    ngx_http_timpush_store_uncount(cmd);

    ngx_free(cmd);
}


static void
ngx_http_timpush_store_uncount(ngx_http_timpush_store_cmd_t *cmd)
{
    if (cmd->counted) {
        cmd->counted = 0;
        cmd->st->pending--;
    }
}


/* can n more commands be queued now? */

ngx_int_t
ngx_http_timpush_store_room(ngx_uint_t n)
{
    ngx_http_timpush_store_t  *st;

    st = ngx_http_timpush_store;

    if (ngx_http_timpush_store_ready(st) != NGX_OK) {
        return NGX_DECLINED;
    }

    if (st->pending + n > st->conf->max_pending) {
        return NGX_BUSY;
    }

    return NGX_OK;
}


/* the caller is gone: its handler must not be called any more */

void
ngx_http_timpush_store_forget(ngx_http_timpush_store_cmd_t *cmd)
{
    cmd->handler = NULL;

    if (cmd->deadline.timer_set) {
        ngx_del_timer(&cmd->deadline);
    }

    /* on a Cluster, one not written yet is not written for nobody */

    if (cmd->st->cluster
        && ngx_http_timpush_store_cluster_waiting(&cmd->route))
    {
        ngx_http_timpush_store_free_cmd(cmd);
    }
}


const char *
ngx_http_timpush_store_strerror(ngx_int_t rc)
{
    switch (rc) {
    case NGX_AGAIN:
        return "Redis did not answer in time; retry later";
    case NGX_ERROR:
        return "Redis answered an error; see the error log";
    case NGX_BUSY:
        return "too many commands are waiting for Redis (max_pending)";
    case NGX_ABORT:
        return "Redis did not replicate the write in time (it may have "
               "been made); retry later";
    default:
        return "Redis is not reachable; retry later";
    }
}
