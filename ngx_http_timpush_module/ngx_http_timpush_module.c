
/*
 * Copyright (C) timpush authors
 *
 * The module: directives, configuration, worker start and exit.
 */


#include "ngx_http_timpush.h"
#include "ngx_http_timpush_x509.h"
#include "ngx_http_timpush_apns.h"
#include "ngx_http_timpush_metrics.h"


#define NGX_HTTP_TIMPUSH_BODY_MEM_MAX  (64 * 1024 * 1024)


static void *ngx_http_timpush_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_timpush_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_timpush_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_timpush_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_timpush_postconfiguration(ngx_conf_t *cf);
static char *ngx_http_timpush_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_timpush_redis_cluster(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_timpush_redis_address(ngx_conf_t *cf,
    ngx_http_timpush_redis_conf_t *rc, ngx_str_t *value);
static ngx_int_t ngx_http_timpush_redis_password(ngx_conf_t *cf,
    ngx_http_timpush_redis_conf_t *rc);
static ngx_int_t ngx_http_timpush_redis_ssl(ngx_conf_t *cf,
    ngx_http_timpush_redis_conf_t *rc);
static char *ngx_http_timpush_devices_per_app(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_timpush_api(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_timpush_init_process(ngx_cycle_t *cycle);
static void ngx_http_timpush_exit_process(ngx_cycle_t *cycle);


static ngx_command_t  ngx_http_timpush_commands[] = {

    { ngx_string("timpush_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_timpush_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("timpush_redis_cluster"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_timpush_redis_cluster,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_timpush_main_conf_t, cluster),
      NULL },

    { ngx_string("timpush_credential"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_timpush_credential,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("timpush_devices_per_app"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_timpush_devices_per_app,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("timpush_max_recipients"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_timpush_main_conf_t, max_recipients),
      NULL },

    { ngx_string("timpush_apns_upstream"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_timpush_apns_upstream,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("timpush_apns_trusted_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_timpush_main_conf_t, apns_trusted),
      NULL },

    { ngx_string("timpush_apns_connections"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_timpush_main_conf_t, apns_connections),
      NULL },

    { ngx_string("timpush_apns_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_timpush_main_conf_t, apns_timeout),
      NULL },

    { ngx_string("timpush_apns_read_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_timpush_main_conf_t, apns_read_timeout),
      NULL },

    { ngx_string("timpush_apns_queue"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_timpush_main_conf_t, apns_queue),
      NULL },

    { ngx_string("timpush_credential_recheck"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_timpush_main_conf_t, credential_recheck),
      NULL },

    { ngx_string("timpush_dedup_window"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_timpush_main_conf_t, dedup_window),
      NULL },

    { ngx_string("timpush_async"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_timpush_main_conf_t, async),
      NULL },

    { ngx_string("timpush_async_keep"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_timpush_main_conf_t, async_keep),
      NULL },

    { ngx_string("timpush_async_claim"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_timpush_main_conf_t, async_claim),
      NULL },

    { ngx_string("timpush_async_retry"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_timpush_main_conf_t, async_retry),
      NULL },

    { ngx_string("timpush_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_timpush_metrics_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("timpush_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_ANY,
      ngx_http_timpush_api,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_timpush_module_ctx = {
    ngx_http_timpush_vars_add,             /* preconfiguration */
    ngx_http_timpush_postconfiguration,    /* postconfiguration */

    ngx_http_timpush_create_main_conf,     /* create main configuration */
    ngx_http_timpush_init_main_conf,       /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_timpush_create_loc_conf,      /* create location configuration */
    ngx_http_timpush_merge_loc_conf        /* merge location configuration */
};


ngx_module_t  ngx_http_timpush_module = {
    NGX_MODULE_V1,
    &ngx_http_timpush_module_ctx,          /* module context */
    ngx_http_timpush_commands,             /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_timpush_init_process,         /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_timpush_exit_process,         /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_timpush_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_timpush_main_conf_t  *tmcf;

    tmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_timpush_main_conf_t));
    if (tmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&tmcf->credentials, cf->pool, 4, sizeof(void *))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&tmcf->api_locations, cf->pool, 2, sizeof(void *))
        != NGX_OK)
    {
        return NULL;
    }

    tmcf->devices_per_app = NGX_CONF_UNSET_UINT;
    tmcf->max_recipients = NGX_CONF_UNSET_UINT;
    tmcf->apns_connections = NGX_CONF_UNSET_UINT;
    tmcf->apns_timeout = NGX_CONF_UNSET_MSEC;
    tmcf->apns_read_timeout = NGX_CONF_UNSET_MSEC;
    tmcf->apns_queue = NGX_CONF_UNSET_UINT;
    tmcf->credential_recheck = NGX_CONF_UNSET_MSEC;
    tmcf->dedup_window = NGX_CONF_UNSET_MSEC;
    tmcf->async = NGX_CONF_UNSET;
    tmcf->async_keep = NGX_CONF_UNSET_MSEC;
    tmcf->async_claim = NGX_CONF_UNSET_MSEC;
    tmcf->async_retry = NGX_CONF_UNSET_MSEC;

    return tmcf;
}


static char *
ngx_http_timpush_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_timpush_main_conf_t *tmcf = conf;

    ngx_conf_init_uint_value(tmcf->devices_per_app, 1);
    ngx_conf_init_uint_value(tmcf->max_recipients, 10000);
    ngx_conf_init_uint_value(tmcf->apns_connections, 2);
    ngx_conf_init_msec_value(tmcf->apns_timeout, 10000);
    ngx_conf_init_msec_value(tmcf->apns_read_timeout, 5000);
    ngx_conf_init_uint_value(tmcf->apns_queue, 65536);
    ngx_conf_init_msec_value(tmcf->credential_recheck, 3600000);
    ngx_conf_init_msec_value(tmcf->dedup_window, 86400000);
    ngx_conf_init_value(tmcf->async, 0);
    ngx_conf_init_msec_value(tmcf->async_keep, 3600000);
    ngx_conf_init_msec_value(tmcf->async_claim, 30000);
    ngx_conf_init_msec_value(tmcf->async_retry, 3600000);

    if (tmcf->max_recipients == 0 || tmcf->apns_connections == 0
        || tmcf->apns_connections > 64 || tmcf->apns_timeout == 0
        || tmcf->apns_queue == 0 || tmcf->credential_recheck == 0
        || tmcf->apns_read_timeout == 0 || tmcf->dedup_window == 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "timpush: timpush_max_recipients, timpush_apns_queue, "
                      "timpush_apns_timeout, timpush_apns_read_timeout, "
                      "timpush_credential_recheck and timpush_dedup_window "
                      "must be positive, "
                      "timpush_apns_connections from 1 to 64");
        return NGX_CONF_ERROR;
    }

    /*
     * A push claimed from a consumer that died must find the devices it
     * was sending no longer "being sent" (their lease: the push's deadline
     * and Redis's), else it would skip them (DESIGN §12, §14).
     */

    if (tmcf->async
        && tmcf->async_claim <= tmcf->apns_timeout + tmcf->redis.timeout)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "timpush: timpush_async_claim (%M ms) must be longer "
                      "than timpush_apns_timeout and the Redis timeout "
                      "together (%M ms)", tmcf->async_claim,
                      tmcf->apns_timeout + tmcf->redis.timeout);
        return NGX_CONF_ERROR;
    }

    if (tmcf->async && !tmcf->redis_set) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"timpush_async on\" needs \"timpush_redis\": "
                      "pushes are queued in Redis");
        return NGX_CONF_ERROR;
    }

    if (tmcf->api_locations.nelts && !tmcf->redis_set) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"timpush_api\" needs \"timpush_redis\" in the "
                      "http block: devices are kept in Redis");
        return NGX_CONF_ERROR;
    }

    if (ngx_http_timpush_jwt_shm_conf(cf, tmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_timpush_apns_init_conf(cf, tmcf);
}


static void *
ngx_http_timpush_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_timpush_loc_conf_t  *tlcf;

    tlcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_timpush_loc_conf_t));
    if (tlcf == NULL) {
        return NULL;
    }

    tlcf->api = NGX_CONF_UNSET;
    tlcf->allow_origin = NGX_CONF_UNSET_PTR;

    return tlcf;
}


