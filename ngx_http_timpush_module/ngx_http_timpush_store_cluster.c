
/*
 * Copyright (C) timpush authors
 *
 * The store's routing on a Redis Cluster (DESIGN §15).  Per worker and
 * per store: the slot map (CLUSTER SLOTS, asked of a node of the map, or
 * of a seed), one redis.c connection per node met, each command sent to
 * the master of its first key's slot.
 *
 * A command is sent again only when Redis did not execute it: refused
 * with MOVED (to the node named, the map refreshed), ASK (ASKING then the
 * command, pipelined on the node named, once), TRYAGAIN or CLUSTERDOWN
 * (later, until the command's deadline), or not written at all (its node
 * down: it waits for a refresh of the map).  A command whose connection
 * was lost after it was written may have run: it fails, as on one Redis.
 * A connection that fails makes the map be asked again, which is how a
 * replica promoted by a failover is found.
 *
 * A write its caller is told of is followed by WAIT on the connection it
 * ran on (store.c asks): Redis replicates asynchronously, and a write
 * that only the master has is lost if a replica that lacks it is promoted.
 */


#include "ngx_http_timpush.h"
#include "ngx_http_timpush_store_cluster.h"


#define NGX_HTTP_TIMPUSH_STORE_CLUSTER_RETRY    50     /* ms: TRYAGAIN */
#define NGX_HTTP_TIMPUSH_STORE_CLUSTER_DOWN     100    /* ms: CLUSTERDOWN */
#define NGX_HTTP_TIMPUSH_STORE_CLUSTER_REFRESH  50     /* ms between maps */


typedef struct {
    ngx_queue_t                            queue;
    ngx_http_timpush_store_cluster_t      *cl;
    ngx_http_timpush_redis_t              *rd;       /* NULL: let go */
    ngx_addr_t                             addr;
    ngx_str_t                              host;     /* NUL-terminated */
    ngx_str_t                              name;     /* host:port */
    in_port_t                              port;
    unsigned                               up:1;
} ngx_http_timpush_store_node_t;


struct ngx_http_timpush_store_cluster_s {
    ngx_cycle_t                           *cycle;
    ngx_log_t                             *log;
    ngx_http_timpush_redis_opts_t         *opts;
    ngx_http_timpush_redis_state_pt        state;
    void                                  *data;
    ngx_http_timpush_cluster_map_t        *map;
    ngx_queue_t                            nodes;    /* node_t */
    ngx_queue_t                            parked;   /* route_t */
    ngx_http_timpush_store_node_t         *asked;    /* CLUSTER SLOTS */
    ngx_http_timpush_redis_req_t           slots;
    ngx_event_t                            refresh;
    ngx_uint_t                             tries;    /* failed, in a row */
    ngx_uint_t                             stale;    /* maps, no help */
    ngx_uint_t                             nnodes;
    ngx_uint_t                             wait;     /* wait= */
    unsigned                               refreshing:1;
    unsigned                               again:1;
    unsigned                               up:1;
    unsigned                               unreachable:1;
    unsigned                               exiting:1;
};


static ngx_http_timpush_store_node_t *ngx_http_timpush_store_cluster_node(
    ngx_http_timpush_store_cluster_t *cl, ngx_str_t *host, in_port_t port);
static ngx_int_t ngx_http_timpush_store_cluster_connect(
    ngx_http_timpush_store_node_t *node);
static void ngx_http_timpush_store_cluster_prune(
    ngx_http_timpush_store_cluster_t *cl);
static void ngx_http_timpush_store_cluster_node_state(void *data,
    ngx_uint_t up, const char *error);
static void ngx_http_timpush_store_cluster_check(
    ngx_http_timpush_store_cluster_t *cl, const char *error);
static void ngx_http_timpush_store_cluster_ask(
    ngx_http_timpush_store_cluster_t *cl);
static void ngx_http_timpush_store_cluster_refresh_handler(ngx_event_t *ev);
static void ngx_http_timpush_store_cluster_giveup(
    ngx_http_timpush_store_cluster_t *cl);
