
/*
 * Copyright (C) timpush authors
 *
 * Metrics (DESIGN §13) in one shared memory zone, "timpush_metrics":
 * a series is a metric and its labels, found by a hash of both, made on
 * first use and never freed, so that a series is read and counted without
 * a lock (atomics; a new series is published after it is whole).
 * Counters and histograms are sums; a gauge keeps one value per worker
 * (a slot, claimed at start by pid), so that a scrape adds up the workers
 * alive, and a worker that dies takes its values with it.  The zone is
 * kept by a reload: counters go on.
 *
 * Label values are bounded: business_ids of the configuration (or
 * "unknown"), Apple's reasons and ours (or "other"), HTTP statuses, and
 * words of our own; a hostile peer cannot make series.
 */


#include "ngx_http_timpush.h"
#include "ngx_http_timpush_metrics.h"


#define NGX_HTTP_TIMPUSH_M_SIZE     (1024 * 1024)
#define NGX_HTTP_TIMPUSH_M_BUCKETS  1024
#define NGX_HTTP_TIMPUSH_M_SLOTS    64
#define NGX_HTTP_TIMPUSH_M_LABELS   160       /* longest labels text */
#define NGX_HTTP_TIMPUSH_M_LE       11        /* histogram buckets */


struct ngx_http_timpush_series_s {
    ngx_http_timpush_series_t     *next;      /* same hash bucket */
    ngx_http_timpush_series_t     *all;       /* every series, in order */
    uint32_t                       hash;
    u_char                         metric;
    u_char                         len;
    u_char                         labels[NGX_HTTP_TIMPUSH_M_LABELS];
    ngx_atomic_t                   v[1];      /* 1, LE + 2, or SLOTS */
};


typedef struct {
    ngx_http_timpush_series_t     *buckets[NGX_HTTP_TIMPUSH_M_BUCKETS];
    ngx_http_timpush_series_t     *first;
    ngx_http_timpush_series_t     *last;
    ngx_atomic_t                   slots[NGX_HTTP_TIMPUSH_M_SLOTS]; /* pid */
    ngx_uint_t                     series;
    ngx_uint_t                     full;      /* said once */
} ngx_http_timpush_metrics_sh_t;


typedef struct {
    ngx_http_timpush_metrics_sh_t *sh;
    ngx_slab_pool_t               *shpool;
} ngx_http_timpush_metrics_ctx_t;


typedef enum {
    NGX_HTTP_TIMPUSH_M_COUNTER = 0,
    NGX_HTTP_TIMPUSH_M_GAUGE,
    NGX_HTTP_TIMPUSH_M_HISTOGRAM
} ngx_http_timpush_metric_type_e;


typedef struct {
    const char                    *name;
    ngx_http_timpush_metric_type_e type;
    const char                    *help;
} ngx_http_timpush_metric_def_t;


static ngx_int_t ngx_http_timpush_metrics_init_zone(ngx_shm_zone_t *zone,
    void *data);
static ngx_http_timpush_series_t *ngx_http_timpush_series(
    ngx_uint_t metric, u_char *labels, size_t len);
static ngx_http_timpush_series_t *ngx_http_timpush_series_fmt(
    ngx_uint_t metric, const char *fmt, ...);
static ngx_uint_t ngx_http_timpush_series_values(ngx_uint_t metric);
static ngx_uint_t ngx_http_timpush_metrics_alive(ngx_uint_t slot);
static ngx_int_t ngx_http_timpush_metrics_handler(ngx_http_request_t *r);
static u_char *ngx_http_timpush_metrics_write(u_char *p, u_char *last,
    ngx_http_timpush_main_conf_t *tmcf);
static u_char *ngx_http_timpush_metrics_series(u_char *p, u_char *last,
    ngx_http_timpush_series_t *s, ngx_uint_t *alive);
static const char *ngx_http_timpush_metrics_reason(ngx_uint_t status,
    ngx_str_t *reason);


