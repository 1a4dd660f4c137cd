
/*
 * Copyright (C) timpush authors
 *
 * POST /v1/push (DESIGN 4): the message is checked and rendered once, the
 * recipients' devices are read from Redis in one pipeline (one script per
 * user, which also counts the badges), each device gets its notification
 * through the transport, dead tokens are pruned, and the caller gets one
 * answer listing every device.
 */


#include "ngx_http_timpush.h"
#include "ngx_http_timpush_apns.h"
#include "ngx_http_timpush_render.h"


typedef struct ngx_http_timpush_push_s  ngx_http_timpush_push_t;


typedef struct {
    ngx_http_timpush_apns_note_t        note;
    ngx_http_timpush_push_t            *push;
    struct ngx_http_timpush_recipient_s *rcpt;
    ngx_uint_t                          business_id;
    int64_t                             badge;
    int64_t                             registered_at;
    ngx_http_timpush_store_cmd_t       *prune;
    u_char                              digits[NGX_INT64_LEN];
    unsigned                            foreground:1;
    unsigned                            unknown:1;
    unsigned                            pending:1;
    unsigned                            removed:1;
} ngx_http_timpush_device_note_t;


typedef struct ngx_http_timpush_recipient_s {
    ngx_str_t                           user;
    ngx_str_t                           key;
    ngx_http_timpush_push_t            *push;
    ngx_http_timpush_store_cmd_t       *cmd;
    ngx_http_timpush_device_note_t     *devices;
    ngx_uint_t                          ndevices;
    const char                         *error;
} ngx_http_timpush_recipient_t;


struct ngx_http_timpush_push_s {
    ngx_http_request_t                 *request;
    ngx_http_timpush_message_t          msg;
    ngx_http_timpush_payload_t          payload;
    ngx_http_timpush_recipient_t       *rcpts;
    ngx_uint_t                          nrcpts;
    ngx_uint_t                          pending;
    int64_t                             started;     /* ms */
    unsigned                            answered:1;
};


static ngx_int_t ngx_http_timpush_push_skip(ngx_http_request_t *r,
    ngx_http_timpush_message_t *msg);
static void ngx_http_timpush_push_devices(void *data, redisReply *reply,
    ngx_int_t rc);
static ngx_int_t ngx_http_timpush_push_device(
    ngx_http_timpush_recipient_t *rc, ngx_http_timpush_device_note_t *dn,
    redisReply **e);
static void ngx_http_timpush_push_sent(ngx_http_timpush_apns_note_t *note);
static ngx_int_t ngx_http_timpush_push_prune(
    ngx_http_timpush_device_note_t *dn);
static void ngx_http_timpush_push_pruned(void *data, redisReply *reply,
    ngx_int_t rc);
static void ngx_http_timpush_push_done(ngx_http_timpush_push_t *push);
static ngx_int_t ngx_http_timpush_push_answer(ngx_http_timpush_push_t *push);
static ngx_uint_t ngx_http_timpush_push_kind(
    ngx_http_timpush_device_note_t *dn);
static size_t ngx_http_timpush_push_result_size(
    ngx_http_timpush_recipient_t *rcpt, ngx_http_timpush_device_note_t *dn);
static u_char *ngx_http_timpush_push_result(ngx_http_timpush_push_t *push,
    u_char *p, ngx_http_timpush_device_note_t *dn);
static void ngx_http_timpush_push_cleanup(void *data);