static void ngx_http_timpush_store_cluster_slots(
    ngx_http_timpush_redis_req_t *req, redisReply *reply);
static void ngx_http_timpush_store_cluster_later(
    ngx_http_timpush_store_cluster_t *cl, ngx_msec_t delay);
static void ngx_http_timpush_store_cluster_soon(
    ngx_http_timpush_store_cluster_t *cl);
static void ngx_http_timpush_store_cluster_resume(
    ngx_http_timpush_store_cluster_t *cl, ngx_int_t rc);
static ngx_int_t ngx_http_timpush_store_cluster_write(
    ngx_http_timpush_store_node_t *node, ngx_http_timpush_store_route_t *sr);
static void ngx_http_timpush_store_cluster_asked(
    ngx_http_timpush_redis_req_t *req, redisReply *reply);
static void ngx_http_timpush_store_cluster_park(
    ngx_http_timpush_store_route_t *sr);
static void ngx_http_timpush_store_cluster_retry_handler(ngx_event_t *ev);


ngx_http_timpush_store_cluster_t *
ngx_http_timpush_store_cluster_create(ngx_cycle_t *cycle,
    ngx_http_timpush_cluster_conf_t *ccf, ngx_http_timpush_redis_opts_t *opts,
    ngx_http_timpush_redis_state_pt state, void *data)
{
    ngx_uint_t                          i;
    ngx_http_timpush_cluster_seed_t    *seed;
    ngx_http_timpush_store_cluster_t   *cl;

    cl = ngx_pcalloc(cycle->pool, sizeof(ngx_http_timpush_store_cluster_t));
    if (cl == NULL) {
        return NULL;
    }

    cl->cycle = cycle;
    cl->log = cycle->log;
    cl->opts = opts;
    cl->state = state;
    cl->data = data;
    cl->wait = ccf->wait;

    ngx_queue_init(&cl->nodes);
    ngx_queue_init(&cl->parked);

    cl->slots.handler = ngx_http_timpush_store_cluster_slots;
    cl->slots.data = cl;

    cl->refresh.handler = ngx_http_timpush_store_cluster_refresh_handler;
    cl->refresh.data = cl;
    cl->refresh.log = cl->log;
    cl->refresh.cancelable = 1;

    /* the seeds: connected now, the first asked for the map */

    seed = ccf->seeds.elts;

    for (i = 0; i < ccf->seeds.nelts; i++) {
        if (ngx_http_timpush_store_cluster_node(cl, &seed[i].host,
                                                seed[i].port)
            == NULL)
        {
            return NULL;
        }
    }

    ngx_http_timpush_store_cluster_ask(cl);

    return cl;
}


void
ngx_http_timpush_store_cluster_destroy(ngx_http_timpush_store_cluster_t *cl)
{
    ngx_queue_t                    *q;
    ngx_http_timpush_store_node_t  *node;

    if (cl == NULL) {
        return;
    }

    cl->exiting = 1;

    if (cl->refresh.timer_set) {
        ngx_del_timer(&cl->refresh);
    }

    /* the commands waiting: not sent, and now never */
    ngx_http_timpush_store_cluster_resume(cl, NGX_DECLINED);

    /* those in flight are called back with NULL */

    while (!ngx_queue_empty(&cl->nodes)) {
        q = ngx_queue_head(&cl->nodes);
        ngx_queue_remove(q);
        node = ngx_queue_data(q, ngx_http_timpush_store_node_t, queue);
        ngx_http_timpush_redis_destroy(node->rd);
        ngx_free(node);
    }

    if (cl->map) {
        ngx_http_timpush_cluster_map_unref(cl->map);
        cl->map = NULL;
    }
}


/*
 * NGX_OK: commands are taken (a map, or the first one being asked for);
 * NGX_DECLINED: no node has given a map yet, the cluster is not reachable.
 */

