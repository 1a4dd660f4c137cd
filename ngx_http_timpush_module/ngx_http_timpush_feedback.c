
/*
 * Copyright (C) timpush authors
 *
 * The feedback stream (DESIGN §14), "<prefix>:feedback", capped near
 * 100,000 entries: every token removed (410, BadDeviceToken,
 * DeviceTokenNotForTopic) and every failure that is final, as user_id,
 * token, business_id, env, status, reason, time (ms), for the backend to
 * read with any Redis client.  Written without waiting: a push never
 * waits for its feedback, and a full Redis drops it (said once a minute).
 */


#include "ngx_http_timpush.h"
#include "ngx_http_timpush_push.h"


static void ngx_http_timpush_feedback_written(void *data, redisReply *reply,
    ngx_int_t rc);


static ngx_str_t  ngx_http_timpush_feedback_key;
static time_t     ngx_http_timpush_feedback_said;


void
ngx_http_timpush_feedback(ngx_http_timpush_push_entry_t *e)
{
    u_char      *p, buf[3 * NGX_INT64_LEN];
    ngx_int_t    rc;
    ngx_str_t    args[14];
    ngx_time_t  *tp;

    if (ngx_http_timpush_feedback_key.len == 0
        && ngx_http_timpush_store_plain_key(ngx_cycle->pool, "feedback",
                                            &ngx_http_timpush_feedback_key)
           != NGX_OK)
    {
        return;
    }

    tp = ngx_timeofday();
    p = buf;

    ngx_str_set(&args[0], "user_id");
    args[1] = e->user;
    ngx_str_set(&args[2], "token");
    args[3] = e->token;
    ngx_str_set(&args[4], "business_id");
    args[5].data = p;
    p = ngx_sprintf(p, "%ui", e->business_id);
    args[5].len = p - args[5].data;
    ngx_str_set(&args[6], "env");

    if (e->env == NGX_HTTP_TIMPUSH_ENV_PRODUCTION) {
        ngx_str_set(&args[7], "production");

    } else {
        ngx_str_set(&args[7], "sandbox");
    }

    ngx_str_set(&args[8], "status");
    args[9].data = p;
    p = ngx_sprintf(p, "%ui", e->status);
    args[9].len = p - args[9].data;
    ngx_str_set(&args[10], "reason");
    args[11] = e->reason;
    ngx_str_set(&args[12], "time");
    args[13].data = p;
    p = ngx_sprintf(p, "%L", (int64_t) tp->sec * 1000 + tp->msec);
    args[13].len = p - args[13].data;

    rc = ngx_http_timpush_store_run(NGX_HTTP_TIMPUSH_SCRIPT_FEEDBACK,
                                    &ngx_http_timpush_feedback_key, 1, args,
                                    14, ngx_http_timpush_feedback_written,
                                    NULL, NULL);

    if (rc != NGX_OK && ngx_time() - ngx_http_timpush_feedback_said >= 60) {
        ngx_http_timpush_feedback_said = ngx_time();
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "timpush: the feedback stream misses entries: %s",
                      rc == NGX_BUSY ? "Redis has no room (max_pending)"
                                     : "Redis is not reachable");
    }
}


static void
ngx_http_timpush_feedback_written(void *data, redisReply *reply,
    ngx_int_t rc)
{
    /* an error is in the error log already (store.c) */
}
