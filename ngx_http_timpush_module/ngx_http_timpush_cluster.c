
/*
 * Copyright (C) timpush authors
 *
 * Redis Cluster routing (DESIGN §15), as the Redis Cluster specification
 * says it: a key's hash slot is CRC16 (XMODEM) of the key, or of its hash
 * tag, modulo 16384; CLUSTER SLOTS tells which master serves which slots;
 * a node answers MOVED for a slot that has moved for good (the map is
 * refreshed) and ASK for a slot being migrated (this command alone goes
 * there, after ASKING).  No I/O here: the store asks, this file answers.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_timpush_cluster.h"


typedef struct {
    ngx_uint_t                    slot;
    ngx_uint_t                    index;
} ngx_http_timpush_cluster_key_t;


static ngx_int_t ngx_http_timpush_cluster_range(
    ngx_http_timpush_cluster_map_t *map, redisReply *r, ngx_uint_t n,
    ngx_str_t *asked, ngx_log_t *log);
static ngx_int_t ngx_http_timpush_cluster_replicas(
    ngx_http_timpush_cluster_map_t *map, redisReply *r, ngx_uint_t n,
    ngx_str_t *asked, ngx_log_t *log);
static ngx_int_t ngx_http_timpush_cluster_node(
    ngx_http_timpush_cluster_map_t *map, redisReply *r, ngx_str_t *asked,
    ngx_http_timpush_cluster_node_t *node);
static ngx_int_t ngx_http_timpush_cluster_text(ngx_pool_t *pool,
    redisReply *r, ngx_str_t *s);
static ngx_int_t ngx_http_timpush_cluster_host_valid(u_char *p, size_t len);
static ngx_int_t ngx_http_timpush_cluster_number(u_char *p, size_t len,
    ngx_uint_t max);
static int ngx_libc_cdecl ngx_http_timpush_cluster_key_cmp(const void *one,
    const void *two);
static char *ngx_http_timpush_cluster_seed(ngx_pool_t *pool, ngx_str_t *arg,
    ngx_http_timpush_cluster_conf_t *ccf);
static char *ngx_http_timpush_cluster_option(ngx_pool_t *pool,
    ngx_str_t *arg, ngx_http_timpush_cluster_conf_t *ccf);
static char *ngx_http_timpush_cluster_invalid(ngx_pool_t *pool,
    const char *what, ngx_str_t *arg);


/* CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0 */

