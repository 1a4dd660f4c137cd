
/*
 * Copyright (C) timpush authors
 *
 * JSON out through yajl: generators tied to an nginx pool, so that every
 * exit path of a request frees them, and escaping for text written without
 * one.  Bodies are read by ngx_http_timpush_body.c.  No I/O here.
 */


#include "ngx_http_timpush.h"


static void ngx_http_timpush_json_gen_cleanup(void *data);


yajl_gen
ngx_http_timpush_json_gen(ngx_pool_t *pool)
{
    yajl_gen             g;
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    g = yajl_gen_alloc(NULL);
    if (g == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_timpush_json_gen_cleanup;
    cln->data = g;

    return g;
}


static void
ngx_http_timpush_json_gen_cleanup(void *data)
{
    yajl_gen_free(data);
}


ngx_int_t
ngx_http_timpush_json_str(yajl_gen g, ngx_str_t *s)
{
    return yajl_gen_string(g, s->data, s->len) == yajl_gen_status_ok
           ? NGX_OK : NGX_ERROR;
}


ngx_int_t
ngx_http_timpush_json_cstr(yajl_gen g, const char *s)
{
    return yajl_gen_string(g, (const u_char *) s, ngx_strlen(s))
           == yajl_gen_status_ok ? NGX_OK : NGX_ERROR;
}


ngx_int_t
ngx_http_timpush_json_key_str(yajl_gen g, const char *key, ngx_str_t *value)
{
    if (ngx_http_timpush_json_cstr(g, key) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_timpush_json_str(g, value);
}


ngx_int_t
ngx_http_timpush_json_key_int(yajl_gen g, const char *key, int64_t value)
{
    if (ngx_http_timpush_json_cstr(g, key) != NGX_OK) {
        return NGX_ERROR;
    }

    return yajl_gen_integer(g, value) == yajl_gen_status_ok
           ? NGX_OK : NGX_ERROR;
}


ngx_int_t
ngx_http_timpush_json_key_bool(yajl_gen g, const char *key, ngx_uint_t value)
{
    if (ngx_http_timpush_json_cstr(g, key) != NGX_OK) {
        return NGX_ERROR;
    }

    return yajl_gen_bool(g, value ? 1 : 0) == yajl_gen_status_ok
           ? NGX_OK : NGX_ERROR;
}


/*
 * For text written without a generator: quotes, backslashes and control
 * characters escaped; UTF-8 (already validated) passes through.
 */

size_t
ngx_http_timpush_json_escape_len(ngx_str_t *s)
{
    size_t   n;
    u_char  *p, *last;

    n = s->len;
    last = s->data + s->len;

    for (p = s->data; p < last; p++) {
        if (*p == '"' || *p == '\\') {
            n++;

        } else if (*p < 0x20) {
            n += 5;
        }
    }

    return n;
}


u_char *
ngx_http_timpush_json_escape(u_char *dst, ngx_str_t *s)
{
    u_char  *p, *last;

    static u_char  hex[] = "0123456789abcdef";

    last = s->data + s->len;

    for (p = s->data; p < last; p++) {
        if (*p == '"' || *p == '\\') {
            *dst++ = '\\';
            *dst++ = *p;

        } else if (*p < 0x20) {
            *dst++ = '\\';
            *dst++ = 'u';
            *dst++ = '0';
            *dst++ = '0';
            *dst++ = hex[*p >> 4];
            *dst++ = hex[*p & 0xf];

        } else {
            *dst++ = *p;
        }
    }

    return dst;
}
