
/*
 * Copyright (C) timpush authors
 *
 * The REST API (DESIGN 4): routing, validation, JSON answers.  Device
 * operations are one Redis script each (store.c).
 */


#include "ngx_http_timpush.h"
#include "ngx_http_timpush_metrics.h"
#include "ngx_http_timpush_body.h"


typedef enum {
    NGX_HTTP_TIMPUSH_OP_REGISTER = 0,
    NGX_HTTP_TIMPUSH_OP_UNREGISTER,
    NGX_HTTP_TIMPUSH_OP_LIST,
    NGX_HTTP_TIMPUSH_OP_LOGOUT,
    NGX_HTTP_TIMPUSH_OP_BACKGROUND,
    NGX_HTTP_TIMPUSH_OP_FOREGROUND,
    NGX_HTTP_TIMPUSH_OP_PUSH,
    NGX_HTTP_TIMPUSH_OP_HEALTH,
    NGX_HTTP_TIMPUSH_OP_PUSH_STATE,       /* GET /v1/pushes/{id} */
    NGX_HTTP_TIMPUSH_OP_NONE              /* no such endpoint */
} ngx_http_timpush_op_e;


/* the endpoint label of timpush_api_requests_total, by op */
static const char  *ngx_http_timpush_api_endpoints[] = {
    "register", "unregister", "list", "logout", "background", "foreground",
    "push", "health", "push_state", "unknown"
};


typedef struct {
    ngx_http_timpush_request_info_t  info;   /* for logs and metrics */
    ngx_http_timpush_op_e          op;
    ngx_str_t                      push_id;
    ngx_str_t                      user;
    ngx_str_t                      token;
    ngx_str_t                      key;
    ngx_uint_t                     business_id;
    ngx_uint_t                     unread;
    ngx_http_timpush_store_cmd_t  *cmd;
    ngx_http_timpush_owner_t      *owner;
    ngx_uint_t                     error_status;
    const char                    *error_code;
    u_char                        *error_message;
    ngx_uint_t                     own_answer;  /* not nginx's error page */
    ngx_buf_t                     *json_error;  /* nginx's error, as JSON */
    off_t                          body_limit;  /* a device body's, or 0 */
    off_t                          body_read;
    ngx_uint_t                     body_over;   /* over body_limit */
} ngx_http_timpush_api_ctx_t;


typedef struct {
    ngx_str_t                      token;
    ngx_uint_t                     business_id;
    int64_t                        badge;
    int64_t                        registered_at;
    ngx_uint_t                     foreground;
} ngx_http_timpush_device_t;


typedef struct {
    ngx_str_t                      segment[5];
    ngx_uint_t                     n;
} ngx_http_timpush_path_t;


static ngx_int_t ngx_http_timpush_api_route(ngx_http_request_t *r,
    ngx_http_timpush_api_ctx_t *ctx);
static ngx_int_t ngx_http_timpush_api_split(ngx_http_request_t *r,
    ngx_http_timpush_path_t *path);
static ngx_int_t ngx_http_timpush_api_method(ngx_http_request_t *r,
    ngx_uint_t allowed, const char *allow);
static ngx_int_t ngx_http_timpush_api_user(ngx_http_request_t *r,
    ngx_str_t *raw, ngx_str_t *user);
static ngx_int_t ngx_http_timpush_api_token(ngx_http_request_t *r,
    ngx_str_t *raw, ngx_str_t *token);
static ngx_int_t ngx_http_timpush_unescape(ngx_pool_t *pool, ngx_str_t *src,
    ngx_str_t *dst);
static void ngx_http_timpush_api_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_timpush_api_body(ngx_http_request_t *r,
    ngx_http_timpush_api_ctx_t *ctx);
static ngx_int_t ngx_http_timpush_api_body_raw(ngx_http_request_t *r,
    u_char **datap, size_t *lenp);
static ngx_int_t ngx_http_timpush_api_push(ngx_http_request_t *r);
static ngx_int_t ngx_http_timpush_api_log(ngx_http_request_t *r);
static ngx_int_t ngx_http_timpush_api_body_json(ngx_http_request_t *r,
    ngx_http_timpush_json_t **json);
static ngx_int_t ngx_http_timpush_api_int(ngx_http_request_t *r,
    ngx_http_timpush_json_t *obj, const char *name, int64_t min,
    int64_t max, int64_t *value);
static ngx_int_t ngx_http_timpush_api_run(ngx_http_request_t *r,
    ngx_http_timpush_api_ctx_t *ctx);
static void ngx_http_timpush_api_reply(void *data, redisReply *reply,
    ngx_int_t rc);
static ngx_int_t ngx_http_timpush_api_answer(ngx_http_request_t *r,
    ngx_http_timpush_api_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_timpush_api_own(ngx_http_request_t *r,
    ngx_http_timpush_api_ctx_t *ctx, ngx_http_timpush_script_e script,
    ngx_str_t *args, ngx_uint_t nargs);
static void ngx_http_timpush_api_owned(void *data,
    ngx_http_timpush_owner_t *o, ngx_int_t rc);
static ngx_int_t ngx_http_timpush_api_owner_answer(ngx_http_request_t *r,
    ngx_http_timpush_api_ctx_t *ctx, ngx_http_timpush_owner_t *o,
    ngx_int_t rc);
static ngx_int_t ngx_http_timpush_api_registered(ngx_http_request_t *r,
    ngx_http_timpush_api_ctx_t *ctx, ngx_http_timpush_owner_t *o,
    yajl_gen g);
static ngx_int_t ngx_http_timpush_api_devices(ngx_http_request_t *r,
    ngx_http_timpush_api_ctx_t *ctx, redisReply *reply, yajl_gen g);
static ngx_int_t ngx_http_timpush_api_collect(ngx_http_request_t *r,
    redisReply *reply, ngx_array_t *devices);
static int ngx_libc_cdecl ngx_http_timpush_device_cmp(const void *one,
    const void *two);

static ngx_int_t ngx_http_timpush_api_send_header(ngx_http_request_t *r,
    ngx_uint_t status, off_t len);

static ngx_buf_t *ngx_http_timpush_json_buf(ngx_http_request_t *r,
    yajl_gen g);
static ngx_int_t ngx_http_timpush_api_error_json(ngx_http_request_t *r,
    const char *code, const char *message, ngx_buf_t **bp);
static void ngx_http_timpush_api_cleanup(void *data);
static ngx_int_t ngx_http_timpush_api_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_timpush_api_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_timpush_api_read_body(ngx_http_request_t *r,
    ngx_http_timpush_api_ctx_t *ctx);
static ngx_int_t ngx_http_timpush_api_request_body_filter(
    ngx_http_request_t *r, ngx_chain_t *in);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;
static ngx_http_request_body_filter_pt   ngx_http_next_request_body_filter;


#define ngx_http_timpush_invalid(r, ...)                                     \
    ngx_http_timpush_api_error(r, NGX_HTTP_BAD_REQUEST, "invalid_field",     \
                               __VA_ARGS__)


ngx_int_t
ngx_http_timpush_api_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_timpush_api_log;

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_timpush_api_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_timpush_api_body_filter;

    ngx_http_next_request_body_filter = ngx_http_top_request_body_filter;
    ngx_http_top_request_body_filter = ngx_http_timpush_api_request_body_filter;

    return NGX_OK;
}


