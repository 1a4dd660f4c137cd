
/*
 * Copyright (C) timpush authors
 *
 * Metrics (DESIGN §13): counters, histograms and gauges in a shared
 * memory zone, summed over the workers and kept across reloads, written
 * out in Prometheus text format by "timpush_metrics;".
 */


#ifndef _NGX_HTTP_TIMPUSH_METRICS_H_INCLUDED_
#define _NGX_HTTP_TIMPUSH_METRICS_H_INCLUDED_


#include "ngx_http_timpush.h"


typedef enum {
    NGX_HTTP_TIMPUSH_M_PUSHES = 0,      /* counter {outcome} */
    NGX_HTTP_TIMPUSH_M_NOTIFICATIONS,   /* counter {business_id,env,status,
                                           reason} */
    NGX_HTTP_TIMPUSH_M_SKIPPED,         /* counter {reason} */
    NGX_HTTP_TIMPUSH_M_REMOVED,         /* counter {business_id,reason} */
    NGX_HTTP_TIMPUSH_M_APNS_DURATION,   /* histogram {business_id} */
    NGX_HTTP_TIMPUSH_M_PUSH_DURATION,   /* histogram */
    NGX_HTTP_TIMPUSH_M_CONNECTIONS,     /* gauge {business_id,env,state} */
    NGX_HTTP_TIMPUSH_M_STREAMS,         /* gauge {business_id} */
    NGX_HTTP_TIMPUSH_M_QUEUE,           /* gauge {business_id} */
    NGX_HTTP_TIMPUSH_M_REDIS_UP,        /* gauge, the lowest of workers */
    NGX_HTTP_TIMPUSH_M_REDIS_ERRORS,    /* counter {kind} */
    NGX_HTTP_TIMPUSH_M_EXPIRY,          /* gauge {business_id}, from conf */
    NGX_HTTP_TIMPUSH_M_JWT,             /* counter {business_id} */
    NGX_HTTP_TIMPUSH_M_API,             /* counter {endpoint,status} */
    NGX_HTTP_TIMPUSH_M_LAST
} ngx_http_timpush_metric_e;


/* the states of timpush_apns_connections, in that order */
#define NGX_HTTP_TIMPUSH_M_CONN_CONNECTING  0
#define NGX_HTTP_TIMPUSH_M_CONN_READY       1
#define NGX_HTTP_TIMPUSH_M_CONN_DRAINING    2
#define NGX_HTTP_TIMPUSH_M_CONN_BACKOFF     3
#define NGX_HTTP_TIMPUSH_M_CONN_STATES      4


typedef struct ngx_http_timpush_series_s  ngx_http_timpush_series_t;


/* one credential's gauges and histogram, found once per worker */
typedef struct {
    ngx_http_timpush_series_t     *conns[NGX_HTTP_TIMPUSH_M_CONN_STATES];
    ngx_http_timpush_series_t     *streams;
    ngx_http_timpush_series_t     *queue;
    ngx_http_timpush_series_t     *duration;
    ngx_http_timpush_series_t     *jwt;
} ngx_http_timpush_cred_metrics_t;


ngx_int_t ngx_http_timpush_metrics_conf(ngx_conf_t *cf,
    ngx_http_timpush_main_conf_t *tmcf);
char *ngx_http_timpush_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_timpush_metrics_init_process(ngx_cycle_t *cycle,
    ngx_http_timpush_main_conf_t *tmcf);
void ngx_http_timpush_metrics_exit_process(ngx_cycle_t *cycle);

ngx_int_t ngx_http_timpush_metrics_cred(ngx_http_timpush_credential_t *cred,
    ngx_http_timpush_cred_metrics_t *cm);

void ngx_http_timpush_metric_add(ngx_http_timpush_series_t *s, ngx_uint_t n);
void ngx_http_timpush_metric_set(ngx_http_timpush_series_t *s,
    ngx_int_t value);
void ngx_http_timpush_metric_observe(ngx_http_timpush_series_t *s,
    ngx_msec_t ms);

void ngx_http_timpush_metric_push(const char *outcome);
void ngx_http_timpush_metric_push_duration(ngx_msec_t ms);
void ngx_http_timpush_metric_notification(
    ngx_http_timpush_credential_t *cred, ngx_uint_t business_id,
    ngx_uint_t status, ngx_str_t *reason);
void ngx_http_timpush_metric_skipped(const char *reason, ngx_uint_t n);
void ngx_http_timpush_metric_removed(ngx_uint_t business_id,
    const char *reason, ngx_uint_t n);
void ngx_http_timpush_metric_redis_up(ngx_uint_t up);
void ngx_http_timpush_metric_redis_error(const char *kind);
void ngx_http_timpush_metric_api(const char *endpoint, ngx_uint_t status);

/* for /v1/health: summed over the live workers */
ngx_int_t ngx_http_timpush_metrics_redis_up(void);
ngx_int_t ngx_http_timpush_metrics_gauge(ngx_http_timpush_series_t *s);


#endif /* _NGX_HTTP_TIMPUSH_METRICS_H_INCLUDED_ */
