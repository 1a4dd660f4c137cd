
/*
 * Copyright (C) timpush authors
 *
 * Durable asynchronous pushes (DESIGN §14) on a Redis stream,
 * "<prefix>:pushes", consumed by group "timpush":
 *
 *   enqueue   POST /v1/push with "async": true, checked and rendered as a
 *             synchronous push, is appended (its body) and answered 202
 *             {"push_id"} once Redis has it.
 *   consume   with "timpush_async on;" every worker reads the stream on a
 *             connection of its own (XREADGROUP ... BLOCK, never blocking
 *             nginx), pushes through the same pipeline (push.c), records
 *             each entry in "<prefix>:p:{<id>}" as it comes, and when the
 *             push is over marks it done, acknowledges and deletes it.
 *   retry     a push whose devices failed for a cause that passes (the
 *             transport, 429, 500, 503, Redis) is pushed again, with
 *             backoff, until its expiration or timpush_async_retry: each
 *             try is keyed by the push's msg_id (its id if it has none), so
 *             a device that got it is not sent it again and a badge is
 *             counted once (DESIGN §12).
 *   recover   a push held by a consumer silent for timpush_async_claim is
 *             claimed by another (XAUTOCLAIM) and pushed again the same
 *             way: only a notification in flight when its consumer died
 *             can reach a phone twice (with the same apns-collapse-id).
 *             A consumer touches the pushes it holds (XCLAIM, JUSTID) so
 *             that a long push is not taken from it.
 *   quit      a worker that exits reads no more and leaves what it holds
 *             unacknowledged, for another to claim.
 *
 * On a Redis Cluster the stream and a push's hash are in two slots, and
 * what one script does on one Redis is two steps, in an order that keeps
 * what a reader sees true: enqueue appends to the stream, then writes the
 * hash ("queued" meanwhile read from the stream); finish marks the hash
 * done, then acknowledges and deletes the entry (a push done but still in
 * the stream is claimed again and finds its devices marked); a read looks
 * at the hash, then at the stream.
 */


#include "ngx_http_timpush.h"
#include "ngx_http_timpush_push.h"
#include "ngx_http_timpush_metrics.h"


#define NGX_HTTP_TIMPUSH_ASYNC_BLOCK      5000     /* ms, XREADGROUP */
#define NGX_HTTP_TIMPUSH_ASYNC_ACTIVE     4        /* pushes per worker */
#define NGX_HTTP_TIMPUSH_ASYNC_RECORDS    256      /* entries per RECORD */
#define NGX_HTTP_TIMPUSH_ASYNC_FLUSH      20       /* ms */
#define NGX_HTTP_TIMPUSH_ASYNC_WAIT       1000     /* ms, Redis away */
#define NGX_HTTP_TIMPUSH_ASYNC_ID_MAX     64


typedef struct ngx_http_timpush_async_push_s  ngx_http_timpush_async_push_t;


typedef struct {
    ngx_http_timpush_main_conf_t       *tmcf;
    ngx_log_t                          *log;
    ngx_str_t                           consumer;     /* <host>:<pid> */
    ngx_str_t                           stream;       /* <prefix>:pushes */
    ngx_str_t                           p_prefix;     /* <prefix>:p:{ */
    ngx_event_t                         read;         /* XREADGROUP again */
    ngx_event_t                         claim;        /* XAUTOCLAIM */
    ngx_event_t                         touch;        /* XCLAIM JUSTID */
    ngx_http_timpush_store_cmd_t       *reading;
    ngx_http_timpush_store_cmd_t       *claiming;
    ngx_queue_t                         active;
    ngx_uint_t                          nactive;
    unsigned                            group:1;      /* made */
    unsigned                            exiting:1;
} ngx_http_timpush_async_t;


typedef struct ngx_http_timpush_async_write_s {
    ngx_http_timpush_async_push_t      *ap;
    ngx_array_t                         records;      /* ngx_str_t triples */
} ngx_http_timpush_async_write_t;


struct ngx_http_timpush_async_push_s {
    ngx_queue_t                         queue;        /* in active */
    ngx_pool_t                         *pool;         /* the push's life */
    ngx_pool_t                         *round;        /* one try's */
    ngx_str_t                           id;
    ngx_str_t                           key;          /* <prefix>:p:{id} */
    ngx_str_t                           body;
    ngx_http_timpush_push_t            *push;
    ngx_http_timpush_push_hooks_t       hooks;
    ngx_array_t                         records;      /* ngx_str_t triples */
    ngx_array_t                         failures;     /* entries, a try's
                                                         transient ones */
    ngx_event_t                         flush;
    ngx_event_t                         again;        /* the next try */
    ngx_event_t                         over;         /* a try is over */
    ngx_event_t                         hold;         /* an exiting worker
                                                         waits for a try */
    ngx_uint_t                          tries;
    ngx_uint_t                          transient;    /* this try's */
    ngx_uint_t                          pending;      /* store commands */
    time_t                              deadline;     /* of retries */
    ngx_pool_t                         *last;         /* a try's, read by
                                                         next(): freed after */
    unsigned                            held:1;       /* in active */
    unsigned                            deciding:1;   /* next() waits */
    unsigned                            finishing:1;
};


typedef struct {
    ngx_http_request_t                 *request;
    ngx_str_t                           id;
    ngx_str_t                           stream;   /* Cluster: read next */
    ngx_uint_t                          step;     /* Cluster: 1 the hash
                                                     asked, 2 the stream */
} ngx_http_timpush_async_get_t;


static ngx_int_t ngx_http_timpush_async_run(ngx_http_request_t *r,
    ngx_http_timpush_script_e script, ngx_str_t *keys, ngx_uint_t nkeys,
    ngx_str_t *args, ngx_uint_t nargs,
    ngx_http_timpush_store_handler_pt handler, void *data);
static void ngx_http_timpush_async_enqueued(void *data, redisReply *reply,
    ngx_int_t rc);
static void ngx_http_timpush_async_queued(void *data, redisReply *reply,
    ngx_int_t rc);
static ngx_int_t ngx_http_timpush_async_accept(ngx_http_request_t *r,
    ngx_str_t *id);
static ngx_int_t ngx_http_timpush_async_queue_hash(ngx_http_request_t *r,
    ngx_str_t *id);
static void ngx_http_timpush_async_hashed(void *data, redisReply *reply,
    ngx_int_t rc);
static void ngx_http_timpush_async_fetched(void *data, redisReply *reply,
    ngx_int_t rc);
static ngx_int_t ngx_http_timpush_async_streamed(
    ngx_http_timpush_async_get_t *get, redisReply *reply);
static ngx_int_t ngx_http_timpush_async_answer(ngx_http_request_t *r,
    ngx_str_t *id, redisReply *reply);
static int ngx_libc_cdecl ngx_http_timpush_async_cmp(const void *one,
    const void *two);