static ngx_http_timpush_metric_def_t  ngx_http_timpush_metric_defs[] = {
    { "timpush_pushes_total", NGX_HTTP_TIMPUSH_M_COUNTER,
      "POST /v1/push requests, by outcome" },
    { "timpush_notifications_total", NGX_HTTP_TIMPUSH_M_COUNTER,
      "Notifications by their final outcome: APNs' status and reason, or "
      "ours" },
    { "timpush_skipped_total", NGX_HTTP_TIMPUSH_M_COUNTER,
      "Recipients or devices a push skipped, by reason" },
    { "timpush_tokens_removed_total", NGX_HTTP_TIMPUSH_M_COUNTER,
      "Device tokens removed from a user, by reason" },
    { "timpush_apns_request_duration_seconds", NGX_HTTP_TIMPUSH_M_HISTOGRAM,
      "Time from a stream's request to APNs' whole answer" },
    { "timpush_push_duration_seconds", NGX_HTTP_TIMPUSH_M_HISTOGRAM,
      "Time from a POST /v1/push's body to its answer" },
    { "timpush_apns_connections", NGX_HTTP_TIMPUSH_M_GAUGE,
      "Connections to APNs, by state" },
    { "timpush_apns_streams_in_flight", NGX_HTTP_TIMPUSH_M_GAUGE,
      "Notifications on open streams to APNs" },
    { "timpush_apns_queue_length", NGX_HTTP_TIMPUSH_M_GAUGE,
      "Notifications waiting for a stream" },
    { "timpush_redis_up", NGX_HTTP_TIMPUSH_M_GAUGE,
      "1 when every worker is connected to Redis" },
    { "timpush_redis_errors_total", NGX_HTTP_TIMPUSH_M_COUNTER,
      "Redis failures, by kind" },
    { "timpush_credential_expiry_timestamp_seconds",
      NGX_HTTP_TIMPUSH_M_GAUGE,
      "When a credential's certificate expires (unix seconds)" },
    { "timpush_provider_token_renewals_total", NGX_HTTP_TIMPUSH_M_COUNTER,
      "Provider tokens (JWT) made" },
    { "timpush_api_requests_total", NGX_HTTP_TIMPUSH_M_COUNTER,
      "API requests, by endpoint and status" }
};


/* seconds; 0.005 .. 10 for APNs, x3 for a whole push */
static const char  *ngx_http_timpush_metric_le[NGX_HTTP_TIMPUSH_M_LE] = {
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
    "10"
};

static const ngx_msec_t  ngx_http_timpush_metric_le_ms[NGX_HTTP_TIMPUSH_M_LE]
    = { 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000 };


/* Apple's reasons, and ours: any other is "other" */
static ngx_str_t  ngx_http_timpush_metric_reasons[] = {
    ngx_string("BadCollapseId"), ngx_string("BadDeviceToken"),
    ngx_string("BadExpirationDate"), ngx_string("BadMessageId"),
    ngx_string("BadPriority"), ngx_string("BadTopic"),
    ngx_string("DeviceTokenNotForTopic"), ngx_string("DuplicateHeaders"),
    ngx_string("IdleTimeout"), ngx_string("InvalidPushType"),
    ngx_string("MissingDeviceToken"), ngx_string("MissingTopic"),
    ngx_string("PayloadEmpty"), ngx_string("TopicDisallowed"),
    ngx_string("BadCertificate"), ngx_string("BadCertificateEnvironment"),
    ngx_string("ExpiredProviderToken"), ngx_string("Forbidden"),
    ngx_string("InvalidProviderToken"), ngx_string("MissingProviderToken"),
    ngx_string("UnrelatedKeyIdInToken"), ngx_string("BadPath"),
    ngx_string("MethodNotAllowed"), ngx_string("ExpiredToken"),
    ngx_string("Unregistered"), ngx_string("PayloadTooLarge"),
    ngx_string("TooManyProviderTokenUpdates"),
    ngx_string("TooManyRequests"), ngx_string("InternalServerError"),
    ngx_string("ServiceUnavailable"), ngx_string("Shutdown"),
    ngx_string("ConnectionFailed"), ngx_string("CertificateNotTrusted"),
    ngx_string("Timeout"), ngx_string("StreamRefused"),
    ngx_string("Overloaded"), ngx_string("CertificateExpired"),
    ngx_string("ProviderTokenError"),
    ngx_string("unknown_business_id"),
    ngx_null_string
};


static const char  *ngx_http_timpush_metric_conn_states[] = {
    "connecting", "ready", "draining", "backoff"
};