/* what the log variables show of a request (vars.c), NULL if not ours */

ngx_http_timpush_request_info_t *
ngx_http_timpush_api_info(ngx_http_request_t *r)
{
    ngx_http_timpush_api_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_timpush_module);

    return ctx ? &ctx->info : NULL;
}


/* the request's store command, forgotten if the request goes away */

ngx_http_timpush_store_cmd_t **
ngx_http_timpush_api_cmd(ngx_http_request_t *r)
{
    ngx_http_timpush_api_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_timpush_module);

    return &ctx->cmd;
}


/* every request of an API location is counted, nginx's own answers too */

static ngx_int_t
ngx_http_timpush_api_log(ngx_http_request_t *r)
{
    ngx_http_timpush_api_ctx_t   *ctx;
    ngx_http_timpush_loc_conf_t  *tlcf;

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_timpush_module);

    if (!tlcf->api) {
        return NGX_OK;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_timpush_module);

    ngx_http_timpush_metric_api(ctx ? ngx_http_timpush_api_endpoints[ctx->op]
                                    : "unknown",
                                r->headers_out.status);

    return NGX_OK;
}


ngx_int_t
ngx_http_timpush_api_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc;
    ngx_pool_cleanup_t          *cln;
    ngx_http_timpush_api_ctx_t  *ctx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_timpush_api_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_timpush_module);

    ctx->op = NGX_HTTP_TIMPUSH_OP_NONE;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_timpush_api_cleanup;
    cln->data = ctx;

    rc = ngx_http_timpush_origin_check(r);

    if (rc == NGX_DONE) {
        ctx->own_answer = 1;
        return ngx_http_discard_request_body(r) == NGX_OK
               ? NGX_HTTP_NO_CONTENT : NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_OK) {
        rc = ngx_http_timpush_api_route(r, ctx);
    }

    if (rc != NGX_OK) {
        if (ngx_http_discard_request_body(r) != NGX_OK) {
            r->keepalive = 0;
        }

        return ngx_http_timpush_api_finish(r, rc);
    }

    switch (ctx->op) {

    case NGX_HTTP_TIMPUSH_OP_HEALTH:
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_timpush_api_finish(r, ngx_http_timpush_health(r));

    case NGX_HTTP_TIMPUSH_OP_PUSH_STATE:
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        rc = ngx_http_timpush_async_get(r, &ctx->push_id);
        if (rc == NGX_DONE) {
            r->main->count++;
            return NGX_DONE;
        }

        return ngx_http_timpush_api_finish(r, rc);

    case NGX_HTTP_TIMPUSH_OP_REGISTER:
    case NGX_HTTP_TIMPUSH_OP_LOGOUT:
    case NGX_HTTP_TIMPUSH_OP_BACKGROUND:
    case NGX_HTTP_TIMPUSH_OP_PUSH:
        rc = ngx_http_timpush_api_read_body(r, ctx);
        if (rc >= NGX_HTTP_SPECIAL_RESPONSE || rc == NGX_DECLINED) {
            return ngx_http_timpush_api_finish(r, rc);
        }

        return NGX_DONE;

    default:
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        rc = ngx_http_timpush_api_run(r, ctx);
        if (rc == NGX_DONE) {
            r->main->count++;
            return NGX_DONE;
        }

        return ngx_http_timpush_api_finish(r, rc);
    }
}


/*
 * A device body is a few bytes: at most NGX_HTTP_TIMPUSH_DEVICE_BODY_MAX
 * whatever client_max_body_size says (a push's may be a megabyte).  A
 * Content-Length over it is refused at once; a body without one (chunked,
 * or HTTP/2) is counted as it comes by the request body filter below.
 * nginx gives such a body a buffer of client_body_buffer_size, which API
 * locations raise to client_max_body_size: for a device body that size is
 * made small while the buffer is made (it is read nowhere else).
 */

static ngx_int_t
ngx_http_timpush_api_read_body(ngx_http_request_t *r,
    ngx_http_timpush_api_ctx_t *ctx)
{
    size_t                     saved;
    ngx_int_t                  rc;
    ngx_http_core_loc_conf_t  *clcf;

    if (ctx->op == NGX_HTTP_TIMPUSH_OP_PUSH) {
        return ngx_http_read_client_request_body(r,
                                           ngx_http_timpush_api_body_handler);
    }

    ctx->body_limit = NGX_HTTP_TIMPUSH_DEVICE_BODY_MAX;

    if (r->headers_in.content_length_n > ctx->body_limit) {
        if (ngx_http_discard_request_body(r) != NGX_OK) {
            r->keepalive = 0;
        }

        return ngx_http_timpush_api_error(r,
                                      NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                      "body_too_large",
                                      "a device body is at most %O bytes",
                                      ctx->body_limit);
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    saved = clcf->client_body_buffer_size;
    clcf->client_body_buffer_size = ngx_min(saved,
                                    4 * NGX_HTTP_TIMPUSH_DEVICE_BODY_MAX);

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_timpush_api_body_handler);

    clcf->client_body_buffer_size = saved;

    return rc;
}


