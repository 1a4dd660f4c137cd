
/*
 * Copyright (C) timpush authors
 *
 * Certificates are checked again while nginx runs (DESIGN §10), by the
 * first worker only, every timpush_credential_recheck (1h): one that has
 * expired, or is not valid yet, is logged at [alert] each time; one that
 * expires within 30 days at [warn], once a day.  The checks at start are
 * auth.c's.
 */


#include "ngx_http_timpush.h"


#define NGX_HTTP_TIMPUSH_EXPIRY_WARN_EVERY  86400


typedef struct {
    ngx_event_t                     timer;
    ngx_http_timpush_main_conf_t   *tmcf;
    time_t                         *warned;      /* per credential */
} ngx_http_timpush_expiry_t;


static void ngx_http_timpush_expiry_handler(ngx_event_t *ev);


ngx_int_t
ngx_http_timpush_expiry_init_process(ngx_cycle_t *cycle,
    ngx_http_timpush_main_conf_t *tmcf)
{
    ngx_uint_t                  i;
    ngx_http_timpush_expiry_t  *ex;

    if (tmcf->credentials.nelts == 0
        || (ngx_process == NGX_PROCESS_WORKER && ngx_worker != 0))
    {
        return NGX_OK;
    }

    ex = ngx_pcalloc(cycle->pool, sizeof(ngx_http_timpush_expiry_t));
    if (ex == NULL) {
        return NGX_ERROR;
    }

    ex->warned = ngx_pcalloc(cycle->pool,
                             (tmcf->credentials.nelts + 1) * sizeof(time_t));
    if (ex->warned == NULL) {
        return NGX_ERROR;
    }

    /* the configuration's reading has just warned */

    for (i = 0; i < tmcf->credentials.nelts; i++) {
        ex->warned[i] = ngx_time();
    }

    ex->tmcf = tmcf;
    ex->timer.handler = ngx_http_timpush_expiry_handler;
    ex->timer.data = ex;
    ex->timer.log = cycle->log;
    ex->timer.cancelable = 1;

    ngx_add_timer(&ex->timer, tmcf->credential_recheck);

    return NGX_OK;
}


static void
ngx_http_timpush_expiry_handler(ngx_event_t *ev)
{
    ngx_http_timpush_expiry_t *ex = ev->data;

    time_t                           now;
    ngx_uint_t                       i, warn;
    ngx_http_timpush_credential_t  **cred;

    now = ngx_time();
    cred = ex->tmcf->credentials.elts;

    for (i = 0; i < ex->tmcf->credentials.nelts; i++) {
        warn = (now - ex->warned[i] >= NGX_HTTP_TIMPUSH_EXPIRY_WARN_EVERY);

        if (ngx_http_timpush_credential_expiry(ev->log, cred[i], warn)
            == NGX_AGAIN
            && warn)
        {
            ex->warned[i] = now;
        }
    }

    if (!ngx_exiting) {
        ngx_add_timer(&ex->timer, ex->tmcf->credential_recheck);
    }
}