static char *
ngx_http_timpush_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_timpush_loc_conf_t *prev = parent;
    ngx_http_timpush_loc_conf_t *conf = child;

    ngx_conf_merge_value(conf->api, prev->api, 0);
    ngx_conf_merge_ptr_value(conf->allow_origin, prev->allow_origin, NULL);

    return NGX_CONF_OK;
}


/*
 * API bodies are parsed in memory: reading a temporary file would block
 * the event loop, so the body buffer of an API location is raised to its
 * client_max_body_size (the memory is only taken by bodies that big).
 */

static ngx_int_t
ngx_http_timpush_postconfiguration(ngx_conf_t *cf)
{
    ngx_uint_t                     i;
    ngx_http_core_loc_conf_t     **clcfp, *clcf;
    ngx_http_timpush_main_conf_t  *tmcf;

    tmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_timpush_module);

    clcfp = tmcf->api_locations.elts;

    for (i = 0; i < tmcf->api_locations.nelts; i++) {
        clcf = clcfp[i];

        if (clcf->client_max_body_size == 0
            || clcf->client_max_body_size > NGX_HTTP_TIMPUSH_BODY_MEM_MAX)
        {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"timpush_api\" in location \"%V\" needs "
                          "client_max_body_size between 1 and 64m, "
                          "bodies are kept in memory", &clcf->name);
            return NGX_ERROR;
        }

        if (clcf->client_body_buffer_size
            < (size_t) clcf->client_max_body_size)
        {
            clcf->client_body_buffer_size = clcf->client_max_body_size;
        }

        clcf->client_body_in_single_buffer = 1;
    }

    if ((tmcf->credentials.nelts || tmcf->api_locations.nelts)
        && ngx_http_timpush_metrics_conf(cf, tmcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_timpush_api_init(cf);
}


static char *
ngx_http_timpush_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_timpush_main_conf_t *tmcf = conf;

    u_char                         *p;
    ngx_int_t                       n;
    ngx_str_t                      *value, s;
    ngx_uint_t                      i;
    ngx_http_timpush_redis_conf_t  *rc;

    if (tmcf->cluster) {
        return "cannot be used with \"timpush_redis_cluster\": one store, "
               "a single Redis or a Cluster";
    }

    if (tmcf->redis_set) {
        return "is duplicate";
    }

    rc = &tmcf->redis;
    value = cf->args->elts;

    if (ngx_http_timpush_redis_address(cf, rc, &value[1]) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_str_set(&rc->prefix, "timpush");
    rc->timeout = 2000;
    rc->max_pending = 65536;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "prefix=", 7) == 0) {
            s.data = value[i].data + 7;
            s.len = value[i].len - 7;

            if (s.len == 0 || s.len > 64) {
                return "has an invalid \"prefix=\": 1 to 64 characters";
            }

            for (p = s.data; p < s.data + s.len; p++) {
                if (*p <= ' ' || *p == '{' || *p == '}' || *p == 0x7f) {
                    return "has an invalid \"prefix=\": no spaces, control "
                           "characters or braces (braces make hash tags)";
                }
            }

            rc->prefix = s;
            continue;
        }

        if (ngx_strncmp(value[i].data, "max_pending=", 12) == 0) {
            n = ngx_atoi(value[i].data + 12, value[i].len - 12);
            if (n <= 0) {
                return "has an invalid \"max_pending=\"";
            }

            rc->max_pending = (ngx_uint_t) n;
            continue;
        }

        if (ngx_strcmp(value[i].data, "tls") == 0) {
            rc->tls = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "trusted_certificate=", 20) == 0) {
            rc->trusted.data = value[i].data + 20;
            rc->trusted.len = value[i].len - 20;

            if (rc->trusted.len == 0) {
                return "has an empty \"trusted_certificate=\"";
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "tls_name=", 9) == 0) {
            rc->opts.tls_name.data = value[i].data + 9;
            rc->opts.tls_name.len = value[i].len - 9;

            if (rc->opts.tls_name.len == 0) {
                return "has an empty \"tls_name=\"";
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "user=", 5) == 0) {
            rc->opts.user.data = value[i].data + 5;
            rc->opts.user.len = value[i].len - 5;

            if (rc->opts.user.len == 0) {
                return "has an empty \"user=\"";
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "password_file=", 14) == 0) {
            rc->password_file.data = value[i].data + 14;
            rc->password_file.len = value[i].len - 14;
            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            rc->timeout = ngx_parse_time(&s, 0);
            if (rc->timeout == (ngx_msec_t) NGX_ERROR || rc->timeout == 0) {
                return "has an invalid \"timeout=\"";
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (rc->opts.user.len && rc->password_file.len == 0) {
        return "has \"user=\" without \"password_file=\"";
    }

    if (!rc->tls && (rc->trusted.len || rc->opts.tls_name.len)) {
        return "has \"trusted_certificate=\" or \"tls_name=\" without "
               "\"tls\"";
    }

    if (rc->tls && rc->host.len == 0 && rc->opts.tls_name.len == 0) {
        return "has \"tls\" on a unix socket without \"tls_name=\" (the "
               "name the server certificate is checked against)";
    }

    if (rc->password_file.len) {
        if (ngx_http_timpush_redis_password(cf, rc) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    if (rc->tls) {
        if (ngx_http_timpush_redis_ssl(cf, rc) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    rc->opts.timeout = rc->timeout;

    tmcf->redis_set = 1;

    return NGX_CONF_OK;
}


/*
 * timpush_redis_cluster (cluster_conf.c reads it): the store's options as
 * timpush_redis's, shared by the connections to every node.
 */

static char *
ngx_http_timpush_redis_cluster(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_timpush_main_conf_t *tmcf = conf;

    char                             *rv;
    ngx_http_timpush_redis_conf_t    *rc;
    ngx_http_timpush_cluster_conf_t  *ccf;

    rv = ngx_http_timpush_cluster_directive(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    ccf = tmcf->cluster;
    rc = &tmcf->redis;

    ngx_str_set(&rc->name, "cluster");
    rc->prefix = ccf->prefix;
    rc->timeout = ccf->timeout;
    rc->max_pending = ccf->max_pending;
    rc->tls = ccf->tls;
    rc->trusted = ccf->trusted_certificate;
    rc->opts.user = ccf->user;
    rc->opts.password = ccf->password;
    rc->opts.timeout = ccf->timeout;

    if (rc->tls && ngx_http_timpush_redis_ssl(cf, rc) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    tmcf->redis_set = 1;

    return NGX_CONF_OK;
}


/* AUTH's password, kept in secure memory for every reconnection */

static ngx_int_t
ngx_http_timpush_redis_password(ngx_conf_t *cf,
    ngx_http_timpush_redis_conf_t *rc)
{
    if (ngx_conf_full_name(cf->cycle, &rc->password_file, 1) != NGX_OK
        || ngx_http_timpush_secret_init(cf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_timpush_secret_password(cf, (u_char *) "timpush_redis",
                                         "password_file", &rc->password_file,
                                         cf->pool, &rc->opts.password)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (rc->opts.password.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_redis: password_file \"%V\" has no "
                           "password on its first line", &rc->password_file);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * A host name is resolved here, when the configuration is read (DNS would
 * block the event loop later); the first address is used, as nginx does
 * for a "server" without a resolver.  The host as written is kept: the
 * name a TLS server certificate is checked against.
 */

static char *
ngx_http_timpush_redis_address(ngx_conf_t *cf,
    ngx_http_timpush_redis_conf_t *rc, ngx_str_t *value)
{
    ngx_url_t  u;

    rc->name = *value;

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = *value;
    u.default_port = 6379;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_redis: cannot use \"%V\": %s", value,
                           u.err ? u.err : "the host has no address");
        return NGX_CONF_ERROR;
    }

    rc->addr = u.addrs[0];

    if (u.family != AF_UNIX) {
        rc->host = u.host;

        /* an IPv6 address without its brackets, as a certificate has it */
        if (rc->host.len > 2 && rc->host.data[0] == '[') {
            rc->host.data++;
            rc->host.len -= 2;
        }
    }

    if (u.naddrs > 1) {
        ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0,
                           "timpush_redis: \"%V\" has %ui addresses, %V is "
                           "used", value, u.naddrs, &u.addrs[0].name);
    }

    return NGX_CONF_OK;
}


/*
 * TLS to Redis: the server certificate is always verified, against
 * trusted_certificate= or else the system's CAs (as for APNs).
 */

static ngx_int_t
ngx_http_timpush_redis_ssl(ngx_conf_t *cf, ngx_http_timpush_redis_conf_t *rc)
{
    ngx_ssl_t  *ssl;

    ssl = ngx_http_timpush_ssl_client(cf, &rc->trusted, "timpush_redis",
                                      "trusted_certificate=");
    if (ssl == NULL) {
        return NGX_ERROR;
    }

    rc->opts.ssl = ssl;

    return NGX_OK;
}


static char *
ngx_http_timpush_devices_per_app(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_timpush_main_conf_t *tmcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    if (tmcf->devices_per_app != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);
    if (n < 1 || n > 100) {
        return "must be a number from 1 to 100";
    }

    tmcf->devices_per_app = (ngx_uint_t) n;

    return NGX_CONF_OK;
}


static char *
ngx_http_timpush_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_timpush_loc_conf_t *tlcf = conf;

    void                          **p;
    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_timpush_main_conf_t   *tmcf;

    if (tlcf->api != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    tlcf->api = 1;
    tlcf->allow_origin = NULL;

    if (ngx_http_timpush_origin_conf(cf, tlcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_timpush_api_handler;

    tmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_timpush_module);

    p = ngx_array_push(&tmcf->api_locations);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    *p = clcf;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_timpush_init_process(ngx_cycle_t *cycle)
{
    ngx_http_timpush_main_conf_t  *tmcf;

    tmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_timpush_module);

    if (tmcf == NULL) {
        return NGX_OK;
    }

    /* first: the others count from their start */

    if (ngx_http_timpush_metrics_init_process(cycle, tmcf) != NGX_OK
        || ngx_http_timpush_apns_init_process(cycle, tmcf) != NGX_OK
        || ngx_http_timpush_expiry_init_process(cycle, tmcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!tmcf->redis_set) {
        return NGX_OK;
    }

    if (ngx_http_timpush_store_init_process(cycle, tmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_timpush_async_init_process(cycle, tmcf);
}


static void
ngx_http_timpush_exit_process(ngx_cycle_t *cycle)
{
    /* the async pushes first: what they hold is left to other workers */
    ngx_http_timpush_async_exit_process(cycle);
    ngx_http_timpush_apns_exit_process(cycle);
    ngx_http_timpush_store_exit_process(cycle);
    ngx_http_timpush_metrics_exit_process(cycle);
}