static ngx_int_t
ngx_http_timpush_api_request_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in)
{
    ngx_chain_t                 *cl;
    ngx_http_timpush_api_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_timpush_module);

    if (ctx == NULL || ctx->body_limit == 0) {
        return ngx_http_next_request_body_filter(r, in);
    }

    for (cl = in; cl; cl = cl->next) {
        ctx->body_read += ngx_buf_size(cl->buf);
    }

    if (ctx->body_read > ctx->body_limit) {
        ctx->body_over = 1;
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    return ngx_http_next_request_body_filter(r, in);
}


/*
 * /v1/users/{user}/devices/{token}              PUT, DELETE
 * /v1/users/{user}/devices                      GET
 * /v1/users/{user}/logout                       POST
 * /v1/users/{user}/devices/{token}/background   POST
 * /v1/users/{user}/devices/{token}/foreground   POST
 * /v1/push                                      POST
 * /v1/pushes/{id}                               GET, HEAD
 * /v1/health                                    GET, HEAD
 */

static ngx_int_t
ngx_http_timpush_api_route(ngx_http_request_t *r,
    ngx_http_timpush_api_ctx_t *ctx)
{
    ngx_int_t                rc;
    ngx_str_t               *s;
    ngx_http_timpush_path_t  path;

    if (ngx_http_timpush_api_split(r, &path) != NGX_OK) {
        goto not_found;
    }

    if (path.n == 1 && path.segment[0].len == 4
        && ngx_strncmp(path.segment[0].data, "push", 4) == 0)
    {
        ctx->op = NGX_HTTP_TIMPUSH_OP_PUSH;
        return ngx_http_timpush_api_method(r, NGX_HTTP_POST, "POST");
    }

    if (path.n == 2 && path.segment[0].len == 6
        && ngx_strncmp(path.segment[0].data, "pushes", 6) == 0)
    {
        ctx->op = NGX_HTTP_TIMPUSH_OP_PUSH_STATE;
        ctx->push_id = path.segment[1];
        return ngx_http_timpush_api_method(r, NGX_HTTP_GET|NGX_HTTP_HEAD,
                                           "GET, HEAD");
    }

    if (path.n == 1 && path.segment[0].len == 6
        && ngx_strncmp(path.segment[0].data, "health", 6) == 0)
    {
        ctx->op = NGX_HTTP_TIMPUSH_OP_HEALTH;
        return ngx_http_timpush_api_method(r, NGX_HTTP_GET|NGX_HTTP_HEAD,
                                           "GET, HEAD");
    }

    if (path.n < 3
        || path.segment[0].len != 5
        || ngx_strncmp(path.segment[0].data, "users", 5) != 0)
    {
        goto not_found;
    }

    s = path.segment;

    if (path.n == 3 && s[2].len == 6
        && ngx_strncmp(s[2].data, "logout", 6) == 0)
    {
        ctx->op = NGX_HTTP_TIMPUSH_OP_LOGOUT;
        rc = ngx_http_timpush_api_method(r, NGX_HTTP_POST, "POST");

    } else if (s[2].len != 7 || ngx_strncmp(s[2].data, "devices", 7) != 0) {
        goto not_found;

    } else if (path.n == 3) {
        ctx->op = NGX_HTTP_TIMPUSH_OP_LIST;
        rc = ngx_http_timpush_api_method(r, NGX_HTTP_GET|NGX_HTTP_HEAD,
                                         "GET, HEAD");

    } else if (path.n == 4) {
        ctx->op = (r->method == NGX_HTTP_DELETE)
                  ? NGX_HTTP_TIMPUSH_OP_UNREGISTER
                  : NGX_HTTP_TIMPUSH_OP_REGISTER;
        rc = ngx_http_timpush_api_method(r, NGX_HTTP_PUT|NGX_HTTP_DELETE,
                                         "PUT, DELETE");

    } else if (s[4].len == 10
               && ngx_strncmp(s[4].data, "background", 10) == 0)
    {
        ctx->op = NGX_HTTP_TIMPUSH_OP_BACKGROUND;
        rc = ngx_http_timpush_api_method(r, NGX_HTTP_POST, "POST");

    } else if (s[4].len == 10
               && ngx_strncmp(s[4].data, "foreground", 10) == 0)
    {
        ctx->op = NGX_HTTP_TIMPUSH_OP_FOREGROUND;
        rc = ngx_http_timpush_api_method(r, NGX_HTTP_POST, "POST");

    } else {
        goto not_found;
    }

    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_timpush_api_user(r, &s[1], &ctx->user);
    if (rc != NGX_OK) {
        return rc;
    }

    ctx->info.user = ctx->user;

    if (path.n >= 4) {
        rc = ngx_http_timpush_api_token(r, &s[3], &ctx->token);
        if (rc != NGX_OK) {
            return rc;
        }

        ctx->info.token = ctx->token;
    }

    if (ngx_http_timpush_store_key(r->pool, &ctx->user, &ctx->key)
        != NGX_OK)
    {
        return ngx_http_timpush_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "store_unavailable",
                                          "the device store is not running "
                                          "in this worker");
    }

    return NGX_OK;

not_found:

    return ngx_http_timpush_api_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                      "no such endpoint: %V", &r->uri);
}


/* the raw path after "/v1/", in segments still percent-encoded */

static ngx_int_t
ngx_http_timpush_api_split(ngx_http_request_t *r,
    ngx_http_timpush_path_t *path)
{
    u_char  *p, *last, *start;

    p = r->unparsed_uri.data;
    last = p + r->unparsed_uri.len;

    start = ngx_strlchr(p, last, '?');
    if (start) {
        last = start;
    }

    if (last - p < 4 || ngx_strncmp(p, "/v1/", 4) != 0) {
        return NGX_DECLINED;
    }

    p += 4;
    path->n = 0;

    for ( ;; ) {
        if (path->n == 5) {
            return NGX_DECLINED;
        }

        start = p;

        while (p < last && *p != '/') {
            p++;
        }

        if (p == start) {
            return NGX_DECLINED;
        }

        path->segment[path->n].data = start;
        path->segment[path->n].len = p - start;
        path->n++;

        if (p == last) {
            return NGX_OK;
        }

        p++;
    }
}