ngx_int_t
ngx_http_timpush_store_cluster_ready(ngx_http_timpush_store_cluster_t *cl)
{
    if (cl == NULL || cl->exiting || (cl->map == NULL && cl->unreachable)) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* the node at host:port, made (and connected) the first time */

static ngx_http_timpush_store_node_t *
ngx_http_timpush_store_cluster_node(ngx_http_timpush_store_cluster_t *cl,
    ngx_str_t *host, in_port_t port)
{
    u_char                         *p;
    size_t                          len;
    ngx_int_t                       rc;
    ngx_addr_t                      addr;
    ngx_queue_t                    *q;
    ngx_http_timpush_store_node_t  *node;

    for (q = ngx_queue_head(&cl->nodes);
         q != ngx_queue_sentinel(&cl->nodes);
         q = ngx_queue_next(q))
    {
        node = ngx_queue_data(q, ngx_http_timpush_store_node_t, queue);

        if (node->port == port && node->host.len == host->len
            && ngx_strncasecmp(node->host.data, host->data, host->len) == 0)
        {
            if (node->rd == NULL && !cl->exiting
                && ngx_http_timpush_store_cluster_connect(node) != NGX_OK)
            {
                return NULL;
            }

            return node;
        }
    }

    if (cl->exiting) {
        return NULL;
    }

    /* an address, as CLUSTER SLOTS and redirections give them */

    rc = ngx_parse_addr(cl->cycle->pool, &addr, host->data, host->len);
    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                      "timpush: Redis Cluster node \"%V\" is not an address",
                      host);
        return NULL;
    }

    ngx_inet_set_port(addr.sockaddr, port);

    len = host->len + sizeof("[]:65535");

    node = ngx_calloc(sizeof(ngx_http_timpush_store_node_t) + host->len + 1
                      + len, cl->log);
    if (node == NULL) {
        return NULL;
    }

    p = (u_char *) (node + 1);

    node->host.data = p;
    node->host.len = host->len;
    p = ngx_cpymem(p, host->data, host->len);
    *p++ = '\0';

    node->name.data = p;

    if (ngx_strlchr(host->data, host->data + host->len, ':')) {
        p = ngx_sprintf(p, "[%V]:%d", host, (int) port);

    } else {
        p = ngx_sprintf(p, "%V:%d", host, (int) port);
    }

    node->name.len = p - node->name.data;

    node->port = port;
    node->cl = cl;
    node->addr = addr;

    if (ngx_http_timpush_store_cluster_connect(node) != NGX_OK) {
        ngx_free(node);
        return NULL;
    }

    ngx_queue_insert_tail(&cl->nodes, &node->queue);
    cl->nnodes++;

    return node;
}


