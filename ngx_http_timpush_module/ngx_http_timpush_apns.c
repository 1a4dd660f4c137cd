
/*
 * Copyright (C) timpush authors
 *
 * The APNs transport (DESIGN §7, §11): notifications in, APNs answers out.
 * Per worker and credential, a channel: a bounded queue of notifications
 * waiting for a stream, and connections (apns_conn.c) carrying as many
 * streams as the server allows.  This file is one notification's life, a
 * state machine:
 *
 *   WAITING --dispatch--> STREAM --stream over--> ANSWERED --outcome--> done
 *      ^                                             |
 *      +---------------- BACKOFF <-------------------+  (again)
 *
 * Every state is left through detach(), whatever takes it out (the answer,
 * the deadline, the caller going away).  Streams that end are answered
 * from a posted event, so nothing that may finish a caller's request, or
 * send again, runs inside nghttp2 or inside another connection's call.
 */


#include "ngx_http_timpush_apns_int.h"

#include <openssl/rand.h>


static u_char *ngx_http_timpush_apns_random(size_t n);
static void ngx_http_timpush_apns_dispatch_handler(ngx_event_t *ev);
static void ngx_http_timpush_apns_dispatch(
    ngx_http_timpush_apns_channel_t *ch);
static void ngx_http_timpush_apns_open(ngx_http_timpush_apns_channel_t *ch);
static ngx_uint_t ngx_http_timpush_apns_ready(
    ngx_http_timpush_apns_channel_t *ch);
static ngx_http_timpush_apns_conn_t *ngx_http_timpush_apns_pick(
    ngx_http_timpush_apns_channel_t *ch, ngx_http_timpush_apns_conn_t *avoid,
    ngx_uint_t *room);
static ngx_int_t ngx_http_timpush_apns_submit(
    ngx_http_timpush_apns_conn_t *hc, ngx_http_timpush_apns_note_t *note);
static ssize_t ngx_http_timpush_apns_read_payload(nghttp2_session *session,
    int32_t stream_id, uint8_t *buf, size_t length, uint32_t *flags,
    nghttp2_data_source *source, void *data);
static void ngx_http_timpush_apns_outcomes_handler(ngx_event_t *ev);
static void ngx_http_timpush_apns_outcome(ngx_http_timpush_apns_note_t *note);
static ngx_uint_t ngx_http_timpush_apns_expired_token(
    ngx_http_timpush_apns_note_t *note);
static void ngx_http_timpush_apns_again(ngx_http_timpush_apns_note_t *note,
    ngx_msec_t delay);
static void ngx_http_timpush_apns_wait(ngx_http_timpush_apns_note_t *note);
static void ngx_http_timpush_apns_retry_handler(ngx_event_t *ev);
static void ngx_http_timpush_apns_deadline_handler(ngx_event_t *ev);
static void ngx_http_timpush_apns_detach(ngx_http_timpush_apns_note_t *note);
static void ngx_http_timpush_apns_finish(ngx_http_timpush_apns_note_t *note);
static void ngx_http_timpush_apns_reason(ngx_http_timpush_apns_note_t *note);


ngx_http_timpush_apns_t  ngx_http_timpush_apns;


/* worker start and exit */

