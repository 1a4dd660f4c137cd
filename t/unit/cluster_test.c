
/*
 * Copyright (C) timpush authors
 *
 * Unit tests of ngx_http_timpush_cluster.c (DESIGN §15), printing TAP:
 * hash slots (vectors checked against Redis's CLUSTER KEYSLOT), slot maps
 * from CLUSTER SLOTS replies, MOVED and ASK, the redirection rules, keys
 * grouped by slot, and timpush_redis_cluster's arguments.
 *
 * Replies are written in a short notation, turned into RESP and read by
 * hiredis's own reader, so that the map is built from the objects hiredis
 * really makes: [ ] an array, "text" a bulk string, 12 an integer, nil a
 * null bulk string, +text a status, !text an error (to ',' or ']').
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <stdio.h>
#include <stdlib.h>

#include "ngx_stubs.h"
#include "ngx_http_timpush_cluster.h"


#define RESP_MAX  65536


static ngx_uint_t  tests;
static ngx_uint_t  failures;
static ngx_log_t   test_log;


static void ok(int cond, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));


static void
ok(int cond, const char *name, const char *fmt, ...)
{
    va_list  args;

    tests++;

    if (cond) {
        printf("ok %lu - %s\n", (unsigned long) tests, name);
        return;
    }

    failures++;
    printf("not ok %lu - %s\n", (unsigned long) tests, name);

    if (fmt) {
        printf("# ");
        va_start(args, fmt);
        vprintf(fmt, args);
        va_end(args);
        printf("\n");
    }
}


/* the notation to RESP; returns the end of the value read */

static const char *
to_resp(const char *p, char **out, char *end)
{
    const char  *s;
    int          n, depth;
    char        *count;

    while (*p == ' ') {
        p++;
    }

    if (*p == '[') {
        /* the count is written once the elements are */
        count = *out;
        *out += 16;
        n = 0;
        p++;

        while (*p == ' ') {
            p++;
        }

        while (*p != ']') {
            p = to_resp(p, out, end);
            n++;

            while (*p == ' ') {
                p++;
            }

            if (*p == ',') {
                p++;
            }

            while (*p == ' ') {
                p++;
            }
        }

        /* shift what follows the count to right after it */
        depth = snprintf(count, 16, "*%d\r\n", n);
        memmove(count + depth, count + 16, *out - count - 16);
        *out -= 16 - depth;

        return p + 1;
    }

    if (*p == '"') {
        s = strchr(p + 1, '"');
        *out += snprintf(*out, end - *out, "$%d\r\n%.*s\r\n",
                         (int) (s - p - 1), (int) (s - p - 1), p + 1);
        return s + 1;
    }

    if (*p == '+' || *p == '!') {
        s = p + 1;
        while (*s && *s != ',' && *s != ']') {
            s++;
        }

        *out += snprintf(*out, end - *out, "%c%.*s\r\n",
                         *p == '+' ? '+' : '-', (int) (s - p - 1), p + 1);
        return s;
    }

    if (strncmp(p, "nil", 3) == 0) {
        *out += snprintf(*out, end - *out, "$-1\r\n");
        return p + 3;
    }

    s = p;
    if (*s == '-') {
        s++;
    }

    while (*s >= '0' && *s <= '9') {
        s++;
    }

    *out += snprintf(*out, end - *out, ":%.*s\r\n", (int) (s - p), p);

    return s;
}


static redisReply *
reply(const char *notation)
{
    char         *buf, *p;
    void         *r;
    redisReader  *reader;

    buf = malloc(RESP_MAX);
    p = buf;
    to_resp(notation, &p, buf + RESP_MAX);

    reader = redisReaderCreate();
    r = NULL;

    if (redisReaderFeed(reader, buf, p - buf) != REDIS_OK
        || redisReaderGetReply(reader, &r) != REDIS_OK || r == NULL)
    {
        fprintf(stderr, "cluster_test: bad notation: %s\n", notation);
        abort();
    }

    redisReaderFree(reader);
    free(buf);

    return r;
}


static void
test_slots(void)
{
    ngx_uint_t  i;

    static struct {
        const char  *key;
        ngx_uint_t   slot;
    } vectors[] = {
        { "123456789", 12739 },
        { "", 0 },
        { "a", 15495 },
        { "foo", 12182 },
        { "bar", 5061 },
        { "hello", 866 },
        { "user:1000", 1649 },
        { "{user1000}.following", 3443 },
        { "{user1000}.followers", 3443 },
        { "foo{}{bar}", 8363 },
        { "foo{{bar}}zap", 4015 },
        { "foo{bar}{zap}", 5061 },
        { "{abc", 444 },
        { "abc}", 11054 },
        { "timpush:u:{alice}", 749 },
        { "other:u:{alice}", 749 },
    };

    for (i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        ngx_uint_t  s;

        s = ngx_http_timpush_cluster_slot((u_char *) vectors[i].key,
                                          strlen(vectors[i].key));
        ok(s == vectors[i].slot, vectors[i].key, "slot %lu, expected %lu",
           (unsigned long) s, (unsigned long) vectors[i].slot);
    }
}


