
/*
 * Copyright (C) timpush authors
 *
 * POST /v1/push (DESIGN 4): the message is checked and rendered once, the
 * recipients' devices are read from Redis in one pipeline (one script call
 * per batch of users, which also counts the badges), each device gets its
 * notification through the transport as soon as its batch is read, dead
 * tokens are pruned, and the caller gets one answer listing every device.
 * With a msg_id, a device that already got it is skipped, and the outcome
 * of each device sent is marked for the next push with that msg_id.
 */


#include "ngx_http_timpush.h"
#include "ngx_http_timpush_apns.h"
#include "ngx_http_timpush_render.h"
#include "ngx_http_timpush_metrics.h"
#include "ngx_http_timpush_push.h"


/*
 * Users per PUSH script call: Redis spends about 1.5 us on a call besides
 * its work per user (about 8 us), and the first notifications wait for
 * their whole batch.  At most NGX_HTTP_TIMPUSH_PUSH_INFLIGHT calls of one
 * push wait in Redis at a time, so other requests' commands are not
 * queued behind a whole fan-out; and the next users are read only while
 * the notifications of this push not yet answered are fewer than twice
 * what the connections can carry: Redis keeps pace with APNs instead of
 * running ahead of it, and the queue of a push stays short.  When Redis
 * has no room (max_pending), the push tries again a little later.
 */
#define NGX_HTTP_TIMPUSH_PUSH_BATCH     32
#define NGX_HTTP_TIMPUSH_PUSH_INFLIGHT  8
#define NGX_HTTP_TIMPUSH_PUSH_WAIT      10      /* ms */
#define NGX_HTTP_TIMPUSH_PUSH_MARKS     256     /* see push_mark_soon() */


/* one HSET or PEXPIRE: the outcome of some claims (msg_id) */

typedef struct {
    ngx_http_timpush_push_t            *push;
    ngx_http_timpush_store_cmd_t       *cmd;
    ngx_queue_t                         queue;       /* in push->marking */
} ngx_http_timpush_mark_t;


typedef struct {
    ngx_http_timpush_apns_note_t        note;
    ngx_http_timpush_push_t            *push;
    struct ngx_http_timpush_recipient_s *rcpt;
    ngx_uint_t                          business_id;
    int64_t                             badge;
    int64_t                             registered_at;
    ngx_uint_t                          idx;         /* in its claim, 1.. */
    ngx_http_timpush_store_cmd_t       *prune;
    ngx_http_timpush_owner_t           *owner;       /* pruned: its index */
    u_char                              digits[NGX_INT64_LEN];
    unsigned                            foreground:1;
    unsigned                            duplicate:1; /* got the msg_id */
    unsigned                            emitted:1;   /* to the hooks */
    unsigned                            unknown:1;
    unsigned                            pending:1;
    unsigned                            removed:1;
} ngx_http_timpush_device_note_t;


typedef struct ngx_http_timpush_recipient_s {
    ngx_str_t                           user;
    ngx_str_t                           key;
    ngx_http_timpush_push_t            *push;
    ngx_http_timpush_device_note_t     *devices;
    ngx_uint_t                          ndevices;
    ngx_uint_t                          batch;       /* read by which */
    const char                         *error;
} ngx_http_timpush_recipient_t;


/*
 * The recipients read by one script call: on a Redis Cluster, users whose
 * keys are in one slot (a call's keys are), else users next in "to".
 */

typedef struct {
    ngx_http_timpush_push_t            *push;
    ngx_http_timpush_recipient_t      **rcpts;
    ngx_uint_t                          nrcpts;
    ngx_http_timpush_store_cmd_t       *cmd;
    ngx_uint_t                          slot;        /* Cluster; else 0 */
    ngx_str_t                           mkey;        /* msg_id marks */
    int64_t                             claim;       /* msg_id: its number */
    u_char                             *states;      /* one per device */
    ngx_uint_t                          nclaimed;
    unsigned                            dirty:1;     /* states to write */
} ngx_http_timpush_batch_t;


struct ngx_http_timpush_push_s {
    ngx_http_request_t                 *request;     /* NULL: async */
    ngx_pool_t                         *pool;
    ngx_log_t                          *log;
    ngx_http_timpush_main_conf_t       *tmcf;
    ngx_http_timpush_push_hooks_t      *hooks;       /* async */
    ngx_http_timpush_message_t          msg;
    ngx_http_timpush_payload_t          payload;
    ngx_http_timpush_recipient_t       *rcpts;
    ngx_uint_t                          nrcpts;
    ngx_http_timpush_batch_t           *batches;
    ngx_uint_t                          nbatches;
    ngx_uint_t                          next;        /* batch to read */
    ngx_uint_t                          reading;     /* batches in Redis */
    ngx_uint_t                          notes;       /* not answered */
    uintptr_t                          *seen;        /* credentials used */
    ngx_uint_t                          ncreds;
    ngx_uint_t                          pending;
    ngx_str_t                           args[7];     /* PUSH's */
    ngx_str_t                           mkey;        /* msg_id marks */
    ngx_uint_t                          nargs;
    ngx_queue_t                         marking;     /* HSET, PEXPIRE out */
    ngx_uint_t                          unmarked;    /* answers to mark */
    ngx_event_t                         markev;      /* marks, soon */
    ngx_array_t                         prunes;      /* waiting for room */
    int64_t                             started;     /* ms */
    ngx_msec_t                          start;       /* for its duration */
    ngx_http_timpush_request_info_t    *info;        /* for logs */
    ngx_http_timpush_apns_headers_t     headers;     /* of every note */
    ngx_event_t                         wait;        /* Redis was full */
    unsigned                            answered:1;
    unsigned                            dedup:1;     /* with a msg_id */
    unsigned                            marked:1;
    unsigned                            remark:1;    /* last marks, again */
};


static ngx_int_t ngx_http_timpush_push_start(ngx_http_timpush_push_t *push);
static ngx_int_t ngx_http_timpush_push_skip(ngx_http_request_t *r,
    ngx_http_timpush_message_t *msg);
static void ngx_http_timpush_push_more(ngx_http_timpush_push_t *push);
static void ngx_http_timpush_push_wait_handler(ngx_event_t *ev);
static ngx_uint_t ngx_http_timpush_push_window(ngx_http_timpush_push_t *push);
static void ngx_http_timpush_push_read(void *data, redisReply *reply,
    ngx_int_t rc);
static ngx_int_t ngx_http_timpush_push_devices(
    ngx_http_timpush_recipient_t *rcpt, redisReply *reply,
    ngx_uint_t *claimed);
static void ngx_http_timpush_push_claim(ngx_http_timpush_batch_t *batch,
    redisReply *reply, ngx_uint_t claimed);
static ngx_http_timpush_device_note_t *ngx_http_timpush_push_find(
    ngx_http_timpush_recipient_t *rcpt, redisReply *field);
static void ngx_http_timpush_push_sort(ngx_http_timpush_device_note_t *dn,
    ngx_uint_t n);
static void ngx_http_timpush_push_device(ngx_http_timpush_recipient_t *rcpt,
    ngx_http_timpush_device_note_t *dn);
static ngx_int_t ngx_http_timpush_push_batches(ngx_http_timpush_push_t *push);
static void ngx_http_timpush_push_sent(ngx_http_timpush_apns_note_t *note);
static ngx_int_t ngx_http_timpush_push_prune(
    ngx_http_timpush_device_note_t *dn);
static ngx_int_t ngx_http_timpush_push_prunes(ngx_http_timpush_push_t *push);
static void ngx_http_timpush_push_pruned(void *data, redisReply *reply,
    ngx_int_t rc);
static void ngx_http_timpush_push_released(void *data,
    ngx_http_timpush_owner_t *o, ngx_int_t rc);
static ngx_int_t ngx_http_timpush_push_dedup(ngx_http_timpush_push_t *push,
    ngx_http_timpush_main_conf_t *tmcf);
static void ngx_http_timpush_push_mark(ngx_http_timpush_push_t *push);
static void ngx_http_timpush_push_mark_key(ngx_http_timpush_push_t *push,
    ngx_uint_t b, ngx_uint_t e, ngx_str_t *args);
static ngx_int_t ngx_http_timpush_push_mark_send(
    ngx_http_timpush_push_t *push, ngx_str_t *args, ngx_uint_t nargs);
static void ngx_http_timpush_push_unmarked(ngx_http_timpush_push_t *push,
    ngx_int_t rc);
static void ngx_http_timpush_push_mark_soon(ngx_http_timpush_push_t *push,
    ngx_http_timpush_device_note_t *dn);