static const uint16_t  ngx_http_timpush_cluster_crc16[256] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7,
    0x8108, 0x9129, 0xa14a, 0xb16b, 0xc18c, 0xd1ad, 0xe1ce, 0xf1ef,
    0x1231, 0x0210, 0x3273, 0x2252, 0x52b5, 0x4294, 0x72f7, 0x62d6,
    0x9339, 0x8318, 0xb37b, 0xa35a, 0xd3bd, 0xc39c, 0xf3ff, 0xe3de,
    0x2462, 0x3443, 0x0420, 0x1401, 0x64e6, 0x74c7, 0x44a4, 0x5485,
    0xa56a, 0xb54b, 0x8528, 0x9509, 0xe5ee, 0xf5cf, 0xc5ac, 0xd58d,
    0x3653, 0x2672, 0x1611, 0x0630, 0x76d7, 0x66f6, 0x5695, 0x46b4,
    0xb75b, 0xa77a, 0x9719, 0x8738, 0xf7df, 0xe7fe, 0xd79d, 0xc7bc,
    0x48c4, 0x58e5, 0x6886, 0x78a7, 0x0840, 0x1861, 0x2802, 0x3823,
    0xc9cc, 0xd9ed, 0xe98e, 0xf9af, 0x8948, 0x9969, 0xa90a, 0xb92b,
    0x5af5, 0x4ad4, 0x7ab7, 0x6a96, 0x1a71, 0x0a50, 0x3a33, 0x2a12,
    0xdbfd, 0xcbdc, 0xfbbf, 0xeb9e, 0x9b79, 0x8b58, 0xbb3b, 0xab1a,
    0x6ca6, 0x7c87, 0x4ce4, 0x5cc5, 0x2c22, 0x3c03, 0x0c60, 0x1c41,
    0xedae, 0xfd8f, 0xcdec, 0xddcd, 0xad2a, 0xbd0b, 0x8d68, 0x9d49,
    0x7e97, 0x6eb6, 0x5ed5, 0x4ef4, 0x3e13, 0x2e32, 0x1e51, 0x0e70,
    0xff9f, 0xefbe, 0xdfdd, 0xcffc, 0xbf1b, 0xaf3a, 0x9f59, 0x8f78,
    0x9188, 0x81a9, 0xb1ca, 0xa1eb, 0xd10c, 0xc12d, 0xf14e, 0xe16f,
    0x1080, 0x00a1, 0x30c2, 0x20e3, 0x5004, 0x4025, 0x7046, 0x6067,
    0x83b9, 0x9398, 0xa3fb, 0xb3da, 0xc33d, 0xd31c, 0xe37f, 0xf35e,
    0x02b1, 0x1290, 0x22f3, 0x32d2, 0x4235, 0x5214, 0x6277, 0x7256,
    0xb5ea, 0xa5cb, 0x95a8, 0x8589, 0xf56e, 0xe54f, 0xd52c, 0xc50d,
    0x34e2, 0x24c3, 0x14a0, 0x0481, 0x7466, 0x6447, 0x5424, 0x4405,
    0xa7db, 0xb7fa, 0x8799, 0x97b8, 0xe75f, 0xf77e, 0xc71d, 0xd73c,
    0x26d3, 0x36f2, 0x0691, 0x16b0, 0x6657, 0x7676, 0x4615, 0x5634,
    0xd94c, 0xc96d, 0xf90e, 0xe92f, 0x99c8, 0x89e9, 0xb98a, 0xa9ab,
    0x5844, 0x4865, 0x7806, 0x6827, 0x18c0, 0x08e1, 0x3882, 0x28a3,
    0xcb7d, 0xdb5c, 0xeb3f, 0xfb1e, 0x8bf9, 0x9bd8, 0xabbb, 0xbb9a,
    0x4a75, 0x5a54, 0x6a37, 0x7a16, 0x0af1, 0x1ad0, 0x2ab3, 0x3a92,
    0xfd2e, 0xed0f, 0xdd6c, 0xcd4d, 0xbdaa, 0xad8b, 0x9de8, 0x8dc9,
    0x7c26, 0x6c07, 0x5c64, 0x4c45, 0x3ca2, 0x2c83, 0x1ce0, 0x0cc1,
    0xef1f, 0xff3e, 0xcf5d, 0xdf7c, 0xaf9b, 0xbfba, 0x8fd9, 0x9ff8,
    0x6e17, 0x7e36, 0x4e55, 0x5e74, 0x2e93, 0x3eb2, 0x0ed1, 0x1ef0,

};


/*
 * The hash tag: the text between the first '{' and the first '}' after
 * it, when that text is not empty; otherwise the whole key.
 */

ngx_uint_t
ngx_http_timpush_cluster_slot(u_char *key, size_t len)
{
    size_t    i, start, end;
    uint16_t  crc;

    start = 0;
    end = len;

    for (i = 0; i < len; i++) {
        if (key[i] == '{') {
            break;
        }
    }

    if (i < len) {
        for (end = i + 1; end < len; end++) {
            if (key[end] == '}') {
                break;
            }
        }

        if (end < len && end > i + 1) {
            start = i + 1;

        } else {
            end = len;
        }
    }

    crc = 0;

    for (i = start; i < end; i++) {
        crc = (uint16_t) (crc << 8)
              ^ ngx_http_timpush_cluster_crc16[((crc >> 8) ^ key[i]) & 0xff];
    }

    return crc & (NGX_HTTP_TIMPUSH_CLUSTER_SLOTS - 1);
}


/*
 * CLUSTER SLOTS: [[start, end, master, replica...], ...], each node
 * [endpoint, port, id?, metadata?, ...] (ids since Redis 4, metadata
 * since 7).  Anything else, ranges that overlap or leave 0..16383, and
 * the map is refused whole: the old one stays.  Slots no range names are
 * left without a master (a cluster being set up or failing): a command
 * for one of them fails, and the map is read again later.  "asked" is the
 * host of the node that answered (NULL: none known), for the nodes whose
 * endpoint Redis does not know.
 */

