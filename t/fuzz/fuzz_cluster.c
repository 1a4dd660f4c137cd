
/*
 * Copyright (C) timpush authors
 *
 * libFuzzer target: the Redis Cluster parsers of ngx_http_timpush_cluster.c
 * on what a node (or something posing as one) may send.  The input is
 * read three ways:
 *
 *  - as RESP, by hiredis's reader, and each whole reply given to
 *    ngx_http_timpush_cluster_map_build() as a CLUSTER SLOTS reply: a map
 *    built must be consistent (every slot with a master points at one of
 *    the masters, the count of covered slots is right, every host and id
 *    NUL-terminated, replicas point at a master), and the same reply must
 *    give the same map again with one allocation failing or NULL;
 *  - as an error reply's text, by the redirection parser: a MOVED or ASK
 *    read must have a slot below 16384, a port, a host of at most 255
 *    bytes, NUL-terminated, that the text holds;
 *  - as a reply to a command, by the redirection rules: never more than
 *    NGX_HTTP_TIMPUSH_CLUSTER_REDIRECTS_MAX redirections followed; a
 *    TRYAGAIN (the same node again) is not one: the command's deadline
 *    bounds it, and it changes no count.
 *
 * Built and run by t/fuzz/run.sh.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <stdio.h>
#include <string.h>

#include "ngx_stubs.h"
#include "ngx_http_timpush_cluster.h"


#define fuzz_assert(cond)                                                     \
    if (!(cond)) {                                                            \
        fprintf(stderr, "fuzz_cluster.c:%d: %s\n", __LINE__, #cond);         \
        abort();                                                              \
    }


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static ngx_int_t resp_sane(const uint8_t *data, size_t size);
static void check_map(ngx_http_timpush_cluster_map_t *map);
static void check_str(ngx_str_t *s);
static void run_map(redisReply *r);
static void run_redirect(const uint8_t *data, size_t size);
static void run_route(redisReply *r);


static ngx_log_t  fuzz_log;


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    void         *r;
    ngx_uint_t    n;
    redisReader  *reader;

    ngx_stubs_allocs = 0;
    ngx_stubs_fail_at = 0;
    fuzz_log.log_level = NGX_LOG_DEBUG;

    run_redirect(data, size);

    if (resp_sane(data, size) != NGX_OK) {
        return 0;
    }

    reader = redisReaderCreate();
    if (reader == NULL) {
        return 0;
    }

    if (redisReaderFeed(reader, (const char *) data, size) == REDIS_OK) {

        for (n = 0; n < 8; n++) {
            r = NULL;

            if (redisReaderGetReply(reader, &r) != REDIS_OK || r == NULL) {
                break;
            }

            run_map(r);
            run_route(r);
            freeReplyObject(r);
        }
    }

    redisReaderFree(reader);

    return 0;
}


/*
 * hiredis 0.14 allocates an array's elements from the count it reads,
 * with no limit ("*399999991"): a sure out-of-memory that is hiredis's,
 * not the parser's, is left out.  The store's connection bounds replies
 * on its side.
 */