static void ngx_http_timpush_async_read(ngx_event_t *ev);
static void ngx_http_timpush_async_grouped(void *data, redisReply *reply,
    ngx_int_t rc);
static void ngx_http_timpush_async_got(void *data, redisReply *reply,
    ngx_int_t rc);
static void ngx_http_timpush_async_claim(ngx_event_t *ev);
static void ngx_http_timpush_async_claimed(void *data, redisReply *reply,
    ngx_int_t rc);
static void ngx_http_timpush_async_touch(ngx_event_t *ev);
static void ngx_http_timpush_async_ignore(void *data, redisReply *reply,
    ngx_int_t rc);
static ngx_int_t ngx_http_timpush_async_entry(redisReply *entry);
static void ngx_http_timpush_async_try(ngx_event_t *ev);
static void ngx_http_timpush_async_record(void *ctx,
    ngx_http_timpush_push_entry_t *e);
static void ngx_http_timpush_async_over(ngx_event_t *ev);
static void ngx_http_timpush_async_held(ngx_event_t *ev);
static void ngx_http_timpush_async_give_up(
    ngx_http_timpush_async_push_t *ap);
static void ngx_http_timpush_async_release(
    ngx_http_timpush_async_push_t *ap);
static void ngx_http_timpush_async_flush(ngx_event_t *ev);
static ngx_int_t ngx_http_timpush_async_write_hook(void *ctx);
static ngx_int_t ngx_http_timpush_async_write(
    ngx_http_timpush_async_push_t *ap);
static void ngx_http_timpush_async_written(void *data, redisReply *reply,
    ngx_int_t rc);
static void ngx_http_timpush_async_unwritten(
    struct ngx_http_timpush_async_write_s *w);
static void ngx_http_timpush_async_tried(void *ctx, ngx_int_t rc);
static void ngx_http_timpush_async_next(ngx_http_timpush_async_push_t *ap);
static void ngx_http_timpush_async_finish(ngx_http_timpush_async_push_t *ap);
static void ngx_http_timpush_async_done(void *data, redisReply *reply,
    ngx_int_t rc);
static void ngx_http_timpush_async_free(ngx_http_timpush_async_push_t *ap);


static ngx_http_timpush_async_t  *ngx_http_timpush_async;

static const u_char  ngx_http_timpush_async_kinds[] = "sfk";


/* ------------------------------------------------------------ enqueue */

ngx_int_t
ngx_http_timpush_async_enqueue(ngx_http_request_t *r, u_char *data,
    size_t len)
{
    u_char                        *p;
    ngx_int_t                      rc;
    ngx_str_t                      key, args[3], argv[7];
    ngx_time_t                    *tp;
    ngx_http_timpush_main_conf_t  *tmcf;

    if (ngx_http_timpush_store_plain_key(r->pool, "pushes", &key) != NGX_OK
        || ngx_http_timpush_store_plain_key(r->pool, "p:{", &args[2])
           != NGX_OK)
    {
        return ngx_http_timpush_api_store_error(r, NGX_DECLINED);
    }

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    tp = ngx_timeofday();

    args[0].data = data;
    args[0].len = len;
    args[1].data = p;
    args[1].len = ngx_sprintf(p, "%L", (int64_t) tp->sec * 1000 + tp->msec)
                  - p;

    if (ngx_http_timpush_store_clustered()) {

        /* the stream first; the hash once the stream has the push */

        ngx_str_set(&argv[0], "XADD");
        argv[1] = key;
        ngx_str_set(&argv[2], "*");
        ngx_str_set(&argv[3], "body");
        argv[4] = args[0];
        ngx_str_set(&argv[5], "at");
        argv[6] = args[1];

        tmcf = ngx_http_get_module_main_conf(r, ngx_http_timpush_module);

        rc = ngx_http_timpush_store_command(0, argv, 7, tmcf->redis.timeout,
                                            ngx_http_timpush_async_enqueued,
                                            r, ngx_http_timpush_api_cmd(r));
        if (rc != NGX_OK) {
            *ngx_http_timpush_api_cmd(r) = NULL;
            return ngx_http_timpush_api_store_error(r, rc);
        }

        return NGX_DONE;
    }

    return ngx_http_timpush_async_run(r, NGX_HTTP_TIMPUSH_SCRIPT_ENQUEUE,
                                      &key, 1, args, 3,
                                      ngx_http_timpush_async_enqueued, r);
}


/* a script for a request: forgotten if the request goes away (api.c) */

static ngx_int_t
ngx_http_timpush_async_run(ngx_http_request_t *r,
    ngx_http_timpush_script_e script, ngx_str_t *keys, ngx_uint_t nkeys,
    ngx_str_t *args, ngx_uint_t nargs,
    ngx_http_timpush_store_handler_pt handler, void *data)
{
    ngx_int_t  rc;

    rc = ngx_http_timpush_store_run(script, keys, nkeys, args, nargs, handler,
                                    data, ngx_http_timpush_api_cmd(r));
    if (rc != NGX_OK) {
        *ngx_http_timpush_api_cmd(r) = NULL;
        return ngx_http_timpush_api_store_error(r, rc);
    }

    return NGX_DONE;
}


static void
ngx_http_timpush_async_enqueued(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_request_t *r = data;

    ngx_str_t          id;
    ngx_connection_t  *c;

    c = r->connection;
    *ngx_http_timpush_api_cmd(r) = NULL;

    if (rc != NGX_OK || reply->type != REDIS_REPLY_STRING) {
        rc = ngx_http_timpush_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                        "store_unavailable", "%s",
                                        ngx_http_timpush_store_strerror(
                                        rc != NGX_OK ? rc : NGX_ERROR));
        goto done;
    }

    ngx_http_timpush_metric_push("pushed");

    id.data = (u_char *) reply->str;
    id.len = reply->len;

    /* on a Cluster the push's hash, then the answer */

    if (ngx_http_timpush_store_clustered()) {
        id.data = ngx_pstrdup(r->pool, &id);
        if (id.data == NULL) {
            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            goto done;
        }

        if (ngx_http_timpush_async_queue_hash(r, &id) == NGX_OK) {
            return;
        }
    }

    rc = ngx_http_timpush_async_accept(r, &id);

done:

    /* the request may be freed in there */
    ngx_http_finalize_request(r, ngx_http_timpush_api_finish(r, rc));
    ngx_http_run_posted_requests(c);
}


/* 202 {"push_id"} */