static ngx_shm_zone_t  *ngx_http_timpush_metrics_zone;
static ngx_int_t        ngx_http_timpush_metrics_slot = -1;
static ngx_http_timpush_series_t  *ngx_http_timpush_metrics_redis;


/* the zone, made by every configuration that has credentials or an API */

ngx_int_t
ngx_http_timpush_metrics_conf(ngx_conf_t *cf,
    ngx_http_timpush_main_conf_t *tmcf)
{
    ngx_str_t                        name;
    ngx_shm_zone_t                  *zone;
    ngx_http_timpush_metrics_ctx_t  *ctx;

    ngx_str_set(&name, "timpush_metrics");

    zone = ngx_shared_memory_add(cf, &name, NGX_HTTP_TIMPUSH_M_SIZE,
                                 &ngx_http_timpush_module);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    if (zone->data == NULL) {
        ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_timpush_metrics_ctx_t));
        if (ctx == NULL) {
            return NGX_ERROR;
        }

        zone->init = ngx_http_timpush_metrics_init_zone;
        zone->data = ctx;
    }

    tmcf->metrics_zone = zone;

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_metrics_init_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_http_timpush_metrics_ctx_t *octx = data;

    ngx_http_timpush_metrics_ctx_t  *ctx;

    ctx = zone->data;

    if (octx) {
        /* a reload: the counters go on */
        ctx->sh = octx->sh;
        ctx->shpool = octx->shpool;
        return NGX_OK;
    }

    ctx->shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (zone->shm.exists) {
        ctx->sh = ctx->shpool->data;
        return NGX_OK;
    }

    ctx->sh = ngx_slab_calloc(ctx->shpool,
                              sizeof(ngx_http_timpush_metrics_sh_t));
    if (ctx->sh == NULL) {
        return NGX_ERROR;
    }

    ctx->shpool->data = ctx->sh;
    ctx->shpool->log_nomem = 0;

    return NGX_OK;
}


/*
 * A worker claims a gauge slot (one not held by a live process), clears
 * what a dead one left in it, and makes the series every scrape shows
 * from the start, at zero.
 */

ngx_int_t
ngx_http_timpush_metrics_init_process(ngx_cycle_t *cycle,
    ngx_http_timpush_main_conf_t *tmcf)
{
    ngx_uint_t                        i;
    ngx_http_timpush_series_t        *s;
    ngx_http_timpush_metrics_ctx_t   *ctx;
    ngx_http_timpush_cred_metrics_t   cm;
    ngx_http_timpush_credential_t   **creds;

    static const char  *outcomes[] = {
        "pushed", "disabled", "online_only", "no_content", "invalid", NULL
    };
    static const char  *skipped[] = {
        "foreground", "no_devices", "duplicate", NULL
    };
    static const char  *kinds[] = {
        "connect", "timeout", "reply", "auth", "replication", NULL
    };

    ngx_http_timpush_metrics_zone = tmcf->metrics_zone;

    if (ngx_http_timpush_metrics_zone == NULL) {
        return NGX_OK;
    }

    ctx = ngx_http_timpush_metrics_zone->data;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    for (i = 0; i < NGX_HTTP_TIMPUSH_M_SLOTS; i++) {
        if (ctx->sh->slots[i] == 0 || !ngx_http_timpush_metrics_alive(i)) {
            break;
        }
    }

    if (i < NGX_HTTP_TIMPUSH_M_SLOTS) {
        ctx->sh->slots[i] = (ngx_atomic_uint_t) ngx_pid;
        ngx_http_timpush_metrics_slot = i;

        for (s = ctx->sh->first; s; s = s->all) {
            if (ngx_http_timpush_metric_defs[s->metric].type
                == NGX_HTTP_TIMPUSH_M_GAUGE)
            {
                s->v[i] = 0;
            }
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    if (ngx_http_timpush_metrics_slot == -1) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "timpush: more than %d worker processes: this one's "
                      "gauges are not counted",
                      NGX_HTTP_TIMPUSH_M_SLOTS);
    }

    for (i = 0; outcomes[i]; i++) {
        (void) ngx_http_timpush_series_fmt(NGX_HTTP_TIMPUSH_M_PUSHES,
                                           "outcome=\"%s\"", outcomes[i]);
    }

    for (i = 0; skipped[i]; i++) {
        (void) ngx_http_timpush_series_fmt(NGX_HTTP_TIMPUSH_M_SKIPPED,
                                           "reason=\"%s\"", skipped[i]);
    }

    for (i = 0; kinds[i]; i++) {
        (void) ngx_http_timpush_series_fmt(NGX_HTTP_TIMPUSH_M_REDIS_ERRORS,
                                           "kind=\"%s\"", kinds[i]);
    }

    (void) ngx_http_timpush_series(NGX_HTTP_TIMPUSH_M_PUSH_DURATION,
                                   (u_char *) "", 0);

    ngx_http_timpush_metrics_redis =
        ngx_http_timpush_series(NGX_HTTP_TIMPUSH_M_REDIS_UP, (u_char *) "",
                                0);

    creds = tmcf->credentials.elts;

    for (i = 0; i < tmcf->credentials.nelts; i++) {
        (void) ngx_http_timpush_metrics_cred(creds[i], &cm);
    }

    return NGX_OK;
}