static ngx_int_t
ngx_http_timpush_store_cluster_connect(ngx_http_timpush_store_node_t *node)
{
    ngx_http_timpush_store_cluster_t  *cl;

    cl = node->cl;

    node->up = 0;
    node->rd = ngx_http_timpush_redis_create(cl->log, cl->opts, &node->name,
                                             &node->host, &node->addr,
                                     ngx_http_timpush_store_cluster_node_state,
                                             node);
    if (node->rd == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * A node down that the map no longer names as a master (a seed that is
 * gone, a master replaced): no longer connected again and again.  Its
 * connection holds no command (down); a redirection to it connects it.
 */

static void
ngx_http_timpush_store_cluster_prune(ngx_http_timpush_store_cluster_t *cl)
{
    ngx_uint_t                        i;
    ngx_queue_t                      *q;
    ngx_http_timpush_cluster_node_t  *nodes;
    ngx_http_timpush_store_node_t    *node;

    nodes = cl->map->nodes.elts;

    for (q = ngx_queue_head(&cl->nodes);
         q != ngx_queue_sentinel(&cl->nodes);
         q = ngx_queue_next(q))
    {
        node = ngx_queue_data(q, ngx_http_timpush_store_node_t, queue);

        if (node->rd == NULL || node->up
            || ngx_http_timpush_redis_ready(node->rd) == NGX_OK)
        {
            continue;
        }

        for (i = 0; i < cl->map->nmasters; i++) {
            if (nodes[i].port == node->port
                && nodes[i].host.len == node->host.len
                && ngx_strncasecmp(nodes[i].host.data, node->host.data,
                                   node->host.len)
                   == 0)
            {
                break;
            }
        }

        if (i == cl->map->nmasters) {
            ngx_http_timpush_redis_destroy(node->rd);
            node->rd = NULL;
        }
    }
}


static void
ngx_http_timpush_store_cluster_node_state(void *data, ngx_uint_t up,
    const char *error)
{
    ngx_http_timpush_store_node_t *node = data;

    ngx_http_timpush_store_cluster_t  *cl;

    cl = node->cl;
    node->up = up ? 1 : 0;

    if (up) {
        cl->stale = 0;
    }

    /*
     * From within redis_create() (a connect refused at once): the node is
     * not complete yet, and whoever made it looks at it next.
     */

    if (cl->exiting || node->rd == NULL) {
        return;
    }

    /* a node lost: its slots may have another master now */

    if (!up) {
        ngx_http_timpush_store_cluster_ask(cl);
    }

    ngx_http_timpush_store_cluster_check(cl, error);
}


/* up: a map, and every master of it connected */

static void
ngx_http_timpush_store_cluster_check(ngx_http_timpush_store_cluster_t *cl,
    const char *error)
{
    ngx_uint_t                        i, up;
    ngx_http_timpush_cluster_node_t  *nodes;
    ngx_http_timpush_store_node_t    *node;

    up = (cl->map != NULL);

    if (up) {
        nodes = cl->map->nodes.elts;

        for (i = 0; i < cl->map->nmasters; i++) {
            node = ngx_http_timpush_store_cluster_node(cl, &nodes[i].host,
                                                       nodes[i].port);
            if (node == NULL || !node->up) {
                up = 0;
                break;
            }
        }
    }

    if (error || up != cl->up) {
        cl->up = up;
        cl->state(cl->data, up, error);
    }
}


/* CLUSTER SLOTS, one at a time: another asked for runs after it */

static void
ngx_http_timpush_store_cluster_ask(ngx_http_timpush_store_cluster_t *cl)
{
    ngx_uint_t                      i;
    ngx_queue_t                    *q;
    const char                     *argv[2];
    size_t                          argvlen[2];
    ngx_http_timpush_store_node_t  *node;

    if (cl->exiting) {
        return;
    }

    if (cl->refreshing) {
        cl->again = 1;
        return;
    }

    if (cl->refresh.timer_set) {
        return;
    }

    /* the next node after the one asked last, connected if one is */

    q = cl->asked ? &cl->asked->queue : ngx_queue_sentinel(&cl->nodes);
    node = NULL;

    for (i = 0; i < 2 * cl->nnodes + 2; i++) {
        q = ngx_queue_next(q);

        if (q == ngx_queue_sentinel(&cl->nodes)) {
            continue;
        }

        node = ngx_queue_data(q, ngx_http_timpush_store_node_t, queue);

        if (node->rd == NULL) {
            node = NULL;
            continue;
        }

        /* a lap is the nodes and the sentinel: the second, any ready one */

        if (node->up || (i > cl->nnodes
                         && ngx_http_timpush_redis_ready(node->rd) == NGX_OK))
        {
            break;
        }

        node = NULL;
    }

    if (node == NULL) {
        ngx_http_timpush_store_cluster_later(cl, 0);
        return;
    }

    argv[0] = "CLUSTER";
    argvlen[0] = 7;
    argv[1] = "SLOTS";
    argvlen[1] = 5;

    if (ngx_http_timpush_redis_send(node->rd, &cl->slots, 2, argv, argvlen)
        != NGX_OK)
    {
        ngx_http_timpush_store_cluster_later(cl, 0);
        return;
    }

    cl->asked = node;
    cl->refreshing = 1;
}


static void
ngx_http_timpush_store_cluster_refresh_handler(ngx_event_t *ev)
{
    ngx_http_timpush_store_cluster_t *cl = ev->data;

    ngx_http_timpush_store_cluster_giveup(cl);
    ngx_http_timpush_store_cluster_ask(cl);
}


/*
 * Every node tried and no map yet: nothing can be sent, the commands
 * waiting fail (not from within a send: its caller is not told twice).
 */

static void
ngx_http_timpush_store_cluster_giveup(ngx_http_timpush_store_cluster_t *cl)
{
    if (cl->map == NULL && cl->tries >= cl->nnodes) {
        cl->unreachable = 1;
        ngx_http_timpush_store_cluster_resume(cl, NGX_DECLINED);
    }
}


/* no map from this node: another is asked, after a while */

static void
ngx_http_timpush_store_cluster_later(ngx_http_timpush_store_cluster_t *cl,
    ngx_msec_t delay)
{
    if (delay == 0) {
        cl->tries++;
        delay = ngx_min(NGX_HTTP_TIMPUSH_STORE_CLUSTER_REFRESH * cl->tries,
                        1000);
    }

    if (!cl->refresh.timer_set && !cl->exiting) {
        ngx_add_timer(&cl->refresh, delay);
    }
}


/*
 * A command parked for a node that is not up or a slot without a master:
 * the map asked again, but not at once when the last one did not help (a
 * dead master keeps its slots until its replica is elected, and the map
 * would be asked in a loop as fast as Redis answers): 50 ms doubling to
 * 1 s while maps do not help, from the first again once a node is up.
 */

static void
ngx_http_timpush_store_cluster_soon(ngx_http_timpush_store_cluster_t *cl)
{
    ngx_msec_t  delay;

    /* a map being asked for: its reply sends the command, or parks it */

    if (cl->refreshing || cl->refresh.timer_set || cl->exiting) {
        return;
    }

    delay = NGX_HTTP_TIMPUSH_STORE_CLUSTER_REFRESH << ngx_min(cl->stale, 5);
    cl->stale++;

    ngx_add_timer(&cl->refresh, ngx_min(delay, 1000));
}


static void
ngx_http_timpush_store_cluster_slots(ngx_http_timpush_redis_req_t *req,
    redisReply *reply)
{
    ngx_http_timpush_store_cluster_t *cl = req->data;

    ngx_uint_t                        i;
    ngx_http_timpush_cluster_map_t   *map;
    ngx_http_timpush_cluster_node_t  *nodes;

    cl->refreshing = 0;

    if (cl->exiting) {
        return;
    }

    if (reply == NULL) {
        goto failed;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                      "timpush: Redis %V: CLUSTER SLOTS: %*s",
                      &cl->asked->name, (size_t) reply->len, reply->str);
        goto failed;
    }

    map = ngx_http_timpush_cluster_map_build(reply, &cl->asked->host,
                                             cl->log);
    if (map == NULL) {
        goto failed;
    }

    ngx_http_timpush_cluster_map_swap(&cl->map, map);

    cl->tries = 0;
    cl->unreachable = 0;

    /* every master connected, before commands go to it */

    nodes = map->nodes.elts;

    for (i = 0; i < map->nmasters; i++) {
        (void) ngx_http_timpush_store_cluster_node(cl, &nodes[i].host,
                                                   nodes[i].port);
    }

    ngx_http_timpush_store_cluster_prune(cl);
    ngx_http_timpush_store_cluster_check(cl, NULL);

    if (cl->again) {
        cl->again = 0;
        ngx_http_timpush_store_cluster_later(cl,
                                      NGX_HTTP_TIMPUSH_STORE_CLUSTER_REFRESH);
    }

    ngx_http_timpush_store_cluster_resume(cl, NGX_OK);

    return;

failed:

    ngx_http_timpush_store_cluster_later(cl, 0);
    ngx_http_timpush_store_cluster_giveup(cl);
}


/*
 * The commands waiting for a map: sent now (rc NGX_OK), or failed with
 * rc.  Their callers may queue more, which wait for the next map.
 */

static void
ngx_http_timpush_store_cluster_resume(ngx_http_timpush_store_cluster_t *cl,
    ngx_int_t rc)
{
    ngx_int_t                        rv;
    ngx_queue_t                      queue, *q;
    ngx_http_timpush_store_route_t  *sr;

    if (ngx_queue_empty(&cl->parked)) {
        return;
    }

    queue = cl->parked;
    queue.next->prev = &queue;
    queue.prev->next = &queue;
    ngx_queue_init(&cl->parked);

    while (!ngx_queue_empty(&queue)) {
        q = ngx_queue_head(&queue);
        ngx_queue_remove(q);

        sr = ngx_queue_data(q, ngx_http_timpush_store_route_t, queue);
        sr->parked = 0;

        rv = rc;

        if (rv == NGX_OK) {
            rv = ngx_http_timpush_store_cluster_send(sr);
        }

        if (rv != NGX_OK) {
            sr->fail(sr, rv);
        }
    }
}


/*
 * Sends a command: to the node a redirection named, else to the master of
 * its slot.  NGX_OK: sent, or waiting for a map; else it was not sent.
 */

ngx_int_t
ngx_http_timpush_store_cluster_send(ngx_http_timpush_store_route_t *sr)
{
    ngx_http_timpush_store_cluster_t  *cl;
    ngx_http_timpush_cluster_node_t   *master;
    ngx_http_timpush_store_node_t     *node;

    cl = sr->cl;

    if (cl->exiting) {
        return NGX_DECLINED;
    }

    node = sr->target;

    if (node == NULL) {
        if (cl->map == NULL) {
            if (cl->unreachable) {
                return NGX_DECLINED;
            }

            ngx_http_timpush_store_cluster_park(sr);
            return NGX_OK;
        }

        master = ngx_http_timpush_cluster_map_master(cl->map, sr->slot);
        if (master == NULL) {
            /* a slot no master serves: perhaps the next map has one */
            ngx_http_timpush_store_cluster_park(sr);
            ngx_http_timpush_store_cluster_soon(cl);
            return NGX_OK;
        }

        node = ngx_http_timpush_store_cluster_node(cl, &master->host,
                                                   master->port);
        if (node == NULL) {
            return NGX_DECLINED;
        }
    }

    if (ngx_http_timpush_redis_ready(node->rd) != NGX_OK) {
        /* not written: sent once the map names a node that is up */
        sr->target = NULL;
        sr->route.asking = 0;
        ngx_http_timpush_store_cluster_park(sr);
        ngx_http_timpush_store_cluster_soon(cl);
        return NGX_OK;
    }

    return ngx_http_timpush_store_cluster_write(node, sr);
}


/* ASKING and the command back to back on the node, or the command alone */

static ngx_int_t
ngx_http_timpush_store_cluster_write(ngx_http_timpush_store_node_t *node,
    ngx_http_timpush_store_route_t *sr)
{
    size_t                         len;
    ngx_int_t                      rc;
    const char                    *argv;
    ngx_http_timpush_redis_req_t  *asking;

    if (sr->route.asking) {
        asking = ngx_alloc(sizeof(ngx_http_timpush_redis_req_t),
                           sr->cl->log);
        if (asking == NULL) {
            return NGX_ERROR;
        }

        asking->handler = ngx_http_timpush_store_cluster_asked;
        asking->data = asking;

        argv = "ASKING";
        len = 6;

        rc = ngx_http_timpush_redis_send(node->rd, asking, 1, &argv, &len);
        if (rc != NGX_OK) {
            ngx_free(asking);
            return rc;
        }
    }

    rc = ngx_http_timpush_redis_send(node->rd, sr->req, sr->argc, sr->argv,
                                     sr->argvlen);
    if (rc != NGX_OK) {
        return rc;
    }

    sr->node = node;
    sr->target = NULL;

    return NGX_OK;
}


/* ASKING's "+OK", or NULL: the command after it has its own reply */

static void
ngx_http_timpush_store_cluster_asked(ngx_http_timpush_redis_req_t *req,
    redisReply *reply)
{
    ngx_free(req->data);
}


static void
ngx_http_timpush_store_cluster_park(ngx_http_timpush_store_route_t *sr)
{
    if (sr->parked) {
        return;
    }

    sr->parked = 1;
    ngx_queue_insert_tail(&sr->cl->parked, &sr->queue);
}


/*
 * A reply to a command not yet answered to its caller.  NGX_OK: the
 * router sends it again (Redis did not run it); NGX_DECLINED: the reply
 * is the caller's.
 */

ngx_int_t
ngx_http_timpush_store_cluster_reply(ngx_http_timpush_store_route_t *sr,
    redisReply *reply)
{
    ngx_msec_t                            delay;
    ngx_http_timpush_store_node_t        *node;
    ngx_http_timpush_store_cluster_t     *cl;
    ngx_http_timpush_cluster_redirect_t   rd;

    cl = sr->cl;
    node = sr->node;

    if (cl->exiting) {
        return NGX_DECLINED;
    }

    if (reply == NULL) {
        /* the connection is lost: the command may have run */
        ngx_http_timpush_store_cluster_ask(cl);
        return NGX_DECLINED;
    }

    if (reply->type == REDIS_REPLY_ERROR && reply->len >= 11
        && ngx_strncmp(reply->str, "CLUSTERDOWN", 11) == 0)
    {
        /* the cluster fails over: until the command's deadline */
        sr->route.asking = 0;
        delay = NGX_HTTP_TIMPUSH_STORE_CLUSTER_DOWN;
        ngx_http_timpush_store_cluster_ask(cl);
        goto later;
    }

    switch (ngx_http_timpush_cluster_route(&sr->route, reply, &rd)) {

    case NGX_HTTP_TIMPUSH_CLUSTER_DONE:
        return NGX_DECLINED;

    case NGX_HTTP_TIMPUSH_CLUSTER_RETRY:
        /* TRYAGAIN: the same node, ASKING again if it was sent */
        sr->target = node;
        delay = NGX_HTTP_TIMPUSH_STORE_CLUSTER_RETRY;
        goto later;

    case NGX_HTTP_TIMPUSH_CLUSTER_RESEND:
        /* MOVED: the slot has a new master, for every command */
        ngx_http_timpush_store_cluster_ask(cl);

        /* fall through */

    case NGX_HTTP_TIMPUSH_CLUSTER_ASKING:
        if (rd.host.len == 0) {
            rd.host = node->host;
        }

        sr->target = ngx_http_timpush_store_cluster_node(cl, &rd.host,
                                                         rd.port);
        if (sr->target == NULL) {
            return NGX_DECLINED;
        }

        if (ngx_http_timpush_store_cluster_send(sr) != NGX_OK) {
            return NGX_DECLINED;
        }

        return NGX_OK;

    default: /* NGX_HTTP_TIMPUSH_CLUSTER_FAIL */
        ngx_log_error(NGX_LOG_ERR, cl->log, 0,
                      "timpush: Redis %V: redirected %ui times, or "
                      "unreadably: %*s", &node->name, sr->route.redirects,
                      (size_t) reply->len, reply->str);
        return NGX_DECLINED;
    }

later:

    sr->retry.handler = ngx_http_timpush_store_cluster_retry_handler;
    sr->retry.data = sr;
    sr->retry.log = cl->log;
    sr->retry.cancelable = 1;

    ngx_add_timer(&sr->retry, delay);

    return NGX_OK;
}


static void
ngx_http_timpush_store_cluster_retry_handler(ngx_event_t *ev)
{
    ngx_int_t                        rc;
    ngx_http_timpush_store_route_t  *sr;

    sr = ev->data;

    rc = ngx_http_timpush_store_cluster_send(sr);

    if (rc != NGX_OK) {
        sr->fail(sr, rc);
    }
}


/* the command is answered, or freed: it no longer waits here */

void
ngx_http_timpush_store_cluster_cancel(ngx_http_timpush_store_route_t *sr)
{
    if (sr->parked) {
        sr->parked = 0;
        ngx_queue_remove(&sr->queue);
    }

    if (sr->retry.timer_set) {
        ngx_del_timer(&sr->retry);
    }
}


/* is the command waiting, not written (parked, or to be tried again)? */

ngx_int_t
ngx_http_timpush_store_cluster_waiting(ngx_http_timpush_store_route_t *sr)
{
    return sr->parked || sr->retry.timer_set;
}


/* no reply for a whole timeout from the node the command went to */

void
ngx_http_timpush_store_cluster_stuck(ngx_http_timpush_store_route_t *sr,
    ngx_msec_t timeout)
{
    ngx_http_timpush_store_node_t  *node;

    node = sr->node;

    if (node == NULL
        || ngx_http_timpush_redis_ready(node->rd) != NGX_OK
        || ngx_http_timpush_redis_idle(node->rd) < timeout)
    {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, sr->cl->log, 0,
                  "timpush: Redis %V: not answering, reconnecting",
                  &node->name);

    /* this calls back every waiting command of the node */
    ngx_http_timpush_redis_reset(node->rd);
}


/*
 * WAIT on the connection the command ran on (it counts the writes of that
 * connection), for as many replicas as asked (wait=) and as the map gives
 * the master: a master without a replica has none to wait for.  NGX_OK:
 * sent, req is called back with the replicas that have the writes;
 * NGX_DECLINED: nothing to wait for; NGX_ERROR: not sent.
 */

ngx_int_t
ngx_http_timpush_store_cluster_wait(ngx_http_timpush_store_route_t *sr,
    ngx_http_timpush_redis_req_t *req, ngx_msec_t timeout, ngx_uint_t *n)
{
    u_char                             num[NGX_INT_T_LEN];
    u_char                             ms[NGX_INT_T_LEN];
    size_t                             argvlen[3];
    ngx_int_t                          i;
    ngx_uint_t                         replicas;
    const char                        *argv[3];
    ngx_http_timpush_store_node_t     *node;
    ngx_http_timpush_cluster_node_t   *nodes;
    ngx_http_timpush_store_cluster_t  *cl;

    cl = sr->cl;
    node = sr->node;

    if (cl->wait == 0 || node == NULL || cl->exiting) {
        return NGX_DECLINED;
    }

    /* a node the map does not name as a master: as many as asked */

    replicas = cl->wait;

    if (cl->map) {
        i = ngx_http_timpush_cluster_map_find(cl->map, &node->host,
                                              node->port);

        if (i != NGX_DECLINED && (ngx_uint_t) i < cl->map->nmasters) {
            nodes = cl->map->nodes.elts;
            replicas = ngx_min(replicas, nodes[i].replicas);
        }
    }

    if (replicas == 0) {
        return NGX_DECLINED;
    }

    if (node->rd == NULL) {
        return NGX_ERROR;
    }

    /* WAIT 0 would block for ever */
    timeout = ngx_max(timeout, 1);

    argv[0] = "WAIT";
    argvlen[0] = 4;
    argv[1] = (char *) num;
    argvlen[1] = ngx_sprintf(num, "%ui", replicas) - num;
    argv[2] = (char *) ms;
    argvlen[2] = ngx_sprintf(ms, "%M", timeout) - ms;

    if (ngx_http_timpush_redis_send(node->rd, req, 3, argv, argvlen)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    *n = replicas;

    return NGX_OK;
}


/*
 * WAIT answered fewer replicas than asked: the map is read again (a
 * replica the cluster marked as failed is no longer in it, and no longer
 * waited for).
 */

void
ngx_http_timpush_store_cluster_unreplicated(
    ngx_http_timpush_store_route_t *sr)
{
    ngx_http_timpush_store_cluster_ask(sr->cl);
}


ngx_str_t *
ngx_http_timpush_store_cluster_name(ngx_http_timpush_store_route_t *sr)
{
    static ngx_str_t  cluster = ngx_string("cluster");

    if (sr->node) {
        return &((ngx_http_timpush_store_node_t *) sr->node)->name;
    }

    return &cluster;
}