static ngx_int_t
ngx_http_timpush_async_accept(ngx_http_request_t *r, ngx_str_t *id)
{
    yajl_gen  g;

    g = ngx_http_timpush_json_gen(r->pool);

    if (g == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    yajl_gen_map_open(g);

    if (ngx_http_timpush_json_key_str(g, "push_id", id) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    yajl_gen_map_close(g);

    return ngx_http_timpush_api_send(r, NGX_HTTP_ACCEPTED, g);
}


/* Cluster: the hash of a push the stream has (its id in r's pool) */

typedef struct {
    ngx_http_request_t                 *request;
    ngx_str_t                           id;
} ngx_http_timpush_async_queue_t;


static ngx_int_t
ngx_http_timpush_async_queue_hash(ngx_http_request_t *r, ngx_str_t *id)
{
    u_char                          *p;
    ngx_int_t                        rc;
    ngx_str_t                        key, arg;
    ngx_time_t                      *tp;
    ngx_http_timpush_async_queue_t  *q;

    q = ngx_palloc(r->pool, sizeof(ngx_http_timpush_async_queue_t));
    p = ngx_pnalloc(r->pool, NGX_INT64_LEN);

    if (q == NULL || p == NULL
        || ngx_http_timpush_store_push_key(r->pool, id, &key) != NGX_OK)
    {
        return NGX_ERROR;
    }

    q->request = r;
    q->id = *id;

    tp = ngx_timeofday();
    arg.data = p;
    arg.len = ngx_sprintf(p, "%L", (int64_t) tp->sec * 1000 + tp->msec) - p;

    rc = ngx_http_timpush_store_run(NGX_HTTP_TIMPUSH_SCRIPT_QUEUED, &key, 1,
                                    &arg, 1, ngx_http_timpush_async_queued, q,
                                    ngx_http_timpush_api_cmd(r));
    if (rc != NGX_OK) {
        *ngx_http_timpush_api_cmd(r) = NULL;
    }

    return rc;
}


/* queued whatever the hash's fate: a read finds the push in the stream */

static void
ngx_http_timpush_async_queued(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_timpush_async_queue_t *q = data;

    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = q->request;
    c = r->connection;
    *ngx_http_timpush_api_cmd(r) = NULL;

    rc = ngx_http_timpush_async_accept(r, &q->id);

    ngx_http_finalize_request(r, ngx_http_timpush_api_finish(r, rc));
    ngx_http_run_posted_requests(c);
}


/* --------------------------------------------------- GET /v1/pushes/{id} */

ngx_int_t
ngx_http_timpush_async_get(ngx_http_request_t *r, ngx_str_t *id)
{
    u_char                        *p, *last;
    ngx_str_t                      keys[2];
    ngx_uint_t                     dash;
    ngx_http_timpush_async_get_t  *get;

    /*
     * a stream id: <ms>-<seq>, digits, as Redis writes them: no leading
     * zero (Redis reads "01-0" as "1-0", which is another push's id)
     */

    dash = 0;
    last = id->data + id->len;

    for (p = id->data; p < last; p++) {
        if (*p == '-' && p > id->data && p + 1 < last && !dash) {
            dash = 1;
            continue;
        }

        if (*p < '0' || *p > '9') {
            break;
        }

        if (*p == '0' && (p == id->data || p[-1] == '-')
            && p + 1 < last && p[1] != '-')
        {
            break;
        }
    }

    if (p < last || !dash || id->len > NGX_HTTP_TIMPUSH_ASYNC_ID_MAX) {
        return ngx_http_timpush_api_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                          "push_id: no such push");
    }

    get = ngx_palloc(r->pool, sizeof(ngx_http_timpush_async_get_t));
    if (get == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    get->request = r;
    get->id = *id;

    if (ngx_http_timpush_store_push_key(r->pool, id, &keys[0]) != NGX_OK
        || ngx_http_timpush_store_plain_key(r->pool, "pushes", &keys[1])
           != NGX_OK)
    {
        return ngx_http_timpush_api_store_error(r, NGX_DECLINED);
    }

    /* Cluster: the hash alone (HGETALL), then perhaps the stream */

    get->step = 0;

    if (ngx_http_timpush_store_clustered()) {
        get->stream = keys[1];
        get->step = 1;

        return ngx_http_timpush_async_run(r, NGX_HTTP_TIMPUSH_SCRIPT_LIST,
                                          keys, 1, NULL, 0,
                                          ngx_http_timpush_async_fetched,
                                          get);
    }

    return ngx_http_timpush_async_run(r, NGX_HTTP_TIMPUSH_SCRIPT_FETCH, keys,
                                      2, id, 1,
                                      ngx_http_timpush_async_fetched, get);
}


static void
ngx_http_timpush_async_fetched(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_timpush_async_get_t *get = data;

    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = get->request;
    c = r->connection;
    *ngx_http_timpush_api_cmd(r) = NULL;

    if (get->step && rc == NGX_OK
        && ngx_http_timpush_async_streamed(get, reply) == NGX_OK)
    {
        /* the stream is read next, or was: queued */
        return;
    }

    if (rc != NGX_OK) {
        rc = ngx_http_timpush_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                        "store_unavailable", "%s",
                                        ngx_http_timpush_store_strerror(rc));

    } else if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
        rc = ngx_http_timpush_api_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                        "push_id: no such push (unknown, "
                                        "or its results expired)");

    } else {
        rc = ngx_http_timpush_async_answer(r, &get->id, reply);
    }

    ngx_http_finalize_request(r, ngx_http_timpush_api_finish(r, rc));
    ngx_http_run_posted_requests(c);
}


/*
 * Cluster: no hash yet (a push just queued) or any more (expired): the
 * stream is asked (XRANGE id id).  NGX_OK: answered, or asked; else the
 * reply is answered as it is.
 */

static ngx_int_t
ngx_http_timpush_async_streamed(ngx_http_timpush_async_get_t *get,
    redisReply *reply)
{
    ngx_int_t                      rc;
    ngx_str_t                      argv[4];
    redisReply                     queued, fields[2], *elts[2];
    ngx_connection_t              *c;
    ngx_http_request_t            *r;
    ngx_http_timpush_main_conf_t  *tmcf;

    r = get->request;
    c = r->connection;

    if (get->step == 1) {
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements) {
            return NGX_DECLINED;    /* the hash */
        }

        ngx_str_set(&argv[0], "XRANGE");
        argv[1] = get->stream;
        argv[2] = get->id;
        argv[3] = get->id;

        get->step = 2;

        tmcf = ngx_http_get_module_main_conf(r, ngx_http_timpush_module);

        rc = ngx_http_timpush_store_command(0, argv, 4, tmcf->redis.timeout,
                                            ngx_http_timpush_async_fetched,
                                            get, ngx_http_timpush_api_cmd(r));
        if (rc == NGX_OK) {
            return NGX_OK;
        }

        *ngx_http_timpush_api_cmd(r) = NULL;

        rc = ngx_http_timpush_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                        "store_unavailable", "%s",
                                        ngx_http_timpush_store_strerror(rc));
        goto done;
    }

    /* the stream's answer: the entry (queued), or none (404) */

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
        return NGX_DECLINED;
    }

    ngx_memzero(&queued, sizeof(redisReply));
    ngx_memzero(fields, 2 * sizeof(redisReply));

    fields[0].type = REDIS_REPLY_STRING;
    fields[0].str = (char *) "state";
    fields[0].len = 5;
    fields[1].type = REDIS_REPLY_STRING;
    fields[1].str = (char *) "queued";
    fields[1].len = 6;

    elts[0] = &fields[0];
    elts[1] = &fields[1];

    queued.type = REDIS_REPLY_ARRAY;
    queued.elements = 2;
    queued.element = elts;

    rc = ngx_http_timpush_async_answer(r, &get->id, &queued);