/* three masters on 7000-7002, their replicas on 7003-7005 (Redis 6) */

#define THREE_MASTERS                                                         \
    "[[0, 5460, [\"127.0.0.1\", 7000, \"a0\"],"                               \
    "  [\"127.0.0.1\", 7004, \"b1\"]],"                                       \
    " [5461, 10922, [\"127.0.0.1\", 7001, \"a1\"],"                           \
    "  [\"127.0.0.1\", 7005, \"b2\"]],"                                       \
    " [10923, 16383, [\"127.0.0.1\", 7002, \"a2\"],"                          \
    "  [\"127.0.0.1\", 7003, \"b0\"]]]"


static ngx_http_timpush_cluster_map_t *
map_asked(const char *notation, const char *asked)
{
    char                            *copy;
    ngx_str_t                        host;
    redisReply                      *r;
    ngx_http_timpush_cluster_map_t  *map;

    r = reply(notation);
    ngx_stubs_log[0] = '\0';

    /* a copy freed at once: the map must have its own */
    copy = asked ? strdup(asked) : NULL;
    host.data = (u_char *) copy;
    host.len = asked ? strlen(asked) : 0;

    map = ngx_http_timpush_cluster_map_build(r, asked ? &host : NULL,
                                             &test_log);
    free(copy);
    freeReplyObject(r);

    return map;
}


static ngx_http_timpush_cluster_map_t *
map_of(const char *notation)
{
    return map_asked(notation, NULL);
}


static int
node_is(ngx_http_timpush_cluster_node_t *n, const char *host, in_port_t port)
{
    return n && n->port == port && n->host.len == strlen(host)
           && memcmp(n->host.data, host, n->host.len) == 0
           && n->host.data[n->host.len] == '\0';
}