ngx_int_t
ngx_http_timpush_push(ngx_http_request_t *r, u_char *data, size_t len)
{
    ngx_int_t                       rc;
    ngx_str_t                       arg, *to;
    ngx_uint_t                      i;
    ngx_time_t                     *tp;
    ngx_pool_cleanup_t             *cln;
    ngx_http_timpush_push_t        *push;
    ngx_http_timpush_recipient_t   *rcpt;
    ngx_http_timpush_render_err_t   err;
    ngx_http_timpush_main_conf_t   *tmcf;

    static u_char  empty[] = "";

    tmcf = ngx_http_get_module_main_conf(r, ngx_http_timpush_module);

    push = ngx_pcalloc(r->pool, sizeof(ngx_http_timpush_push_t));
    if (push == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    push->request = r;

    if (data == NULL) {
        data = empty;
    }

    rc = ngx_http_timpush_message_parse(r->pool, data, len,
                                        tmcf->max_recipients, &push->msg,
                                        &err);
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_OK) {
        return ngx_http_timpush_api_error(r, NGX_HTTP_BAD_REQUEST, err.code,
                                          "%s", err.msg);
    }

    if (push->msg.skip != NGX_HTTP_TIMPUSH_SKIP_NONE) {
        return ngx_http_timpush_push_skip(r, &push->msg);
    }

    rc = ngx_http_timpush_payload_build(r->pool, &push->msg, &push->payload,
                                        &err);
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_OK) {
        return ngx_http_timpush_api_error(r,
                                          NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                          err.code, "%s", err.msg);
    }

    /* every recipient's command is queued, or none */

    push->nrcpts = push->msg.to.nelts;

    rc = ngx_http_timpush_store_room(push->nrcpts);
    if (rc != NGX_OK) {
        return ngx_http_timpush_api_store_error(r, rc);
    }

    push->rcpts = ngx_pcalloc(r->pool, push->nrcpts
                                       * sizeof(ngx_http_timpush_recipient_t));
    if (push->rcpts == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_timpush_push_cleanup;
    cln->data = push;

    tp = ngx_timeofday();
    push->started = (int64_t) tp->sec * 1000 + tp->msec;

    ngx_str_set(&arg, "1");

    if (push->msg.ignore_badge) {
        ngx_str_set(&arg, "0");
    }

    to = push->msg.to.elts;

    for (i = 0; i < push->nrcpts; i++) {
        rcpt = &push->rcpts[i];
        rcpt->user = to[i];
        rcpt->push = push;

        if (ngx_http_timpush_store_key(r->pool, &rcpt->user, &rcpt->key)
            != NGX_OK)
        {
            rcpt->error = "store_unavailable";
            continue;
        }

        rc = ngx_http_timpush_store_run(NGX_HTTP_TIMPUSH_SCRIPT_PUSH,
                                        &rcpt->key, 1, &arg,
                                        ngx_http_timpush_push_devices, rcpt,
                                        &rcpt->cmd);
        if (rc != NGX_OK) {
            rcpt->cmd = NULL;
            rcpt->error = (rc == NGX_BUSY) ? "overloaded"
                                           : "store_unavailable";
            continue;
        }

        push->pending++;
    }

    if (push->pending == 0) {
        /* nothing went out: no recipient could be read */
        return ngx_http_timpush_push_answer(push);
    }

    /* the reference taken for reading the body is ours until the answer */

    return NGX_DONE;
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


/* one recipient's devices: {token, business_id, badge, registered_at}... */

static void
ngx_http_timpush_push_devices(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_timpush_recipient_t *rcpt = data;

    ngx_uint_t                       i, n;
    ngx_http_timpush_push_t         *push;
    ngx_http_timpush_device_note_t  *dn;

    push = rcpt->push;
    rcpt->cmd = NULL;

    /* the recipient's own pending count is kept until its loop is over */

    if (rc != NGX_OK || reply->type != REDIS_REPLY_ARRAY
        || reply->elements % 4)
    {
        rcpt->error = "store_unavailable";
        push->pending--;
        ngx_http_timpush_push_done(push);
        return;
    }

    n = reply->elements / 4;

    if (n) {
        rcpt->devices = ngx_pcalloc(push->request->pool,
                                  n * sizeof(ngx_http_timpush_device_note_t));
        if (rcpt->devices == NULL) {
            rcpt->error = "store_unavailable";
            push->pending--;
            ngx_http_timpush_push_done(push);
            return;
        }
    }

    rcpt->ndevices = n;

    for (i = 0; i < n; i++) {
        dn = &rcpt->devices[i];

        if (ngx_http_timpush_push_device(rcpt, dn, &reply->element[i * 4])
            != NGX_OK)
        {
            dn->unknown = 1;
        }
    }

    push->pending--;
    ngx_http_timpush_push_done(push);
}


static ngx_int_t
ngx_http_timpush_push_device(ngx_http_timpush_recipient_t *rcpt,
    ngx_http_timpush_device_note_t *dn, redisReply **e)
{
    u_char                          *p;
    ngx_int_t                        rc;
    ngx_http_timpush_push_t         *push;
    ngx_http_timpush_message_t      *msg;
    ngx_http_timpush_apns_note_t    *note;
    ngx_http_timpush_main_conf_t    *tmcf;

    push = rcpt->push;
    msg = &push->msg;
    note = &dn->note;

    dn->push = push;
    dn->rcpt = rcpt;

    if (e[0]->type != REDIS_REPLY_STRING || e[1]->type != REDIS_REPLY_STRING
        || e[2]->type != REDIS_REPLY_INTEGER
        || e[3]->type != REDIS_REPLY_STRING)
    {
        return NGX_ERROR;
    }

    note->token.len = e[0]->len;
    note->token.data = ngx_pnalloc(push->request->pool, e[0]->len);
    if (note->token.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(note->token.data, e[0]->str, e[0]->len);

    dn->business_id = ngx_atoi((u_char *) e[1]->str, e[1]->len);
    dn->badge = e[2]->integer;
    dn->registered_at = ngx_atoi((u_char *) e[3]->str, e[3]->len);

    if (dn->badge < 0) {
        dn->foreground = 1;
        return NGX_OK;
    }

    tmcf = ngx_http_get_module_main_conf(push->request,
                                         ngx_http_timpush_module);

    note->cred = ngx_http_timpush_credential_find(tmcf, dn->business_id);

    if (note->cred == NULL) {
        /* registered under a credential that is no longer configured */
        dn->unknown = 1;
        return NGX_OK;
    }

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

    note->push_type = msg->push_type;
    note->topic_suffix = msg->topic_suffix;
    note->collapse_id = msg->collapse_id;
    note->priority = msg->priority;
    note->expiration = msg->expiration;
    note->done = ngx_http_timpush_push_sent;
    note->data = dn;

    /* counted first: the answer may come before the call returns */
    dn->pending = 1;
    push->pending++;

    rc = ngx_http_timpush_apns_send(note);

    if (rc != NGX_OK) {
        dn->pending = 0;
        push->pending--;
        note->status = NGX_HTTP_SERVICE_UNAVAILABLE;
        ngx_str_set(&note->reason, "Overloaded");
        note->finished = 1;
    }

    return NGX_OK;
}


/* APNs answered, or the deadline did */

static void
ngx_http_timpush_push_sent(ngx_http_timpush_apns_note_t *note)
{
    ngx_http_timpush_device_note_t *dn = note->data;

    u_char                    tok[32];
    ngx_http_timpush_push_t  *push;

    push = dn->push;

    if (note->status != NGX_HTTP_OK) {
        *ngx_http_timpush_short_token(tok, &note->token) = '\0';

        ngx_log_error(NGX_LOG_INFO, push->request->connection->log, 0,
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
    u_char                        *p, buf[NGX_INT64_LEN];
    int64_t                        before;
    ngx_str_t                     *reason, args[2];
    ngx_http_timpush_apns_note_t  *note;

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

    if (ngx_http_timpush_store_run(NGX_HTTP_TIMPUSH_SCRIPT_PRUNE,
                                   &dn->rcpt->key, 2, args,
                                   ngx_http_timpush_push_pruned, dn,
                                   &dn->prune)
        != NGX_OK)
    {
        dn->prune = NULL;
        return NGX_DECLINED;
    }

    return NGX_OK;
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

        ngx_log_error(NGX_LOG_ERR, push->request->connection->log, 0,
                      "timpush: user \"%V\" business_id %ui (%s): device "
                      "%s removed: %V%s", &dn->rcpt->user, dn->business_id,
                      note->cred->env == NGX_HTTP_TIMPUSH_ENV_SANDBOX
                      ? "sandbox" : "production", tok, &note->reason,
                      (note->reason.len == 14)
                      ? " (a sandbox token sent to production, or the "
                        "reverse?)" : "");
    }

    dn->pending = 0;
    push->pending--;

    ngx_http_timpush_push_done(push);
}


static void
ngx_http_timpush_push_done(ngx_http_timpush_push_t *push)
{
    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    if (push->pending || push->answered) {
        return;
    }

    push->answered = 1;

    r = push->request;
    c = r->connection;

    rc = ngx_http_timpush_push_answer(push);

    /* the request may be freed in there */
    ngx_http_finalize_request(r, ngx_http_timpush_api_finish(r, rc));
    ngx_http_run_posted_requests(c);
}


/*
 * The answer is written directly: for 10,000 devices it is over a
 * megabyte, and everything in it but the user ids is hex, digits or one
 * of our words (APNs reasons are kept to letters and digits).
 */

static ngx_int_t
ngx_http_timpush_push_answer(ngx_http_timpush_push_t *push)
{
    u_char                         *p;
    size_t                          size;
    ngx_buf_t                      *b;
    ngx_uint_t                      i, j, counts[3];
    ngx_http_request_t             *r;
    ngx_http_timpush_recipient_t   *rcpt;

    r = push->request;
    push->answered = 1;

    counts[0] = 0;   /* sent */
    counts[1] = 0;   /* failed */
    counts[2] = 0;   /* skipped */

    size = sizeof("{\"pushed\":true,\"sent\":,\"failed\":,\"skipped\":,"
                  "\"results\":[]}\n") + 3 * NGX_INT_T_LEN;

    for (i = 0; i < push->nrcpts; i++) {
        rcpt = &push->rcpts[i];

        if (rcpt->error) {
            counts[1]++;

        } else if (rcpt->ndevices == 0) {
            counts[2]++;
        }

        size += ngx_http_timpush_push_result_size(rcpt, NULL)
                * ngx_max(rcpt->ndevices, 1);

        for (j = 0; j < rcpt->ndevices; j++) {
            counts[ngx_http_timpush_push_kind(&rcpt->devices[j])]++;
            size += ngx_http_timpush_push_result_size(rcpt,
                                                      &rcpt->devices[j]);
        }
    }

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(b->last, "{\"pushed\":true,\"sent\":%ui,\"failed\":%ui,"
                    "\"skipped\":%ui,\"results\":[",
                    counts[0], counts[1], counts[2]);

    for (i = 0; i < push->nrcpts; i++) {
        rcpt = &push->rcpts[i];

        if (rcpt->error || rcpt->ndevices == 0) {
            p = ngx_cpymem(p, "{\"user_id\":\"", sizeof("{\"user_id\":\"") - 1);
            p = ngx_http_timpush_json_escape(p, &rcpt->user);
            p = ngx_sprintf(p, "\",\"%s\":\"%s\"},",
                            rcpt->error ? "error" : "skipped",
                            rcpt->error ? rcpt->error : "no_devices");
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


/* 0: sent, 1: failed, 2: skipped */

static ngx_uint_t
ngx_http_timpush_push_kind(ngx_http_timpush_device_note_t *dn)
{
    if (dn->foreground) {
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
    ngx_http_timpush_recipient_t    *rcpt;
    ngx_http_timpush_device_note_t  *dn;

    for (i = 0; i < push->nrcpts; i++) {
        rcpt = &push->rcpts[i];

        if (rcpt->cmd) {
            ngx_http_timpush_store_forget(rcpt->cmd);
            rcpt->cmd = NULL;
        }

        for (j = 0; j < rcpt->ndevices; j++) {
            dn = &rcpt->devices[j];

            if (dn->pending && !dn->note.finished) {
                ngx_http_timpush_apns_cancel(&dn->note);
            }

            if (dn->prune) {
                ngx_http_timpush_store_forget(dn->prune);
                dn->prune = NULL;
            }
        }
    }
}