void
ngx_http_timpush_metrics_exit_process(ngx_cycle_t *cycle)
{
    ngx_int_t                        slot;
    ngx_http_timpush_series_t       *s;
    ngx_http_timpush_metrics_ctx_t  *ctx;

    slot = ngx_http_timpush_metrics_slot;

    if (ngx_http_timpush_metrics_zone == NULL || slot == -1) {
        return;
    }

    ctx = ngx_http_timpush_metrics_zone->data;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    for (s = ctx->sh->first; s; s = s->all) {
        if (ngx_http_timpush_metric_defs[s->metric].type
            == NGX_HTTP_TIMPUSH_M_GAUGE)
        {
            s->v[slot] = 0;
        }
    }

    ctx->sh->slots[slot] = 0;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_http_timpush_metrics_slot = -1;
}


static ngx_uint_t
ngx_http_timpush_metrics_alive(ngx_uint_t slot)
{
    ngx_pid_t                        pid;
    ngx_http_timpush_metrics_ctx_t  *ctx;

    ctx = ngx_http_timpush_metrics_zone->data;
    pid = (ngx_pid_t) ctx->sh->slots[slot];

    if (pid == 0) {
        return 0;
    }

    if (pid == ngx_pid) {
        return 1;
    }

    return kill(pid, 0) == 0 || ngx_errno == NGX_EPERM;
}


/* a credential's series, made at zero if new */

ngx_int_t
ngx_http_timpush_metrics_cred(ngx_http_timpush_credential_t *cred,
    ngx_http_timpush_cred_metrics_t *cm)
{
    ngx_uint_t   i;
    const char  *env;

    ngx_memzero(cm, sizeof(ngx_http_timpush_cred_metrics_t));

    if (ngx_http_timpush_metrics_zone == NULL) {
        return NGX_DECLINED;
    }

    env = (cred->env == NGX_HTTP_TIMPUSH_ENV_SANDBOX) ? "sandbox"
                                                      : "production";

    for (i = 0; i < NGX_HTTP_TIMPUSH_M_CONN_STATES; i++) {
        cm->conns[i] = ngx_http_timpush_series_fmt(
                           NGX_HTTP_TIMPUSH_M_CONNECTIONS,
                           "business_id=\"%ui\",env=\"%s\",state=\"%s\"",
                           cred->id, env,
                           ngx_http_timpush_metric_conn_states[i]);
    }

    cm->streams = ngx_http_timpush_series_fmt(NGX_HTTP_TIMPUSH_M_STREAMS,
                                              "business_id=\"%ui\"", cred->id);
    cm->queue = ngx_http_timpush_series_fmt(NGX_HTTP_TIMPUSH_M_QUEUE,
                                            "business_id=\"%ui\"", cred->id);
    cm->duration = ngx_http_timpush_series_fmt(
                                      NGX_HTTP_TIMPUSH_M_APNS_DURATION,
                                      "business_id=\"%ui\"", cred->id);

    if (cred->auth == NGX_HTTP_TIMPUSH_AUTH_TOKEN) {
        cm->jwt = ngx_http_timpush_series_fmt(NGX_HTTP_TIMPUSH_M_JWT,
                                              "business_id=\"%ui\"",
                                              cred->id);
    }

    return NGX_OK;
}