ngx_http_timpush_cluster_map_t *
ngx_http_timpush_cluster_map_build(redisReply *reply, ngx_str_t *asked,
    ngx_log_t *log)
{
    ngx_str_t                        host;
    ngx_uint_t                       i;
    ngx_pool_t                      *pool;
    ngx_http_timpush_cluster_map_t  *map;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements == 0)
    {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "timpush: CLUSTER SLOTS: not a list of slot ranges");
        return NULL;
    }

    pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, log);
    if (pool == NULL) {
        return NULL;
    }

    map = ngx_pcalloc(pool, sizeof(ngx_http_timpush_cluster_map_t));
    if (map == NULL) {
        goto failed;
    }

    map->pool = pool;
    map->refs = 1;

    if (ngx_array_init(&map->nodes, pool, 8,
                       sizeof(ngx_http_timpush_cluster_node_t))
        != NGX_OK)
    {
        goto failed;
    }

    /* the map's own copy: the caller's may go before the map does */

    if (asked) {
        host.len = asked->len;
        host.data = ngx_pnalloc(pool, asked->len + 1);
        if (host.data == NULL) {
            goto failed;
        }

        ngx_memcpy(host.data, asked->data, asked->len);
        host.data[host.len] = '\0';
        asked = &host;
    }

    /* masters first, so that they are nodes[0 .. nmasters - 1] */

    for (i = 0; i < reply->elements; i++) {
        if (ngx_http_timpush_cluster_range(map, reply->element[i], i, asked,
                                           log)
            != NGX_OK)
        {
            goto failed;
        }
    }

    map->nmasters = map->nodes.nelts;

    for (i = 0; i < reply->elements; i++) {
        if (ngx_http_timpush_cluster_replicas(map, reply->element[i], i,
                                              asked, log)
            != NGX_OK)
        {
            goto failed;
        }
    }

    return map;

failed:

    ngx_destroy_pool(pool);

    return NULL;
}


static ngx_int_t
ngx_http_timpush_cluster_range(ngx_http_timpush_cluster_map_t *map,
    redisReply *r, ngx_uint_t n, ngx_str_t *asked, ngx_log_t *log)
{
    ngx_int_t                         m, rc;
    ngx_uint_t                        s;
    long long                         start, end;
    ngx_http_timpush_cluster_node_t   node, *nodes;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 3
        || r->element[0] == NULL || r->element[1] == NULL
        || r->element[0]->type != REDIS_REPLY_INTEGER
        || r->element[1]->type != REDIS_REPLY_INTEGER)
    {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "timpush: CLUSTER SLOTS: range %ui is not "
                      "[start, end, master, ...]", n);
        return NGX_ERROR;
    }

    start = r->element[0]->integer;
    end = r->element[1]->integer;

    if (start < 0 || start > end || end >= NGX_HTTP_TIMPUSH_CLUSTER_SLOTS) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "timpush: CLUSTER SLOTS: range %ui is not within "
                      "0-16383: %L-%L", n, (int64_t) start, (int64_t) end);
        return NGX_ERROR;
    }

    rc = ngx_http_timpush_cluster_node(map, r->element[2], asked, &node);

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "timpush: CLUSTER SLOTS: range %ui has a master "
                      "announced as \"?\" (cluster-preferred-endpoint-type "
                      "hostname without cluster-announce-hostname)", n);
        return NGX_ERROR;
    }

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "timpush: CLUSTER SLOTS: range %ui has no valid "
                      "master", n);
        return NGX_ERROR;
    }

    m = ngx_http_timpush_cluster_map_find(map, &node.host, node.port);

    if (m == NGX_DECLINED) {
        if (map->nodes.nelts >= NGX_HTTP_TIMPUSH_CLUSTER_NODES_MAX) {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "timpush: CLUSTER SLOTS: more than %d nodes",
                          NGX_HTTP_TIMPUSH_CLUSTER_NODES_MAX);
            return NGX_ERROR;
        }

        nodes = ngx_array_push(&map->nodes);
        if (nodes == NULL) {
            return NGX_ERROR;
        }

        node.master = -1;
        *nodes = node;
        m = map->nodes.nelts - 1;
    }

    for (s = (ngx_uint_t) start; s <= (ngx_uint_t) end; s++) {
        if (map->slot[s]) {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "timpush: CLUSTER SLOTS: slot %ui is in two "
                          "ranges", s);
            return NGX_ERROR;
        }

        map->slot[s] = (uint16_t) (m + 1);
    }

    map->covered += (ngx_uint_t) (end - start + 1);

    return NGX_OK;
}


/* a replica kept for information: the store sends only to masters */