static void
test_map(void)
{
    ngx_str_t                         host;
    ngx_int_t                         i;
    ngx_http_timpush_cluster_node_t  *nodes, *n;
    ngx_http_timpush_cluster_map_t   *map, *cur, *held;

    map = map_of(THREE_MASTERS);
    ok(map != NULL, "map: 3 masters, 3 replicas", "%s", ngx_stubs_log);
    if (map == NULL) {
        return;
    }

    nodes = map->nodes.elts;
    ok(map->nmasters == 3 && map->nodes.nelts == 6, "map: node counts",
       "%lu masters, %lu nodes", (unsigned long) map->nmasters,
       (unsigned long) map->nodes.nelts);
    ok(map->covered == 16384, "map: every slot covered", "%lu",
       (unsigned long) map->covered);
    ok(node_is(ngx_http_timpush_cluster_map_master(map, 0), "127.0.0.1",
               7000)
       && node_is(ngx_http_timpush_cluster_map_master(map, 5460),
                  "127.0.0.1", 7000)
       && node_is(ngx_http_timpush_cluster_map_master(map, 5461),
                  "127.0.0.1", 7001)
       && node_is(ngx_http_timpush_cluster_map_master(map, 10923),
                  "127.0.0.1", 7002)
       && node_is(ngx_http_timpush_cluster_map_master(map, 16383),
                  "127.0.0.1", 7002),
       "map: slot to master at range edges", NULL);
    ok(ngx_http_timpush_cluster_map_master(map, 16384) == NULL,
       "map: slot 16384 has no master", NULL);

    ngx_str_set(&host, "127.0.0.1");
    i = ngx_http_timpush_cluster_map_find(map, &host, 7003);
    ok(i >= 3 && nodes[i].master == 2 && nodes[i].id.len == 2
       && memcmp(nodes[i].id.data, "b0", 2) == 0,
       "map: replica 7003 kept, master 7002", "index %ld", (long) i);
    ok(nodes[0].master == -1 && nodes[1].master == -1 && nodes[2].master == -1,
       "map: masters have no master", NULL);
    ok(nodes[0].replicas == 1 && nodes[1].replicas == 1
       && nodes[2].replicas == 1 && nodes[3].replicas == 0,
       "map: one replica counted per master (WAIT)", "%lu %lu %lu %lu",
       (unsigned long) nodes[0].replicas, (unsigned long) nodes[1].replicas,
       (unsigned long) nodes[2].replicas, (unsigned long) nodes[3].replicas);
    ok(ngx_http_timpush_cluster_map_find(map, &host, 7009) == NGX_DECLINED,
       "map: unknown node not found", NULL);

    /* a refresh while a command holds the old map */

    cur = NULL;
    ngx_http_timpush_cluster_map_swap(&cur, map);
    held = cur;
    ngx_http_timpush_cluster_map_ref(held);

    map = map_of("[[0, 16383, [\"10.0.0.9\", 6379, \"z\"]]]");
    ok(map != NULL, "map: one master for all slots", "%s", ngx_stubs_log);
    if (map == NULL) {
        ngx_http_timpush_cluster_map_unref(held);
        ngx_http_timpush_cluster_map_unref(cur);
        return;
    }

    ngx_http_timpush_cluster_map_swap(&cur, map);
    ok(cur == map && node_is(ngx_http_timpush_cluster_map_master(cur, 100),
                             "10.0.0.9", 6379),
       "swap: new map seen", NULL);
    ok(node_is(ngx_http_timpush_cluster_map_master(held, 100), "127.0.0.1",
               7000),
       "swap: the held map still routes as before", NULL);
    ngx_http_timpush_cluster_map_unref(held);
    ngx_http_timpush_cluster_map_unref(cur);

    /* Redis 7: metadata, hostnames, unknown endpoints, extra fields */

    map = map_of("[[0, 99, [\"127.0.0.1\", 7000, \"a0\","
                 " [\"hostname\", \"node-a.example\", \"ip\", \"127.0.0.1\"],"
                 " \"future\", 1]],"
                 " [100, 199, [\"node-b.example\", 7001, \"a1\", []],"
                 "  [nil, 7004, \"b1\", []], [\"?\", 7005, \"b2\", []]],"
                 " [200, 299, [\"\", 7002, \"a2\", []]],"
                 " [300, 399, [\"127.0.0.1\", 7000, \"a0\", []]],"
                 " [400, 499, [\"::1\", 7010, \"a3\", []]]]");
    ok(map != NULL, "map: Redis 7 fields", "%s", ngx_stubs_log);
    if (map == NULL) {
        return;
    }

    nodes = map->nodes.elts;
    n = ngx_http_timpush_cluster_map_master(map, 0);
    ok(node_is(n, "127.0.0.1", 7000) && n->hostname.len == 14
       && memcmp(n->hostname.data, "node-a.example", 14) == 0,
       "map: hostname metadata kept", NULL);
    ok(node_is(ngx_http_timpush_cluster_map_master(map, 150),
               "node-b.example", 7001),
       "map: a host name as endpoint", NULL);
    ok(node_is(ngx_http_timpush_cluster_map_master(map, 250), "", 7002),
       "map: empty endpoint is the host asked", NULL);
    ok(ngx_http_timpush_cluster_map_master(map, 350) == &nodes[0],
       "map: two ranges of one master, one node", NULL);
    ok(node_is(ngx_http_timpush_cluster_map_master(map, 450), "::1", 7010),
       "map: IPv6 endpoint", NULL);
    ok(map->nmasters == 4 && map->nodes.nelts == 5,
       "map: 4 masters and 1 replica (the one announced as \"?\" left out)",
       "%lu, %lu",
       (unsigned long) map->nmasters, (unsigned long) map->nodes.nelts);
    ngx_str_null(&host);
    host.data = (u_char *) "";
    i = ngx_http_timpush_cluster_map_find(map, &host, 7004);
    ok(i >= 4 && nodes[i].master == 1,
       "map: a NULL endpoint is the host asked",
       "index %ld", (long) i);
    ok(ngx_http_timpush_cluster_map_find(map, &host, 7005) == NGX_DECLINED,
       "map: an endpoint \"?\" is nobody's", NULL);
    ok(map->covered == 500 && ngx_http_timpush_cluster_map_master(map, 500)
                              == NULL,
       "map: slots not covered have no master", "%lu",
       (unsigned long) map->covered);
    ngx_http_timpush_cluster_map_unref(map);

    /* unknown endpoints: the host of the node asked */

    map = map_asked("[[0, 99, [nil, 7000, \"a0\"], [\"?\", 7003, \"b0\"]],"
                    " [100, 199, [\"\", 7001, \"a1\"]],"
                    " [200, 299, [\"10.0.0.2\", 7002, \"a2\"]]]",
                    "10.0.0.1");
    ok(map != NULL, "map: unknown endpoints, host asked known", "%s",
       ngx_stubs_log);
    if (map == NULL) {
        return;
    }

    ngx_str_set(&host, "10.0.0.1");
    ok(node_is(ngx_http_timpush_cluster_map_master(map, 0), "10.0.0.1", 7000)
       && node_is(ngx_http_timpush_cluster_map_master(map, 150), "10.0.0.1",
                  7001)
       && node_is(ngx_http_timpush_cluster_map_master(map, 250), "10.0.0.2",
                  7002)
       && ngx_http_timpush_cluster_map_find(map, &host, 7003)
          == NGX_DECLINED,
       "map: NULL and \"\" endpoints get the host asked; a replica "
       "announced as \"?\" is left out", NULL);
    ngx_http_timpush_cluster_map_unref(map);
}


/* a hostile map: too many nodes refused; replicas beyond 16 not kept */