done:

    ngx_http_finalize_request(r, ngx_http_timpush_api_finish(r, rc));
    ngx_http_run_posted_requests(c);

    return NGX_OK;
}


/*
 * {"push_id","state","sent","failed","skipped","results":[...]}: the
 * entries in the order of "to"; a user's own entry only when none of its
 * devices has one.
 */

static ngx_int_t
ngx_http_timpush_async_answer(ngx_http_request_t *r, ngx_str_t *id,
    redisReply *reply)
{
    u_char       *p;
    size_t        i, size;
    ngx_buf_t    *b;
    ngx_str_t     state, *f, *v, *prev;
    ngx_uint_t    n, counts[3], k;
    redisReply   *e;
    ngx_array_t   entries;

    ngx_str_set(&state, "queued");

    if (ngx_array_init(&entries, r->pool, reply->elements / 2 + 1,
                       2 * sizeof(ngx_str_t))
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    size = sizeof("{\"push_id\":\"\",\"state\":\"\",\"sent\":,"
                  "\"failed\":,\"skipped\":,\"results\":[]}\n")
           + id->len + 16 + 3 * NGX_INT_T_LEN;

    for (i = 0; i + 1 < reply->elements; i += 2) {
        e = reply->element[i];

        if (e->type != REDIS_REPLY_STRING
            || reply->element[i + 1]->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        if (e->len == 5 && ngx_strncmp(e->str, "state", 5) == 0) {
            state.data = (u_char *) reply->element[i + 1]->str;
            state.len = reply->element[i + 1]->len;
            continue;
        }

        if (e->len < 10 || (e->str[0] != 'd' && e->str[0] != 'u')
            || e->str[1] != ':' || reply->element[i + 1]->len < 2)
        {
            continue;
        }

        f = ngx_array_push(&entries);
        if (f == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        f[0].data = (u_char *) e->str;
        f[0].len = e->len;
        f[1].data = (u_char *) reply->element[i + 1]->str;
        f[1].len = reply->element[i + 1]->len;

        size += f[1].len + 1;
    }

    /* "d:<n>:..." sorts before "u:<n>": by n, then devices first */

    ngx_qsort(entries.elts, entries.nelts, 2 * sizeof(ngx_str_t),
              ngx_http_timpush_async_cmp);

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    counts[0] = 0;
    counts[1] = 0;
    counts[2] = 0;

    f = entries.elts;
    prev = NULL;

    /* the counts first: a pass that also drops shadowed user entries */

    for (n = 0; n < entries.nelts; n++) {
        v = &f[2 * n];

        if (v->data[0] == 'u' && prev
            && ngx_strncmp(prev->data + 2, v->data + 2, 8) == 0)
        {
            v->len = 0;             /* the user has device entries */
            continue;
        }

        if (v->data[0] == 'd') {
            prev = v;
        }

        for (k = 0; k < 3; k++) {
            if (f[2 * n + 1].data[0] == ngx_http_timpush_async_kinds[k]) {
                counts[k]++;
            }
        }
    }

    p = ngx_sprintf(b->last, "{\"push_id\":\"%V\",\"state\":\"%V\","
                    "\"sent\":%ui,\"failed\":%ui,\"skipped\":%ui,"
                    "\"results\":[", id, &state, counts[0], counts[1],
                    counts[2]);

    for (n = 0; n < entries.nelts; n++) {
        if (f[2 * n].len == 0) {
            continue;
        }

        p = ngx_cpymem(p, f[2 * n + 1].data + 1, f[2 * n + 1].len - 1);
        *p++ = ',';
    }

    if (p[-1] == ',') {
        p--;
    }

    p = ngx_cpymem(p, "]}\n", 3);
    b->last = p;
    b->last_buf = 1;
    b->last_in_chain = 1;

    return ngx_http_timpush_api_send_buf(r, NGX_HTTP_OK, b);
}


/* by the place in "to" (8 digits), a user's devices before the user */

static int ngx_libc_cdecl
ngx_http_timpush_async_cmp(const void *one, const void *two)
{
    const ngx_str_t *a = one;
    const ngx_str_t *b = two;

    ngx_int_t  c;

    c = ngx_memcmp(a->data + 2, b->data + 2, 8);
    if (c) {
        return c;
    }

    if (a->data[0] != b->data[0]) {
        return a->data[0] == 'd' ? -1 : 1;
    }

    return ngx_memn2cmp(a->data, b->data, a->len, b->len);
}


/* ----------------------------------------------------------- consumer */

ngx_int_t
ngx_http_timpush_async_init_process(ngx_cycle_t *cycle,
    ngx_http_timpush_main_conf_t *tmcf)
{
    u_char                    *p;
    ngx_http_timpush_async_t  *a;

    if (!tmcf->async || !tmcf->redis_set) {
        return NGX_OK;
    }

    a = ngx_pcalloc(cycle->pool, sizeof(ngx_http_timpush_async_t));
    if (a == NULL) {
        return NGX_ERROR;
    }

    a->tmcf = tmcf;
    a->log = cycle->log;
    ngx_queue_init(&a->active);

    p = ngx_pnalloc(cycle->pool, cycle->hostname.len + 1 + NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    a->consumer.data = p;
    a->consumer.len = ngx_sprintf(p, "%V:%P", &cycle->hostname, ngx_pid) - p;

    if (ngx_http_timpush_store_plain_key(cycle->pool, "pushes", &a->stream)
        != NGX_OK
        || ngx_http_timpush_store_plain_key(cycle->pool, "p:{", &a->p_prefix)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    a->read.handler = ngx_http_timpush_async_read;
    a->read.data = a;
    a->read.log = cycle->log;
    a->read.cancelable = 1;

    a->claim.handler = ngx_http_timpush_async_claim;
    a->claim.data = a;
    a->claim.log = cycle->log;
    a->claim.cancelable = 1;

    a->touch.handler = ngx_http_timpush_async_touch;
    a->touch.data = a;
    a->touch.log = cycle->log;
    a->touch.cancelable = 1;

    ngx_http_timpush_async = a;

    /* once the connections are made */
    ngx_add_timer(&a->read, 100);
    ngx_add_timer(&a->claim, tmcf->async_claim / 2);
    ngx_add_timer(&a->touch, tmcf->async_claim / 3);

    return NGX_OK;
}


/* a worker that exits reads no more; what it holds is left to others */

void
ngx_http_timpush_async_exit_process(ngx_cycle_t *cycle)
{
    ngx_queue_t                    *q;
    ngx_http_timpush_async_t       *a;
    ngx_http_timpush_async_push_t  *ap;

    a = ngx_http_timpush_async;
    if (a == NULL) {
        return;
    }

    a->exiting = 1;

    while (!ngx_queue_empty(&a->active)) {
        q = ngx_queue_head(&a->active);
        ap = ngx_queue_data(q, ngx_http_timpush_async_push_t, queue);
        ngx_http_timpush_async_free(ap);
    }

    ngx_http_timpush_async = NULL;
}


static ngx_uint_t
ngx_http_timpush_async_stopping(ngx_http_timpush_async_t *a)
{
    return a->exiting || ngx_exiting || ngx_quit || ngx_terminate;
}


static void
ngx_http_timpush_async_read(ngx_event_t *ev)
{
    ngx_http_timpush_async_t *a = ev->data;

    ngx_int_t  rc;
    ngx_str_t  argv[11];

    if (ngx_http_timpush_async_stopping(a) || a->reading) {
        return;
    }

    if (!a->group) {
        rc = ngx_http_timpush_store_run(NGX_HTTP_TIMPUSH_SCRIPT_GROUP,
                                        &a->stream, 1, NULL, 0,
                                        ngx_http_timpush_async_grouped, a,
                                        &a->reading);
        if (rc != NGX_OK) {
            a->reading = NULL;
            ngx_add_timer(&a->read, NGX_HTTP_TIMPUSH_ASYNC_WAIT);
        }

        return;
    }

    if (a->nactive >= NGX_HTTP_TIMPUSH_ASYNC_ACTIVE) {
        /* the end of a push reads again */
        return;
    }

    ngx_str_set(&argv[0], "XREADGROUP");
    ngx_str_set(&argv[1], "GROUP");
    ngx_str_set(&argv[2], "timpush");
    argv[3] = a->consumer;
    ngx_str_set(&argv[4], "COUNT");
    ngx_str_set(&argv[5], "1");
    ngx_str_set(&argv[6], "BLOCK");
    ngx_str_set(&argv[7], "5000");
    ngx_str_set(&argv[8], "STREAMS");
    argv[9] = a->stream;
    ngx_str_set(&argv[10], ">");

    rc = ngx_http_timpush_store_command(1, argv, 11,
                                        NGX_HTTP_TIMPUSH_ASYNC_BLOCK
                                        + a->tmcf->redis.timeout,
                                        ngx_http_timpush_async_got, a,
                                        &a->reading);
    if (rc != NGX_OK) {
        a->reading = NULL;

        if (!a->read.timer_set) {
            ngx_add_timer(&a->read, NGX_HTTP_TIMPUSH_ASYNC_WAIT);
        }
    }
}


static void
ngx_http_timpush_async_grouped(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_timpush_async_t *a = data;

    a->reading = NULL;

    if (rc == NGX_OK) {
        a->group = 1;
    }

    if (!ngx_http_timpush_async_stopping(a) && !a->read.timer_set) {
        ngx_add_timer(&a->read, rc == NGX_OK ? 1 : NGX_HTTP_TIMPUSH_ASYNC_WAIT);
    }
}


/* XREADGROUP's reply: nil (nothing came), or [[stream, [[id, fields]]]] */

static void
ngx_http_timpush_async_got(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_timpush_async_t *a = data;

    redisReply  *r;

    a->reading = NULL;

    if (rc != NGX_OK) {
        /* NOGROUP after a FLUSHALL, Redis lost: made again, later */
        a->group = 0;

        if (!ngx_http_timpush_async_stopping(a) && !a->read.timer_set) {
            ngx_add_timer(&a->read, NGX_HTTP_TIMPUSH_ASYNC_WAIT);
        }

        return;
    }

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1) {
        r = reply->element[0];

        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2
            && r->element[1]->type == REDIS_REPLY_ARRAY
            && r->element[1]->elements == 1)
        {
            (void) ngx_http_timpush_async_entry(r->element[1]->element[0]);
        }
    }

    if (!ngx_http_timpush_async_stopping(a) && !a->read.timer_set) {
        ngx_add_timer(&a->read, 1);
    }
}


/* pushes held by a consumer silent for timpush_async_claim */

static void
ngx_http_timpush_async_claim(ngx_event_t *ev)
{
    ngx_http_timpush_async_t *a = ev->data;

    u_char     buf[NGX_INT_T_LEN];
    ngx_int_t  rc;
    ngx_str_t  args[2];

    if (ngx_http_timpush_async_stopping(a)) {
        return;
    }

    ngx_add_timer(&a->claim, a->tmcf->async_claim / 2);

    if (!a->group || a->claiming
        || a->nactive >= NGX_HTTP_TIMPUSH_ASYNC_ACTIVE)
    {
        return;
    }

    args[0] = a->consumer;
    args[1].data = buf;
    args[1].len = ngx_sprintf(buf, "%M", a->tmcf->async_claim) - buf;

    rc = ngx_http_timpush_store_run(NGX_HTTP_TIMPUSH_SCRIPT_AUTOCLAIM,
                                    &a->stream, 1, args, 2,
                                    ngx_http_timpush_async_claimed, a,
                                    &a->claiming);
    if (rc != NGX_OK) {
        a->claiming = NULL;
    }
}


/* [next, [[id, fields]], [deleted]]: one at a time, the next at once */

static void
ngx_http_timpush_async_claimed(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_timpush_async_t *a = data;

    redisReply  *list;

    a->claiming = NULL;

    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 2)
    {
        return;
    }

    list = reply->element[1];

    if (list->type != REDIS_REPLY_ARRAY || list->elements == 0
        || list->element[0]->type != REDIS_REPLY_ARRAY)
    {
        return;
    }

    if (ngx_http_timpush_async_entry(list->element[0]) == NGX_OK) {
        ngx_log_error(NGX_LOG_NOTICE, a->log, 0,
                      "timpush async: push %*s claimed from a consumer "
                      "silent for %M ms",
                      (size_t) list->element[0]->element[0]->len,
                      list->element[0]->element[0]->str,
                      a->tmcf->async_claim);
    }

    /* perhaps more: look again soon */

    if (a->claim.timer_set) {
        ngx_del_timer(&a->claim);
    }

    ngx_add_timer(&a->claim, 10);
}


/* the pushes held are still ours: their idle time starts again */

static void
ngx_http_timpush_async_touch(ngx_event_t *ev)
{
    ngx_http_timpush_async_t *a = ev->data;

    ngx_str_t                       args[2];
    ngx_queue_t                    *q;
    ngx_http_timpush_async_push_t  *ap;

    if (ngx_http_timpush_async_stopping(a)) {
        return;
    }

    ngx_add_timer(&a->touch, a->tmcf->async_claim / 3);

    for (q = ngx_queue_head(&a->active);
         q != ngx_queue_sentinel(&a->active);
         q = ngx_queue_next(q))
    {
        ap = ngx_queue_data(q, ngx_http_timpush_async_push_t, queue);

        args[0] = a->consumer;
        args[1] = ap->id;

        (void) ngx_http_timpush_store_run(NGX_HTTP_TIMPUSH_SCRIPT_TOUCH,
                                          &a->stream, 1, args, 2,
                                          ngx_http_timpush_async_ignore, NULL,
                                          NULL);
    }
}


static void
ngx_http_timpush_async_ignore(void *data, redisReply *reply, ngx_int_t rc)
{
    /* fire and forget: the next touch, or a claim, says the rest */
}


/* a stream entry, [id, [field, value, ...]], becomes a push held here */

static ngx_int_t
ngx_http_timpush_async_entry(redisReply *entry)
{
    u_char                         *dash;
    size_t                          i;
    int64_t                         at;
    ngx_pool_t                     *pool;
    redisReply                     *id, *fields, *f, *v;
    ngx_http_timpush_async_t       *a;
    ngx_http_timpush_async_push_t  *ap;

    a = ngx_http_timpush_async;

    if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2) {
        return NGX_ERROR;
    }

    id = entry->element[0];
    fields = entry->element[1];

    if (id->type != REDIS_REPLY_STRING || fields->type != REDIS_REPLY_ARRAY) {
        return NGX_ERROR;
    }

    pool = ngx_create_pool(4096, a->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    ap = ngx_pcalloc(pool, sizeof(ngx_http_timpush_async_push_t));
    if (ap == NULL) {
        goto failed;
    }

    ap->pool = pool;
    ap->id.len = id->len;
    ap->id.data = ngx_pnalloc(pool, id->len);
    if (ap->id.data == NULL) {
        goto failed;
    }

    ngx_memcpy(ap->id.data, id->str, id->len);

    /* an id is <ms>-<seq>: when it was queued */

    dash = ngx_strlchr((u_char *) id->str, (u_char *) id->str + id->len, '-');
    at = ngx_atoof((u_char *) id->str,
                   dash ? (size_t) (dash - (u_char *) id->str) : id->len);

    for (i = 0; i + 1 < fields->elements; i += 2) {
        f = fields->element[i];
        v = fields->element[i + 1];

        if (f->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING
            && f->len == 4 && ngx_strncmp(f->str, "body", 4) == 0)
        {
            ap->body.data = ngx_pnalloc(pool, v->len + 1);
            if (ap->body.data == NULL) {
                goto failed;
            }

            ngx_memcpy(ap->body.data, v->str, v->len);
            ap->body.len = v->len;
        }
    }

    if (ngx_http_timpush_store_push_key(pool, &ap->id, &ap->key) != NGX_OK
        || ngx_array_init(&ap->records, pool, 3 * 16, sizeof(ngx_str_t))
           != NGX_OK
        || ngx_array_init(&ap->failures, pool, 4,
                          sizeof(ngx_http_timpush_push_entry_t))
           != NGX_OK)
    {
        goto failed;
    }

    /* retried until timpush_async_retry after it was queued */
    ap->deadline = (at > 0 ? at / 1000 : ngx_time())
                   + (time_t) (a->tmcf->async_retry / 1000);

    ap->hooks.entry = ngx_http_timpush_async_record;
    ap->hooks.finished = ngx_http_timpush_async_tried;
    ap->hooks.flush = ngx_http_timpush_async_write_hook;
    ap->hooks.ctx = ap;

    ap->flush.handler = ngx_http_timpush_async_flush;
    ap->flush.data = ap;
    ap->flush.log = a->log;
    ap->flush.cancelable = 1;

    ap->again.handler = ngx_http_timpush_async_try;
    ap->again.data = ap;
    ap->again.log = a->log;
    ap->again.cancelable = 1;

    ap->over.handler = ngx_http_timpush_async_over;
    ap->over.data = ap;
    ap->over.log = a->log;
    ap->over.cancelable = 1;

    ap->hold.handler = ngx_http_timpush_async_held;
    ap->hold.data = ap;
    ap->hold.log = a->log;

    ngx_queue_insert_tail(&a->active, &ap->queue);
    a->nactive++;
    ap->held = 1;

    ngx_http_timpush_async_try(&ap->again);

    return NGX_OK;

failed:

    ngx_destroy_pool(pool);
    return NGX_ERROR;
}


/* one try of a push: the whole pipeline, keyed by its msg_id or its id */

static void
ngx_http_timpush_async_try(ngx_event_t *ev)
{
    ngx_http_timpush_async_push_t *ap = ev->data;

    ngx_int_t                        rc;
    ngx_http_timpush_async_t        *a;
    ngx_http_timpush_message_t      *msg;
    ngx_http_timpush_render_err_t    err;

    a = ngx_http_timpush_async;

    if (ngx_http_timpush_async_stopping(a) && ap->tries) {
        /* a try again is another consumer's to make */
        ngx_http_timpush_async_free(ap);
        return;
    }

    /*
     * A try, even in a worker that exits (it got the push while its read
     * was out): the worker waits for it (a timer that is not cancelable)
     * rather than leave it to a claim timpush_async_claim later.
     */

    ngx_add_timer(&ap->hold, a->tmcf->apns_timeout
                             + 2 * a->tmcf->redis.timeout + 1000);

    ap->tries++;
    ap->transient = 0;
    ap->failures.nelts = 0;

    if (ap->round) {
        ngx_destroy_pool(ap->round);
        ap->round = NULL;
    }

    ap->round = ngx_create_pool(16384, a->log);
    if (ap->round == NULL) {
        goto again;
    }

    ap->push = ngx_http_timpush_push_create(ap->round, a->log, a->tmcf);
    if (ap->push == NULL) {
        goto again;
    }

    rc = ngx_http_timpush_push_prepare(ap->push, ap->body.data, ap->body.len,
                                       &err);

    if (rc == NGX_ERROR) {
        goto again;
    }

    msg = ngx_http_timpush_push_message(ap->push);

    if (rc == NGX_DECLINED) {
        /* checked when queued: a configuration changed since (limits) */

        ngx_log_error(NGX_LOG_ERR, a->log, 0,
                      "timpush async: push %V is refused now: %s: %s",
                      &ap->id, err.code, err.msg);

        ngx_destroy_pool(ap->round);
        ap->round = NULL;
        ap->push = NULL;
        ngx_http_timpush_async_finish(ap);
        return;
    }

    /* within its expiration too, when it has one */

    if (msg->expiration > 0 && (time_t) msg->expiration < ap->deadline) {
        ap->deadline = (time_t) msg->expiration;
    }

    rc = ngx_http_timpush_push_run(ap->push, &ap->id, &ap->hooks);

    if (rc == NGX_OK) {
        return;
    }

    /* Redis has no room, or is away: the whole push is tried again */

again:

    if (ap->hold.timer_set) {
        ngx_del_timer(&ap->hold);
    }

    if (ap->round) {
        ngx_destroy_pool(ap->round);
        ap->round = NULL;
    }

    ap->push = NULL;
    ap->transient = 1;

    ngx_http_timpush_async_next(ap);
}


/* an entry of the results, kept to be written with others */

static void
ngx_http_timpush_async_record(void *ctx, ngx_http_timpush_push_entry_t *e)
{
    ngx_http_timpush_async_push_t *ap = ctx;

    u_char                         *p;
    ngx_str_t                      *r;
    ngx_http_timpush_push_entry_t  *f;

    if (e->transient) {
        ap->transient++;

        /* final if this try is the last: kept for the feedback then */

        if (e->token.len) {
            f = ngx_array_push(&ap->failures);
            if (f) {
                *f = *e;
            }
        }
    }

    r = ngx_array_push_n(&ap->records, 3);
    if (r == NULL) {
        return;
    }

    /* the push's memory: kept until Redis has it (a write may fail) */

    p = ngx_pnalloc(ap->pool, 2 + 2 * NGX_INT64_LEN + 2 + e->token.len);
    if (p == NULL) {
        ap->records.nelts -= 3;
        return;
    }

    r[0].data = p;

    if (e->token.len) {
        /* a user's devices as a synchronous answer has them: oldest first */
        p = ngx_sprintf(p, "d:%08ui:%013L:%V", e->rcpt, e->registered_at,
                        &e->token);

    } else {
        p = ngx_sprintf(p, "u:%08ui", e->rcpt);
    }

    r[0].len = p - r[0].data;

    p = ngx_pnalloc(ap->pool, e->json.len + 1);
    if (p == NULL) {
        ap->records.nelts -= 3;
        return;
    }

    r[1].data = p;
    *p++ = ngx_http_timpush_async_kinds[e->kind];
    r[1].len = ngx_cpymem(p, e->json.data, e->json.len) - r[1].data;

    if (e->first) {
        ngx_str_set(&r[2], "n");

    } else {
        ngx_str_set(&r[2], "=");
    }

    if (ap->records.nelts >= 3 * NGX_HTTP_TIMPUSH_ASYNC_RECORDS) {
        (void) ngx_http_timpush_async_write(ap);

    } else if (!ap->flush.timer_set) {
        ngx_add_timer(&ap->flush, NGX_HTTP_TIMPUSH_ASYNC_FLUSH);
    }
}


static void
ngx_http_timpush_async_flush(ngx_event_t *ev)
{
    (void) ngx_http_timpush_async_write(ev->data);
}


static ngx_int_t
ngx_http_timpush_async_write_hook(void *ctx)
{
    return ngx_http_timpush_async_write(ctx);
}


/* the entries kept so far, in one RECORD call (copied by the store) */

static ngx_int_t
ngx_http_timpush_async_write(ngx_http_timpush_async_push_t *ap)
{
    ngx_int_t                       rc;
    ngx_http_timpush_async_write_t  *w;

    if (ap->flush.timer_set) {
        ngx_del_timer(&ap->flush);
    }

    if (ap->records.nelts == 0) {
        return NGX_OK;
    }

    w = ngx_palloc(ap->pool, sizeof(ngx_http_timpush_async_write_t));
    if (w == NULL) {
        return NGX_ERROR;
    }

    w->ap = ap;
    w->records = ap->records;

    if (ngx_array_init(&ap->records, ap->pool, 3 * 16, sizeof(ngx_str_t))
        != NGX_OK)
    {
        ap->records = w->records;
        return NGX_ERROR;
    }

    rc = ngx_http_timpush_store_run(NGX_HTTP_TIMPUSH_SCRIPT_RECORD, &ap->key,
                                    1, w->records.elts, w->records.nelts,
                                    ngx_http_timpush_async_written, w, NULL);
    if (rc != NGX_OK) {
        ngx_http_timpush_async_unwritten(w);
        return rc;
    }

    ap->pending++;

    return NGX_OK;
}


/* not written: kept for the next write, and tried again (transient) */

static void
ngx_http_timpush_async_unwritten(ngx_http_timpush_async_write_t *w)
{
    ngx_str_t                      *r;
    ngx_http_timpush_async_push_t  *ap;

    ap = w->ap;
    ap->transient++;

    r = ngx_array_push_n(&ap->records, w->records.nelts);
    if (r) {
        ngx_memcpy(r, w->records.elts, w->records.nelts * sizeof(ngx_str_t));
    }
}


static void
ngx_http_timpush_async_written(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_timpush_async_write_t *w = data;

    ngx_pool_t                     *last;
    ngx_http_timpush_async_push_t  *ap;

    ap = w->ap;
    ap->pending--;

    if (!ap->held) {
        ngx_http_timpush_async_release(ap);
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_timpush_async_unwritten(w);
    }

    if (ap->pending) {
        return;
    }

    if (ap->deciding) {
        /* the try is over and every write answered: what next */
        ap->deciding = 0;
        last = ap->last;
        ap->last = NULL;

        ngx_http_timpush_async_next(ap);

        if (last) {
            ngx_destroy_pool(last);
        }

        return;
    }

    if (ap->finishing) {
        ngx_http_timpush_async_finish(ap);
    }
}


/* every device of a try answered (called from inside the push) */

static void
ngx_http_timpush_async_tried(void *ctx, ngx_int_t rc)
{
    ngx_http_timpush_async_push_t *ap = ctx;

    (void) ngx_http_timpush_async_write(ap);

    ngx_add_timer(&ap->over, 0);
}


/* a try that outlives its hold: the worker no longer waits for it */

static void
ngx_http_timpush_async_held(ngx_event_t *ev)
{
}


static void
ngx_http_timpush_async_over(ngx_event_t *ev)
{
    ngx_http_timpush_async_push_t *ap = ev->data;

    ngx_pool_t  *round;

    if (ap->hold.timer_set) {
        ngx_del_timer(&ap->hold);
    }

    /*
     * The try's memory goes (the records were copied by the store), once
     * next() is over: a give-up there reads the try's failures (their
     * user, token and reason are in it).  ap may be freed in next().
     */

    ap->push = NULL;
    round = ap->round;
    ap->round = NULL;

    if (ap->pending) {
        /* the try's records not all written: decided once they are */
        ap->deciding = 1;
        ap->last = round;
        return;
    }

    ngx_http_timpush_async_next(ap);

    if (round) {
        ngx_destroy_pool(round);
    }
}


/*
 * Done; or tried again after a backoff while time is left; or, the
 * worker exiting, left unacknowledged for another to claim.
 */

static void
ngx_http_timpush_async_next(ngx_http_timpush_async_push_t *ap)
{
    ngx_msec_t                 delay;
    ngx_http_timpush_async_t  *a;

    a = ngx_http_timpush_async;

    if (ap->transient && ngx_http_timpush_async_stopping(a)) {
        ngx_log_error(NGX_LOG_NOTICE, a->log, 0,
                      "timpush async: push %V left to another consumer: "
                      "this worker is exiting", &ap->id);
        ngx_http_timpush_async_free(ap);
        return;
    }

    delay = 1000 << ngx_min(ap->tries - 1, 6);
    delay = ngx_min(delay, 60000);

    /* the next try starts before the deadline, or there is none */

    if (ap->transient
        && ngx_time() + (time_t) (delay / 1000) < ap->deadline)
    {
        ngx_log_error(NGX_LOG_INFO, a->log, 0,
                      "timpush async: push %V: %ui notification(s) or "
                      "user(s) to try again in %M ms", &ap->id,
                      ap->transient, delay);

        ngx_add_timer(&ap->again, delay);
        return;
    }

    if (ap->transient) {
        ngx_http_timpush_async_give_up(ap);
    }

    ap->finishing = 1;

    if (ap->pending == 0) {
        ngx_http_timpush_async_finish(ap);
    }
}


/* out of time: the last try's failures are final, and said so */

static void
ngx_http_timpush_async_give_up(ngx_http_timpush_async_push_t *ap)
{
    ngx_uint_t                      i;
    ngx_http_timpush_push_entry_t  *f;

    ngx_log_error(NGX_LOG_WARN, ngx_http_timpush_async->log, 0,
                  "timpush async: push %V: %ui notification(s) or user(s) "
                  "still failing after %ui tries: given up (its expiration "
                  "or timpush_async_retry)", &ap->id, ap->transient,
                  ap->tries);

    f = ap->failures.elts;

    for (i = 0; i < ap->failures.nelts; i++) {
        ngx_http_timpush_feedback(&f[i]);
    }

    ap->failures.nelts = 0;
}


/* its results written: done, kept timpush_async_keep, acknowledged */

static void
ngx_http_timpush_async_finish(ngx_http_timpush_async_push_t *ap)
{
    u_char                    *p;
    ngx_int_t                  rc;
    ngx_str_t                  keys[2], args[3];
    ngx_time_t                *tp;
    ngx_http_timpush_async_t  *a;

    a = ngx_http_timpush_async;

    keys[0] = ap->key;
    keys[1] = a->stream;

    p = ngx_pnalloc(ap->pool, 2 * NGX_INT64_LEN);
    if (p == NULL) {
        ngx_http_timpush_async_free(ap);
        return;
    }

    tp = ngx_timeofday();

    args[0] = ap->id;
    args[1].data = p;
    p = ngx_sprintf(p, "%M", a->tmcf->async_keep);
    args[1].len = p - args[1].data;
    args[2].data = p;
    p = ngx_sprintf(p, "%L", (int64_t) tp->sec * 1000 + tp->msec);
    args[2].len = p - args[2].data;

    if (ngx_http_timpush_store_clustered()) {
        /* Cluster: the hash done, then the stream's entry acknowledged */
        rc = ngx_http_timpush_store_run(NGX_HTTP_TIMPUSH_SCRIPT_DONE, keys, 1,
                                        &args[1], 2,
                                        ngx_http_timpush_async_hashed, ap,
                                        NULL);
    } else {
        rc = ngx_http_timpush_store_run(NGX_HTTP_TIMPUSH_SCRIPT_FINISH, keys,
                                        2, args, 3,
                                        ngx_http_timpush_async_done, ap,
                                        NULL);
    }

    if (rc != NGX_OK) {
        /* not acknowledged: claimed again later, by us or another */
        ngx_http_timpush_async_free(ap);
        return;
    }

    ap->pending++;
}


/* Cluster: the hash says done; the entry leaves the stream */

static void
ngx_http_timpush_async_hashed(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_timpush_async_push_t *ap = data;

    ngx_http_timpush_async_t  *a;

    a = ngx_http_timpush_async;
    ap->pending--;

    if (!ap->held) {
        ngx_http_timpush_async_release(ap);
        return;
    }

    if (rc == NGX_OK
        && ngx_http_timpush_store_run(NGX_HTTP_TIMPUSH_SCRIPT_ACK, &a->stream,
                                      1, &ap->id, 1,
                                      ngx_http_timpush_async_done, ap, NULL)
           == NGX_OK)
    {
        ap->pending++;
        return;
    }

    /* not acknowledged: claimed again later, and found done */
    ngx_http_timpush_async_free(ap);
}


static void
ngx_http_timpush_async_done(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_timpush_async_push_t *ap = data;

    ap->pending--;

    if (!ap->held) {
        ngx_http_timpush_async_release(ap);
        return;
    }

    if (rc == NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, ngx_http_timpush_async->log, 0,
                      "timpush async: push %V done after %ui tr%s",
                      &ap->id, ap->tries, ap->tries == 1 ? "y" : "ies");
    }

    ngx_http_timpush_async_free(ap);
}


/* the push is no longer held here; a free slot reads the next */

static void
ngx_http_timpush_async_free(ngx_http_timpush_async_push_t *ap)
{
    ngx_http_timpush_async_t  *a;

    a = ngx_http_timpush_async;

    if (!ap->held) {
        return;
    }

    if (ap->push) {
        ngx_http_timpush_push_stop(ap->push);
        ap->push = NULL;
    }

    if (ap->flush.timer_set) {
        ngx_del_timer(&ap->flush);
    }

    if (ap->again.timer_set) {
        ngx_del_timer(&ap->again);
    }

    if (ap->over.timer_set) {
        ngx_del_timer(&ap->over);
    }

    if (ap->hold.timer_set) {
        ngx_del_timer(&ap->hold);
    }

    ngx_queue_remove(&ap->queue);
    a->nactive--;
    ap->held = 0;

    ngx_http_timpush_async_release(ap);

    if (!ngx_http_timpush_async_stopping(a) && !a->read.timer_set
        && a->reading == NULL)
    {
        ngx_add_timer(&a->read, 1);
    }
}


/* its memory, once no store reply is to come back into it */

static void
ngx_http_timpush_async_release(ngx_http_timpush_async_push_t *ap)
{
    if (ap->pending) {
        return;
    }

    if (ap->round) {
        ngx_destroy_pool(ap->round);
        ap->round = NULL;
    }

    if (ap->last) {
        ngx_destroy_pool(ap->last);
        ap->last = NULL;
    }

    ngx_destroy_pool(ap->pool);
}