/*
 * The series of a metric and labels: found without a lock, or made under
 * the zone's lock and published whole.  NULL when the zone is full.
 */

static ngx_http_timpush_series_t *
ngx_http_timpush_series(ngx_uint_t metric, u_char *labels, size_t len)
{
    size_t                           size;
    uint32_t                         hash;
    ngx_uint_t                       b;
    ngx_http_timpush_series_t       *s;
    ngx_http_timpush_metrics_ctx_t  *ctx;

    if (ngx_http_timpush_metrics_zone == NULL
        || len > NGX_HTTP_TIMPUSH_M_LABELS)
    {
        return NULL;
    }

    ctx = ngx_http_timpush_metrics_zone->data;

    ngx_crc32_init(hash);
    ngx_crc32_update(&hash, (u_char *) &metric, 1);
    ngx_crc32_update(&hash, labels, len);
    ngx_crc32_final(hash);

    b = hash % NGX_HTTP_TIMPUSH_M_BUCKETS;

    for (s = ctx->sh->buckets[b]; s; s = s->next) {
        if (s->hash == hash && s->metric == metric && s->len == len
            && ngx_memcmp(s->labels, labels, len) == 0)
        {
            return s;
        }
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    /* made meanwhile by another worker? */

    for (s = ctx->sh->buckets[b]; s; s = s->next) {
        if (s->hash == hash && s->metric == metric && s->len == len
            && ngx_memcmp(s->labels, labels, len) == 0)
        {
            goto done;
        }
    }

    size = sizeof(ngx_http_timpush_series_t)
           + (ngx_http_timpush_series_values(metric) - 1)
             * sizeof(ngx_atomic_t);

    s = ngx_slab_calloc_locked(ctx->shpool, size);

    if (s == NULL) {
        if (!ctx->sh->full) {
            ctx->sh->full = 1;
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                          "timpush: the metrics zone is full (%ui series): "
                          "new series are not counted",
                          ctx->sh->series);
        }

        goto done;
    }

    s->hash = hash;
    s->metric = (u_char) metric;
    s->len = (u_char) len;
    ngx_memcpy(s->labels, labels, len);
    s->next = ctx->sh->buckets[b];

    /* whole before it can be found */
    ngx_memory_barrier();

    ctx->sh->buckets[b] = s;

    if (ctx->sh->last) {
        ctx->sh->last->all = s;

    } else {
        ctx->sh->first = s;
    }

    ctx->sh->last = s;
    ctx->sh->series++;

done:

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return s;
}


static ngx_http_timpush_series_t *
ngx_http_timpush_series_fmt(ngx_uint_t metric, const char *fmt, ...)
{
    u_char   *p, buf[NGX_HTTP_TIMPUSH_M_LABELS + 1];
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + sizeof(buf), fmt, args);
    va_end(args);

    return ngx_http_timpush_series(metric, buf, p - buf);
}


static ngx_uint_t
ngx_http_timpush_series_values(ngx_uint_t metric)
{
    switch (ngx_http_timpush_metric_defs[metric].type) {

    case NGX_HTTP_TIMPUSH_M_HISTOGRAM:
        /* each bucket's own count, then count and sum (microseconds) */
        return NGX_HTTP_TIMPUSH_M_LE + 2;

    case NGX_HTTP_TIMPUSH_M_GAUGE:
        return NGX_HTTP_TIMPUSH_M_SLOTS;

    default:
        return 1;
    }
}


void
ngx_http_timpush_metric_add(ngx_http_timpush_series_t *s, ngx_uint_t n)
{
    if (s) {
        (void) ngx_atomic_fetch_add(&s->v[0], n);
    }
}


/* this worker's value of a gauge */

void
ngx_http_timpush_metric_set(ngx_http_timpush_series_t *s, ngx_int_t value)
{
    if (s && ngx_http_timpush_metrics_slot != -1) {
        s->v[ngx_http_timpush_metrics_slot] = (ngx_atomic_uint_t) value;
    }
}