static ngx_int_t
resp_sane(const uint8_t *data, size_t size)
{
    size_t      i;
    ngx_uint_t  n;

    for (i = 0; i + 1 < size; i++) {
        if (data[i] != '*') {
            continue;
        }

        for (n = 0, i++; i < size && data[i] >= '0' && data[i] <= '9'; i++) {
            n = n * 10 + (data[i] - '0');

            if (n > 65536) {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


static void
run_map(redisReply *r)
{
    ngx_str_t                        asked;
    ngx_uint_t                       allocs, fail;
    ngx_http_timpush_cluster_map_t  *map, *again;

    ngx_str_set(&asked, "127.0.0.1");
    ngx_stubs_allocs = 0;
    ngx_stubs_fail_at = 0;

    map = ngx_http_timpush_cluster_map_build(r, &asked, &fuzz_log);
    allocs = ngx_stubs_allocs;

    if (map == NULL) {
        return;
    }

    check_map(map);

    /* one allocation failing, at a place the input picks */

    fail = 1 + (r->elements + (r->elements ? r->element[0]->type : 0))
               % (allocs ? allocs : 1);

    ngx_stubs_allocs = 0;
    ngx_stubs_fail_at = fail;

    again = ngx_http_timpush_cluster_map_build(r, &asked, &fuzz_log);

    ngx_stubs_fail_at = 0;

    fuzz_assert(fail > allocs || again == NULL);

    if (again) {
        fuzz_assert(ngx_memcmp(again->slot, map->slot, sizeof(map->slot))
                    == 0);
        ngx_http_timpush_cluster_map_unref(again);
    }

    ngx_http_timpush_cluster_map_unref(map);
}


static void
check_map(ngx_http_timpush_cluster_map_t *map)
{
    ngx_uint_t                        i, covered;
    ngx_http_timpush_cluster_node_t  *nodes, *m;

    nodes = map->nodes.elts;

    fuzz_assert(map->nmasters >= 1);
    fuzz_assert(map->nmasters <= map->nodes.nelts);
    fuzz_assert(map->refs == 1);

    covered = 0;

    for (i = 0; i < NGX_HTTP_TIMPUSH_CLUSTER_SLOTS; i++) {
        fuzz_assert(map->slot[i] <= map->nmasters);

        m = ngx_http_timpush_cluster_map_master(map, i);

        if (map->slot[i]) {
            covered++;
            fuzz_assert(m == &nodes[map->slot[i] - 1]);
            fuzz_assert(m->master == -1);

        } else {
            fuzz_assert(m == NULL);
        }
    }

    fuzz_assert(covered == map->covered);

    for (i = 0; i < map->nodes.nelts; i++) {
        check_str(&nodes[i].host);
        check_str(&nodes[i].id);
        check_str(&nodes[i].hostname);
        fuzz_assert(nodes[i].port > 0);
        fuzz_assert(nodes[i].host.len <= NGX_HTTP_TIMPUSH_CLUSTER_HOST_MAX);

        if (i < map->nmasters) {
            fuzz_assert(nodes[i].master == -1);

        } else {
            fuzz_assert(nodes[i].master >= 0
                        && (ngx_uint_t) nodes[i].master < map->nmasters);
        }

        fuzz_assert(ngx_http_timpush_cluster_map_find(map, &nodes[i].host,
                                                      nodes[i].port)
                    == (ngx_int_t) i);
    }
}


static void
check_str(ngx_str_t *s)
{
    if (s->len == 0) {
        return;
    }

    fuzz_assert(s->data != NULL);
    fuzz_assert(s->data[s->len] == '\0');
}


static void
run_redirect(const uint8_t *data, size_t size)
{
    u_char                              *copy;
    ngx_int_t                            rc;
    ngx_http_timpush_cluster_redirect_t  rd;

    /* a copy of exactly the input's size: ASan sees a read past it */

    copy = malloc(size ? size : 1);
    if (copy == NULL) {
        return;
    }

    ngx_memcpy(copy, data, size);

    rc = ngx_http_timpush_cluster_redirect_parse(copy, size, &rd);

    fuzz_assert(rc == NGX_OK || rc == NGX_DECLINED || rc == NGX_ERROR);

    if (rc == NGX_OK) {
        fuzz_assert(rd.type == NGX_HTTP_TIMPUSH_CLUSTER_MOVED
                    || rd.type == NGX_HTTP_TIMPUSH_CLUSTER_ASK);
        fuzz_assert(rd.slot < NGX_HTTP_TIMPUSH_CLUSTER_SLOTS);
        fuzz_assert(rd.port > 0);
        fuzz_assert(rd.host.len <= NGX_HTTP_TIMPUSH_CLUSTER_HOST_MAX);
        fuzz_assert(rd.host.data == rd.host_buf);
        fuzz_assert(rd.host_buf[rd.host.len] == '\0');
        fuzz_assert(rd.host.len == 0
                    || memmem(copy, size, rd.host_buf, rd.host.len) != NULL);
    }

    if (rc == NGX_DECLINED) {
        fuzz_assert(!(size >= 4 && ngx_memcmp(copy, "ASK ", 4) == 0));
        fuzz_assert(!(size >= 6 && ngx_memcmp(copy, "MOVED ", 6) == 0));
        fuzz_assert(!(size == 3 && ngx_memcmp(copy, "ASK", 3) == 0));
        fuzz_assert(!(size == 5 && ngx_memcmp(copy, "MOVED", 5) == 0));
    }

    free(copy);
}


static void
run_route(redisReply *r)
{
    ngx_uint_t                           i, followed;
    ngx_http_timpush_cluster_action_e    a;
    ngx_http_timpush_cluster_route_t     route;
    ngx_http_timpush_cluster_redirect_t  rd;

    ngx_memzero(&route, sizeof(route));
    followed = 0;

    for (i = 0; i < 2 * NGX_HTTP_TIMPUSH_CLUSTER_REDIRECTS_MAX; i++) {
        a = ngx_http_timpush_cluster_route(&route, r, &rd);

        if (a == NGX_HTTP_TIMPUSH_CLUSTER_DONE
            || a == NGX_HTTP_TIMPUSH_CLUSTER_FAIL)
        {
            break;
        }

        fuzz_assert(route.asking
                    == (a == NGX_HTTP_TIMPUSH_CLUSTER_ASKING));

        if (a == NGX_HTTP_TIMPUSH_CLUSTER_RETRY) {
            fuzz_assert(route.redirects == 0);

        } else {
            followed++;
        }
    }

    fuzz_assert(followed <= NGX_HTTP_TIMPUSH_CLUSTER_REDIRECTS_MAX);
}