ngx_int_t
ngx_http_timpush_apns_init_process(ngx_cycle_t *cycle,
    ngx_http_timpush_main_conf_t *tmcf)
{
    ngx_uint_t                         i, j;
    ngx_http_timpush_apns_t           *a;
    ngx_http_timpush_credential_t    **cred;
    ngx_http_timpush_apns_channel_t   *ch;

    a = &ngx_http_timpush_apns;

    if (tmcf->credentials.nelts == 0) {
        return NGX_OK;
    }

    if (ngx_http_timpush_apns_conn_init(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    a->conf = tmcf;
    a->exiting = 0;

    ch = ngx_pcalloc(cycle->pool, tmcf->credentials.nelts
                                  * sizeof(ngx_http_timpush_apns_channel_t));
    if (ch == NULL) {
        return NGX_ERROR;
    }

    a->channels = ch;
    a->nchannels = tmcf->credentials.nelts;
    cred = tmcf->credentials.elts;

    for (i = 0; i < tmcf->credentials.nelts; i++, ch++) {
        ch->cred = cred[i];
        ch->peers = tmcf->apns_peers[cred[i]->env];
        ch->log = cycle->log;
        (void) ngx_http_timpush_metrics_cred(cred[i], &ch->metrics);
        ngx_queue_init(&ch->waiting);
        ngx_queue_init(&ch->answered);
        ngx_str_set(&ch->last_error, "ConnectionFailed");

        ch->dispatch.handler = ngx_http_timpush_apns_dispatch_handler;
        ch->dispatch.data = ch;
        ch->dispatch.log = cycle->log;

        ch->outcomes.handler = ngx_http_timpush_apns_outcomes_handler;
        ch->outcomes.data = ch;
        ch->outcomes.log = cycle->log;

        for (j = 0; j < 2; j++) {
            ch->jwt_buf[j] = ngx_http_timpush_secret_alloc(cycle->pool,
                                           NGX_HTTP_TIMPUSH_APNS_AUTH_SIZE);
            if (ch->jwt_buf[j] == NULL) {
                return NGX_ERROR;
            }
        }

        /*
         * Twice the slots: a connection that drains (GOAWAY) or is held
         * to a few streams by the server leaves room for another.
         */

        ch->nconns = 2 * tmcf->apns_connections;

        ch->conns = ngx_pcalloc(cycle->pool,
                            ch->nconns * sizeof(ngx_http_timpush_apns_conn_t));
        if (ch->conns == NULL) {
            return NGX_ERROR;
        }

        for (j = 0; j < ch->nconns; j++) {
            ch->conns[j].channel = ch;

            if (ngx_http_timpush_apns_conn_alloc(cycle, &ch->conns[j])
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


void
ngx_http_timpush_apns_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                        i, j;
    ngx_http_timpush_apns_t          *a;
    ngx_http_timpush_apns_conn_t     *hc;
    ngx_http_timpush_apns_channel_t  *ch;

    a = &ngx_http_timpush_apns;

    /* the requests waiting for answers go with the process */
    a->exiting = 1;

    for (i = 0; i < a->nchannels; i++) {
        ch = &a->channels[i];

        if (ch->dispatch.posted) {
            ngx_delete_posted_event(&ch->dispatch);
        }

        if (ch->outcomes.posted) {
            ngx_delete_posted_event(&ch->outcomes);
        }

        for (j = 0; j < ch->nconns; j++) {
            hc = &ch->conns[j];

            if (hc->reconnect.timer_set) {
                ngx_del_timer(&hc->reconnect);
            }

            if (hc->state != NGX_HTTP_TIMPUSH_APNS_CLOSED) {
                ngx_http_timpush_apns_close(hc);
            }
        }
    }

    a->nchannels = 0;

    ngx_http_timpush_apns_conn_exit();
}


/* notifications in */

ngx_int_t
ngx_http_timpush_apns_send(ngx_http_timpush_apns_note_t *note)
{
    u_char                           *p, *r, uuid[16];
    ngx_msec_t                        timeout;
    ngx_msec_int_t                    left;
    ngx_http_timpush_apns_t          *a;
    ngx_http_timpush_apns_channel_t  *ch;

    a = &ngx_http_timpush_apns;
    ch = &a->channels[note->cred->index];

    if (ch->nwaiting >= a->conf->apns_queue) {
        return NGX_BUSY;
    }

    timeout = a->conf->apns_timeout;

    if (note->headers->expires) {
        left = (ngx_msec_int_t) (note->headers->expires - ngx_current_msec);

        if (left <= 0) {
            /* too late already: not sent at all */
            return NGX_DECLINED;
        }

        timeout = (ngx_msec_t) left;
    }

    /* the apns-id: a random (version 4) UUID, in the answer too */

    r = ngx_http_timpush_apns_random(16);
    if (r == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(uuid, r, 16);

    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;

    p = ngx_hex_dump(note->apns_id, uuid, 4);
    *p++ = '-';
    p = ngx_hex_dump(p, uuid + 4, 2);
    *p++ = '-';
    p = ngx_hex_dump(p, uuid + 6, 2);
    *p++ = '-';
    p = ngx_hex_dump(p, uuid + 8, 2);
    *p++ = '-';
    (void) ngx_hex_dump(p, uuid + 10, 6);

    note->status = 0;
    note->reason.len = 0;
    note->timestamp = 0;
    note->attempts = 0;
    note->refused = 0;
    note->conn = NULL;
    note->avoid = NULL;
    note->jwt_iat = 0;
    note->finished = 0;
    note->jwt_retried = 0;

    note->deadline.handler = ngx_http_timpush_apns_deadline_handler;
    note->deadline.data = note;
    note->deadline.log = ch->log;
    note->retry.handler = ngx_http_timpush_apns_retry_handler;
    note->retry.data = note;
    note->retry.log = ch->log;

    ngx_add_timer(&note->deadline, timeout);

    ngx_queue_insert_tail(&ch->waiting, &note->queue);
    ch->nwaiting++;
    note->state = NGX_HTTP_TIMPUSH_NOTE_WAITING;

    ngx_http_timpush_apns_kick(ch);

    return NGX_OK;
}


/*
 * n random bytes from a per-worker buffer: one RAND_bytes() call per 256
 * notifications instead of one each.
 */

static u_char *
ngx_http_timpush_apns_random(size_t n)
{
    u_char  *p;

    static u_char  buf[4096];
    static size_t  pos = sizeof(buf);

    if (pos + n > sizeof(buf)) {
        if (RAND_bytes(buf, sizeof(buf)) != 1) {
            return NULL;
        }

        pos = 0;
    }

    p = buf + pos;
    pos += n;

    return p;
}


/*
 * The streams a credential's connections can carry: the server's
 * SETTINGS_MAX_CONCURRENT_STREAMS of each ready one, the default for the
 * ones that may still be opened.
 */

ngx_uint_t
ngx_http_timpush_apns_capacity(ngx_uint_t index)
{
    ngx_uint_t                        j, n, ready;
    ngx_http_timpush_apns_t          *a;
    ngx_http_timpush_apns_conn_t     *hc;
    ngx_http_timpush_apns_channel_t  *ch;

    a = &ngx_http_timpush_apns;

    if (index >= a->nchannels) {
        return 0;
    }

    ch = &a->channels[index];
    n = 0;
    ready = 0;

    for (j = 0; j < ch->nconns; j++) {
        hc = &ch->conns[j];

        if (hc->state == NGX_HTTP_TIMPUSH_APNS_READY) {
            n += ngx_http_timpush_apns_max_streams(hc);
            ready++;
        }
    }

    if (ready < a->conf->apns_connections) {
        n += (a->conf->apns_connections - ready)
             * NGX_HTTP_TIMPUSH_APNS_STREAMS;
    }

    return n;
}


void
ngx_http_timpush_apns_cancel(ngx_http_timpush_apns_note_t *note)
{
    if (note->finished) {
        return;
    }

    note->finished = 1;
    ngx_http_timpush_apns_detach(note);
}


/* the channel's dispatch, soon: never from inside another call */

void
ngx_http_timpush_apns_kick(ngx_http_timpush_apns_channel_t *ch)
{
    if (!ch->dispatch.posted && !ngx_http_timpush_apns.exiting) {
        ngx_post_event(&ch->dispatch, &ngx_posted_events);
    }
}


static void
ngx_http_timpush_apns_dispatch_handler(ngx_event_t *ev)
{
    ngx_http_timpush_apns_dispatch(ev->data);
}


/* waiting notifications onto streams; connections opened on demand */

static void
ngx_http_timpush_apns_dispatch(ngx_http_timpush_apns_channel_t *ch)
{
    ngx_int_t                      rc;
    ngx_uint_t                     room;
    ngx_queue_t                   *q;
    ngx_http_timpush_apns_conn_t  *hc;
    ngx_http_timpush_apns_note_t  *note;

    while (!ngx_queue_empty(&ch->waiting)) {

        q = ngx_queue_head(&ch->waiting);
        note = ngx_queue_data(q, ngx_http_timpush_apns_note_t, queue);

        hc = ngx_http_timpush_apns_pick(ch, note->avoid, &room);
        if (hc == NULL) {
            break;
        }

        /* the connection picked is filled as far as it goes */

        for ( /* void */ ; room && !ngx_queue_empty(&ch->waiting); room--) {
            q = ngx_queue_head(&ch->waiting);
            note = ngx_queue_data(q, ngx_http_timpush_apns_note_t, queue);

            ngx_queue_remove(q);
            ch->nwaiting--;
            note->state = NGX_HTTP_TIMPUSH_NOTE_IDLE;

            rc = ngx_http_timpush_apns_submit(hc, note);

            if (rc == NGX_DECLINED) {
                /* no provider token can be made: nothing will change it */
                note->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
                ngx_str_set(&note->reason, "ProviderTokenError");
                ngx_http_timpush_apns_finish(note);
                continue;
            }

            if (rc != NGX_OK) {
                /* not sent: it waits first; the connection takes no more */
                ngx_queue_insert_head(&ch->waiting, &note->queue);
                ch->nwaiting++;
                note->state = NGX_HTTP_TIMPUSH_NOTE_WAITING;
                hc->state = NGX_HTTP_TIMPUSH_APNS_DRAINING;
                break;
            }
        }

        ngx_http_timpush_apns_post_flush(hc);
    }

    if (!ngx_queue_empty(&ch->waiting)) {
        ngx_http_timpush_apns_open(ch);
    }

    ngx_http_timpush_apns_gauges(ch);
}


/*
 * Notifications wait: open connections up to timpush_apns_connections
 * that take streams.  A connection that drains, or that the server holds
 * to a few streams after it answered some (as APNs may do after a
 * refusal), does not count; one that has answered nothing yet does (APNs
 * may start a token connection at 1 stream until it knows the token), and
 * so does one waiting to reconnect after a failure, so that a failing
 * APNs is never dialled more often.
 */

static void
ngx_http_timpush_apns_open(ngx_http_timpush_apns_channel_t *ch)
{
    ngx_uint_t                     i, active;
    ngx_http_timpush_apns_conn_t  *hc;

    active = 0;

    for (i = 0; i < ch->nconns; i++) {
        hc = &ch->conns[i];

        switch (hc->state) {

        case NGX_HTTP_TIMPUSH_APNS_CONNECTING:
            active++;
            break;

        case NGX_HTTP_TIMPUSH_APNS_READY:
            if (ngx_http_timpush_apns_max_streams(hc) > 8
                || hc->answers == 0)
            {
                active++;
            }

            break;

        case NGX_HTTP_TIMPUSH_APNS_CLOSED:
            if (hc->reconnect.timer_set) {
                active++;
            }

            break;
        }
    }

    for (i = 0;
         i < ch->nconns && active < ngx_http_timpush_apns.conf->apns_connections;
         i++)
    {
        hc = &ch->conns[i];

        if (hc->state == NGX_HTTP_TIMPUSH_APNS_CLOSED
            && !hc->reconnect.timer_set)
        {
            active++;
            ngx_http_timpush_apns_connect(hc);
        }
    }
}


/* has the channel a connection that takes streams? */

static ngx_uint_t
ngx_http_timpush_apns_ready(ngx_http_timpush_apns_channel_t *ch)
{
    ngx_uint_t  i;

    for (i = 0; i < ch->nconns; i++) {
        if (ch->conns[i].state == NGX_HTTP_TIMPUSH_APNS_READY) {
            return 1;
        }
    }

    return 0;
}


/*
 * The ready connection with the most free streams, another than the one
 * that refused the notification if there is one.
 */

static ngx_http_timpush_apns_conn_t *
ngx_http_timpush_apns_pick(ngx_http_timpush_apns_channel_t *ch,
    ngx_http_timpush_apns_conn_t *avoid, ngx_uint_t *room)
{
    ngx_uint_t                     i, max, free, best_free, avoid_free;
    ngx_http_timpush_apns_conn_t  *hc, *best;

    best = NULL;
    best_free = 0;
    avoid_free = 0;

    for (i = 0; i < ch->nconns; i++) {
        hc = &ch->conns[i];

        /* nothing before the server's SETTINGS: APNs may allow 1 stream */

        if (hc->state != NGX_HTTP_TIMPUSH_APNS_READY || !hc->settings) {
            continue;
        }

        max = ngx_http_timpush_apns_max_streams(hc);
        free = (max > hc->streams) ? max - hc->streams : 0;

        /*
         * A busy connection is filled up again only once an eighth of
         * what it may carry is free: fewer and larger writes, on both
         * sides; the answers it waits for free the room.
         */

        if (hc->streams && free < max / 8 + (max % 8 != 0)) {
            continue;
        }

        if (hc == avoid) {
            avoid_free = free;
            continue;
        }

        if (free > best_free) {
            best = hc;
            best_free = free;
        }
    }

    if (best == NULL && avoid_free) {
        best = avoid;
        best_free = avoid_free;
    }

    *room = best_free;

    return best;
}


static ngx_int_t
ngx_http_timpush_apns_submit(ngx_http_timpush_apns_conn_t *hc,
    ngx_http_timpush_apns_note_t *note)
{
    u_char                           *p;
    size_t                            n;
    int32_t                           id;
    nghttp2_nv                        nv[13];
    nghttp2_data_provider             dp;
    ngx_http_timpush_credential_t    *cred;
    ngx_http_timpush_apns_channel_t  *ch;
    ngx_http_timpush_apns_headers_t  *hd;
    u_char                            path[16 + NGX_HTTP_TIMPUSH_TOKEN_MAX];
    u_char                            topic[512];
    u_char                            prio[NGX_INT_T_LEN];
    u_char                            exp[NGX_INT64_LEN];
    u_char                            clen[NGX_SIZE_T_LEN];

    ch = hc->channel;
    cred = ch->cred;
    hd = note->headers;
    n = 0;

    /* ids are 31 bits: well before the last, the connection drains */

    if (nghttp2_session_get_next_stream_id(hc->session)
        > NGX_HTTP_TIMPUSH_APNS_LAST_ID)
    {
        ngx_log_error(NGX_LOG_INFO, ch->log, 0,
                      "timpush apns: %V: stream ids run low: the "
                      "connection drains, another takes over",
                      &hc->peer->name);
        return NGX_AGAIN;
    }

    /*
     * Names are literals (not copied); values that differ on every
     * request (:path, apns-id) are kept out of the HPACK dynamic table,
     * where they would only push out the ones that repeat.
     */

#define ngx_http_timpush_nv_f(nm, v, l, f)                                  \
    nv[n].name = (uint8_t *) nm;                                            \
    nv[n].namelen = sizeof(nm) - 1;                                         \
    nv[n].value = (uint8_t *) (v);                                          \
    nv[n].valuelen = (l);                                                   \
    nv[n].flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | (f);                       \
    n++

#define ngx_http_timpush_nv(nm, v, l)                                       \
    ngx_http_timpush_nv_f(nm, v, l, NGHTTP2_NV_FLAG_NONE)

    p = ngx_snprintf(path, sizeof(path), "/3/device/%V", &note->token);

    ngx_http_timpush_nv(":method", "POST", 4);
    ngx_http_timpush_nv(":scheme", "https", 5);
    ngx_http_timpush_nv_f(":path", path, p - path, NGHTTP2_NV_FLAG_NO_INDEX);
    ngx_http_timpush_nv(":authority", hc->peer->host.data,
                        hc->peer->host.len);

    p = ngx_snprintf(topic, sizeof(topic), "%V%V", &cred->topic,
                     &hd->topic_suffix);
    ngx_http_timpush_nv("apns-topic", topic, p - topic);
    ngx_http_timpush_nv("apns-push-type", hd->push_type.data,
                        hd->push_type.len);

    p = ngx_sprintf(prio, "%ui", hd->priority);
    ngx_http_timpush_nv("apns-priority", prio, p - prio);

    ngx_http_timpush_nv_f("apns-id", note->apns_id,
                          NGX_HTTP_TIMPUSH_APNS_ID_LEN,
                          NGHTTP2_NV_FLAG_NO_INDEX);

    p = ngx_sprintf(clen, "%uz", note->payload[0].len + note->payload[1].len
                                 + note->payload[2].len);
    ngx_http_timpush_nv("content-length", clen, p - clen);

    if (hd->expiration >= 0) {
        p = ngx_sprintf(exp, "%L", hd->expiration);
        ngx_http_timpush_nv("apns-expiration", exp, p - exp);
    }

    if (hd->collapse_id.len) {
        ngx_http_timpush_nv("apns-collapse-id", hd->collapse_id.data,
                            hd->collapse_id.len);
    }

    if (cred->auth == NGX_HTTP_TIMPUSH_AUTH_TOKEN) {
        if (ngx_http_timpush_apns_jwt(ch, 0) != NGX_OK) {
            return NGX_DECLINED;
        }

        /*
         * Never indexed, never copied: the token stays in secure memory
         * (apns_jwt.c), not in nghttp2's HPACK table or its copy of the
         * request, which would sit in ordinary memory and in core dumps.
         */

        ngx_http_timpush_nv_f("authorization", ch->auth.data, ch->auth.len,
                              NGHTTP2_NV_FLAG_NO_INDEX
                              |NGHTTP2_NV_FLAG_NO_COPY_VALUE);
        note->jwt_iat = ch->jwt_iat;
    }

#undef ngx_http_timpush_nv
#undef ngx_http_timpush_nv_f

    note->part = 0;
    note->offset = 0;
    note->body_len = 0;
    note->status = 0;

    dp.source.ptr = note;
    dp.read_callback = ngx_http_timpush_apns_read_payload;

    note->sent = ngx_current_msec;

    id = nghttp2_submit_request(hc->session, NULL, nv, n, &dp, note);

    if (id < 0) {
        ngx_log_error(NGX_LOG_ERR, ch->log, 0,
                      "timpush apns: %V: nghttp2_submit_request() failed: "
                      "%s; the connection drains", &hc->peer->name,
                      nghttp2_strerror(id));
        return NGX_AGAIN;
    }

    note->conn = hc;
    note->stream_id = id;
    note->attempts++;
    note->state = NGX_HTTP_TIMPUSH_NOTE_STREAM;
    ngx_queue_insert_tail(&hc->inflight, &note->link);
    hc->streams++;

    return NGX_OK;
}


static ssize_t
ngx_http_timpush_apns_read_payload(nghttp2_session *session,
    int32_t stream_id, uint8_t *buf, size_t length, uint32_t *flags,
    nghttp2_data_source *source, void *data)
{
    ngx_http_timpush_apns_note_t *note = source->ptr;

    size_t      n, copied;
    ngx_str_t  *part;

    copied = 0;

    while (note->part < 3 && copied < length) {
        part = &note->payload[note->part];
        n = ngx_min(part->len - note->offset, length - copied);

        ngx_memcpy(buf + copied, part->data + note->offset, n);
        copied += n;
        note->offset += n;

        if (note->offset == part->len) {
            note->part++;
            note->offset = 0;
        }
    }

    if (note->part == 3) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    }

    return copied;
}


/* a stream is over (apns_conn.c): its outcome, from a posted event */

void
ngx_http_timpush_apns_stream_over(ngx_http_timpush_apns_conn_t *hc,
    ngx_http_timpush_apns_note_t *note, uint32_t error_code)
{
    ngx_http_timpush_apns_channel_t  *ch;

    ch = hc->channel;

    ngx_queue_remove(&note->link);
    note->conn = NULL;

    /* an answer counts only if whole: else the stream was not answered */

    if (error_code != NGHTTP2_NO_ERROR) {
        note->status = 0;

    } else if (note->status) {
        ngx_http_timpush_metric_observe(ch->metrics.duration,
                                        ngx_current_msec - note->sent);
    }

    note->refused_now = (error_code == NGHTTP2_REFUSED_STREAM);
    note->avoid = hc;

    note->state = NGX_HTTP_TIMPUSH_NOTE_ANSWERED;
    ngx_queue_insert_tail(&ch->answered, &note->queue);

    if (!ch->outcomes.posted && !ngx_http_timpush_apns.exiting) {
        ngx_post_event(&ch->outcomes, &ngx_posted_events);
    }
}


static void
ngx_http_timpush_apns_outcomes_handler(ngx_event_t *ev)
{
    ngx_http_timpush_apns_channel_t *ch = ev->data;

    ngx_queue_t                   *q;
    ngx_http_timpush_apns_note_t  *note;

    while (!ngx_queue_empty(&ch->answered)) {
        q = ngx_queue_head(&ch->answered);
        ngx_queue_remove(q);

        note = ngx_queue_data(q, ngx_http_timpush_apns_note_t, queue);
        note->state = NGX_HTTP_TIMPUSH_NOTE_IDLE;

        ngx_http_timpush_apns_outcome(note);
    }

    ngx_http_timpush_apns_gauges(ch);
}


/*
 * This worker's share of the credential's gauges: connections by state
 * (a closed one that failed since its last answer is "backoff"), streams
 * open, notifications waiting.  Set whole each time: nothing drifts.
 */

void
ngx_http_timpush_apns_gauges(ngx_http_timpush_apns_channel_t *ch)
{
    ngx_int_t                      n[NGX_HTTP_TIMPUSH_M_CONN_STATES];
    ngx_uint_t                     i, streams;
    ngx_http_timpush_apns_conn_t  *hc;

    ngx_memzero(n, sizeof(n));
    streams = 0;

    for (i = 0; i < ch->nconns; i++) {
        hc = &ch->conns[i];
        streams += hc->streams;

        switch (hc->state) {

        case NGX_HTTP_TIMPUSH_APNS_CONNECTING:
            n[NGX_HTTP_TIMPUSH_M_CONN_CONNECTING]++;
            break;

        case NGX_HTTP_TIMPUSH_APNS_READY:
            n[NGX_HTTP_TIMPUSH_M_CONN_READY]++;
            break;

        case NGX_HTTP_TIMPUSH_APNS_DRAINING:
            n[NGX_HTTP_TIMPUSH_M_CONN_DRAINING]++;
            break;

        default: /* NGX_HTTP_TIMPUSH_APNS_CLOSED */
            if (hc->failed) {
                n[NGX_HTTP_TIMPUSH_M_CONN_BACKOFF]++;
            }

            break;
        }
    }

    for (i = 0; i < NGX_HTTP_TIMPUSH_M_CONN_STATES; i++) {
        ngx_http_timpush_metric_set(ch->metrics.conns[i], n[i]);
    }

    ngx_http_timpush_metric_set(ch->metrics.streams, streams);
    ngx_http_timpush_metric_set(ch->metrics.queue, ch->nwaiting);
}


/* what to do with a note whose stream is over */

static void
ngx_http_timpush_apns_outcome(ngx_http_timpush_apns_note_t *note)
{
    ngx_msec_t  delay;

    delay = NGX_HTTP_TIMPUSH_APNS_RETRY_MIN << ngx_min(note->attempts, 5);
    delay = ngx_min(delay, NGX_HTTP_TIMPUSH_APNS_RETRY_MAX);

    switch (note->status) {

    case 0:
        if (note->refused_now) {
            /*
             * REFUSED_STREAM, or above a GOAWAY's last stream: not
             * processed, safe to send again, on another connection,
             * after a backoff, a few times at most.
             */

            if (++note->refused > NGX_HTTP_TIMPUSH_APNS_REFUSED_MAX) {
                note->status = NGX_HTTP_SERVICE_UNAVAILABLE;
                ngx_str_set(&note->reason, "StreamRefused");
                break;
            }

            ngx_http_timpush_apns_again(note,
                             NGX_HTTP_TIMPUSH_APNS_RETRY_MIN << note->refused);
            return;
        }

        /* the connection failed, or the stream was reset */
        ngx_http_timpush_apns_again(note, delay);
        return;

    case 429:
    case 500:
    case 503:
        ngx_http_timpush_apns_reason(note);
        ngx_http_timpush_apns_again(note, delay);
        return;

    case 403:
        ngx_http_timpush_apns_reason(note);

        if (ngx_http_timpush_apns_expired_token(note)) {
            return;
        }

        break;

    default:
        ngx_http_timpush_apns_reason(note);
        break;
    }

    ngx_http_timpush_apns_finish(note);
}


/*
 * ExpiredProviderToken: every notification sent with a token older than
 * the instance's current one goes again with the current one; one sent
 * with the current one has it made anew, once for the instance
 * (apns_jwt.c refuses to more often than every 20 minutes, and says
 * why).  Once per notification.
 */

static ngx_uint_t
ngx_http_timpush_apns_expired_token(ngx_http_timpush_apns_note_t *note)
{
    ngx_http_timpush_apns_channel_t  *ch;

    if (note->reason.len != 20
        || ngx_strncmp(note->reason.data, "ExpiredProviderToken", 20) != 0
        || note->cred->auth != NGX_HTTP_TIMPUSH_AUTH_TOKEN
        || note->jwt_retried)
    {
        return 0;
    }

    ch = &ngx_http_timpush_apns.channels[note->cred->index];

    if (ngx_http_timpush_apns_jwt(ch, note->jwt_iat) != NGX_OK) {
        return 0;
    }

    note->jwt_retried = 1;
    note->avoid = NULL;
    ngx_http_timpush_apns_again(note, 0);

    return 1;
}


/* to the queue, at once or after a backoff, while time is left */

static void
ngx_http_timpush_apns_again(ngx_http_timpush_apns_note_t *note,
    ngx_msec_t delay)
{
    ngx_msec_t  left;

    if (delay == 0) {
        ngx_http_timpush_apns_wait(note);
        return;
    }

    left = note->deadline.timer_set
           ? (ngx_msec_t) (note->deadline.timer.key - ngx_current_msec) : 0;

    if (delay >= left) {
        /* no time for another try: the deadline answers with this one */
        return;
    }

    note->state = NGX_HTTP_TIMPUSH_NOTE_BACKOFF;
    ngx_add_timer(&note->retry, delay);
}


static void
ngx_http_timpush_apns_wait(ngx_http_timpush_apns_note_t *note)
{
    ngx_http_timpush_apns_channel_t  *ch;

    ch = &ngx_http_timpush_apns.channels[note->cred->index];

    ngx_queue_insert_head(&ch->waiting, &note->queue);
    ch->nwaiting++;
    note->state = NGX_HTTP_TIMPUSH_NOTE_WAITING;

    ngx_http_timpush_apns_kick(ch);
}


static void
ngx_http_timpush_apns_retry_handler(ngx_event_t *ev)
{
    ngx_http_timpush_apns_note_t *note = ev->data;

    ngx_http_timpush_apns_wait(note);
}


/*
 * The deadline: whatever state the note is in, it ends now.  An answer
 * not yet whole (a status, the body still to come) is no answer.
 */

static void
ngx_http_timpush_apns_deadline_handler(ngx_event_t *ev)
{
    ngx_http_timpush_apns_note_t *note = ev->data;

    ngx_uint_t                        streaming;
    ngx_http_timpush_apns_channel_t  *ch;

    ch = &ngx_http_timpush_apns.channels[note->cred->index];

    streaming = (note->state == NGX_HTTP_TIMPUSH_NOTE_STREAM);

    ngx_http_timpush_apns_detach(note);

    if (streaming) {
        note->status = 0;
    }

    if (note->status == 0) {
        if (note->attempts == 0 && !ngx_http_timpush_apns_ready(ch)) {
            /* never sent: say why if the connection is what failed */
            note->status = NGX_HTTP_BAD_GATEWAY;
            note->reason = ch->last_error;

        } else {
            note->status = NGX_HTTP_GATEWAY_TIME_OUT;
            ngx_str_set(&note->reason, "Timeout");
        }
    }

    ngx_http_timpush_apns_finish(note);
}


/* out of whatever holds the note now */

static void
ngx_http_timpush_apns_detach(ngx_http_timpush_apns_note_t *note)
{
    ngx_http_timpush_apns_conn_t     *hc;
    ngx_http_timpush_apns_channel_t  *ch;

    ch = &ngx_http_timpush_apns.channels[note->cred->index];

    switch (note->state) {

    case NGX_HTTP_TIMPUSH_NOTE_WAITING:
        ngx_queue_remove(&note->queue);
        ch->nwaiting--;
        ngx_http_timpush_apns_gauges(ch);
        break;

    case NGX_HTTP_TIMPUSH_NOTE_BACKOFF:
        if (note->retry.timer_set) {
            ngx_del_timer(&note->retry);
        }

        break;

    case NGX_HTTP_TIMPUSH_NOTE_STREAM:
        hc = note->conn;
        ngx_queue_remove(&note->link);

        /* the stream stays counted until nghttp2 has closed it */

        if (hc->session) {
            nghttp2_session_set_stream_user_data(hc->session,
                                                 note->stream_id, NULL);
            (void) nghttp2_submit_rst_stream(hc->session, NGHTTP2_FLAG_NONE,
                                             note->stream_id, NGHTTP2_CANCEL);
            ngx_http_timpush_apns_post_flush(hc);
        }

        break;

    case NGX_HTTP_TIMPUSH_NOTE_ANSWERED:
        ngx_queue_remove(&note->queue);
        break;
    }

    if (note->deadline.timer_set) {
        ngx_del_timer(&note->deadline);
    }

    note->state = NGX_HTTP_TIMPUSH_NOTE_IDLE;
    note->conn = NULL;
}


static void
ngx_http_timpush_apns_finish(ngx_http_timpush_apns_note_t *note)
{
    ngx_http_timpush_apns_detach(note);

    note->finished = 1;
    note->done(note);
}


/* Apple's {"reason":"...","timestamp":...} */

static void
ngx_http_timpush_apns_reason(ngx_http_timpush_apns_note_t *note)
{
    u_char  *p, *last, *start;

    note->reason.len = 0;
    note->timestamp = 0;

    p = note->body;
    last = p + note->body_len;

    start = ngx_strlcasestrn(p, last, (u_char *) "\"reason\"", 8 - 1);
    if (start) {
        p = ngx_strlchr(start + 8, last, '"');
        if (p) {
            start = ++p;

            /* Apple's reasons are words: nothing else is taken */

            while (p < last && ((*p >= 'A' && *p <= 'Z')
                                || (*p >= 'a' && *p <= 'z')
                                || (*p >= '0' && *p <= '9')))
            {
                p++;
            }

            if (p < last && *p == '"' && p > start) {
                note->reason.data = start;
                note->reason.len = p - start;
            }
        }
    }

    p = note->body;

    start = ngx_strlcasestrn(p, last, (u_char *) "\"timestamp\"", 11 - 1);
    if (start) {
        p = start + 11;

        while (p < last && (*p == ' ' || *p == ':')) {
            p++;
        }

        start = p;

        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }

        if (p > start) {
            note->timestamp = ngx_atoof(start, p - start);
        }
    }

    if (note->reason.len == 0) {
        ngx_str_set(&note->reason, "Unknown");
    }
}