static void
test_map_bounds(void)
{
    int                               n;
    char                             *buf, *p;
    ngx_uint_t                        i;
    ngx_http_timpush_cluster_map_t   *map;
    ngx_http_timpush_cluster_node_t  *nodes;

    buf = malloc(RESP_MAX);
    p = buf;
    p += sprintf(p, "[[0, 0, [\"h\", 1]");

    for (i = 0; i < 20; i++) {
        p += sprintf(p, ", [\"r\", %d]", (int) i + 2);
    }

    sprintf(p, "]]");

    map = map_of(buf);
    ok(map != NULL, "map: a range of 20 replicas", "%s", ngx_stubs_log);

    if (map) {
        nodes = map->nodes.elts;
        ok(map->nodes.nelts == 1 + NGX_HTTP_TIMPUSH_CLUSTER_REPLICAS_MAX
           && nodes[0].replicas == NGX_HTTP_TIMPUSH_CLUSTER_REPLICAS_MAX,
           "map: replicas beyond 16 not kept", "%lu nodes",
           (unsigned long) map->nodes.nelts);
        ngx_http_timpush_cluster_map_unref(map);
    }

    for (n = NGX_HTTP_TIMPUSH_CLUSTER_NODES_MAX;
         n <= NGX_HTTP_TIMPUSH_CLUSTER_NODES_MAX + 1;
         n++)
    {
        p = buf;
        p += sprintf(p, "[");

        for (i = 0; i < (ngx_uint_t) n; i++) {
            p += sprintf(p, "%s[%d, %d, [\"h\", %d]]", i ? ", " : "",
                         (int) i, (int) i, (int) i + 1);
        }

        sprintf(p, "]");

        map = map_of(buf);

        if (n == NGX_HTTP_TIMPUSH_CLUSTER_NODES_MAX) {
            ok(map != NULL, "map: 1000 masters", "%s", ngx_stubs_log);

        } else {
            ok(map == NULL && strstr((char *) ngx_stubs_log, "more than"),
               "map: 1001 masters refused", "%s", ngx_stubs_log);
        }

        if (map) {
            ngx_http_timpush_cluster_map_unref(map);
        }
    }

    free(buf);
}


static void
test_map_malformed(void)
{
    ngx_uint_t                       i;
    ngx_http_timpush_cluster_map_t  *map;

    static struct {
        const char  *name;
        const char  *reply;
        const char  *log;        /* part of the message logged */
    } bad[] = {
        { "empty list", "[]", "not a list" },
        { "status", "+OK", "not a list" },
        { "error", "!ERR This instance has cluster support disabled",
          "not a list" },
        { "integer", "5", "not a list" },
        { "string", "\"slots\"", "not a list" },
        { "range not a list", "[5]", "range 0 is not" },
        { "range of 2", "[[0, 16383]]", "range 0 is not" },
        { "start a string", "[[\"0\", 16383, [\"h\", 1]]]", "range 0 is not" },
        { "end nil", "[[0, nil, [\"h\", 1]]]", "range 0 is not" },
        { "start after end", "[[10, 9, [\"h\", 1]]]", "not within" },
        { "end 16384", "[[0, 16384, [\"h\", 1]]]", "not within" },
        { "start -1", "[[-1, 10, [\"h\", 1]]]", "not within" },
        { "end huge", "[[0, 99999999999, [\"h\", 1]]]", "not within" },
        { "overlap", "[[0, 10, [\"h\", 1]], [10, 20, [\"h\", 2]]]",
          "slot 10 is in two" },
        { "master a string", "[[0, 10, \"h:1\"]]", "no valid master" },
        { "master of 1", "[[0, 10, [\"h\"]]]", "no valid master" },
        { "port a string", "[[0, 10, [\"h\", \"1\"]]]", "no valid master" },
        { "port 0", "[[0, 10, [\"h\", 0]]]", "no valid master" },
        { "port 65536", "[[0, 10, [\"h\", 65536]]]", "no valid master" },
        { "host an integer", "[[0, 10, [1, 1]]]", "no valid master" },
        { "host with a space", "[[0, 10, [\"a b\", 1]]]", "no valid master" },
        { "host with CR", "[[0, 10, [\"a\r\", 1]]]", "no valid master" },
        { "id an integer", "[[0, 10, [\"h\", 1, 5]]]", "no valid master" },
        { "metadata a string", "[[0, 10, [\"h\", 1, \"i\", \"m\"]]]",
          "no valid master" },
        { "metadata odd", "[[0, 10, [\"h\", 1, \"i\", [\"hostname\"]]]]",
          "no valid master" },
        { "metadata value integer",
          "[[0, 10, [\"h\", 1, \"i\", [\"hostname\", 5]]]]",
          "no valid master" },
        { "replica of 1", "[[0, 10, [\"h\", 1], [\"r\"]]]",
          "range 0 has an invalid replica" },
        { "replica nil", "[[0, 10, [\"h\", 1], nil]]",
          "range 0 has an invalid replica" },
        { "second range bad", "[[0, 10, [\"h\", 1]], [11, 12, []]]",
          "range 1 has no valid master" },
        { "master announced as ?", "[[0, 10, [\"?\", 1]]]",
          "range 0 has a master announced as \"?\"" },
    };

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        map = map_of(bad[i].reply);
        ok(map == NULL && strstr((char *) ngx_stubs_log, bad[i].log),
           bad[i].name, "map %p, logged \"%s\"", (void *) map,
           ngx_stubs_log);

        if (map) {
            ngx_http_timpush_cluster_map_unref(map);
        }
    }

    ok(ngx_http_timpush_cluster_map_build(NULL, NULL, &test_log) == NULL,
       "no reply", NULL);
}


/* every allocation of a build failing in turn: NULL, nothing leaked */