static ngx_int_t
ngx_http_timpush_api_method(ngx_http_request_t *r, ngx_uint_t allowed,
    const char *allow)
{
    ngx_table_elt_t  *h;

    if (r->method & allowed) {
        return NGX_OK;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Allow");
    h->value.data = (u_char *) allow;
    h->value.len = ngx_strlen(allow);

    return ngx_http_timpush_api_error(r, NGX_HTTP_NOT_ALLOWED,
                                      "method_not_allowed",
                                      "method %V is not allowed here; "
                                      "allowed: %s",
                                      &r->method_name, allow);
}


static ngx_int_t
ngx_http_timpush_api_user(ngx_http_request_t *r, ngx_str_t *raw,
    ngx_str_t *user)
{
    if (ngx_http_timpush_unescape(r->pool, raw, user) != NGX_OK) {
        return ngx_http_timpush_invalid(r, "user_id: invalid percent-encoding");
    }

    if (user->len == 0 || user->len > NGX_HTTP_TIMPUSH_USER_MAX) {
        return ngx_http_timpush_invalid(r, "user_id: must be 1 to %d bytes",
                                        NGX_HTTP_TIMPUSH_USER_MAX);
    }

    if (ngx_http_timpush_utf8_check(user->data, user->len, 1) != NGX_OK) {
        return ngx_http_timpush_invalid(r, "user_id: must be UTF-8 without "
                                        "control characters");
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_api_token(ngx_http_request_t *r, ngx_str_t *raw,
    ngx_str_t *token)
{
    u_char  *p, c;
    size_t   i;

    if (raw->len < NGX_HTTP_TIMPUSH_TOKEN_MIN
        || raw->len > NGX_HTTP_TIMPUSH_TOKEN_MAX
        || raw->len % 2)
    {
        return ngx_http_timpush_invalid(r, "token: must be an even number "
                                        "of hex digits, %d to %d",
                                        NGX_HTTP_TIMPUSH_TOKEN_MIN,
                                        NGX_HTTP_TIMPUSH_TOKEN_MAX);
    }

    p = ngx_pnalloc(r->pool, raw->len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < raw->len; i++) {
        c = ngx_tolower(raw->data[i]);

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return ngx_http_timpush_invalid(r, "token: must be hex digits "
                                            "only");
        }

        p[i] = c;
    }

    token->data = p;
    token->len = raw->len;

    return NGX_OK;
}


/* strict percent-decoding: "%2F" is a slash inside the user id */

static ngx_int_t
ngx_http_timpush_unescape(ngx_pool_t *pool, ngx_str_t *src, ngx_str_t *dst)
{
    u_char     *p, *d, c, h, l;
    ngx_uint_t  i;

    d = ngx_pnalloc(pool, src->len);
    if (d == NULL) {
        return NGX_ERROR;
    }

    dst->data = d;
    p = src->data;

    for (i = 0; i < src->len; i++) {
        if (p[i] != '%') {
            *d++ = p[i];
            continue;
        }

        if (i + 2 >= src->len) {
            return NGX_DECLINED;
        }

        h = ngx_tolower(p[i + 1]);
        l = ngx_tolower(p[i + 2]);

        if (h >= '0' && h <= '9') {
            c = h - '0';
        } else if (h >= 'a' && h <= 'f') {
            c = h - 'a' + 10;
        } else {
            return NGX_DECLINED;
        }

        c <<= 4;

        if (l >= '0' && l <= '9') {
            c |= l - '0';
        } else if (l >= 'a' && l <= 'f') {
            c |= l - 'a' + 10;
        } else {
            return NGX_DECLINED;
        }

        *d++ = c;
        i += 2;
    }

    dst->len = d - dst->data;

    return NGX_OK;
}


static void
ngx_http_timpush_api_body_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc;
    ngx_http_timpush_api_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_timpush_module);

    if (ctx->op == NGX_HTTP_TIMPUSH_OP_PUSH) {
        rc = ngx_http_timpush_api_push(r);
        if (rc == NGX_DONE) {
            return;
        }

        ngx_http_finalize_request(r, ngx_http_timpush_api_finish(r, rc));
        return;
    }

    rc = ngx_http_timpush_api_body(r, ctx);

    if (rc == NGX_OK) {
        rc = ngx_http_timpush_api_run(r, ctx);
        if (rc == NGX_DONE) {
            return;
        }
    }

    ngx_http_finalize_request(r, ngx_http_timpush_api_finish(r, rc));
}


static ngx_int_t
ngx_http_timpush_api_body(ngx_http_request_t *r,
    ngx_http_timpush_api_ctx_t *ctx)
{
    int64_t                         v;
    ngx_int_t                       rc;
    ngx_http_timpush_json_t        *json, *token;
    ngx_http_timpush_main_conf_t   *tmcf;

    rc = ngx_http_timpush_api_body_json(r, &json);
    if (rc != NGX_OK) {
        return rc;
    }

    switch (ctx->op) {

    case NGX_HTTP_TIMPUSH_OP_REGISTER:
        rc = ngx_http_timpush_api_int(r, json, "business_id", 1, 0xffffffff,
                                      &v);
        if (rc != NGX_OK) {
            return rc;
        }

        tmcf = ngx_http_get_module_main_conf(r, ngx_http_timpush_module);

        if (ngx_http_timpush_credential_find(tmcf, (ngx_uint_t) v) == NULL) {
            return ngx_http_timpush_api_error(r, NGX_HTTP_BAD_REQUEST,
                                              "unknown_business_id",
                                              "business_id: %L is not a "
                                              "configured credential", v);
        }

        ctx->business_id = (ngx_uint_t) v;
        return NGX_OK;

    case NGX_HTTP_TIMPUSH_OP_BACKGROUND:
        rc = ngx_http_timpush_api_int(r, json, "unread", 0,
                                      NGX_HTTP_TIMPUSH_UNREAD_MAX, &v);
        if (rc != NGX_OK) {
            return rc;
        }

        ctx->unread = (ngx_uint_t) v;
        return NGX_OK;

    default: /* NGX_HTTP_TIMPUSH_OP_LOGOUT */
        token = ngx_http_timpush_body_get(json, "token");

        if (token == NULL) {
            return NGX_OK;
        }

        if (token->type != NGX_HTTP_TIMPUSH_JSON_STRING) {
            return ngx_http_timpush_invalid(r, "token: must be a string");
        }

        return ngx_http_timpush_api_token(r, &token->str, &ctx->token);
    }
}


/* the whole body in one piece of memory */