void
ngx_http_timpush_metric_observe(ngx_http_timpush_series_t *s, ngx_msec_t ms)
{
    ngx_uint_t  i;

    if (s == NULL) {
        return;
    }

    for (i = 0; i < NGX_HTTP_TIMPUSH_M_LE; i++) {
        if (ms <= ngx_http_timpush_metric_le_ms[i]) {
            break;
        }
    }

    if (i < NGX_HTTP_TIMPUSH_M_LE) {
        (void) ngx_atomic_fetch_add(&s->v[i], 1);
    }

    (void) ngx_atomic_fetch_add(&s->v[NGX_HTTP_TIMPUSH_M_LE], 1);
    (void) ngx_atomic_fetch_add(&s->v[NGX_HTTP_TIMPUSH_M_LE + 1], ms * 1000);
}


void
ngx_http_timpush_metric_push(const char *outcome)
{
    ngx_http_timpush_metric_add(
        ngx_http_timpush_series_fmt(NGX_HTTP_TIMPUSH_M_PUSHES,
                                    "outcome=\"%s\"", outcome), 1);
}


void
ngx_http_timpush_metric_push_duration(ngx_msec_t ms)
{
    ngx_http_timpush_metric_observe(
        ngx_http_timpush_series(NGX_HTTP_TIMPUSH_M_PUSH_DURATION,
                                (u_char *) "", 0), ms);
}


/* a device's final outcome: cred NULL for a business_id not configured */

void
ngx_http_timpush_metric_notification(ngx_http_timpush_credential_t *cred,
    ngx_uint_t business_id, ngx_uint_t status, ngx_str_t *reason)
{
    u_char      sbuf[NGX_INT_T_LEN];
    const char  *env;

    /* the statuses APNs answers, and ours: a bounded set of labels */

    switch (status) {
    case 200: case 400: case 403: case 404: case 405: case 410: case 413:
    case 429: case 500: case 502: case 503: case 504:
        *ngx_sprintf(sbuf, "%ui", status) = '\0';
        break;
    default:
        ngx_cpystrn(sbuf, (u_char *) "other", sizeof(sbuf));
    }

    if (cred == NULL) {
        ngx_http_timpush_metric_add(ngx_http_timpush_series_fmt(
            NGX_HTTP_TIMPUSH_M_NOTIFICATIONS,
            "business_id=\"unknown\",env=\"unknown\",status=\"%s\","
            "reason=\"unknown_business_id\"", sbuf), 1);
        return;
    }

    env = (cred->env == NGX_HTTP_TIMPUSH_ENV_SANDBOX) ? "sandbox"
                                                      : "production";

    ngx_http_timpush_metric_add(ngx_http_timpush_series_fmt(
        NGX_HTTP_TIMPUSH_M_NOTIFICATIONS,
        "business_id=\"%ui\",env=\"%s\",status=\"%s\",reason=\"%s\"",
        cred->id, env, sbuf,
        ngx_http_timpush_metrics_reason(status, reason)), 1);
}


static const char *
ngx_http_timpush_metrics_reason(ngx_uint_t status, ngx_str_t *reason)
{
    ngx_uint_t  i;

    if (status == NGX_HTTP_OK) {
        return "none";
    }

    if (reason->len == 0) {
        return "other";
    }

    for (i = 0; ngx_http_timpush_metric_reasons[i].len; i++) {
        if (reason->len == ngx_http_timpush_metric_reasons[i].len
            && ngx_strncmp(reason->data,
                           ngx_http_timpush_metric_reasons[i].data,
                           reason->len) == 0)
        {
            return (const char *) ngx_http_timpush_metric_reasons[i].data;
        }
    }

    return "other";
}


void
ngx_http_timpush_metric_skipped(const char *reason, ngx_uint_t n)
{
    if (n) {
        ngx_http_timpush_metric_add(ngx_http_timpush_series_fmt(
            NGX_HTTP_TIMPUSH_M_SKIPPED, "reason=\"%s\"", reason), n);
    }
}


/* business_id 0: not known (a logout's, a device of an app not configured) */