static void
test_map_alloc(void)
{
    ngx_str_t                        host;
    ngx_uint_t                       n, fails;
    redisReply                      *r;
    ngx_http_timpush_cluster_map_t  *map;

    r = reply(THREE_MASTERS);
    fails = 0;

    for (n = 1; n < 200; n++) {
        ngx_stubs_allocs = 0;
        ngx_stubs_fail_at = n;

        ngx_str_set(&host, "10.0.0.1");
        map = ngx_http_timpush_cluster_map_build(r, &host, &test_log);

        if (map) {
            ngx_http_timpush_cluster_map_unref(map);

            if (ngx_stubs_allocs < n) {
                break;
            }

            fails++;
        }
    }

    ngx_stubs_fail_at = 0;
    freeReplyObject(r);

    ok(fails == 0 && n > 1, "map: each allocation failing gives NULL",
       "%lu builds succeeded despite a failure", (unsigned long) fails);
}


static void
test_redirect(void)
{
    ngx_int_t                            rc;
    ngx_uint_t                           i;
    ngx_http_timpush_cluster_redirect_t  rd;

    static struct {
        const char  *err;
        ngx_int_t    rc;
        ngx_uint_t   type;
        ngx_uint_t   slot;
        const char  *host;
        in_port_t    port;
    } v[] = {
        { "MOVED 3999 127.0.0.1:6381", NGX_OK,
          NGX_HTTP_TIMPUSH_CLUSTER_MOVED, 3999, "127.0.0.1", 6381 },
        { "ASK 3999 127.0.0.1:6381", NGX_OK,
          NGX_HTTP_TIMPUSH_CLUSTER_ASK, 3999, "127.0.0.1", 6381 },
        { "MOVED 0 [::1]:7000", NGX_OK,
          NGX_HTTP_TIMPUSH_CLUSTER_MOVED, 0, "::1", 7000 },
        { "MOVED 16383 ::1:7000", NGX_OK,
          NGX_HTTP_TIMPUSH_CLUSTER_MOVED, 16383, "::1", 7000 },
        { "ASK 12 fe80::1%eth0:6379", NGX_OK,
          NGX_HTTP_TIMPUSH_CLUSTER_ASK, 12, "fe80::1%eth0", 6379 },
        { "MOVED 1 redis-0.redis.svc.cluster.local:6379", NGX_OK,
          NGX_HTTP_TIMPUSH_CLUSTER_MOVED, 1, "redis-0.redis.svc.cluster.local",
          6379 },
        { "MOVED 1 :6380", NGX_OK,
          NGX_HTTP_TIMPUSH_CLUSTER_MOVED, 1, "", 6380 },
        { "MOVED 1 ?:6380", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED 00012 h:65535", NGX_OK,
          NGX_HTTP_TIMPUSH_CLUSTER_MOVED, 12, "h", 65535 },

        { "ERR unknown command", NGX_DECLINED, 0, 0, NULL, 0 },
        { "", NGX_DECLINED, 0, 0, NULL, 0 },
        { "MOVEDX 1 a:1", NGX_DECLINED, 0, 0, NULL, 0 },
        { "ASKING 1 a:1", NGX_DECLINED, 0, 0, NULL, 0 },
        { "moved 1 a:1", NGX_DECLINED, 0, 0, NULL, 0 },
        { "TRYAGAIN Multiple keys request during rehashing of slot",
          NGX_DECLINED, 0, 0, NULL, 0 },
        { "CLUSTERDOWN The cluster is down", NGX_DECLINED, 0, 0, NULL, 0 },

        { "MOVED", NGX_ERROR, 0, 0, NULL, 0 },
        { "ASK", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED ", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED 1", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED 1 ", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED 16384 a:1", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED 123456 a:1", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED -1 a:1", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED +1 a:1", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED abc a:1", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED  1 a:1", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED 1 a", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED 1 a:", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED 1 a:0", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED 1 a:65536", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED 1 a:123456", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED 1 a:1x", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED 1 a:1 ", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED 1 a b:1", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED 1 [::1:7000", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED 1 []:7000", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED 1 [[::1]]:7000", NGX_ERROR, 0, 0, NULL, 0 },
        { "MOVED 1 ::1]:7000", NGX_ERROR, 0, 0, NULL, 0 },
        { "ASK 1 a\x01:1", NGX_ERROR, 0, 0, NULL, 0 },
        { "ASK 1 a/b:1", NGX_ERROR, 0, 0, NULL, 0 },
    };

    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        ngx_memset(&rd, 0xa5, sizeof(rd));

        rc = ngx_http_timpush_cluster_redirect_parse((u_char *) v[i].err,
                                                     strlen(v[i].err), &rd);

        if (rc != NGX_OK || v[i].rc != NGX_OK) {
            ok(rc == v[i].rc, v[i].err, "rc %ld, expected %ld", (long) rc,
               (long) v[i].rc);
            continue;
        }

        ok(rd.type == v[i].type && rd.slot == v[i].slot
           && rd.port == v[i].port && rd.host.len == strlen(v[i].host)
           && rd.host.data == rd.host_buf
           && memcmp(rd.host.data, v[i].host, rd.host.len) == 0
           && rd.host.data[rd.host.len] == '\0',
           v[i].err, "type %d, slot %lu, host \"%.*s\", port %u",
           (int) rd.type, (unsigned long) rd.slot, (int) rd.host.len,
           rd.host.data, (unsigned) rd.port);
    }

    /* the longest host name, and one byte more, with no NUL after it */
    {
        u_char  err[400];
        size_t  len;

        len = ngx_sprintf(err, "MOVED 1 ") - err;
        ngx_memset(err + len, 'h', 255);
        len += 255;
        len = ngx_sprintf(err + len, ":7000") - err;

        rc = ngx_http_timpush_cluster_redirect_parse(err, len, &rd);
        ok(rc == NGX_OK && rd.host.len == 255 && rd.host_buf[255] == '\0',
           "MOVED to a host of 255 bytes", "rc %ld", (long) rc);

        len = ngx_sprintf(err, "MOVED 1 ") - err;
        ngx_memset(err + len, 'h', 256);
        len += 256;
        len = ngx_sprintf(err + len, ":7000") - err;

        rc = ngx_http_timpush_cluster_redirect_parse(err, len, &rd);
        ok(rc == NGX_ERROR, "MOVED to a host of 256 bytes", "rc %ld",
           (long) rc);
    }

    ok(ngx_http_timpush_cluster_redirect_parse(NULL, 0, &rd) == NGX_DECLINED,
       "no error text", NULL);
}


