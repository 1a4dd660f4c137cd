
/*
 * Copyright (C) timpush authors
 *
 * A push run without an HTTP request (async.c, DESIGN §14): the same
 * pipeline as POST /v1/push, its outcomes handed to hooks instead of an
 * answer.
 */


#ifndef _NGX_HTTP_TIMPUSH_PUSH_H_INCLUDED_
#define _NGX_HTTP_TIMPUSH_PUSH_H_INCLUDED_


#include "ngx_http_timpush.h"
#include "ngx_http_timpush_render.h"


typedef struct ngx_http_timpush_push_s  ngx_http_timpush_push_t;


/* an entry's kind, as counted in an answer */
#define NGX_HTTP_TIMPUSH_ENTRY_SENT       0
#define NGX_HTTP_TIMPUSH_ENTRY_FAILED     1
#define NGX_HTTP_TIMPUSH_ENTRY_SKIPPED    2


/*
 * One entry of the results, as a synchronous answer has it (json, without
 * a comma): a device's (token set) once its outcome is final, or a user's
 * (no devices, not read, every device a duplicate).
 */
typedef struct {
    ngx_uint_t              rcpt;        /* the user's place in "to" */
    ngx_str_t               user;
    ngx_str_t               token;       /* empty: the user's own entry */
    int64_t                 registered_at;  /* ms: a user's devices' order */
    ngx_uint_t              business_id;
    ngx_uint_t              env;
    ngx_uint_t              status;      /* 0: none (not sent, not read) */
    ngx_str_t               reason;
    ngx_str_t               json;
    ngx_uint_t              kind;        /* NGX_HTTP_TIMPUSH_ENTRY_* */
    unsigned                transient:1; /* a later try may mend it */
    unsigned                first:1;     /* keeps an entry already kept */
    unsigned                removed:1;   /* the token was pruned */
} ngx_http_timpush_push_entry_t;


typedef struct {
    void                  (*entry)(void *ctx,
                                   ngx_http_timpush_push_entry_t *e);

    /* every device answered */
    void                  (*finished)(void *ctx, ngx_int_t rc);

    /*
     * the entries so far to Redis, before the msg_id marks that say those
     * devices got it: NGX_OK once queued (a mark never gets ahead of its
     * entry; a consumer that dies in between leaves them unmarked)
     */
    ngx_int_t             (*flush)(void *ctx);

    void                   *ctx;
} ngx_http_timpush_push_hooks_t;


/* the feedback stream (feedback.c): a token removed, a final failure */
void ngx_http_timpush_feedback(ngx_http_timpush_push_entry_t *e);


ngx_http_timpush_push_t *ngx_http_timpush_push_create(ngx_pool_t *pool,
    ngx_log_t *log, ngx_http_timpush_main_conf_t *tmcf);

/*
 * The body parsed and rendered: NGX_OK; NGX_DECLINED with err set (the
 * body is refused, or nothing is to be pushed: msg->skip); NGX_ERROR.
 */
ngx_int_t ngx_http_timpush_push_prepare(ngx_http_timpush_push_t *push,
    u_char *data, size_t len, ngx_http_timpush_render_err_t *err);

ngx_http_timpush_message_t *ngx_http_timpush_push_message(
    ngx_http_timpush_push_t *push);

/*
 * Runs a prepared push with hooks; msg_id: the dedup key when the body
 * has none.  NGX_OK: finished() will be called (perhaps already was);
 * else a store error and nothing was sent.
 */
ngx_int_t ngx_http_timpush_push_run(ngx_http_timpush_push_t *push,
    ngx_str_t *msg_id, ngx_http_timpush_push_hooks_t *hooks);

/* stops it: no hook is called any more (the pool is the caller's) */
void ngx_http_timpush_push_stop(ngx_http_timpush_push_t *push);


#endif /* _NGX_HTTP_TIMPUSH_PUSH_H_INCLUDED_ */