static ngx_int_t
ngx_http_timpush_cluster_replicas(ngx_http_timpush_cluster_map_t *map,
    redisReply *r, ngx_uint_t n, ngx_str_t *asked, ngx_log_t *log)
{
    ngx_int_t                         rc;
    ngx_uint_t                        i;
    ngx_http_timpush_cluster_node_t   node, *nodes;

    /* a range's first replicas: enough to WAIT for, and no quadratic map */

    for (i = 3;
         i < r->elements && i < 3 + NGX_HTTP_TIMPUSH_CLUSTER_REPLICAS_MAX;
         i++)
    {
        rc = ngx_http_timpush_cluster_node(map, r->element[i], asked, &node);

        if (rc == NGX_DECLINED) {
            /* announced as "?": not counted (its ranges cannot be told) */
            continue;
        }

        if (rc != NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "timpush: CLUSTER SLOTS: range %ui has an invalid "
                          "replica", n);
            return NGX_ERROR;
        }

        if (ngx_http_timpush_cluster_map_find(map, &node.host, node.port)
            != NGX_DECLINED)
        {
            continue;
        }

        if (map->nodes.nelts >= NGX_HTTP_TIMPUSH_CLUSTER_NODES_MAX) {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "timpush: CLUSTER SLOTS: more than %d nodes",
                          NGX_HTTP_TIMPUSH_CLUSTER_NODES_MAX);
            return NGX_ERROR;
        }

        nodes = ngx_array_push(&map->nodes);
        if (nodes == NULL) {
            return NGX_ERROR;
        }

        node.master = map->slot[r->element[0]->integer] - 1;
        *nodes = node;

        /* how many replicas a write to the master can wait for (WAIT) */
        nodes = map->nodes.elts;
        nodes[node.master].replicas++;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_cluster_node(ngx_http_timpush_cluster_map_t *map,
    redisReply *r, ngx_str_t *asked, ngx_http_timpush_cluster_node_t *node)
{
    ngx_uint_t   i, unknown;
    redisReply  *e, *k, *v;

    ngx_memzero(node, sizeof(ngx_http_timpush_cluster_node_t));

    unknown = 0;

    if (asked) {
        node->host = *asked;

    } else {
        ngx_str_set(&node->host, "");
    }

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
        return NGX_ERROR;
    }

    for (i = 0; i < r->elements; i++) {
        if (r->element[i] == NULL) {
            return NGX_ERROR;
        }
    }

    e = r->element[0];

    if (e->type == REDIS_REPLY_STRING) {
        if (e->len > NGX_HTTP_TIMPUSH_CLUSTER_HOST_MAX
            || ngx_http_timpush_cluster_host_valid((u_char *) e->str, e->len)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        /*
         * "": an endpoint Redis does not know, as NULL (the host asked);
         * "?": a node announced by a host name that was never set, which
         * nobody can reach (Redis's documentation of CLUSTER SLOTS)
         */

        if (e->len == 1 && e->str[0] == '?') {
            unknown = 1;

        } else if (e->len
                   && ngx_http_timpush_cluster_text(map->pool, e, &node->host)
                      != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (e->type != REDIS_REPLY_NIL) {
        return NGX_ERROR;
    }

    e = r->element[1];

    if (e->type != REDIS_REPLY_INTEGER || e->integer < 1
        || e->integer > 65535)
    {
        return NGX_ERROR;
    }

    node->port = (in_port_t) e->integer;

    if (r->elements > 2) {
        e = r->element[2];

        if (e->type != REDIS_REPLY_STRING
            || ngx_http_timpush_cluster_text(map->pool, e, &node->id)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (r->elements < 4) {
        return unknown ? NGX_DECLINED : NGX_OK;
    }

    /* Redis 7's metadata: "hostname", "ip"... as name, value pairs */

    e = r->element[3];

    if (e->type != REDIS_REPLY_ARRAY || e->elements % 2) {
        return NGX_ERROR;
    }

    for (i = 0; i < e->elements; i += 2) {
        k = e->element[i];
        v = e->element[i + 1];

        if (k == NULL || v == NULL || k->type != REDIS_REPLY_STRING
            || v->type != REDIS_REPLY_STRING)
        {
            return NGX_ERROR;
        }

        if (k->len == 8 && ngx_strncmp(k->str, "hostname", 8) == 0
            && ngx_http_timpush_cluster_text(map->pool, v, &node->hostname)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return unknown ? NGX_DECLINED : NGX_OK;
}


/* a copy, NUL-terminated: the reply is freed after the map is built */

static ngx_int_t
ngx_http_timpush_cluster_text(ngx_pool_t *pool, redisReply *r, ngx_str_t *s)
{
    s->len = r->len;
    s->data = ngx_pnalloc(pool, r->len + 1);
    if (s->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(s->data, r->str, r->len);
    s->data[r->len] = '\0';

    return NGX_OK;
}


void
ngx_http_timpush_cluster_map_ref(ngx_http_timpush_cluster_map_t *map)
{
    map->refs++;
}


void
ngx_http_timpush_cluster_map_unref(ngx_http_timpush_cluster_map_t *map)
{
    if (--map->refs == 0) {
        ngx_destroy_pool(map->pool);
    }
}


/*
 * The new map is complete before it is seen: commands routed from now on
 * use it, those in flight keep the old one until they drop it.
 */

void
ngx_http_timpush_cluster_map_swap(ngx_http_timpush_cluster_map_t **cur,
    ngx_http_timpush_cluster_map_t *map)
{
    ngx_http_timpush_cluster_map_t  *old;

    old = *cur;
    *cur = map;

    if (old) {
        ngx_http_timpush_cluster_map_unref(old);
    }
}


ngx_http_timpush_cluster_node_t *
ngx_http_timpush_cluster_map_master(ngx_http_timpush_cluster_map_t *map,
    ngx_uint_t slot)
{
    ngx_http_timpush_cluster_node_t  *nodes;

    if (map == NULL || slot >= NGX_HTTP_TIMPUSH_CLUSTER_SLOTS
        || map->slot[slot] == 0)
    {
        return NULL;
    }

    nodes = map->nodes.elts;

    return &nodes[map->slot[slot] - 1];
}


/* the index of the node at host:port, or NGX_DECLINED */

ngx_int_t
ngx_http_timpush_cluster_map_find(ngx_http_timpush_cluster_map_t *map,
    ngx_str_t *host, in_port_t port)
{
    ngx_uint_t                        i;
    ngx_http_timpush_cluster_node_t  *nodes;

    nodes = map->nodes.elts;

    for (i = 0; i < map->nodes.nelts; i++) {
        if (nodes[i].port == port && nodes[i].host.len == host->len
            && (host->len == 0
                || ngx_strncasecmp(nodes[i].host.data, host->data, host->len)
                   == 0))
        {
            return i;
        }
    }

    return NGX_DECLINED;
}


/*
 * "MOVED <slot> <endpoint>:<port>" or "ASK ...", as an error reply's text
 * (without its '-').  NGX_DECLINED: another error, for the caller;
 * NGX_ERROR: MOVED or ASK that cannot be read.
 */

ngx_int_t
ngx_http_timpush_cluster_redirect_parse(u_char *err, size_t len,
    ngx_http_timpush_cluster_redirect_t *rd)
{
    u_char     *p, *last, *sp;
    ngx_int_t   slot;
    ngx_str_t   host;

    if (err == NULL) {
        return NGX_DECLINED;
    }

    last = err + len;

    if (len >= 5 && ngx_strncmp(err, "MOVED", 5) == 0
        && (len == 5 || err[5] == ' '))
    {
        rd->type = NGX_HTTP_TIMPUSH_CLUSTER_MOVED;
        p = err + 5;

    } else if (len >= 3 && ngx_strncmp(err, "ASK", 3) == 0
               && (len == 3 || err[3] == ' '))
    {
        rd->type = NGX_HTTP_TIMPUSH_CLUSTER_ASK;
        p = err + 3;

    } else {
        return NGX_DECLINED;
    }

    if (p == last) {
        return NGX_ERROR;
    }

    p++;

    sp = ngx_strlchr(p, last, ' ');
    if (sp == NULL) {
        return NGX_ERROR;
    }

    slot = ngx_http_timpush_cluster_number(p, sp - p,
                                           NGX_HTTP_TIMPUSH_CLUSTER_SLOTS - 1);
    if (slot == NGX_ERROR) {
        return NGX_ERROR;
    }

    p = sp + 1;

    if (ngx_http_timpush_cluster_address(p, last - p, &host, &rd->port)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    rd->slot = slot;
    rd->host.len = host.len;
    rd->host.data = rd->host_buf;
    ngx_memcpy(rd->host_buf, host.data, host.len);
    rd->host_buf[host.len] = '\0';

    return NGX_OK;
}


/*
 * What to do after a reply to a command routed by slot.  ASKING holds
 * for the one send that follows an ASK; redirections are counted so
 * that two nodes that disagree cannot send a command back and forth.
 * TRYAGAIN is a command on several keys of a slot being migrated, some
 * moved and some not yet: the same send again, on the same node, until
 * the keys have moved (a slot of many keys takes a while): not counted,
 * the command's deadline bounds it.
 */

ngx_http_timpush_cluster_action_e
ngx_http_timpush_cluster_route(ngx_http_timpush_cluster_route_t *route,
    redisReply *reply, ngx_http_timpush_cluster_redirect_t *rd)
{
    unsigned   asking;
    ngx_int_t  rc;

    asking = route->asking;
    route->asking = 0;

    if (reply == NULL || reply->type != REDIS_REPLY_ERROR) {
        return NGX_HTTP_TIMPUSH_CLUSTER_DONE;
    }

    if (reply->len >= 8 && ngx_strncmp(reply->str, "TRYAGAIN", 8) == 0
        && (reply->len == 8 || reply->str[8] == ' '))
    {
        route->asking = asking;
        return NGX_HTTP_TIMPUSH_CLUSTER_RETRY;
    }

    rc = ngx_http_timpush_cluster_redirect_parse((u_char *) reply->str,
                                                 reply->len, rd);

    if (rc == NGX_DECLINED) {
        return NGX_HTTP_TIMPUSH_CLUSTER_DONE;
    }

    if (rc != NGX_OK
        || ++route->redirects > NGX_HTTP_TIMPUSH_CLUSTER_REDIRECTS_MAX)
    {
        return NGX_HTTP_TIMPUSH_CLUSTER_FAIL;
    }

    if (rd->type == NGX_HTTP_TIMPUSH_CLUSTER_ASK) {
        route->asking = 1;
        return NGX_HTTP_TIMPUSH_CLUSTER_ASKING;
    }

    return NGX_HTTP_TIMPUSH_CLUSTER_RESEND;
}


/*
 * "<host>:<port>" as Redis writes an endpoint: an IPv6 address bare
 * ("::1:7000", the port after the last ':') or in brackets, a host name,
 * or nothing or "?" for an endpoint Redis does not know (host empty).
 * The host points into s.
 */

ngx_int_t
ngx_http_timpush_cluster_address(u_char *s, size_t len, ngx_str_t *host,
    in_port_t *port)
{
    u_char     *colon, *p;
    ngx_int_t   n;

    colon = NULL;

    for (p = s; p < s + len; p++) {
        if (*p == ':') {
            colon = p;
        }
    }

    if (colon == NULL) {
        return NGX_ERROR;
    }

    n = ngx_http_timpush_cluster_number(colon + 1, s + len - colon - 1,
                                        65535);
    if (n == NGX_ERROR || n == 0) {
        return NGX_ERROR;
    }

    host->data = s;
    host->len = colon - s;

    if (host->len && host->data[0] == '[') {
        if (host->len < 3 || host->data[host->len - 1] != ']') {
            return NGX_ERROR;
        }

        host->data++;
        host->len -= 2;

        if (ngx_strlchr(host->data, host->data + host->len, ']')
            || ngx_strlchr(host->data, host->data + host->len, '['))
        {
            return NGX_ERROR;
        }

    } else if (host->len == 1 && host->data[0] == '?') {
        /* a node announced by a host name never set: nobody reaches it */
        return NGX_ERROR;
    }

    if (host->len > NGX_HTTP_TIMPUSH_CLUSTER_HOST_MAX
        || ngx_http_timpush_cluster_host_valid(host->data, host->len)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    *port = (in_port_t) n;

    return NGX_OK;
}


/* letters, digits, '.', '-', '_', ':' and '%' (an IPv6 zone), or "?" */

static ngx_int_t
ngx_http_timpush_cluster_host_valid(u_char *p, size_t len)
{
    u_char  c;
    size_t  i;

    if (len == 1 && p[0] == '?') {
        return NGX_OK;
    }

    for (i = 0; i < len; i++) {
        c = p[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'
            || c == ':' || c == '%')
        {
            continue;
        }

        return NGX_ERROR;
    }

    return NGX_OK;
}


/* decimal digits only, at most max */

static ngx_int_t
ngx_http_timpush_cluster_number(u_char *p, size_t len, ngx_uint_t max)
{
    size_t      i;
    ngx_uint_t  n;

    if (len == 0 || len > 5) {
        return NGX_ERROR;
    }

    n = 0;

    for (i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return NGX_ERROR;
        }

        n = n * 10 + (p[i] - '0');
    }

    if (n > max) {
        return NGX_ERROR;
    }

    return (ngx_int_t) n;
}


/*
 * Keys split by slot, for scripts: Redis Cluster runs a script only on
 * keys of one slot.  Groups come in slot order, each with the indexes of
 * its keys in the order given, so that answers are put back in place.
 */

ngx_http_timpush_cluster_group_t *
ngx_http_timpush_cluster_group(ngx_pool_t *pool, ngx_str_t *keys,
    ngx_uint_t nkeys, ngx_uint_t *ngroups)
{
    ngx_uint_t                         i, g, *index;
    ngx_http_timpush_cluster_key_t    *k;
    ngx_http_timpush_cluster_group_t  *groups;

    *ngroups = 0;

    if (nkeys == 0) {
        return ngx_pcalloc(pool, sizeof(ngx_http_timpush_cluster_group_t));
    }

    k = ngx_palloc(pool, nkeys * sizeof(ngx_http_timpush_cluster_key_t));
    if (k == NULL) {
        return NULL;
    }

    index = ngx_palloc(pool, nkeys * sizeof(ngx_uint_t));
    if (index == NULL) {
        return NULL;
    }

    for (i = 0; i < nkeys; i++) {
        k[i].slot = ngx_http_timpush_cluster_slot(keys[i].data, keys[i].len);
        k[i].index = i;
    }

    ngx_qsort(k, nkeys, sizeof(ngx_http_timpush_cluster_key_t),
              ngx_http_timpush_cluster_key_cmp);

    g = 1;

    for (i = 1; i < nkeys; i++) {
        if (k[i].slot != k[i - 1].slot) {
            g++;
        }
    }

    groups = ngx_palloc(pool, g * sizeof(ngx_http_timpush_cluster_group_t));
    if (groups == NULL) {
        return NULL;
    }

    g = 0;

    for (i = 0; i < nkeys; i++) {
        if (i == 0 || k[i].slot != k[i - 1].slot) {
            groups[g].slot = k[i].slot;
            groups[g].index = &index[i];
            groups[g].nkeys = 0;
            g++;
        }

        index[i] = k[i].index;
        groups[g - 1].nkeys++;
    }

    *ngroups = g;

    return groups;
}


static int ngx_libc_cdecl
ngx_http_timpush_cluster_key_cmp(const void *one, const void *two)
{
    const ngx_http_timpush_cluster_key_t  *a = one, *b = two;

    if (a->slot != b->slot) {
        return a->slot < b->slot ? -1 : 1;
    }

    if (a->index != b->index) {
        return a->index < b->index ? -1 : 1;
    }

    return 0;
}


/*
 * timpush_redis_cluster's arguments (the directive's name left out):
 * seed nodes as host:port, and timpush_redis's options.  NGX_CONF_OK, or
 * the message that "nginx -t" prints after the directive's name.  Host
 * names of seeds are resolved by the caller, when the configuration is
 * read (ngx_http_timpush_cluster_conf.c).
 */

char *
ngx_http_timpush_cluster_parse(ngx_pool_t *pool, ngx_str_t *args,
    ngx_uint_t nargs, ngx_http_timpush_cluster_conf_t *ccf)
{
    char        *rv;
    ngx_uint_t   i;

    if (ngx_array_init(&ccf->seeds, pool, 4,
                       sizeof(ngx_http_timpush_cluster_seed_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    ngx_str_set(&ccf->prefix, "timpush");
    ccf->timeout = 2000;
    ccf->max_pending = 65536;
    ccf->wait = 1;

    for (i = 0; i < nargs; i++) {

        if (ngx_strlchr(args[i].data, args[i].data + args[i].len, '=')
            || (args[i].len == 3 && ngx_strncmp(args[i].data, "tls", 3) == 0))
        {
            rv = ngx_http_timpush_cluster_option(pool, &args[i], ccf);

        } else {
            rv = ngx_http_timpush_cluster_seed(pool, &args[i], ccf);
        }

        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    if (ccf->seeds.nelts == 0) {
        return "has no seed node: host:port expected";
    }

    if (ccf->user.len && ccf->password_file.len == 0) {
        return "has \"user=\" without \"password_file=\"";
    }

    if (ccf->trusted_certificate.len && !ccf->tls) {
        return "has \"trusted_certificate=\" without \"tls\"";
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_timpush_cluster_seed(ngx_pool_t *pool, ngx_str_t *arg,
    ngx_http_timpush_cluster_conf_t *ccf)
{
    ngx_str_t                         host;
    in_port_t                         port;
    ngx_uint_t                        i;
    ngx_http_timpush_cluster_seed_t  *seed;

    if (ngx_http_timpush_cluster_address(arg->data, arg->len, &host, &port)
        != NGX_OK
        || host.len == 0)
    {
        return ngx_http_timpush_cluster_invalid(pool,
                   "has a seed node that is not host:port", arg);
    }

    /* nginx reads an IPv6 address with a port only in brackets */

    if (arg->data[0] != '['
        && ngx_strlchr(host.data, host.data + host.len, ':'))
    {
        return ngx_http_timpush_cluster_invalid(pool,
                   "has a seed node with an IPv6 address not in brackets",
                   arg);
    }

    seed = ccf->seeds.elts;

    for (i = 0; i < ccf->seeds.nelts; i++) {
        if (seed[i].port == port && seed[i].host.len == host.len
            && ngx_strncasecmp(seed[i].host.data, host.data, host.len) == 0)
        {
            return ngx_http_timpush_cluster_invalid(pool,
                       "has a seed node given twice", arg);
        }
    }

    seed = ngx_array_push(&ccf->seeds);
    if (seed == NULL) {
        return NGX_CONF_ERROR;
    }

    seed->name = *arg;
    seed->port = port;
    seed->host.len = host.len;
    seed->host.data = ngx_pnalloc(pool, host.len + 1);
    if (seed->host.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(seed->host.data, host.data, host.len);
    seed->host.data[host.len] = '\0';

    return NGX_CONF_OK;
}


/* the options of timpush_redis (ngx_http_timpush_module.c), and tls */

static char *
ngx_http_timpush_cluster_option(ngx_pool_t *pool, ngx_str_t *arg,
    ngx_http_timpush_cluster_conf_t *ccf)
{
    u_char     *p;
    ngx_int_t   n;
    ngx_str_t   s;

    if (arg->len == 3 && ngx_strncmp(arg->data, "tls", 3) == 0) {
        ccf->tls = 1;
        return NGX_CONF_OK;
    }

    if (ngx_strncmp(arg->data, "prefix=", 7) == 0) {
        s.data = arg->data + 7;
        s.len = arg->len - 7;

        if (s.len == 0 || s.len > 64) {
            return "has an invalid \"prefix=\": 1 to 64 characters";
        }

        for (p = s.data; p < s.data + s.len; p++) {
            if (*p <= ' ' || *p == '{' || *p == '}' || *p == 0x7f) {
                return "has an invalid \"prefix=\": no spaces, control "
                       "characters or braces (braces make hash tags)";
            }
        }

        ccf->prefix = s;
        return NGX_CONF_OK;
    }

    if (ngx_strncmp(arg->data, "max_pending=", 12) == 0) {
        n = ngx_atoi(arg->data + 12, arg->len - 12);
        if (n <= 0) {
            return "has an invalid \"max_pending=\"";
        }

        ccf->max_pending = (ngx_uint_t) n;
        return NGX_CONF_OK;
    }

    if (ngx_strncmp(arg->data, "wait=", 5) == 0) {
        n = ngx_atoi(arg->data + 5, arg->len - 5);
        if (n == NGX_ERROR) {
            return ngx_http_timpush_cluster_invalid(pool,
                       "has an invalid \"wait=\", not a number of "
                       "replicas (0 or more):", arg);
        }

        ccf->wait = (ngx_uint_t) n;
        return NGX_CONF_OK;
    }

    if (ngx_strncmp(arg->data, "user=", 5) == 0) {
        ccf->user.data = arg->data + 5;
        ccf->user.len = arg->len - 5;

        if (ccf->user.len == 0) {
            return "has an empty \"user=\"";
        }

        return NGX_CONF_OK;
    }

    if (ngx_strncmp(arg->data, "password_file=", 14) == 0) {
        ccf->password_file.data = arg->data + 14;
        ccf->password_file.len = arg->len - 14;

        if (ccf->password_file.len == 0) {
            return "has an empty \"password_file=\"";
        }

        return NGX_CONF_OK;
    }

    if (ngx_strncmp(arg->data, "trusted_certificate=", 20) == 0) {
        ccf->trusted_certificate.data = arg->data + 20;
        ccf->trusted_certificate.len = arg->len - 20;

        if (ccf->trusted_certificate.len == 0) {
            return "has an empty \"trusted_certificate=\"";
        }

        return NGX_CONF_OK;
    }

    if (ngx_strncmp(arg->data, "timeout=", 8) == 0) {
        s.data = arg->data + 8;
        s.len = arg->len - 8;

        ccf->timeout = ngx_parse_time(&s, 0);
        if (ccf->timeout == (ngx_msec_t) NGX_ERROR || ccf->timeout == 0) {
            return "has an invalid \"timeout=\"";
        }

        return NGX_CONF_OK;
    }

    return ngx_http_timpush_cluster_invalid(pool, "has an invalid parameter",
                                            arg);
}


/* "<what> \"<arg>\"", for nginx -t */

static char *
ngx_http_timpush_cluster_invalid(ngx_pool_t *pool, const char *what,
    ngx_str_t *arg)
{
    u_char  *msg, *last;
    size_t   len;

    len = ngx_strlen(what) + sizeof(" \"\"") + arg->len;

    msg = ngx_pnalloc(pool, len);
    if (msg == NULL) {
        return NGX_CONF_ERROR;
    }

    last = ngx_snprintf(msg, len - 1, "%s \"%V\"", what, arg);
    *last = '\0';

    return (char *) msg;
}