static void
test_route(void)
{
    ngx_uint_t                           i;
    redisReply                          *moved, *ask, *other, *okr, *bad,
                                        *again, *againx;
    ngx_http_timpush_cluster_action_e    a;
    ngx_http_timpush_cluster_route_t     route;
    ngx_http_timpush_cluster_redirect_t  rd;

    moved = reply("!MOVED 5 127.0.0.1:7001");
    ask = reply("!ASK 5 127.0.0.1:7002");
    other = reply("!ERR wrong number of arguments");
    okr = reply("+OK");
    bad = reply("!MOVED 5 nowhere");
    again = reply("!TRYAGAIN Multiple keys request during rehashing of slot");
    againx = reply("!TRYAGAINX");

    ngx_memzero(&route, sizeof(route));

    a = ngx_http_timpush_cluster_route(&route, okr, &rd);
    ok(a == NGX_HTTP_TIMPUSH_CLUSTER_DONE && route.redirects == 0,
       "route: a reply is the answer", NULL);
    a = ngx_http_timpush_cluster_route(&route, NULL, &rd);
    ok(a == NGX_HTTP_TIMPUSH_CLUSTER_DONE, "route: no reply is the caller's",
       NULL);
    a = ngx_http_timpush_cluster_route(&route, other, &rd);
    ok(a == NGX_HTTP_TIMPUSH_CLUSTER_DONE, "route: another error is the "
       "caller's", NULL);

    a = ngx_http_timpush_cluster_route(&route, moved, &rd);
    ok(a == NGX_HTTP_TIMPUSH_CLUSTER_RESEND && !route.asking
       && rd.port == 7001 && rd.slot == 5,
       "route: MOVED resends to the node named, map refreshed", NULL);

    a = ngx_http_timpush_cluster_route(&route, ask, &rd);
    ok(a == NGX_HTTP_TIMPUSH_CLUSTER_ASKING && route.asking
       && rd.port == 7002,
       "route: ASK sends ASKING then the command", NULL);

    a = ngx_http_timpush_cluster_route(&route, okr, &rd);
    ok(a == NGX_HTTP_TIMPUSH_CLUSTER_DONE && !route.asking,
       "route: ASKING holds for one send", NULL);

    ngx_memzero(&route, sizeof(route));

    for (i = 0; i < NGX_HTTP_TIMPUSH_CLUSTER_REDIRECTS_MAX; i++) {
        a = ngx_http_timpush_cluster_route(&route, i % 2 ? ask : moved, &rd);
        if (a == NGX_HTTP_TIMPUSH_CLUSTER_FAIL) {
            break;
        }
    }

    ok(i == NGX_HTTP_TIMPUSH_CLUSTER_REDIRECTS_MAX,
       "route: 5 redirections followed", "failed at %lu", (unsigned long) i);
    a = ngx_http_timpush_cluster_route(&route, moved, &rd);
    ok(a == NGX_HTTP_TIMPUSH_CLUSTER_FAIL, "route: the sixth fails", NULL);

    ngx_memzero(&route, sizeof(route));
    a = ngx_http_timpush_cluster_route(&route, bad, &rd);
    ok(a == NGX_HTTP_TIMPUSH_CLUSTER_FAIL,
       "route: an unreadable MOVED fails", NULL);

    /* TRYAGAIN: the same node again, with ASKING if it was sent */

    ngx_memzero(&route, sizeof(route));
    a = ngx_http_timpush_cluster_route(&route, again, &rd);
    ok(a == NGX_HTTP_TIMPUSH_CLUSTER_RETRY && !route.asking
       && route.redirects == 0,
       "route: TRYAGAIN sends again, not counted (the deadline bounds it)",
       NULL);

    a = ngx_http_timpush_cluster_route(&route, ask, &rd);
    a = ngx_http_timpush_cluster_route(&route, again, &rd);
    ok(a == NGX_HTTP_TIMPUSH_CLUSTER_RETRY && route.asking,
       "route: TRYAGAIN after ASKING keeps ASKING", NULL);
    a = ngx_http_timpush_cluster_route(&route, okr, &rd);
    ok(a == NGX_HTTP_TIMPUSH_CLUSTER_DONE && !route.asking,
       "route: then the answer", NULL);

    /* a slot of many keys: TRYAGAIN as long as its keys move */

    ngx_memzero(&route, sizeof(route));
    for (i = 0; i < 4 * NGX_HTTP_TIMPUSH_CLUSTER_REDIRECTS_MAX; i++) {
        ngx_http_timpush_cluster_route(&route, again, &rd);
    }

    a = ngx_http_timpush_cluster_route(&route, again, &rd);
    ok(a == NGX_HTTP_TIMPUSH_CLUSTER_RETRY,
       "route: TRYAGAIN again and again: still sent again", NULL);

    ngx_memzero(&route, sizeof(route));
    a = ngx_http_timpush_cluster_route(&route, againx, &rd);
    ok(a == NGX_HTTP_TIMPUSH_CLUSTER_DONE, "route: TRYAGAINX is an error",
       NULL);

    freeReplyObject(again);
    freeReplyObject(againx);

    freeReplyObject(moved);
    freeReplyObject(ask);
    freeReplyObject(other);
    freeReplyObject(okr);
    freeReplyObject(bad);
}


