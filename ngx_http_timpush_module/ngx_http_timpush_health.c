
/*
 * Copyright (C) timpush authors
 *
 * GET /v1/health (DESIGN §13), for load balancers and operators: Redis as
 * every worker sees it, and each credential's state towards APNs, from
 * the metrics zone (so from every worker, not only the one answering):
 *
 *   ready       a connection is up
 *   failing     none is; one failed before any answer and waits to retry
 *   connecting  none is up yet
 *   unused      no connection yet (nothing was pushed)
 *   expired     the certificate is out of its dates: nothing is sent
 *
 * 503 "failing" when Redis is down for a worker, or when no credential
 * can send (each is failing or expired, or there is none).
 */


#include "ngx_http_timpush.h"
#include "ngx_http_timpush_metrics.h"


static const char *ngx_http_timpush_health_apns(
    ngx_http_timpush_credential_t *cred);


ngx_int_t
ngx_http_timpush_health(ngx_http_request_t *r)
{
    yajl_gen                          g;
    ngx_int_t                         rc, up;
    ngx_str_t                         s;
    ngx_uint_t                        i, n, can_send;
    const char                      **apns;
    ngx_http_timpush_main_conf_t     *tmcf;
    ngx_http_timpush_credential_t   **creds;

    tmcf = ngx_http_get_module_main_conf(r, ngx_http_timpush_module);

    creds = tmcf->credentials.elts;
    n = tmcf->credentials.nelts;

    apns = ngx_palloc(r->pool, (n + 1) * sizeof(char *));
    if (apns == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    up = ngx_http_timpush_metrics_redis_up();
    can_send = 0;

    for (i = 0; i < n; i++) {
        apns[i] = ngx_http_timpush_health_apns(creds[i]);

        if (ngx_strcmp(apns[i], "failing") != 0
            && ngx_strcmp(apns[i], "expired") != 0)
        {
            can_send = 1;
        }
    }

    g = ngx_http_timpush_json_gen(r->pool);
    if (g == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    yajl_gen_map_open(g);

    rc = ngx_http_timpush_json_cstr(g, "status");
    rc |= ngx_http_timpush_json_cstr(g, (up && can_send) ? "ok" : "failing");
    rc |= ngx_http_timpush_json_cstr(g, "redis");
    rc |= ngx_http_timpush_json_cstr(g, up ? "up" : "down");
    rc |= ngx_http_timpush_json_cstr(g, "credentials");

    yajl_gen_array_open(g);

    for (i = 0; i < n; i++) {
        yajl_gen_map_open(g);

        rc |= ngx_http_timpush_json_key_int(g, "business_id", creds[i]->id);
        rc |= ngx_http_timpush_json_cstr(g, "env");
        rc |= ngx_http_timpush_json_cstr(g,
                                creds[i]->env == NGX_HTTP_TIMPUSH_ENV_SANDBOX
                                ? "sandbox" : "production");

        if (creds[i]->auth == NGX_HTTP_TIMPUSH_AUTH_CERTIFICATE) {
            rc |= ngx_http_timpush_json_key_int(g, "expires_at",
                                                creds[i]->not_after);
        }

        s.data = (u_char *) apns[i];
        s.len = ngx_strlen(apns[i]);
        rc |= ngx_http_timpush_json_key_str(g, "apns", &s);

        yajl_gen_map_close(g);
    }

    yajl_gen_array_close(g);
    yajl_gen_map_close(g);

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_timpush_api_send(r, (up && can_send)
                                        ? NGX_HTTP_OK
                                        : NGX_HTTP_SERVICE_UNAVAILABLE, g);
}


static const char *
ngx_http_timpush_health_apns(ngx_http_timpush_credential_t *cred)
{
    ngx_http_timpush_cred_metrics_t  cm;

    if (ngx_http_timpush_credential_expired(cred)) {
        return "expired";
    }

    if (ngx_http_timpush_metrics_cred(cred, &cm) != NGX_OK) {
        return "unused";
    }

    if (ngx_http_timpush_metrics_gauge(
                             cm.conns[NGX_HTTP_TIMPUSH_M_CONN_READY]) > 0)
    {
        return "ready";
    }

    if (ngx_http_timpush_metrics_gauge(
                           cm.conns[NGX_HTTP_TIMPUSH_M_CONN_BACKOFF]) > 0)
    {
        return "failing";
    }

    if (ngx_http_timpush_metrics_gauge(
                        cm.conns[NGX_HTTP_TIMPUSH_M_CONN_CONNECTING]) > 0)
    {
        return "connecting";
    }

    return "unused";
}
