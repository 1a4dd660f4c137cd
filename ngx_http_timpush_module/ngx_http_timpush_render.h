
/*
 * Copyright (C) timpush authors
 *
 * Rendering (DESIGN §4 POST /v1/push body, §6): a push body in, a validated
 * message and its APNs payload template out.  No nginx I/O in here, so that
 * it can be unit-tested and fuzzed alone (t/unit, t/fuzz).
 */


#ifndef _NGX_HTTP_TIMPUSH_RENDER_H_INCLUDED_
#define _NGX_HTTP_TIMPUSH_RENDER_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_timpush_body.h"


#ifndef NGX_HTTP_TIMPUSH_USER_MAX
#define NGX_HTTP_TIMPUSH_USER_MAX             128
#endif

#define NGX_HTTP_TIMPUSH_PAYLOAD_MAX          4096
#define NGX_HTTP_TIMPUSH_PAYLOAD_MAX_VOIP     5120
#define NGX_HTTP_TIMPUSH_COLLAPSE_ID_MAX      64
#define NGX_HTTP_TIMPUSH_MSG_ID_MAX           128

/* badges are clamped to this; the payload template leaves room for it */
#define NGX_HTTP_TIMPUSH_BADGE_MAX            9999999999ULL
#define NGX_HTTP_TIMPUSH_BADGE_DIGITS         10

/* why nothing is pushed for a whole message, checked in this order */
#define NGX_HTTP_TIMPUSH_SKIP_NONE            0
#define NGX_HTTP_TIMPUSH_SKIP_DISABLED        1
#define NGX_HTTP_TIMPUSH_SKIP_ONLINE_ONLY     2
#define NGX_HTTP_TIMPUSH_SKIP_NO_CONTENT      3

#define NGX_HTTP_TIMPUSH_PRIORITY_HIGH        10
#define NGX_HTTP_TIMPUSH_PRIORITY_NORMAL      5
#define NGX_HTTP_TIMPUSH_PRIORITY_LOW         1


typedef struct {
    ngx_array_t     to;            /* ngx_str_t: distinct user ids, in
                                      the order first given */

    ngx_str_t       body;          /* alert body after §6.1-6.3, uncut;
                                      empty for a background push */
    ngx_str_t       title;
    ngx_str_t       subtitle;
    ngx_str_t       sound;         /* empty with sound_none */
    ngx_str_t       ext;
    ngx_str_t       image;
    ngx_str_t       category;
    ngx_str_t       thread_id;
    ngx_str_t       collapse_id;   /* apns-collapse-id when not empty */
    ngx_str_t       interruption_level;
    ngx_str_t       msg_id;        /* the IM message's key; empty: none */

    ngx_str_t       push_type;     /* apns-push-type: "alert",
                                      "background" or "voip" */
    ngx_str_t       topic_suffix;  /* "" or ".voip": after apns-topic */

    int64_t         expiration;    /* apns-expiration; -1: none */
    ngx_uint_t      priority;      /* apns-priority: 10, 5 or 1 */
    ngx_uint_t      skip;          /* NGX_HTTP_TIMPUSH_SKIP_* */
    size_t          max_payload;   /* 4096, or 5120 for voip */

    unsigned        sound_none:1;  /* "push.no_sound": no sound key */
    unsigned        ignore_badge:1;
    unsigned        mutable_content:1;
    unsigned        content_available:1;
    unsigned        voip:1;
    unsigned        background:1;  /* aps holds content-available only */
    unsigned        async:1;       /* "async": true (DESIGN §14) */
} ngx_http_timpush_message_t;


typedef ngx_http_timpush_body_err_t  ngx_http_timpush_render_err_t;


/*
 * The payload of one message as a template, built once and shared by all
 * its devices: with has_badge the payload is head + decimal badge + tail,
 * else it is head alone.  Room is left for a badge of
 * NGX_HTTP_TIMPUSH_BADGE_DIGITS digits, so that any payload written by
 * ngx_http_timpush_payload_write() fits msg->max_payload.
 */
typedef struct {
    ngx_str_t       head;
    ngx_str_t       tail;
    ngx_str_t       body;          /* the alert body as sent (maybe cut) */
    unsigned        has_badge:1;   /* increment the device's badge */
    unsigned        cut:1;         /* body was cut and ends with "…" */
} ngx_http_timpush_payload_t;


/*
 * Parses and validates a POST /v1/push body (DESIGN §4).  NGX_OK: msg is
 * filled, every string points into pool memory.  NGX_DECLINED: the body is
 * refused, err says why ("invalid_json" or "invalid_field", with the field's
 * path in the message, e.g. "elems[2].type: ...").  NGX_ERROR: no memory.
 * Unknown fields are ignored; null is taken as absent.
 */
ngx_int_t ngx_http_timpush_message_parse(ngx_pool_t *pool, u_char *data,
    size_t len, ngx_uint_t max_recipients, ngx_http_timpush_message_t *msg,
    ngx_http_timpush_render_err_t *err);

/*
 * Builds the payload template of a message that is not skipped, cutting the
 * body to fit (§6.10).  NGX_DECLINED with "payload_too_large" when even
 * a cut body cannot fit; NGX_ERROR: no memory.
 */
ngx_int_t ngx_http_timpush_payload_build(ngx_pool_t *pool,
    ngx_http_timpush_message_t *msg, ngx_http_timpush_payload_t *pl,
    ngx_http_timpush_render_err_t *err);

/* the length of one device's payload, and writing it (badge is clamped) */
size_t ngx_http_timpush_payload_len(ngx_http_timpush_payload_t *pl,
    uint64_t badge);
u_char *ngx_http_timpush_payload_write(u_char *dst,
    ngx_http_timpush_payload_t *pl, uint64_t badge);

/* "disabled", "online_only", "no_content" for the answer's "reason" */
ngx_str_t *ngx_http_timpush_skip_reason(ngx_uint_t skip);


#endif /* _NGX_HTTP_TIMPUSH_RENDER_H_INCLUDED_ */