void
ngx_http_timpush_metric_removed(ngx_uint_t business_id, const char *reason,
    ngx_uint_t n)
{
    if (n == 0) {
        return;
    }

    if (business_id == 0) {
        ngx_http_timpush_metric_add(ngx_http_timpush_series_fmt(
            NGX_HTTP_TIMPUSH_M_REMOVED,
            "business_id=\"unknown\",reason=\"%s\"", reason), n);
        return;
    }

    ngx_http_timpush_metric_add(ngx_http_timpush_series_fmt(
        NGX_HTTP_TIMPUSH_M_REMOVED, "business_id=\"%ui\",reason=\"%s\"",
        business_id, reason), n);
}


void
ngx_http_timpush_metric_redis_up(ngx_uint_t up)
{
    ngx_http_timpush_metric_set(ngx_http_timpush_metrics_redis, up ? 1 : 0);
}


void
ngx_http_timpush_metric_redis_error(const char *kind)
{
    ngx_http_timpush_metric_add(ngx_http_timpush_series_fmt(
        NGX_HTTP_TIMPUSH_M_REDIS_ERRORS, "kind=\"%s\"", kind), 1);
}


void
ngx_http_timpush_metric_api(const char *endpoint, ngx_uint_t status)
{
    if (status < 100 || status > 599) {
        status = 0;
    }

    ngx_http_timpush_metric_add(ngx_http_timpush_series_fmt(
        NGX_HTTP_TIMPUSH_M_API, "endpoint=\"%s\",status=\"%ui\"", endpoint,
        status), 1);
}


/* the lowest of the live workers' (no worker: 0) */

ngx_int_t
ngx_http_timpush_metrics_redis_up(void)
{
    ngx_uint_t                  i, n;
    ngx_http_timpush_series_t  *s;

    s = ngx_http_timpush_metrics_redis;

    if (s == NULL) {
        return 0;
    }

    n = 0;

    for (i = 0; i < NGX_HTTP_TIMPUSH_M_SLOTS; i++) {
        if (ngx_http_timpush_metrics_alive(i)) {
            if (s->v[i] == 0) {
                return 0;
            }

            n++;
        }
    }

    return n ? 1 : 0;
}


/* a gauge summed over the live workers */

ngx_int_t
ngx_http_timpush_metrics_gauge(ngx_http_timpush_series_t *s)
{
    ngx_int_t   v;
    ngx_uint_t  i;

    if (s == NULL) {
        return 0;
    }

    v = 0;

    for (i = 0; i < NGX_HTTP_TIMPUSH_M_SLOTS; i++) {
        if (ngx_http_timpush_metrics_alive(i)) {
            v += (ngx_atomic_int_t) s->v[i];
        }
    }

    return v;
}


/* timpush_metrics; in a location */