static ngx_int_t
ngx_http_timpush_api_body_raw(ngx_http_request_t *r, u_char **datap,
    size_t *lenp)
{
    u_char       *data, *p;
    size_t        len;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    len = 0;

    if (r->request_body) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            b = cl->buf;

            if (b->in_file) {
                return ngx_http_timpush_api_error(r,
                                    NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                    "body_too_large",
                                    "the body does not fit in "
                                    "client_body_buffer_size");
            }

            len += b->last - b->pos;
        }
    }

    if (len == 0) {
        *datap = NULL;
        *lenp = 0;
        return NGX_OK;
    }

    if (r->request_body->bufs->next == NULL) {
        b = r->request_body->bufs->buf;
        *datap = b->pos;
        *lenp = len;
        return NGX_OK;
    }

    data = ngx_pnalloc(r->pool, len);
    if (data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = data;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
    }

    *datap = data;
    *lenp = len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_api_push(ngx_http_request_t *r)
{
    u_char     *data;
    size_t      len;
    ngx_int_t   rc;

    rc = ngx_http_timpush_api_body_raw(r, &data, &len);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_timpush_push(r, data, len);
}


/* the body as a JSON object; an empty body is taken as {} */

static ngx_int_t
ngx_http_timpush_api_body_json(ngx_http_request_t *r,
    ngx_http_timpush_json_t **json)
{
    u_char                       *data;
    size_t                        len;
    ngx_int_t                     rc;
    ngx_http_timpush_body_err_t   err;

    static u_char  empty[] = "{}";

    rc = ngx_http_timpush_api_body_raw(r, &data, &len);
    if (rc != NGX_OK) {
        return rc;
    }

    if (len == 0) {
        data = empty;
        len = 2;
    }

    rc = ngx_http_timpush_body_parse(r->pool, data, len,
                                     ngx_http_timpush_body_want_flat, 1,
                                     json, &err);
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_OK) {
        return ngx_http_timpush_api_error(r, NGX_HTTP_BAD_REQUEST,
                                          "invalid_json",
                                          "the body is not valid JSON: %s",
                                          err.msg);
    }

    if ((*json)->type != NGX_HTTP_TIMPUSH_JSON_OBJECT) {
        return ngx_http_timpush_api_error(r, NGX_HTTP_BAD_REQUEST,
                                          "invalid_json",
                                          "the body must be a JSON object");
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_api_int(ngx_http_request_t *r, ngx_http_timpush_json_t *obj,
    const char *name, int64_t min, int64_t max, int64_t *value)
{
    ngx_int_t                     rc;
    ngx_http_timpush_body_err_t   err;

    rc = ngx_http_timpush_body_int(obj, name, min, max, value, &err);

    if (rc == NGX_DONE) {
        return ngx_http_timpush_invalid(r, "%s: is required", name);
    }

    if (rc != NGX_OK) {
        return ngx_http_timpush_invalid(r, "%s", err.msg);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_api_run(ngx_http_request_t *r,
    ngx_http_timpush_api_ctx_t *ctx)
{
    u_char                        *p;
    ngx_int_t                      rc;
    ngx_str_t                      args[4];
    ngx_uint_t                     nargs;
    ngx_time_t                    *tp;
    ngx_http_timpush_script_e      script;
    ngx_http_timpush_main_conf_t  *tmcf;

    nargs = 0;

    /* a logout's body may name the token */
    ctx->info.token = ctx->token;

    switch (ctx->op) {

    case NGX_HTTP_TIMPUSH_OP_REGISTER:
        script = NGX_HTTP_TIMPUSH_SCRIPT_REGISTER;
        tmcf = ngx_http_get_module_main_conf(r, ngx_http_timpush_module);
        tp = ngx_timeofday();

        p = ngx_pnalloc(r->pool, 3 * NGX_INT64_LEN);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        args[0] = ctx->token;

        args[1].data = p;
        p = ngx_sprintf(p, "%ui", ctx->business_id);
        args[1].len = p - args[1].data;

        args[2].data = p;
        p = ngx_sprintf(p, "%L", (int64_t) tp->sec * 1000 + tp->msec);
        args[2].len = p - args[2].data;

        args[3].data = p;
        p = ngx_sprintf(p, "%ui", tmcf->devices_per_app);
        args[3].len = p - args[3].data;

        nargs = 4;
        break;

    case NGX_HTTP_TIMPUSH_OP_UNREGISTER:
        script = NGX_HTTP_TIMPUSH_SCRIPT_UNREGISTER;
        args[0] = ctx->token;
        nargs = 1;
        break;

    case NGX_HTTP_TIMPUSH_OP_LIST:
        script = NGX_HTTP_TIMPUSH_SCRIPT_LIST;
        break;

    case NGX_HTTP_TIMPUSH_OP_LOGOUT:
        script = NGX_HTTP_TIMPUSH_SCRIPT_LOGOUT;
        args[0] = ctx->token;
        nargs = 1;
        break;

    case NGX_HTTP_TIMPUSH_OP_BACKGROUND:
        script = NGX_HTTP_TIMPUSH_SCRIPT_BACKGROUND;

        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        args[0] = ctx->token;
        args[1].data = p;
        args[1].len = ngx_sprintf(p, "%ui", ctx->unread) - p;
        nargs = 2;
        break;

    default: /* NGX_HTTP_TIMPUSH_OP_FOREGROUND */
        script = NGX_HTTP_TIMPUSH_SCRIPT_FOREGROUND;
        args[0] = ctx->token;
        nargs = 1;
        break;
    }

    if (ctx->op == NGX_HTTP_TIMPUSH_OP_REGISTER
        || ctx->op == NGX_HTTP_TIMPUSH_OP_UNREGISTER
        || ctx->op == NGX_HTTP_TIMPUSH_OP_LOGOUT)
    {
        /* tokens come and go: their reverse index with them (owner.c) */
        return ngx_http_timpush_api_own(r, ctx, script, args, nargs);
    }

    rc = ngx_http_timpush_store_run(script, &ctx->key, 1, args, nargs,
                                    ngx_http_timpush_api_reply, r,
                                    &ctx->cmd);

    if (rc == NGX_OK) {
        return NGX_DONE;
    }

    ctx->cmd = NULL;

    return ngx_http_timpush_api_store_error(r, rc);
}


static ngx_int_t
ngx_http_timpush_api_own(ngx_http_request_t *r,
    ngx_http_timpush_api_ctx_t *ctx, ngx_http_timpush_script_e script,
    ngx_str_t *args, ngx_uint_t nargs)
{
    ngx_int_t                  rc;
    ngx_http_timpush_owner_t  *o;

    o = ngx_http_timpush_owner_create(r->connection->log, &ctx->user);
    if (o == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (script == NGX_HTTP_TIMPUSH_SCRIPT_REGISTER) {
        rc = ngx_http_timpush_owner_register(o, &ctx->token, args, nargs,
                                             ngx_http_timpush_api_owned, r);

    } else {
        rc = ngx_http_timpush_owner_remove(o, script, args, nargs,
                                           ngx_http_timpush_api_owned, r);
    }

    if (rc != NGX_OK) {
        ngx_http_timpush_owner_destroy(o);

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_timpush_api_store_error(r, rc);
    }

    ctx->owner = o;

    return NGX_DONE;
}


static void
ngx_http_timpush_api_owned(void *data, ngx_http_timpush_owner_t *o,
    ngx_int_t rc)
{
    ngx_http_request_t *r = data;

    ngx_connection_t            *c;
    ngx_http_timpush_api_ctx_t  *ctx;

    c = r->connection;

    ctx = ngx_http_get_module_ctx(r, ngx_http_timpush_module);
    ctx->owner = NULL;

    rc = ngx_http_timpush_api_owner_answer(r, ctx, o, rc);

    /* the request may be freed in there */
    ngx_http_finalize_request(r, ngx_http_timpush_api_finish(r, rc));
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_timpush_api_owner_answer(ngx_http_request_t *r,
    ngx_http_timpush_api_ctx_t *ctx, ngx_http_timpush_owner_t *o,
    ngx_int_t rc)
{
    yajl_gen      g;
    ngx_array_t  *removed;

    if (rc == NGX_BUSY) {
        return ngx_http_timpush_api_error(r, NGX_HTTP_CONFLICT, "conflict",
                                  "token: registered meanwhile for user_id "
                                  "\"%V\", which keeps it (the last "
                                  "registration wins)",
                                  ngx_http_timpush_owner_holder(o));
    }

    if (rc != NGX_OK) {
        return ngx_http_timpush_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "store_unavailable", "%s",
                                          ngx_http_timpush_store_strerror(rc));
    }

    g = ngx_http_timpush_json_gen(r->pool);
    if (g == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    yajl_gen_map_open(g);

    removed = ngx_http_timpush_owner_removed(o);

    switch (ctx->op) {

    case NGX_HTTP_TIMPUSH_OP_REGISTER:
        rc = ngx_http_timpush_api_registered(r, ctx, o, g);
        break;

    case NGX_HTTP_TIMPUSH_OP_UNREGISTER:
        rc = ngx_http_timpush_json_key_bool(g, "removed", removed->nelts > 0);
        break;

    default: /* NGX_HTTP_TIMPUSH_OP_LOGOUT */
        rc = ngx_http_timpush_json_key_int(g, "removed", removed->nelts);
        break;
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    yajl_gen_map_close(g);

    return ngx_http_timpush_api_send(r, NGX_HTTP_OK, g);
}


/* a command could not be queued: NGX_BUSY, or Redis is not there */

ngx_int_t
ngx_http_timpush_api_store_error(ngx_http_request_t *r, ngx_int_t rc)
{
    if (rc == NGX_BUSY) {
        return ngx_http_timpush_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "overloaded",
                                          "too many requests are waiting "
                                          "for Redis; retry later");
    }

    return ngx_http_timpush_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "store_unavailable", "%s",
                                      ngx_http_timpush_store_strerror(
                                                               NGX_DECLINED));
}


static void
ngx_http_timpush_api_reply(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_request_t *r = data;

    ngx_connection_t            *c;
    ngx_http_timpush_api_ctx_t  *ctx;

    c = r->connection;

    ctx = ngx_http_get_module_ctx(r, ngx_http_timpush_module);
    ctx->cmd = NULL;

    if (rc != NGX_OK) {
        rc = ngx_http_timpush_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                        "store_unavailable", "%s",
                                        ngx_http_timpush_store_strerror(rc));

    } else {
        rc = ngx_http_timpush_api_answer(r, ctx, reply);
    }

    /* the request may be freed in there */
    ngx_http_finalize_request(r, ngx_http_timpush_api_finish(r, rc));
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_timpush_api_answer(ngx_http_request_t *r,
    ngx_http_timpush_api_ctx_t *ctx, redisReply *reply)
{
    yajl_gen   g;
    ngx_int_t  rc;

    g = ngx_http_timpush_json_gen(r->pool);
    if (g == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    yajl_gen_map_open(g);

    switch (ctx->op) {

    case NGX_HTTP_TIMPUSH_OP_LIST:
        rc = ngx_http_timpush_api_devices(r, ctx, reply, g);
        break;

    default: /* BACKGROUND, FOREGROUND */
        if (reply->type != REDIS_REPLY_INTEGER || reply->integer == 0) {
            return ngx_http_timpush_api_error(r, NGX_HTTP_NOT_FOUND,
                                              "not_found",
                                              "token: not registered for "
                                              "this user_id");
        }

        rc = ngx_http_timpush_json_key_str(g, "user_id", &ctx->user);
        rc |= ngx_http_timpush_json_key_str(g, "token", &ctx->token);

        if (ctx->op == NGX_HTTP_TIMPUSH_OP_BACKGROUND) {
            rc |= ngx_http_timpush_json_key_int(g, "badge", ctx->unread);
        }

        rc |= ngx_http_timpush_json_key_bool(g, "foreground",
                                     ctx->op == NGX_HTTP_TIMPUSH_OP_FOREGROUND);
        break;
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    yajl_gen_map_close(g);

    return ngx_http_timpush_api_send(r, NGX_HTTP_OK, g);
}


static ngx_int_t
ngx_http_timpush_api_registered(ngx_http_request_t *r,
    ngx_http_timpush_api_ctx_t *ctx, ngx_http_timpush_owner_t *o,
    yajl_gen g)
{
    u_char        buf[32], buf2[32];
    ngx_str_t    *kicked, *from;
    ngx_int_t     rc;
    ngx_uint_t    i;
    ngx_array_t  *removed;

    rc = ngx_http_timpush_json_key_str(g, "user_id", &ctx->user);
    rc |= ngx_http_timpush_json_key_str(g, "token", &ctx->token);
    rc |= ngx_http_timpush_json_key_int(g, "business_id", ctx->business_id);
    rc |= ngx_http_timpush_json_cstr(g, "kicked");

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    yajl_gen_array_open(g);

    removed = ngx_http_timpush_owner_removed(o);
    kicked = removed->elts;

    for (i = 0; i < removed->nelts; i++) {
        if (ngx_http_timpush_json_str(g, &kicked[i]) != NGX_OK) {
            return NGX_ERROR;
        }

        *ngx_http_timpush_short_token(buf, &kicked[i]) = '\0';
        *ngx_http_timpush_short_token(buf2, &ctx->token) = '\0';

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "timpush: user \"%V\" business_id %ui: device %s "
                      "kicked by the new device %s",
                      &ctx->user, ctx->business_id, buf, buf2);
    }

    yajl_gen_array_close(g);

    /* DESIGN §12: the account the device was logged into before */

    from = ngx_http_timpush_owner_moved_from(o);

    if (from && ngx_http_timpush_json_key_str(g, "moved_from", from)
                != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_api_devices(ngx_http_request_t *r,
    ngx_http_timpush_api_ctx_t *ctx, redisReply *reply, yajl_gen g)
{
    ngx_int_t                   rc;
    ngx_uint_t                  i;
    ngx_array_t                 devices;
    ngx_http_timpush_device_t  *d;

    if (ngx_array_init(&devices, r->pool, 4,
                       sizeof(ngx_http_timpush_device_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_timpush_api_collect(r, reply, &devices) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_qsort(devices.elts, devices.nelts, sizeof(ngx_http_timpush_device_t),
              ngx_http_timpush_device_cmp);

    rc = ngx_http_timpush_json_key_str(g, "user_id", &ctx->user);
    rc |= ngx_http_timpush_json_cstr(g, "devices");

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    yajl_gen_array_open(g);

    d = devices.elts;

    for (i = 0; i < devices.nelts; i++) {
        yajl_gen_map_open(g);

        rc = ngx_http_timpush_json_key_str(g, "token", &d[i].token);
        rc |= ngx_http_timpush_json_key_int(g, "business_id",
                                            d[i].business_id);
        rc |= ngx_http_timpush_json_key_int(g, "badge", d[i].badge);
        rc |= ngx_http_timpush_json_key_bool(g, "foreground",
                                             d[i].foreground);
        rc |= ngx_http_timpush_json_key_int(g, "registered_at",
                                            d[i].registered_at);
        if (rc != NGX_OK) {
            return NGX_ERROR;
        }

        yajl_gen_map_close(g);
    }

    yajl_gen_array_close(g);

    return NGX_OK;
}


/* HGETALL of a user: t:, r:, b:, f: fields, folded into devices */

static ngx_int_t
ngx_http_timpush_api_collect(ngx_http_request_t *r, redisReply *reply,
    ngx_array_t *devices)
{
    size_t                      i;
    u_char                      kind;
    ngx_str_t                   field, value;
    ngx_uint_t                  j;
    redisReply                 *f, *v;
    ngx_http_timpush_device_t  *d;

    if (reply->type != REDIS_REPLY_ARRAY) {
        return NGX_OK;
    }

    for (i = 0; i + 1 < reply->elements; i += 2) {
        f = reply->element[i];
        v = reply->element[i + 1];

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING
            || f->len < 3 || f->str[1] != ':')
        {
            continue;
        }

        kind = f->str[0];
        field.data = (u_char *) f->str + 2;
        field.len = f->len - 2;
        value.data = (u_char *) v->str;
        value.len = v->len;

        d = devices->elts;

        for (j = 0; j < devices->nelts; j++) {
            if (d[j].token.len == field.len
                && ngx_strncmp(d[j].token.data, field.data, field.len) == 0)
            {
                break;
            }
        }

        if (j == devices->nelts) {
            d = ngx_array_push(devices);
            if (d == NULL) {
                return NGX_ERROR;
            }

            ngx_memzero(d, sizeof(ngx_http_timpush_device_t));
            d->token = field;

        } else {
            d = &d[j];
        }

        switch (kind) {
        case 't':
            d->business_id = ngx_atoi(value.data, value.len);
            break;
        case 'r':
            d->registered_at = ngx_atoi(value.data, value.len);
            break;
        case 'b':
            d->badge = ngx_atoi(value.data, value.len);
            break;
        case 'f':
            d->foreground = 1;
            break;
        }
    }

    /* a device exists only with its t: field */

    d = devices->elts;
    j = 0;

    for (i = 0; i < devices->nelts; i++) {
        if (d[i].business_id != 0 && d[i].business_id != (ngx_uint_t) -1) {
            d[j++] = d[i];
        }
    }

    devices->nelts = j;

    return NGX_OK;
}


static int ngx_libc_cdecl
ngx_http_timpush_device_cmp(const void *one, const void *two)
{
    const ngx_http_timpush_device_t  *a = one, *b = two;

    if (a->registered_at != b->registered_at) {
        return a->registered_at < b->registered_at ? -1 : 1;
    }

    return ngx_memn2cmp(a->token.data, b->token.data, a->token.len,
                        b->token.len);
}


ngx_int_t
ngx_http_timpush_api_send(ngx_http_request_t *r, ngx_uint_t status,
    yajl_gen g)
{
    ngx_buf_t  *b;

    b = ngx_http_timpush_json_buf(r, g);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_timpush_api_send_buf(r, status, b);
}


/* the status, JSON headers and the buffer b, the whole answer */

ngx_int_t
ngx_http_timpush_api_send_buf(ngx_http_request_t *r, ngx_uint_t status,
    ngx_buf_t *b)
{
    ngx_int_t     rc;
    ngx_chain_t   out;

    rc = ngx_http_timpush_api_send_header(r, status, b->last - b->pos);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_timpush_api_send_header(ngx_http_request_t *r, ngx_uint_t status,
    off_t len)
{
    ngx_http_timpush_api_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_timpush_module);
    if (ctx) {
        ctx->own_answer = 1;
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    return ngx_http_send_header(r);
}


/* the generated text and a newline, as the last buffer of the answer */

static ngx_buf_t *
ngx_http_timpush_json_buf(ngx_http_request_t *r, yajl_gen g)
{
    size_t                len;
    ngx_buf_t            *b;
    const unsigned char  *json;

    if (yajl_gen_get_buf(g, &json, &len) != yajl_gen_status_ok) {
        return NULL;
    }

    b = ngx_create_temp_buf(r->pool, len + 1);
    if (b == NULL) {
        return NULL;
    }

    b->last = ngx_cpymem(b->last, json, len);
    *b->last++ = '\n';
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    return b;
}


/*
 * Validation and the store record the first error here and return
 * NGX_DECLINED; the request is answered once, by the caller at the top.
 */

ngx_int_t
ngx_http_timpush_api_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *fmt, ...)
{
    u_char                      *p, msg[512];
    va_list                      args;
    ngx_http_timpush_api_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_timpush_module);

    va_start(args, fmt);
    p = ngx_vslprintf(msg, msg + sizeof(msg) - 1, fmt, args);
    va_end(args);

    *p++ = '\0';

    ctx->error_message = ngx_pnalloc(r->pool, p - msg);
    if (ctx->error_message == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ctx->error_message, msg, p - msg);
    ctx->error_status = status;
    ctx->error_code = code;

    return NGX_DECLINED;
}


ngx_int_t
ngx_http_timpush_api_finish(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_buf_t                   *b;
    ngx_http_timpush_api_ctx_t  *ctx;

    if (rc != NGX_DECLINED) {
        return rc;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_timpush_module);

    if (ngx_http_timpush_api_error_json(r, ctx->error_code,
                                        (char *) ctx->error_message, &b)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_timpush_api_send_buf(r, ctx->error_status, b);
}


/* {"error":{"code":"...","message":"..."}} in a buffer of its own */

static ngx_int_t
ngx_http_timpush_api_error_json(ngx_http_request_t *r, const char *code,
    const char *message, ngx_buf_t **bp)
{
    yajl_gen  g;

    g = ngx_http_timpush_json_gen(r->pool);
    if (g == NULL) {
        return NGX_ERROR;
    }

    if (yajl_gen_map_open(g) != yajl_gen_status_ok
        || ngx_http_timpush_json_cstr(g, "error") != NGX_OK
        || yajl_gen_map_open(g) != yajl_gen_status_ok
        || ngx_http_timpush_json_cstr(g, "code") != NGX_OK
        || ngx_http_timpush_json_cstr(g, code) != NGX_OK
        || ngx_http_timpush_json_cstr(g, "message") != NGX_OK
        || ngx_http_timpush_json_cstr(g, message) != NGX_OK
        || yajl_gen_map_close(g) != yajl_gen_status_ok
        || yajl_gen_map_close(g) != yajl_gen_status_ok)
    {
        return NGX_ERROR;
    }

    *bp = ngx_http_timpush_json_buf(r, g);

    return *bp ? NGX_OK : NGX_ERROR;
}


static void
ngx_http_timpush_api_cleanup(void *data)
{
    ngx_http_timpush_api_ctx_t  *ctx = data;

    if (ctx->cmd) {
        ngx_http_timpush_store_forget(ctx->cmd);
        ctx->cmd = NULL;
    }

    if (ctx->owner) {
        /* its sequence goes on to its end without us */
        ngx_http_timpush_owner_detach(ctx->owner);
        ctx->owner = NULL;
    }
}


/*
 * nginx answers some requests itself before our handler runs: a body over
 * client_max_body_size (413), a method it refuses (405).  In an API
 * location those answers are given as JSON errors too.
 */

static ngx_int_t
ngx_http_timpush_api_header_filter(ngx_http_request_t *r)
{
    ngx_int_t                     rc;
    ngx_http_timpush_api_ctx_t   *ctx;
    ngx_http_timpush_loc_conf_t  *tlcf;

    if (r != r->main
        || (r->headers_out.status != NGX_HTTP_REQUEST_ENTITY_TOO_LARGE
            && r->headers_out.status != NGX_HTTP_NOT_ALLOWED))
    {
        return ngx_http_next_header_filter(r);
    }

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_timpush_module);
    ctx = ngx_http_get_module_ctx(r, ngx_http_timpush_module);

    if (!tlcf->api || (ctx && ctx->own_answer)) {
        return ngx_http_next_header_filter(r);
    }

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_timpush_api_ctx_t));
        if (ctx == NULL) {
            return NGX_ERROR;
        }

        /* nginx answered before the API saw the request: no endpoint */
        ctx->op = NGX_HTTP_TIMPUSH_OP_NONE;

        ngx_http_set_ctx(r, ctx, ngx_http_timpush_module);
    }

    /* the answer is made here, in full, and sent by the body filter */

    ctx->own_answer = 1;

    if (r->headers_out.status == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE
        && ctx->body_over)
    {
        rc = ngx_http_timpush_api_error_json(r, "body_too_large",
                                             "a device body is at most "
                                             "4096 bytes",
                                             &ctx->json_error);

    } else if (r->headers_out.status == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        rc = ngx_http_timpush_api_error_json(r, "body_too_large",
                                             "the body is larger than "
                                             "client_max_body_size",
                                             &ctx->json_error);
    } else {
        rc = ngx_http_timpush_api_error_json(r, "method_not_allowed",
                                             "this method is not allowed",
                                             &ctx->json_error);
    }

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_clear_content_length(r);
    r->headers_out.content_length_n = ctx->json_error->last
                                      - ctx->json_error->pos;

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.charset.len = 0;

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_http_timpush_api_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_chain_t                  *cl, out;
    ngx_http_timpush_api_ctx_t   *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_timpush_module);

    if (ctx == NULL || ctx->json_error == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    /* nginx's own page is dropped; the JSON goes with its last buffer */

    for (cl = in; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;

        if (cl->buf->last_buf) {
            out.buf = ctx->json_error;
            out.next = NULL;
            ctx->json_error = NULL;

            return ngx_http_next_body_filter(r, &out);
        }
    }

    return NGX_OK;
}


u_char *
ngx_http_timpush_short_token(u_char *buf, ngx_str_t *token)
{
    if (token->len <= 12) {
        return ngx_cpymem(buf, token->data, token->len);
    }

    return ngx_sprintf(buf, "%*s...%*s", (size_t) 6, token->data,
                       (size_t) 4, token->data + token->len - 4);
}