static void ngx_http_timpush_push_mark_handler(ngx_event_t *ev);
static void ngx_http_timpush_push_marked(void *data, redisReply *reply,
    ngx_int_t rc);
static ngx_uint_t ngx_http_timpush_push_all_duplicate(
    ngx_http_timpush_recipient_t *rcpt);
static void ngx_http_timpush_push_done(ngx_http_timpush_push_t *push);
static ngx_int_t ngx_http_timpush_push_answer(ngx_http_timpush_push_t *push);
static void ngx_http_timpush_push_finish(ngx_http_timpush_push_t *push);
static void ngx_http_timpush_push_emit(ngx_http_timpush_push_t *push,
    ngx_http_timpush_recipient_t *rcpt, ngx_http_timpush_device_note_t *dn);
static ngx_uint_t ngx_http_timpush_push_kind(
    ngx_http_timpush_device_note_t *dn);
static size_t ngx_http_timpush_push_result_size(
    ngx_http_timpush_recipient_t *rcpt, ngx_http_timpush_device_note_t *dn);
static u_char *ngx_http_timpush_push_result(ngx_http_timpush_push_t *push,
    u_char *p, ngx_http_timpush_device_note_t *dn);
static void ngx_http_timpush_push_cleanup(void *data);


/* the pushes with a msg_id this worker made: in their names (field "o") */
static ngx_uint_t  ngx_http_timpush_push_pushes;


ngx_int_t
ngx_http_timpush_push(ngx_http_request_t *r, u_char *data, size_t len)
{
    ngx_int_t                       rc;
    ngx_http_timpush_push_t        *push;
    ngx_http_timpush_render_err_t   err;

    push = ngx_http_timpush_push_create(r->pool, r->connection->log,
                          ngx_http_get_module_main_conf(r,
                                                    ngx_http_timpush_module));
    if (push == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    push->request = r;
    push->info = ngx_http_timpush_api_info(r);

    rc = ngx_http_timpush_push_prepare(push, data, len, &err);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (push->info) {
        push->info->msg_id = push->msg.msg_id;
        push->info->recipients = push->msg.to.nelts;
    }

    if (rc == NGX_DECLINED && push->msg.skip == NGX_HTTP_TIMPUSH_SKIP_NONE) {
        ngx_http_timpush_metric_push("invalid");

        return ngx_http_timpush_api_error(r,
                          ngx_strcmp(err.code, "payload_too_large") == 0
                          ? NGX_HTTP_REQUEST_ENTITY_TOO_LARGE
                          : NGX_HTTP_BAD_REQUEST,
                          err.code, "%s", err.msg);
    }

    if (push->msg.skip != NGX_HTTP_TIMPUSH_SKIP_NONE) {
        ngx_http_timpush_metric_push((const char *)
                           ngx_http_timpush_skip_reason(push->msg.skip)->data);

        if (push->info) {
            push->info->pushed = 1;
        }

        return ngx_http_timpush_push_skip(r, &push->msg);
    }

    if (push->msg.async) {
        /* DESIGN §14: queued in Redis, answered once it is there */
        return ngx_http_timpush_async_enqueue(r, data, len);
    }

    rc = ngx_http_timpush_push_start(push);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_OK) {
        ngx_http_timpush_metric_push("pushed");
    }

    if (rc != NGX_OK) {
        return ngx_http_timpush_api_store_error(r, rc);
    }

    if (push->pending == 0) {
        /* nothing went out: no recipient could be read */
        return ngx_http_timpush_push_answer(push);
    }

    /* the reference taken for reading the body is ours until the answer */

    return NGX_DONE;
}


ngx_http_timpush_push_t *
ngx_http_timpush_push_create(ngx_pool_t *pool, ngx_log_t *log,
    ngx_http_timpush_main_conf_t *tmcf)
{
    ngx_http_timpush_push_t  *push;

    push = ngx_pcalloc(pool, sizeof(ngx_http_timpush_push_t));
    if (push == NULL) {
        return NULL;
    }

    push->pool = pool;
    push->log = log;
    push->tmcf = tmcf;

    return push;
}


ngx_int_t
ngx_http_timpush_push_prepare(ngx_http_timpush_push_t *push, u_char *data,
    size_t len, ngx_http_timpush_render_err_t *err)
{
    ngx_int_t  rc;

    static u_char  empty[] = "";

    if (data == NULL) {
        data = empty;
    }

    rc = ngx_http_timpush_message_parse(push->pool, data, len,
                                        push->tmcf->max_recipients,
                                        &push->msg, err);
    if (rc != NGX_OK) {
        return rc;
    }

    if (push->msg.skip != NGX_HTTP_TIMPUSH_SKIP_NONE) {
        return NGX_DECLINED;
    }

    return ngx_http_timpush_payload_build(push->pool, &push->msg,
                                          &push->payload, err);
}


ngx_http_timpush_message_t *
ngx_http_timpush_push_message(ngx_http_timpush_push_t *push)
{
    return &push->msg;
}


ngx_int_t
ngx_http_timpush_push_run(ngx_http_timpush_push_t *push, ngx_str_t *msg_id,
    ngx_http_timpush_push_hooks_t *hooks)
{
    ngx_int_t  rc;

    push->hooks = hooks;

    if (push->msg.msg_id.len == 0) {
        push->msg.msg_id = *msg_id;
    }

    rc = ngx_http_timpush_push_start(push);
    if (rc != NGX_OK) {
        return rc;
    }

    if (push->pending == 0) {
        ngx_http_timpush_push_done(push);
    }

    return NGX_OK;
}


void
ngx_http_timpush_push_stop(ngx_http_timpush_push_t *push)
{
    push->hooks = NULL;
    push->answered = 1;

    ngx_http_timpush_push_cleanup(push);
}


/*
 * The recipients read, devices sent: NGX_OK (push->pending says whether
 * anything went out), a store error (no room in Redis for the first
 * calls), or NGX_ERROR.
 */