static void
test_group(ngx_pool_t *pool)
{
    char                              *buf;
    ngx_str_t                          keys[1000];
    ngx_uint_t                         i, j, n, total, *seen, slot, prev;
    ngx_http_timpush_cluster_group_t  *g;

    static const char  *some[] = {
        "timpush:u:{alice}", "timpush:u:{bob}", "timpush:u:{alice}",
        "x", "timpush:u:{bob}", "other:u:{alice}"
    };

    for (i = 0; i < 6; i++) {
        keys[i].data = (u_char *) some[i];
        keys[i].len = strlen(some[i]);
    }

    g = ngx_http_timpush_cluster_group(pool, keys, 6, &n);

    /* alice 749, bob 8955, x 16287 */
    ok(g && n == 3
       && g[0].slot == 749 && g[0].nkeys == 3 && g[0].index[0] == 0
       && g[0].index[1] == 2 && g[0].index[2] == 5
       && g[1].slot == 8955 && g[1].nkeys == 2 && g[1].index[0] == 1
       && g[1].index[1] == 4
       && g[2].nkeys == 1 && g[2].index[0] == 3,
       "group: by slot, indexes in order", "%lu groups", (unsigned long) n);

    g = ngx_http_timpush_cluster_group(pool, keys, 0, &n);
    ok(g != NULL && n == 0, "group: no keys, no group", NULL);

    /* a thousand users: every index once, groups in slot order */

    buf = malloc(1000 * 32);
    for (i = 0; i < 1000; i++) {
        keys[i].data = (u_char *) buf + i * 32;
        keys[i].len = snprintf(buf + i * 32, 32, "timpush:u:{user%lu}",
                               (unsigned long) (i * 7919 % 1000));
    }

    g = ngx_http_timpush_cluster_group(pool, keys, 1000, &n);
    seen = calloc(1000, sizeof(ngx_uint_t));
    total = 0;
    prev = 0;
    j = 1;

    for (i = 0; g && i < n; i++) {
        if (i && g[i].slot <= prev) {
            j = 0;
        }

        prev = g[i].slot;

        for (total += g[i].nkeys; g[i].nkeys; g[i].nkeys--, g[i].index++) {
            slot = ngx_http_timpush_cluster_slot(keys[g[i].index[0]].data,
                                                 keys[g[i].index[0]].len);
            if (slot != g[i].slot || seen[g[i].index[0]]++
                || (g[i].nkeys > 1 && g[i].index[1] <= g[i].index[0]))
            {
                j = 0;
            }
        }
    }

    ok(g && total == 1000 && j, "group: 1000 keys, each once, in order",
       "total %lu", (unsigned long) total);

    for (i = 1; i < 20; i++) {
        ngx_stubs_allocs = 0;
        ngx_stubs_fail_at = i;
        g = ngx_http_timpush_cluster_group(pool, keys, 1000, &n);
        if (ngx_stubs_allocs < i) {
            break;
        }

        if (g != NULL) {
            j = 0;
        }
    }

    ngx_stubs_fail_at = 0;
    ok(j, "group: an allocation failing gives NULL", NULL);

    free(seen);
    free(buf);
}


/* "arg arg ..." split at spaces, as nginx gives a directive's arguments */

static char *
parse(ngx_pool_t *pool, const char *line,
    ngx_http_timpush_cluster_conf_t *ccf)
{
    char        *copy, *p, *save;
    ngx_str_t    args[32];
    ngx_uint_t   n;

    copy = ngx_pnalloc(pool, strlen(line) + 1);
    strcpy(copy, line);
    n = 0;

    for (p = strtok_r(copy, " ", &save); p; p = strtok_r(NULL, " ", &save)) {
        args[n].data = (u_char *) p;
        args[n].len = strlen(p);
        n++;
    }

    ngx_memzero(ccf, sizeof(ngx_http_timpush_cluster_conf_t));

    return ngx_http_timpush_cluster_parse(pool, args, n, ccf);
}