char *
ngx_http_timpush_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_timpush_metrics_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_timpush_metrics_handler(ngx_http_request_t *r)
{
    size_t                           size;
    ngx_int_t                        rc;
    ngx_buf_t                       *b;
    ngx_chain_t                      out;
    ngx_http_timpush_metrics_ctx_t  *ctx;
    ngx_http_timpush_main_conf_t    *tmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_timpush_metrics_zone == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    tmcf = ngx_http_get_module_main_conf(r, ngx_http_timpush_module);
    ctx = ngx_http_timpush_metrics_zone->data;

    /* every series at its widest, the help and type lines, the expiries */

    size = ctx->sh->series
           * (NGX_HTTP_TIMPUSH_M_LE + 3)
           * (64 + NGX_HTTP_TIMPUSH_M_LABELS + NGX_ATOMIC_T_LEN)
           + NGX_HTTP_TIMPUSH_M_LAST * 256
           + tmcf->credentials.nelts * 128;

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_http_timpush_metrics_write(b->pos, b->end, tmcf);
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static u_char *
ngx_http_timpush_metrics_write(u_char *p, u_char *last,
    ngx_http_timpush_main_conf_t *tmcf)
{
    ngx_uint_t                        i, m, alive[NGX_HTTP_TIMPUSH_M_SLOTS];
    ngx_http_timpush_series_t        *s;
    ngx_http_timpush_metrics_ctx_t   *ctx;
    ngx_http_timpush_credential_t   **creds;
    ngx_http_timpush_metric_def_t    *def;

    static const char  *types[] = { "counter", "gauge", "histogram" };

    ctx = ngx_http_timpush_metrics_zone->data;

    for (i = 0; i < NGX_HTTP_TIMPUSH_M_SLOTS; i++) {
        alive[i] = ngx_http_timpush_metrics_alive(i);
    }

    for (m = 0; m < NGX_HTTP_TIMPUSH_M_LAST; m++) {
        def = &ngx_http_timpush_metric_defs[m];

        p = ngx_slprintf(p, last, "# HELP %s %s.\n# TYPE %s %s\n",
                         def->name, def->help, def->name, types[def->type]);

        if (m == NGX_HTTP_TIMPUSH_M_EXPIRY) {
            /* from the configuration: certificates only */

            creds = tmcf->credentials.elts;

            for (i = 0; i < tmcf->credentials.nelts; i++) {
                if (creds[i]->auth == NGX_HTTP_TIMPUSH_AUTH_CERTIFICATE) {
                    p = ngx_slprintf(p, last, "%s{business_id=\"%ui\"} %T\n",
                                     def->name, creds[i]->id,
                                     creds[i]->not_after);
                }
            }

            continue;
        }

        if (m == NGX_HTTP_TIMPUSH_M_REDIS_UP) {
            p = ngx_slprintf(p, last, "%s %i\n", def->name,
                             ngx_http_timpush_metrics_redis_up());
            continue;
        }

        for (s = ctx->sh->first; s; s = s->all) {
            if (s->metric == m) {
                p = ngx_http_timpush_metrics_series(p, last, s, alive);
            }
        }
    }

    return p;
}


static u_char *
ngx_http_timpush_metrics_series(u_char *p, u_char *last,
    ngx_http_timpush_series_t *s, ngx_uint_t *alive)
{
    ngx_str_t                       labels;
    ngx_int_t                       g;
    ngx_uint_t                      i;
    ngx_atomic_uint_t               n, sum;
    ngx_http_timpush_metric_def_t  *def;

    def = &ngx_http_timpush_metric_defs[s->metric];
    labels.data = s->labels;
    labels.len = s->len;

    switch (def->type) {

    case NGX_HTTP_TIMPUSH_M_COUNTER:
        if (labels.len) {
            return ngx_slprintf(p, last, "%s{%V} %uA\n", def->name, &labels,
                                s->v[0]);
        }

        return ngx_slprintf(p, last, "%s %uA\n", def->name, s->v[0]);

    case NGX_HTTP_TIMPUSH_M_GAUGE:
        g = 0;

        for (i = 0; i < NGX_HTTP_TIMPUSH_M_SLOTS; i++) {
            if (alive[i]) {
                g += (ngx_atomic_int_t) s->v[i];
            }
        }

        if (labels.len) {
            return ngx_slprintf(p, last, "%s{%V} %i\n", def->name, &labels,
                                g);
        }

        return ngx_slprintf(p, last, "%s %i\n", def->name, g);

    default: /* NGX_HTTP_TIMPUSH_M_HISTOGRAM */
        n = 0;

        for (i = 0; i < NGX_HTTP_TIMPUSH_M_LE; i++) {
            n += s->v[i];
            p = ngx_slprintf(p, last, "%s_bucket{%V%sle=\"%s\"} %uA\n",
                             def->name, &labels, labels.len ? "," : "",
                             ngx_http_timpush_metric_le[i], n);
        }

        /* counted while we read: +Inf is never below a bucket */
        n = ngx_max(n, s->v[NGX_HTTP_TIMPUSH_M_LE]);
        sum = s->v[NGX_HTTP_TIMPUSH_M_LE + 1];

        p = ngx_slprintf(p, last, "%s_bucket{%V%sle=\"+Inf\"} %uA\n",
                         def->name, &labels, labels.len ? "," : "", n);

        if (labels.len) {
            p = ngx_slprintf(p, last, "%s_sum{%V} %uA.%06uA\n%s_count{%V} "
                             "%uA\n", def->name, &labels, sum / 1000000,
                             sum % 1000000, def->name, &labels, n);

        } else {
            p = ngx_slprintf(p, last, "%s_sum %uA.%06uA\n%s_count %uA\n",
                             def->name, sum / 1000000, sum % 1000000,
                             def->name, n);
        }

        return p;
    }
}