static ngx_int_t
ngx_http_timpush_push_start(ngx_http_timpush_push_t *push)
{
    ngx_int_t                       rc;
    ngx_str_t                      *to;
    ngx_uint_t                      i;
    ngx_time_t                     *tp;
    ngx_pool_cleanup_t             *cln;
    ngx_http_timpush_recipient_t   *rcpt;
    ngx_http_timpush_main_conf_t   *tmcf;

    tmcf = push->tmcf;

    /* room in Redis for the first calls, or the push is refused */

    push->nrcpts = push->msg.to.nelts;

    rc = ngx_http_timpush_store_room(ngx_min(
                              (push->nrcpts + NGX_HTTP_TIMPUSH_PUSH_BATCH - 1)
                              / NGX_HTTP_TIMPUSH_PUSH_BATCH,
                              NGX_HTTP_TIMPUSH_PUSH_INFLIGHT));
    if (rc != NGX_OK) {
        return rc;
    }

    push->rcpts = ngx_pcalloc(push->pool, push->nrcpts
                                       * sizeof(ngx_http_timpush_recipient_t));
    if (push->rcpts == NULL) {
        return NGX_ERROR;
    }

    push->ncreds = tmcf->credentials.nelts;
    push->seen = ngx_pcalloc(push->pool,
                             (push->ncreds + 8 * sizeof(uintptr_t) - 1)
                             / (8 * sizeof(uintptr_t)) * sizeof(uintptr_t));
    if (push->seen == NULL) {
        return NGX_ERROR;
    }

    to = push->msg.to.elts;

    for (i = 0; i < push->nrcpts; i++) {
        rcpt = &push->rcpts[i];
        rcpt->user = to[i];
        rcpt->push = push;

        if (ngx_http_timpush_store_key(push->pool, &rcpt->user, &rcpt->key)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (push->msg.msg_id.len
        && ngx_http_timpush_store_msg_key(push->pool, &push->msg.msg_id,
                                          &push->mkey)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (push->request) {
        cln = ngx_pool_cleanup_add(push->pool, 0);
        if (cln == NULL) {
            return NGX_ERROR;
        }

        cln->handler = ngx_http_timpush_push_cleanup;
        cln->data = push;
    }

    tp = ngx_timeofday();
    push->started = (int64_t) tp->sec * 1000 + tp->msec;
    push->start = ngx_current_msec;

    push->headers.push_type = push->msg.push_type;
    push->headers.topic_suffix = push->msg.topic_suffix;
    push->headers.collapse_id = push->msg.collapse_id;

    /* a duplicate that still reaches APNs shows once (DESIGN §12) */

    if (push->headers.collapse_id.len == 0
        && push->msg.msg_id.len <= NGX_HTTP_TIMPUSH_COLLAPSE_ID_MAX)
    {
        push->headers.collapse_id = push->msg.msg_id;
    }

    push->headers.priority = push->msg.priority;
    push->headers.expiration = push->msg.expiration;

    /* notifications sent late in the push share its deadline */
    push->headers.expires = ngx_current_msec + tmcf->apns_timeout;

    ngx_str_set(&push->args[0], "1");

    if (push->msg.ignore_badge) {
        ngx_str_set(&push->args[0], "0");
    }

    push->nargs = 1;

    if (push->msg.msg_id.len
        && ngx_http_timpush_push_dedup(push, tmcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    push->wait.handler = ngx_http_timpush_push_wait_handler;
    push->wait.data = push;
    push->wait.log = push->log;

    if (ngx_http_timpush_push_batches(push) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_timpush_push_more(push);

    return NGX_OK;
}


/*
 * Up to NGX_HTTP_TIMPUSH_PUSH_BATCH users per script call: in the order
 * of "to", or on a Redis Cluster users of one slot (grouped by cluster.c)
 * since a script's keys must be in one slot.
 */

static ngx_int_t
ngx_http_timpush_push_batches(ngx_http_timpush_push_t *push)
{
    ngx_str_t                          *keys, mkey;
    ngx_uint_t                          i, j, g, n, ngroups, nb;
    ngx_http_timpush_batch_t           *batch;
    ngx_http_timpush_recipient_t      **order;
    ngx_http_timpush_cluster_group_t   *groups, one;

    order = ngx_palloc(push->pool,
                       push->nrcpts * sizeof(ngx_http_timpush_recipient_t *));
    if (order == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_timpush_store_clustered()) {
        keys = ngx_palloc(push->pool, push->nrcpts * sizeof(ngx_str_t));
        if (keys == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < push->nrcpts; i++) {
            keys[i] = push->rcpts[i].key;
        }

        groups = ngx_http_timpush_cluster_group(push->pool, keys,
                                                push->nrcpts, &ngroups);
        if (groups == NULL) {
            return NGX_ERROR;
        }

    } else {
        one.slot = 0;
        one.index = NULL;
        one.nkeys = push->nrcpts;
        groups = &one;
        ngroups = 1;
    }

    nb = 0;

    for (g = 0; g < ngroups; g++) {
        nb += (groups[g].nkeys + NGX_HTTP_TIMPUSH_PUSH_BATCH - 1)
              / NGX_HTTP_TIMPUSH_PUSH_BATCH;
    }

    push->batches = ngx_pcalloc(push->pool,
                                nb * sizeof(ngx_http_timpush_batch_t));
    if (push->batches == NULL) {
        return NGX_ERROR;
    }

    push->nbatches = nb;

    n = 0;
    nb = 0;

    for (g = 0; g < ngroups; g++) {

        /* the msg_id's marks of these users: a key in their slot */

        if (!push->dedup) {
            ngx_str_null(&mkey);

        } else if (groups != &one) {
            if (ngx_http_timpush_store_msg_slot_key(push->pool,
                                                    &push->msg.msg_id,
                                                    groups[g].slot, &mkey)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else {
            mkey = push->mkey;
        }

        for (i = 0; i < groups[g].nkeys; i++) {
            j = groups[g].index ? groups[g].index[i] : i;
            order[n + i] = &push->rcpts[j];
        }

        for (i = 0; i < groups[g].nkeys; i += NGX_HTTP_TIMPUSH_PUSH_BATCH) {
            batch = &push->batches[nb];
            batch->push = push;
            batch->slot = groups[g].slot;
            batch->mkey = mkey;
            batch->rcpts = &order[n + i];
            batch->nrcpts = ngx_min(NGX_HTTP_TIMPUSH_PUSH_BATCH,
                                    groups[g].nkeys - i);

            for (j = 0; j < batch->nrcpts; j++) {
                batch->rcpts[j]->batch = nb;
            }

            nb++;
        }

        n += groups[g].nkeys;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_push_skip(ngx_http_request_t *r,
    ngx_http_timpush_message_t *msg)
{
    yajl_gen  g;

    g = ngx_http_timpush_json_gen(r->pool);
    if (g == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    yajl_gen_map_open(g);

    if (ngx_http_timpush_json_key_bool(g, "pushed", 0) != NGX_OK
        || ngx_http_timpush_json_key_str(g, "reason",
                                     ngx_http_timpush_skip_reason(msg->skip))
           != NGX_OK
        || ngx_http_timpush_json_key_int(g, "sent", 0) != NGX_OK
        || ngx_http_timpush_json_key_int(g, "failed", 0) != NGX_OK
        || ngx_http_timpush_json_key_int(g, "skipped", 0) != NGX_OK
        || ngx_http_timpush_json_cstr(g, "results") != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    yajl_gen_array_open(g);
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);

    return ngx_http_timpush_api_send(r, NGX_HTTP_OK, g);
}


/* the next batches of users, while the window lets them */

static void
ngx_http_timpush_push_more(ngx_http_timpush_push_t *push)
{
    ngx_int_t                  rc;
    ngx_str_t                  keys[NGX_HTTP_TIMPUSH_PUSH_BATCH + 1];
    ngx_uint_t                 i, n, window;
    ngx_http_timpush_batch_t  *batch;

    window = 0;

    if (push->prunes.nelts
        && ngx_http_timpush_push_prunes(push) == NGX_AGAIN)
    {
        /* still no room: soon again (the device keeps the push pending) */

        if (!push->wait.timer_set) {
            ngx_add_timer(&push->wait, NGX_HTTP_TIMPUSH_PUSH_WAIT);
            push->pending++;
        }

        return;
    }

    while (push->next < push->nbatches
           && push->reading < NGX_HTTP_TIMPUSH_PUSH_INFLIGHT)
    {
        if ((ngx_msec_int_t) (ngx_current_msec - push->headers.expires)
            >= 0)
        {

            /* out of time: the users not read yet are not pushed at all */

            for (i = 0; i < push->nrcpts; i++) {
                if (push->rcpts[i].batch >= push->next) {
                    push->rcpts[i].error = "timeout";
                }
            }

            push->next = push->nbatches;
            return;
        }

        if (push->notes || push->reading) {

            if (window == 0) {
                window = ngx_http_timpush_push_window(push);
            }

            if (push->notes + push->reading * NGX_HTTP_TIMPUSH_PUSH_BATCH
                >= window)
            {
                /* the answers of this push call again */
                return;
            }
        }

        batch = &push->batches[push->next];

        /* the users' hashes, then with a msg_id its marks */

        n = batch->nrcpts;

        for (i = 0; i < n; i++) {
            keys[i] = batch->rcpts[i]->key;
        }

        if (push->dedup) {
            keys[n++] = batch->mkey;
        }

        rc = ngx_http_timpush_store_run(NGX_HTTP_TIMPUSH_SCRIPT_PUSH,
                                        keys, n,
                                        push->args, push->nargs,
                                        ngx_http_timpush_push_read, batch,
                                        &batch->cmd);

        if (rc == NGX_BUSY) {
            /* Redis has no room now: after the next answer, or soon */

            if (push->pending == 0 && !push->wait.timer_set) {
                ngx_add_timer(&push->wait, NGX_HTTP_TIMPUSH_PUSH_WAIT);
                push->pending++;
            }

            return;
        }

        push->next++;

        if (rc != NGX_OK) {
            batch->cmd = NULL;

            for (i = 0; i < batch->nrcpts; i++) {
                batch->rcpts[i]->error = "store_unavailable";
            }

            continue;
        }

        push->reading++;
        push->pending++;
    }
}


/*
 * Twice what the connections of the credentials this push sends to can
 * carry (of every credential, until its first devices are read).
 */

static ngx_uint_t
ngx_http_timpush_push_window(ngx_http_timpush_push_t *push)
{
    ngx_uint_t  i, n;

    n = 0;

    for (i = 0; i < push->ncreds; i++) {
        if (push->seen[i / (8 * sizeof(uintptr_t))]
            & ((uintptr_t) 1 << (i % (8 * sizeof(uintptr_t)))))
        {
            n += ngx_http_timpush_apns_capacity(i);
        }
    }

    if (n == 0) {
        for (i = 0; i < push->ncreds; i++) {
            n += ngx_http_timpush_apns_capacity(i);
        }
    }

    return 2 * n;
}


static void
ngx_http_timpush_push_wait_handler(ngx_event_t *ev)
{
    ngx_http_timpush_push_t *push = ev->data;

    push->pending--;
    ngx_http_timpush_push_done(push);
}


/*
 * A batch of users read: one reply per user, in the order of the keys;
 * with a msg_id, then the claim's number and its count of devices.
 */

static void
ngx_http_timpush_push_read(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_timpush_batch_t *batch = data;

    ngx_uint_t                       i, j, claimed;
    ngx_http_timpush_push_t         *push;
    ngx_http_timpush_recipient_t    *rcpt;

    push = batch->push;
    batch->cmd = NULL;
    push->reading--;

    /* the batch's own pending count is kept until its loop is over */

    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != batch->nrcpts + (push->dedup ? 2 : 0))
    {
        for (i = 0; i < batch->nrcpts; i++) {
            batch->rcpts[i]->error = "store_unavailable";
        }

        push->pending--;
        ngx_http_timpush_push_done(push);
        return;
    }

    /* every device known (and numbered in the claim) before any is sent */

    claimed = 0;

    for (i = 0; i < batch->nrcpts; i++) {
        rcpt = batch->rcpts[i];

        if (ngx_http_timpush_push_devices(rcpt, reply->element[i],
                                          push->dedup ? &claimed : NULL)
            != NGX_OK)
        {
            rcpt->ndevices = 0;
            rcpt->error = "store_unavailable";

            /* its devices were claimed: the numbers after it are unknown */
            claimed = NGX_MAX_INT_T_VALUE;
        }
    }

    if (push->dedup) {
        ngx_http_timpush_push_claim(batch, reply, claimed);
    }

    for (i = 0; i < batch->nrcpts; i++) {
        rcpt = batch->rcpts[i];

        for (j = 0; j < rcpt->ndevices; j++) {
            ngx_http_timpush_push_device(rcpt, &rcpt->devices[j]);
        }
    }

    push->pending--;
    ngx_http_timpush_push_done(push);
}


/*
 * The claim of a batch (msg_id): the devices the script claimed, one
 * state each, "0" being sent, written back as APNs answers.  A claim this
 * side cannot number as the script did is not written back: its devices
 * stay "being sent" until the push's lease is over (a push of the msg_id
 * then sends them again).
 */

static void
ngx_http_timpush_push_claim(ngx_http_timpush_batch_t *batch,
    redisReply *reply, ngx_uint_t claimed)
{
    redisReply               *id, *count;
    ngx_http_timpush_push_t  *push;

    push = batch->push;
    id = reply->element[batch->nrcpts];
    count = reply->element[batch->nrcpts + 1];

    if (id->type != REDIS_REPLY_INTEGER || id->integer <= 0) {
        return;
    }

    if (count->type != REDIS_REPLY_INTEGER
        || count->integer != (long long) claimed)
    {
        ngx_log_error(NGX_LOG_WARN, push->log, 0,
                      "timpush: msg_id \"%V\": claim %L of Redis does not "
                      "match its devices: their outcome is not kept",
                      &push->msg.msg_id, (int64_t) id->integer);
        return;
    }

    batch->states = ngx_pnalloc(push->pool, claimed);
    if (batch->states == NULL) {
        return;
    }

    ngx_memset(batch->states, '0', claimed);
    batch->nclaimed = claimed;
    batch->claim = id->integer;
}


/*
 * One user's hash (t:, r:, b:, f: per token, then n: with the new
 * badges) into its devices, oldest registration first.
 */

static ngx_int_t
ngx_http_timpush_push_devices(ngx_http_timpush_recipient_t *rcpt,
    redisReply *reply, ngx_uint_t *claimed)
{
    u_char                          *f;
    off_t                            v;
    ngx_uint_t                       i, n;
    redisReply                      *field, *value;
    ngx_http_timpush_push_t         *push;
    ngx_http_timpush_device_note_t  *dn;

    push = rcpt->push;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 2) {
        return NGX_ERROR;
    }

    n = 0;

    for (i = 0; i < reply->elements; i += 2) {
        field = reply->element[i];

        if (field->type != REDIS_REPLY_STRING) {
            return NGX_ERROR;
        }

        if (field->len > 2 && field->str[0] == 't' && field->str[1] == ':') {
            n++;
        }
    }

    if (n == 0) {
        return NGX_OK;
    }

    rcpt->devices = ngx_pcalloc(push->pool,
                                n * sizeof(ngx_http_timpush_device_note_t));
    if (rcpt->devices == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < reply->elements; i += 2) {
        field = reply->element[i];
        value = reply->element[i + 1];

        if (field->len <= 2 || field->str[0] != 't' || field->str[1] != ':') {
            continue;
        }

        if (value->type != REDIS_REPLY_STRING) {
            return NGX_ERROR;
        }

        dn = &rcpt->devices[rcpt->ndevices++];

        dn->note.token.len = field->len - 2;
        dn->note.token.data = ngx_pnalloc(push->pool,
                                          field->len - 2);
        if (dn->note.token.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(dn->note.token.data, field->str + 2, field->len - 2);

        /* not a number: no credential has it, "unknown_business_id" */
        dn->business_id = ngx_atoi((u_char *) value->str, value->len);
    }

    for (i = 0; i < reply->elements; i += 2) {
        field = reply->element[i];
        value = reply->element[i + 1];
        f = (u_char *) field->str;

        if (field->len <= 2 || f[1] != ':' || f[0] == 't') {
            continue;
        }

        dn = ngx_http_timpush_push_find(rcpt, field);
        if (dn == NULL) {
            /* a field of a token that has no t: (never written so) */
            continue;
        }

        switch (f[0]) {

        case 'r':
        case 'b':
            if (value->type != REDIS_REPLY_STRING) {
                return NGX_ERROR;
            }

            /* milliseconds since the epoch: 64 bits on every platform */
            v = ngx_atoof((u_char *) value->str, value->len);
            if (v == NGX_ERROR) {
                v = 0;
            }

            if (f[0] == 'r') {
                dn->registered_at = v;

            } else {
                dn->badge = v;
            }

            break;

        case 'f':
            dn->foreground = 1;
            break;

        case 'd':
            /* the msg_id's: an integer after the hash, as n: */

            if (value->type == REDIS_REPLY_INTEGER) {
                dn->duplicate = 1;
            }

            break;

        case 'n':
            /*
             * The new badge, an integer after every field of the hash; a
             * field of the hash itself that happens to start so is a
             * string, and is not ours.
             */

            if (value->type == REDIS_REPLY_INTEGER) {
                dn->badge = value->integer;
            }

            break;
        }
    }

    if (claimed) {
        /* claimed in the order of the hash, as the script did */

        for (i = 0; i < rcpt->ndevices; i++) {
            dn = &rcpt->devices[i];

            if (!dn->foreground && !dn->duplicate
                && *claimed != NGX_MAX_INT_T_VALUE)
            {
                dn->idx = ++*claimed;
            }
        }
    }

    ngx_http_timpush_push_sort(rcpt->devices, rcpt->ndevices);

    return NGX_OK;
}


static ngx_http_timpush_device_note_t *
ngx_http_timpush_push_find(ngx_http_timpush_recipient_t *rcpt,
    redisReply *field)
{
    size_t                           len;
    ngx_uint_t                       i;
    ngx_http_timpush_device_note_t  *dn;

    len = field->len - 2;

    /* a few devices per user: devices_per_app for each app */

    for (i = 0; i < rcpt->ndevices; i++) {
        dn = &rcpt->devices[i];

        if (dn->note.token.len == len
            && ngx_memcmp(dn->note.token.data, field->str + 2, len) == 0)
        {
            return dn;
        }
    }

    return NULL;
}


/* oldest registration first, then by token; insertion sort of a few */

static void
ngx_http_timpush_push_sort(ngx_http_timpush_device_note_t *dn, ngx_uint_t n)
{
    ngx_int_t                       c;
    ngx_uint_t                      i, j;
    ngx_http_timpush_device_note_t  t;

    for (i = 1; i < n; i++) {
        t = dn[i];

        for (j = i; j > 0; j--) {
            if (dn[j - 1].registered_at != t.registered_at) {
                if (dn[j - 1].registered_at < t.registered_at) {
                    break;
                }

            } else {
                c = ngx_memn2cmp(dn[j - 1].note.token.data,
                                 t.note.token.data,
                                 dn[j - 1].note.token.len,
                                 t.note.token.len);
                if (c <= 0) {
                    break;
                }
            }

            dn[j] = dn[j - 1];
        }

        dn[j] = t;
    }
}


static void
ngx_http_timpush_push_device(ngx_http_timpush_recipient_t *rcpt,
    ngx_http_timpush_device_note_t *dn)
{
    u_char                          *p;
    ngx_int_t                        rc;
    ngx_http_timpush_push_t         *push;
    ngx_http_timpush_apns_note_t    *note;
    ngx_http_timpush_main_conf_t    *tmcf;

    push = rcpt->push;
    note = &dn->note;

    dn->push = push;
    dn->rcpt = rcpt;

    if (dn->foreground || dn->duplicate) {
        dn->badge = -1;
        return;
    }

    tmcf = push->tmcf;

    note->cred = ngx_http_timpush_credential_find(tmcf, dn->business_id);

    if (note->cred == NULL) {
        /* registered under a credential that is no longer configured */
        dn->unknown = 1;
        ngx_http_timpush_metric_notification(NULL, dn->business_id, 0,
                                             &note->reason);
        ngx_http_timpush_push_mark_soon(push, dn);
        return;
    }

    if (ngx_http_timpush_credential_expired(note->cred)) {
        /* an expired certificate sends nothing (DESIGN §10) */
        note->status = NGX_HTTP_FORBIDDEN;
        ngx_str_set(&note->reason, "CertificateExpired");
        note->finished = 1;
        ngx_http_timpush_metric_notification(note->cred, dn->business_id,
                                             note->status, &note->reason);
        ngx_http_timpush_push_mark_soon(push, dn);
        return;
    }

    push->seen[note->cred->index / (8 * sizeof(uintptr_t))]
        |= (uintptr_t) 1 << (note->cred->index % (8 * sizeof(uintptr_t)));

    note->payload[0] = push->payload.head;

    if (push->payload.has_badge) {
        /* the payload was cut to fit the widest badge, and no wider */
        if ((uint64_t) dn->badge > NGX_HTTP_TIMPUSH_BADGE_MAX) {
            dn->badge = NGX_HTTP_TIMPUSH_BADGE_MAX;
        }

        p = ngx_sprintf(dn->digits, "%L", dn->badge);
        note->payload[1].data = dn->digits;
        note->payload[1].len = p - dn->digits;
        note->payload[2] = push->payload.tail;
    }

    note->headers = &push->headers;
    note->done = ngx_http_timpush_push_sent;
    note->data = dn;

    /* counted first: the answer may come before the call returns */
    dn->pending = 1;
    push->pending++;
    push->notes++;

    rc = ngx_http_timpush_apns_send(note);

    if (rc != NGX_OK) {
        dn->pending = 0;
        push->pending--;
        push->notes--;
        note->finished = 1;

        if (rc == NGX_DECLINED) {
            /* read after the deadline of the push */
            note->status = NGX_HTTP_GATEWAY_TIME_OUT;
            ngx_str_set(&note->reason, "Timeout");

        } else {
            note->status = NGX_HTTP_SERVICE_UNAVAILABLE;
            ngx_str_set(&note->reason, "Overloaded");
        }

        ngx_http_timpush_metric_notification(note->cred, dn->business_id,
                                             note->status, &note->reason);
        ngx_http_timpush_push_mark_soon(push, dn);
    }
}


/* APNs answered, or the deadline did */

static void
ngx_http_timpush_push_sent(ngx_http_timpush_apns_note_t *note)
{
    ngx_http_timpush_device_note_t *dn = note->data;

    u_char                    tok[32];
    ngx_http_timpush_push_t  *push;

    push = dn->push;
    push->notes--;

    ngx_http_timpush_metric_notification(note->cred, dn->business_id,
                                         note->status, &note->reason);

    if (note->status != NGX_HTTP_OK) {
        *ngx_http_timpush_short_token(tok, &note->token) = '\0';

        ngx_log_error(NGX_LOG_INFO, push->log, 0,
                      "timpush: user \"%V\" business_id %ui (%s): device "
                      "%s: %ui %V", &dn->rcpt->user, dn->business_id,
                      note->cred->env == NGX_HTTP_TIMPUSH_ENV_SANDBOX
                      ? "sandbox" : "production", tok, note->status,
                      &note->reason);

        if (ngx_http_timpush_push_prune(dn) == NGX_OK) {
            /* the same pending count now waits for the prune */
            return;
        }
    }

    dn->pending = 0;
    push->pending--;

    ngx_http_timpush_push_emit(push, dn->rcpt, dn);
    ngx_http_timpush_push_mark_soon(push, dn);
    ngx_http_timpush_push_done(push);
}


/*
 * 410 Unregistered/ExpiredToken (only for a token registered before
 * APNs' timestamp), 400 BadDeviceToken and DeviceTokenNotForTopic: the
 * token is dead for this credential and is removed.
 */

static ngx_int_t
ngx_http_timpush_push_prune(ngx_http_timpush_device_note_t *dn)
{
    u_char                           *p, buf[NGX_INT64_LEN];
    int64_t                           before;
    ngx_int_t                         rc;
    ngx_str_t                        *reason, args[2];
    ngx_http_timpush_apns_note_t     *note;
    ngx_http_timpush_device_note_t  **waiting;

    note = &dn->note;
    reason = &note->reason;

    if (note->status == 410
        && ((reason->len == 12
             && ngx_strncmp(reason->data, "Unregistered", 12) == 0)
            || (reason->len == 12
                && ngx_strncmp(reason->data, "ExpiredToken", 12) == 0)))
    {
        before = note->timestamp ? note->timestamp : dn->push->started;

    } else if (note->status == 400
               && ((reason->len == 14
                    && ngx_strncmp(reason->data, "BadDeviceToken", 14) == 0)
                   || (reason->len == 22
                       && ngx_strncmp(reason->data, "DeviceTokenNotForTopic",
                                      22) == 0)))
    {
        /* not if the app registered the token again since */
        before = dn->push->started;

    } else {
        return NGX_DECLINED;
    }

    args[0] = note->token;
    args[1].data = buf;
    p = ngx_sprintf(buf, "%L", before);
    args[1].len = p - buf;

    rc = ngx_http_timpush_store_run(NGX_HTTP_TIMPUSH_SCRIPT_PRUNE,
                                    &dn->rcpt->key, 1, args, 2,
                                    ngx_http_timpush_push_pruned, dn,
                                    &dn->prune);
    if (rc == NGX_OK) {
        return NGX_OK;
    }

    dn->prune = NULL;

    if (rc != NGX_BUSY) {
        return NGX_DECLINED;
    }

    /* Redis has no room now: the prune waits for it, as reads do */

    if (dn->push->prunes.elts == NULL
        && ngx_array_init(&dn->push->prunes, dn->push->pool, 16,
                          sizeof(ngx_http_timpush_device_note_t *))
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    waiting = ngx_array_push(&dn->push->prunes);
    if (waiting == NULL) {
        return NGX_DECLINED;
    }

    *waiting = dn;

    if (!dn->push->wait.timer_set) {
        ngx_add_timer(&dn->push->wait, NGX_HTTP_TIMPUSH_PUSH_WAIT);
        dn->push->pending++;
    }

    return NGX_OK;
}


/* the prunes that found Redis full, again: NGX_AGAIN if some still wait */

static ngx_int_t
ngx_http_timpush_push_prunes(ngx_http_timpush_push_t *push)
{
    ngx_uint_t                        i, n;
    ngx_http_timpush_device_note_t  **dn;

    dn = push->prunes.elts;
    n = push->prunes.nelts;
    push->prunes.nelts = 0;

    for (i = 0; i < n; i++) {
        if (ngx_http_timpush_push_prune(dn[i]) != NGX_OK) {
            /* Redis is gone: the token stays; the device is answered */
            dn[i]->pending = 0;
            push->pending--;
            ngx_http_timpush_push_emit(push, dn[i]->rcpt, dn[i]);
            ngx_http_timpush_push_mark_soon(push, dn[i]);
        }
    }

    return push->prunes.nelts ? NGX_AGAIN : NGX_OK;
}


static void
ngx_http_timpush_push_pruned(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_timpush_device_note_t *dn = data;

    u_char                         tok[32];
    ngx_http_timpush_push_t       *push;
    ngx_http_timpush_apns_note_t  *note;

    push = dn->push;
    note = &dn->note;
    dn->prune = NULL;

    if (rc == NGX_OK && reply->type == REDIS_REPLY_INTEGER
        && reply->integer == 1)
    {
        dn->removed = 1;

        *ngx_http_timpush_short_token(tok, &note->token) = '\0';

        /* routine: an app uninstalled; nothing for an operator to do */

        ngx_log_error(NGX_LOG_INFO, push->log, 0,
                      "timpush: user \"%V\" business_id %ui (%s): device "
                      "%s removed: %V%s", &dn->rcpt->user, dn->business_id,
                      note->cred->env == NGX_HTTP_TIMPUSH_ENV_SANDBOX
                      ? "sandbox" : "production", tok, &note->reason,
                      (note->reason.len == 14)
                      ? " (a sandbox token sent to production, or the "
                        "reverse?)" : "");

        ngx_http_timpush_metric_removed(dn->business_id,
                                        note->status == 410 ? "410"
                                        : note->reason.len == 14
                                        ? "BadDeviceToken"
                                        : "DeviceTokenNotForTopic", 1);

        /* the token's reverse index goes with it; the same pending count */

        dn->owner = ngx_http_timpush_owner_create(
                                        push->log,
                                        &dn->rcpt->user);

        if (dn->owner) {
            if (ngx_http_timpush_owner_release(dn->owner, &note->token,
                                               ngx_http_timpush_push_released,
                                               dn)
                == NGX_OK)
            {
                return;
            }

            ngx_http_timpush_owner_destroy(dn->owner);
            dn->owner = NULL;
        }
    }

    dn->pending = 0;
    push->pending--;

    ngx_http_timpush_push_emit(push, dn->rcpt, dn);
    ngx_http_timpush_push_mark_soon(push, dn);
    ngx_http_timpush_push_done(push);
}


static void
ngx_http_timpush_push_released(void *data, ngx_http_timpush_owner_t *o,
    ngx_int_t rc)
{
    ngx_http_timpush_device_note_t *dn = data;

    dn->owner = NULL;
    dn->pending = 0;
    dn->push->pending--;

    ngx_http_timpush_push_emit(dn->push, dn->rcpt, dn);
    ngx_http_timpush_push_mark_soon(dn->push, dn);
    ngx_http_timpush_push_done(dn->push);
}


/*
 * The PUSH script's arguments with a msg_id (see its comment in store.c):
 * a device being sent is so until the push's deadline and Redis's own,
 * its lease; marks older than the window count as absent, and the
 * msg_id's key lives the window and a lease after its last claim.
 */

static ngx_int_t
ngx_http_timpush_push_dedup(ngx_http_timpush_push_t *push,
    ngx_http_timpush_main_conf_t *tmcf)
{
    u_char     *p;
    int64_t     lease;
    ngx_uint_t  i;

    p = ngx_pnalloc(push->pool, 8 * NGX_INT64_LEN + ngx_cycle->hostname.len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_queue_init(&push->marking);

    push->markev.handler = ngx_http_timpush_push_mark_handler;
    push->markev.data = push;
    push->markev.log = push->log;
    push->markev.cancelable = 1;

    lease = tmcf->apns_timeout + tmcf->redis.timeout;

    push->args[1] = push->msg.msg_id;

    for (i = 2; i < 7; i++) {
        push->args[i].data = p;

        switch (i) {
        case 2:
            p = ngx_sprintf(p, "%L", push->started);
            break;
        case 3:
            p = ngx_sprintf(p, "%L", push->started + lease);
            break;
        case 4:
            p = ngx_sprintf(p, "%L",
                            push->started - (int64_t) tmcf->dedup_window);
            break;
        case 5:
            p = ngx_sprintf(p, "%L", (int64_t) tmcf->dedup_window + lease);
            break;
        default:
            /* the push's own name among all, in its marks' field "o" */
            p = ngx_sprintf(p, "%V.%P.%L.%ui.%uD", &ngx_cycle->hostname,
                            ngx_pid, push->started,
                            ++ngx_http_timpush_push_pushes,
                            (uint32_t) ngx_random());
            break;
        }

        push->args[i].len = p - push->args[i].data;
    }

    push->nargs = 7;
    push->dedup = 1;

    return NGX_OK;
}


/*
 * Each device the push claimed is marked sent (a 200) or failed (any other
 * outcome: a push of the msg_id again sends it, its badge not counted
 * again) in its claim's states as soon as its outcome is known; the
 * states changed are written a few answers at a time (every
 * NGX_HTTP_TIMPUSH_PUSH_MARKS answers, or after NGX_HTTP_TIMPUSH_PUSH_WAIT
 * ms): a push cut short (its worker killed) leaves only the devices still
 * in flight "being sent", and a repeat skips those that got it.
 */

static void
ngx_http_timpush_push_mark_soon(ngx_http_timpush_push_t *push,
    ngx_http_timpush_device_note_t *dn)
{
    ngx_http_timpush_batch_t  *batch;

    if (!push->dedup || dn->idx == 0) {
        return;
    }

    batch = &push->batches[dn->rcpt->batch];

    if (batch->states == NULL || dn->idx > batch->nclaimed) {
        return;
    }

    batch->states[dn->idx - 1] =
        (dn->unknown || dn->note.status != NGX_HTTP_OK) ? '2' : '1';
    batch->dirty = 1;

    if (++push->unmarked == NGX_HTTP_TIMPUSH_PUSH_MARKS) {
        ngx_http_timpush_push_mark(push);
        return;
    }

    if (!push->markev.timer_set) {
        ngx_add_timer(&push->markev, NGX_HTTP_TIMPUSH_PUSH_WAIT);
    }
}


static void
ngx_http_timpush_push_mark_handler(ngx_event_t *ev)
{
    ngx_http_timpush_push_t *push = ev->data;

    if (push->remark) {
        /* the last marks found Redis full: now again */
        push->remark = 0;
        push->pending--;
        ngx_http_timpush_push_done(push);
        return;
    }

    ngx_http_timpush_push_mark(push);
}


/*
 * The claims whose states changed, in one HSET (not a script: Redis's own
 * code, no Lua), "l:<claim>" = "<now>:<until>:<states>", followed by the
 * PEXPIRE the PUSH script gives (a key gone meanwhile is not left without
 * one).  Claims that could not be queued (Redis full, or not there) stay
 * changed, for the next marks or the last of the push.
 */

static void
ngx_http_timpush_push_mark(ngx_http_timpush_push_t *push)
{
    size_t                     size;
    ngx_int_t                  rc;
    ngx_str_t                 *args;
    ngx_uint_t                 b, e, n;
    ngx_http_timpush_batch_t  *batch;

    if (push->markev.timer_set) {
        ngx_del_timer(&push->markev);
    }

    push->unmarked = 0;

    n = 0;
    size = 0;

    for (b = 0; b < push->next; b++) {
        batch = &push->batches[b];

        if (batch->dirty) {
            n++;
            size += 2 + NGX_INT64_LEN + push->args[2].len + 1
                    + push->args[3].len + 1 + batch->nclaimed;
        }
    }

    if (n == 0) {
        return;
    }

    if (push->hooks && push->hooks->flush) {
        rc = push->hooks->flush(push->hooks->ctx);

        if (rc != NGX_OK) {
            /* the entries first: the marks wait for the next time */
            ngx_http_timpush_push_unmarked(push, rc);
            return;
        }
    }

    /*
     * HSET key, field value..., then the fields and values: one per marks
     * key, batches of one slot (one key) being next to each other
     */

    args = ngx_alloc((2 + 2 * n) * sizeof(ngx_str_t) + size, push->log);
    if (args == NULL) {
        return;
    }

    for (b = 0; b < push->next; b = e) {

        for (e = b + 1;
             e < push->next && push->batches[e].slot == push->batches[b].slot;
             e++)
        { /* void */ }

        ngx_http_timpush_push_mark_key(push, b, e, args);
    }

    ngx_free(args);
}


/* the marks of batches b to e - 1, all of one marks key */

static void
ngx_http_timpush_push_mark_key(ngx_http_timpush_push_t *push, ngx_uint_t b,
    ngx_uint_t e, ngx_str_t *args)
{
    u_char                    *p;
    ngx_uint_t                 i, n;
    ngx_http_timpush_batch_t  *batch;

    n = 0;

    for (i = b; i < e; i++) {
        n += push->batches[i].dirty;
    }

    if (n == 0) {
        return;
    }

    ngx_str_set(&args[0], "HSET");
    args[1] = push->batches[b].mkey;

    p = (u_char *) &args[2 + 2 * n];
    n = 0;

    for (i = b; i < e; i++) {
        batch = &push->batches[i];

        if (!batch->dirty) {
            continue;
        }

        args[2 + 2 * n].data = p;
        p = ngx_sprintf(p, "l:%L", batch->claim);
        args[2 + 2 * n].len = p - args[2 + 2 * n].data;

        args[3 + 2 * n].data = p;
        p = ngx_cpymem(p, push->args[2].data, push->args[2].len);
        *p++ = ':';
        p = ngx_cpymem(p, push->args[3].data, push->args[3].len);
        *p++ = ':';
        p = ngx_cpymem(p, batch->states, batch->nclaimed);
        args[3 + 2 * n].len = p - args[3 + 2 * n].data;

        n++;
    }

    if (ngx_http_timpush_push_mark_send(push, args, 2 + 2 * n) == NGX_OK) {
        for (i = b; i < e; i++) {
            push->batches[i].dirty = 0;
        }
    }
}


/* HSET, then PEXPIRE, both or neither; the store copies the arguments */

static ngx_int_t
ngx_http_timpush_push_mark_send(ngx_http_timpush_push_t *push,
    ngx_str_t *args, ngx_uint_t nargs)
{
    ngx_int_t                 rc;
    ngx_str_t                 expire[3];
    ngx_uint_t                i;
    ngx_http_timpush_mark_t  *mark;

    ngx_str_set(&expire[0], "PEXPIRE");
    expire[1] = args[1];
    expire[2] = push->args[5];

    rc = ngx_http_timpush_store_room(2);

    for (i = 0; rc == NGX_OK && i < 2; i++) {
        mark = ngx_palloc(push->pool, sizeof(ngx_http_timpush_mark_t));
        if (mark == NULL) {
            rc = NGX_ERROR;
            break;
        }

        mark->push = push;

        rc = ngx_http_timpush_store_command(0, i ? expire : args,
                                            i ? 3 : nargs,
                                            push->tmcf->redis.timeout,
                                            ngx_http_timpush_push_marked,
                                            mark, &mark->cmd);
        if (rc != NGX_OK) {
            break;
        }

        ngx_queue_insert_tail(&push->marking, &mark->queue);
        push->pending++;
    }

    if (i) {
        return NGX_OK;
    }

    ngx_http_timpush_push_unmarked(push, rc);

    return NGX_ERROR;
}


/* nothing queued: these states go with the next marks */

static void
ngx_http_timpush_push_unmarked(ngx_http_timpush_push_t *push, ngx_int_t rc)
{
    if (push->marked && rc == NGX_BUSY) {

        /*
         * the last marks, and Redis full: the push waits for room (its
         * answer with it), as its prunes do
         */

        push->marked = 0;

        if (!push->remark) {
            push->remark = 1;
            push->pending++;
            ngx_add_timer(&push->markev, NGX_HTTP_TIMPUSH_PUSH_WAIT);
        }

    } else if (push->marked) {
        /* Redis away: a repeat sends them after the lease */

        ngx_log_error(NGX_LOG_WARN, push->log, 0,
                      "timpush: msg_id \"%V\": the outcome of some devices "
                      "could not be kept (%s): a push of it again skips "
                      "them until its deadline has passed, and sends them "
                      "after", &push->msg.msg_id,
                      ngx_http_timpush_store_strerror(rc));
    }
}


static void
ngx_http_timpush_push_marked(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_timpush_mark_t *mark = data;

    ngx_http_timpush_push_t  *push;

    push = mark->push;

    if (rc != NGX_OK) {
        /* the leases end the marks "being sent": a push then sends again */

        ngx_log_error(NGX_LOG_WARN, push->log, 0,
                      "timpush: msg_id \"%V\": the outcome of its devices "
                      "could not be kept (%s): a push of it again skips "
                      "them until its deadline has passed, and sends them "
                      "after", &push->msg.msg_id,
                      ngx_http_timpush_store_strerror(rc));
    }

    if (mark->cmd == NULL) {
        /* not queued: called from push_mark() itself */
        return;
    }

    mark->cmd = NULL;
    ngx_queue_remove(&mark->queue);
    push->pending--;

    ngx_http_timpush_push_done(push);
}


static void
ngx_http_timpush_push_done(ngx_http_timpush_push_t *push)
{
    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    if (push->answered) {
        return;
    }

    ngx_http_timpush_push_more(push);

    if (push->pending) {
        return;
    }

    if (push->dedup && !push->marked) {
        /* the last marks, before the answer */
        push->marked = 1;

        ngx_http_timpush_push_mark(push);

        if (push->pending) {
            return;
        }
    }

    push->answered = 1;

    if (push->request == NULL) {
        ngx_http_timpush_push_finish(push);
        return;
    }

    r = push->request;
    c = r->connection;

    rc = ngx_http_timpush_push_answer(push);

    /* the request may be freed in there */
    ngx_http_finalize_request(r, ngx_http_timpush_api_finish(r, rc));
    ngx_http_run_posted_requests(c);
}


/*
 * A push without a request is over: the entries of users (not read, no
 * devices, every device a duplicate) and of devices not sent (skipped,
 * refused here) go to the hooks; those sent went as they were answered.
 */

static void
ngx_http_timpush_push_finish(ngx_http_timpush_push_t *push)
{
    ngx_uint_t                        i, j;
    ngx_http_timpush_recipient_t     *rcpt;
    ngx_http_timpush_device_note_t   *dn;
    ngx_http_timpush_push_hooks_t    *hooks;

    hooks = push->hooks;

    if (hooks == NULL) {
        return;
    }

    ngx_http_timpush_metric_push_duration(ngx_current_msec - push->start);

    for (i = 0; i < push->nrcpts; i++) {
        rcpt = &push->rcpts[i];

        if (rcpt->error || rcpt->ndevices == 0
            || ngx_http_timpush_push_all_duplicate(rcpt))
        {
            ngx_http_timpush_push_emit(push, rcpt, NULL);
            continue;
        }

        for (j = 0; j < rcpt->ndevices; j++) {
            dn = &rcpt->devices[j];

            if (!dn->emitted) {
                ngx_http_timpush_push_emit(push, rcpt, dn);
            }
        }
    }

    push->hooks = NULL;
    hooks->finished(hooks->ctx, NGX_OK);
}


/*
 * One entry, to the hooks (async.c) and, a token removed or a failure
 * that is final, to the feedback stream: a device's, or (dn NULL) the
 * user's own.  A synchronous push's failures are all final.
 */

static void
ngx_http_timpush_push_emit(ngx_http_timpush_push_t *push,
    ngx_http_timpush_recipient_t *rcpt, ngx_http_timpush_device_note_t *dn)
{
    u_char                         *p, *buf;
    ngx_http_timpush_push_entry_t   e;

    ngx_memzero(&e, sizeof(ngx_http_timpush_push_entry_t));

    e.rcpt = rcpt - push->rcpts;
    e.user = rcpt->user;

    if (dn == NULL) {
        e.kind = rcpt->error ? NGX_HTTP_TIMPUSH_ENTRY_FAILED
                             : NGX_HTTP_TIMPUSH_ENTRY_SKIPPED;

        /* a user not read is read again by the next try */
        e.transient = (rcpt->error != NULL);
        e.first = (rcpt->error == NULL && rcpt->ndevices);

    } else {
        dn->emitted = 1;

        e.token = dn->note.token;
        e.registered_at = dn->registered_at;
        e.business_id = dn->business_id;
        e.env = dn->note.cred ? dn->note.cred->env : 0;
        e.status = dn->note.status;
        e.reason = dn->note.reason;
        e.kind = ngx_http_timpush_push_kind(dn);
        e.first = dn->duplicate;
        e.removed = dn->removed;

        if (e.kind == NGX_HTTP_TIMPUSH_ENTRY_FAILED && !dn->unknown) {
            e.transient = (e.status == 0 || e.status == 429
                           || e.status == 500 || e.status == 502
                           || e.status == 503 || e.status == 504);
        }

        if (dn->unknown) {
            ngx_str_set(&e.reason, "unknown_business_id");
        }
    }

    if (e.removed
        || (e.kind == NGX_HTTP_TIMPUSH_ENTRY_FAILED && dn
            && (push->hooks == NULL || !e.transient)))
    {
        ngx_http_timpush_feedback(&e);
    }

    if (push->hooks == NULL) {
        return;
    }

    buf = ngx_pnalloc(push->pool, ngx_http_timpush_push_result_size(rcpt, dn));
    if (buf == NULL) {
        return;
    }

    if (dn == NULL) {
        p = ngx_cpymem(buf, "{\"user_id\":\"", sizeof("{\"user_id\":\"") - 1);
        p = ngx_http_timpush_json_escape(p, &rcpt->user);
        p = ngx_sprintf(p, "\",\"%s\":\"%s\"}",
                        rcpt->error ? "error" : "skipped",
                        rcpt->error ? rcpt->error
                        : rcpt->ndevices ? "duplicate" : "no_devices");

    } else {
        p = ngx_http_timpush_push_result(push, buf, dn) - 1;   /* no comma */
    }

    e.json.data = buf;
    e.json.len = p - buf;

    push->hooks->entry(push->hooks->ctx, &e);
}


/*
 * The answer is written directly: for 10,000 devices it is over a
 * megabyte, and everything in it but the user ids is hex, digits or one
 * of our words (APNs reasons are kept to letters and digits).
 */

static ngx_int_t
ngx_http_timpush_push_answer(ngx_http_timpush_push_t *push)
{
    u_char                           *p;
    size_t                            size;
    ngx_buf_t                        *b;
    ngx_uint_t                        i, j, counts[3], skipped[3];
    ngx_http_request_t               *r;
    ngx_http_timpush_recipient_t     *rcpt;
    ngx_http_timpush_device_note_t   *dn;

    r = push->request;
    push->answered = 1;

    ngx_http_timpush_metric_push_duration(ngx_current_msec - push->start);

    counts[0] = 0;   /* sent */
    counts[1] = 0;   /* failed */
    counts[2] = 0;   /* skipped */

    skipped[0] = 0;  /* foreground devices */
    skipped[1] = 0;  /* users without devices */
    skipped[2] = 0;  /* duplicates: users, or devices */

    size = sizeof("{\"pushed\":true,\"sent\":,\"failed\":,\"skipped\":,"
                  "\"results\":[]}\n") + 3 * NGX_INT_T_LEN;

    for (i = 0; i < push->nrcpts; i++) {
        rcpt = &push->rcpts[i];

        if (rcpt->error) {
            counts[1]++;

        } else if (rcpt->ndevices == 0
                   || ngx_http_timpush_push_all_duplicate(rcpt))
        {
            counts[2]++;
            skipped[rcpt->ndevices ? 2 : 1]++;
            size += ngx_http_timpush_push_result_size(rcpt, NULL);
            continue;
        }

        size += ngx_http_timpush_push_result_size(rcpt, NULL)
                * ngx_max(rcpt->ndevices, 1);

        for (j = 0; j < rcpt->ndevices; j++) {
            dn = &rcpt->devices[j];

            if (!dn->emitted) {
                /* refused here, or skipped: the feedback, if it fails */
                ngx_http_timpush_push_emit(push, rcpt, dn);
            }

            counts[ngx_http_timpush_push_kind(dn)]++;
            skipped[0] += dn->foreground;
            skipped[2] += dn->duplicate;
            size += ngx_http_timpush_push_result_size(rcpt, dn);
        }
    }

    if (push->info) {
        push->info->sent = counts[0];
        push->info->failed = counts[1];
        push->info->skipped = counts[2];
        push->info->pushed = 1;
    }

    ngx_http_timpush_metric_skipped("foreground", skipped[0]);
    ngx_http_timpush_metric_skipped("no_devices", skipped[1]);
    ngx_http_timpush_metric_skipped("duplicate", skipped[2]);

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(b->last, "{\"pushed\":true,\"sent\":%ui,\"failed\":%ui,"
                    "\"skipped\":%ui,\"results\":[",
                    counts[0], counts[1], counts[2]);

    for (i = 0; i < push->nrcpts; i++) {
        rcpt = &push->rcpts[i];

        if (rcpt->error || rcpt->ndevices == 0
            || ngx_http_timpush_push_all_duplicate(rcpt))
        {
            p = ngx_cpymem(p, "{\"user_id\":\"", sizeof("{\"user_id\":\"") - 1);
            p = ngx_http_timpush_json_escape(p, &rcpt->user);
            p = ngx_sprintf(p, "\",\"%s\":\"%s\"},",
                            rcpt->error ? "error" : "skipped",
                            rcpt->error ? rcpt->error
                            : rcpt->ndevices ? "duplicate" : "no_devices");
            continue;
        }

        for (j = 0; j < rcpt->ndevices; j++) {
            p = ngx_http_timpush_push_result(push, p, &rcpt->devices[j]);
        }
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


/*
 * A user all of whose devices already got the msg_id has one entry, as
 * a user without devices has (DESIGN §12); with some that did not (they
 * failed the last time, were in the foreground), each device has its own.
 */

static ngx_uint_t
ngx_http_timpush_push_all_duplicate(ngx_http_timpush_recipient_t *rcpt)
{
    ngx_uint_t  i;

    for (i = 0; i < rcpt->ndevices; i++) {
        if (!rcpt->devices[i].duplicate) {
            return 0;
        }
    }

    return rcpt->ndevices > 0;
}


/* 0: sent, 1: failed, 2: skipped */

static ngx_uint_t
ngx_http_timpush_push_kind(ngx_http_timpush_device_note_t *dn)
{
    if (dn->foreground || dn->duplicate) {
        return 2;
    }

    if (dn->unknown || dn->note.status != NGX_HTTP_OK) {
        return 1;
    }

    return 0;
}


/* room for one entry of results: dn NULL for a recipient's own */

static size_t
ngx_http_timpush_push_result_size(ngx_http_timpush_recipient_t *rcpt,
    ngx_http_timpush_device_note_t *dn)
{
    size_t  size;

    size = 160 + ngx_http_timpush_json_escape_len(&rcpt->user)
           + 5 * NGX_INT64_LEN;

    if (dn) {
        size += dn->note.token.len + NGX_HTTP_TIMPUSH_APNS_ID_LEN
                + dn->note.reason.len;
    }

    return size;
}


static u_char *
ngx_http_timpush_push_result(ngx_http_timpush_push_t *push, u_char *p,
    ngx_http_timpush_device_note_t *dn)
{
    ngx_http_timpush_apns_note_t  *note;

    note = &dn->note;

    p = ngx_cpymem(p, "{\"user_id\":\"", sizeof("{\"user_id\":\"") - 1);
    p = ngx_http_timpush_json_escape(p, &dn->rcpt->user);
    p = ngx_sprintf(p, "\",\"token\":\"%V\",\"business_id\":%ui,",
                    &note->token, dn->business_id);

    if (dn->foreground) {
        return ngx_cpymem(p, "\"skipped\":\"foreground\"},",
                          sizeof("\"skipped\":\"foreground\"},") - 1);
    }

    if (dn->duplicate) {
        return ngx_cpymem(p, "\"skipped\":\"duplicate\"},",
                          sizeof("\"skipped\":\"duplicate\"},") - 1);
    }

    if (dn->unknown) {
        return ngx_cpymem(p, "\"error\":\"unknown_business_id\"},",
                          sizeof("\"error\":\"unknown_business_id\"},") - 1);
    }

    p = ngx_sprintf(p, "\"status\":%ui,", note->status);

    if (note->status == NGX_HTTP_OK) {
        p = ngx_sprintf(p, "\"apns_id\":\"%*s\"",
                        (size_t) NGX_HTTP_TIMPUSH_APNS_ID_LEN, note->apns_id);

        if (push->payload.has_badge) {
            p = ngx_sprintf(p, ",\"badge\":%L", dn->badge);
        }

        return ngx_cpymem(p, "},", 2);
    }

    p = ngx_sprintf(p, "\"reason\":\"%V\"", &note->reason);

    if (note->timestamp) {
        p = ngx_sprintf(p, ",\"timestamp\":%L", note->timestamp);
    }

    if (dn->removed) {
        p = ngx_cpymem(p, ",\"removed\":true", sizeof(",\"removed\":true") - 1);
    }

    return ngx_cpymem(p, "},", 2);
}


/* the request is going away: nothing may call back into it */

static void
ngx_http_timpush_push_cleanup(void *data)
{
    ngx_http_timpush_push_t *push = data;

    ngx_uint_t                       i, j;
    ngx_queue_t                     *q;
    ngx_http_timpush_mark_t         *mark;
    ngx_http_timpush_recipient_t    *rcpt;
    ngx_http_timpush_device_note_t  *dn;

    if (push->wait.timer_set) {
        ngx_del_timer(&push->wait);
    }

    for (i = 0; i < push->nbatches; i++) {
        if (push->batches[i].cmd) {
            ngx_http_timpush_store_forget(push->batches[i].cmd);
            push->batches[i].cmd = NULL;
        }

    }

    if (push->markev.timer_set) {
        ngx_del_timer(&push->markev);
    }

    while (push->dedup && !ngx_queue_empty(&push->marking)) {
        /* the marks are written all the same */
        q = ngx_queue_head(&push->marking);
        mark = ngx_queue_data(q, ngx_http_timpush_mark_t, queue);
        ngx_queue_remove(q);
        ngx_http_timpush_store_forget(mark->cmd);
        mark->cmd = NULL;
    }

    for (i = 0; i < push->nrcpts; i++) {
        rcpt = &push->rcpts[i];

        for (j = 0; j < rcpt->ndevices; j++) {
            dn = &rcpt->devices[j];

            if (dn->pending && !dn->note.finished) {
                ngx_http_timpush_apns_cancel(&dn->note);
            }

            if (dn->prune) {
                ngx_http_timpush_store_forget(dn->prune);
                dn->prune = NULL;
            }

            if (dn->owner) {
                ngx_http_timpush_owner_detach(dn->owner);
                dn->owner = NULL;
            }
        }
    }
}