static void
test_parse(ngx_pool_t *pool)
{
    char                             *rv;
    ngx_uint_t                        i;
    ngx_http_timpush_cluster_conf_t   ccf;
    ngx_http_timpush_cluster_seed_t  *seed;

    static struct {
        const char  *line;
        const char  *error;      /* part of it */
    } bad[] = {
        { "", "has no seed node" },
        { "prefix=x", "has no seed node" },
        { "127.0.0.1", "not host:port \"127.0.0.1\"" },
        { "127.0.0.1:0", "not host:port" },
        { "127.0.0.1:65536", "not host:port" },
        { ":7000", "not host:port \":7000\"" },
        { "?:7000", "not host:port" },
        { "unix:/tmp/redis.sock", "not host:port" },
        { "::1:7000", "IPv6 address not in brackets \"::1:7000\"" },
        { "a:1 b:2 A:1", "given twice \"A:1\"" },
        { "tlsx", "not host:port \"tlsx\"" },
        { "a:1 foo=bar", "invalid parameter \"foo=bar\"" },
        { "a:1 prefix=", "invalid \"prefix=\"" },
        { "a:1 prefix=a{b}", "braces" },
        { "a:1 prefix=0123456789012345678901234567890123456789012345678901"
          "2345678901234", "1 to 64" },
        { "a:1 max_pending=0", "invalid \"max_pending=\"" },
        { "a:1 max_pending=x", "invalid \"max_pending=\"" },
        { "a:1 wait=x", "invalid \"wait=\", not a number of replicas "
          "(0 or more): \"wait=x\"" },
        { "a:1 wait=-1", "invalid \"wait=\"" },
        { "a:1 wait=", "invalid \"wait=\"" },
        { "a:1 user=", "empty \"user=\"" },
        { "a:1 user=u", "\"user=\" without \"password_file=\"" },
        { "a:1 password_file=", "empty \"password_file=\"" },
        { "a:1 timeout=0", "invalid \"timeout=\"" },
        { "a:1 timeout=abc", "invalid \"timeout=\"" },
        { "a:1 trusted_certificate=/ca.pem",
          "\"trusted_certificate=\" without \"tls\"" },
        { "a:1 trusted_certificate= tls", "empty \"trusted_certificate=\"" },
    };

    rv = parse(pool, "127.0.0.1:7000 [::1]:7001 redis-a.example:6379", &ccf);
    seed = ccf.seeds.elts;
    ok(rv == NGX_CONF_OK && ccf.seeds.nelts == 3
       && strcmp((char *) seed[0].host.data, "127.0.0.1") == 0
       && seed[0].port == 7000
       && strcmp((char *) seed[1].host.data, "::1") == 0
       && seed[1].port == 7001 && seed[1].name.len == 10
       && strcmp((char *) seed[2].host.data, "redis-a.example") == 0
       && seed[2].port == 6379,
       "parse: seeds", "%s", rv ? rv : "");
    ok(rv == NGX_CONF_OK && ccf.prefix.len == 7 && ccf.timeout == 2000
       && ccf.max_pending == 65536 && !ccf.tls && ccf.user.len == 0
       && ccf.password_file.len == 0 && ccf.wait == 1,
       "parse: timpush_redis's defaults, wait=1", NULL);

    rv = parse(pool, "prefix=tp 10.0.0.1:7000 timeout=5s max_pending=10 "
               "user=gw password_file=/etc/pw tls trusted_certificate=/ca "
               "wait=0", &ccf);
    ok(rv == NGX_CONF_OK && ccf.seeds.nelts == 1 && ccf.prefix.len == 2
       && ccf.timeout == 5000 && ccf.max_pending == 10 && ccf.tls
       && ccf.wait == 0
       && ccf.user.len == 2 && ccf.password_file.len == 7
       && ccf.trusted_certificate.len == 3,
       "parse: every option", "%s", rv ? rv : "");

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rv = parse(pool, bad[i].line, &ccf);
        ok(rv != NGX_CONF_OK && rv != NGX_CONF_ERROR
           && strstr(rv, bad[i].error) != NULL,
           bad[i].line[0] ? bad[i].line : "(nothing)", "\"%s\"",
           rv == NGX_CONF_OK ? "OK" : rv == NGX_CONF_ERROR ? "ERROR" : rv);
    }
}


int
main(void)
{
    ngx_pool_t  *pool;

    test_log.log_level = NGX_LOG_DEBUG;

    pool = ngx_create_pool(1024, &test_log);

    test_slots();
    test_map();
    test_map_malformed();
    test_map_bounds();
    test_map_alloc();
    test_redirect();
    test_route();
    test_group(pool);
    test_parse(pool);

    ngx_destroy_pool(pool);

    printf("1..%lu\n", (unsigned long) tests);

    return failures ? 1 : 0;
}
