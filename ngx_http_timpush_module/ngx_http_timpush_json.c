
/*
 * Copyright (C) timpush authors
 *
 * JSON through yajl: trees and generators tied to an nginx pool, so that
 * every exit path of a request frees them.  No I/O here.
 */


#include "ngx_http_timpush.h"


#define NGX_HTTP_TIMPUSH_JSON_DEPTH  32


static ngx_int_t ngx_http_timpush_json_depth(u_char *p, u_char *last);
static void ngx_http_timpush_json_tree_cleanup(void *data);
static void ngx_http_timpush_json_gen_cleanup(void *data);


/*
 * Parses a whole document.  yajl wants a NUL-terminated string, so a body
 * holding a NUL byte is refused here rather than silently cut short.
 * yajl checks that strings are valid UTF-8.
 */

yajl_val
ngx_http_timpush_json_parse(ngx_pool_t *pool, u_char *data, size_t len,
    u_char *err, size_t errlen)
{
    u_char              *copy, *nl;
    yajl_val             v;
    ngx_pool_cleanup_t  *cln;

    if (ngx_strlchr(data, data + len, '\0') != NULL) {
        ngx_cpystrn(err, (u_char *) "NUL byte in the body", errlen);
        return NULL;
    }

    if (ngx_http_timpush_json_depth(data, data + len) != NGX_OK) {
        ngx_cpystrn(err, (u_char *) "nested deeper than 32 levels", errlen);
        return NULL;
    }

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    copy = ngx_pnalloc(pool, len + 1);
    if (copy == NULL) {
        return NULL;
    }

    ngx_memcpy(copy, data, len);
    copy[len] = '\0';

    err[0] = '\0';

    v = yajl_tree_parse((char *) copy, (char *) err, errlen);
    if (v == NULL) {
        /* keep yajl's first line: the rest quotes the input back */
        nl = (u_char *) ngx_strchr(err, '\n');
        if (nl) {
            *nl = '\0';
        }

        if (err[0] == '\0') {
            ngx_cpystrn(err, (u_char *) "parse error", errlen);
        }

        return NULL;
    }

    cln->handler = ngx_http_timpush_json_tree_cleanup;
    cln->data = v;

    return v;
}


/*
 * yajl_tree_free() recurses: a body of nothing but "[[[[..." would take
 * the worker's stack.  Our bodies are shallow; deeper ones are refused
 * before a tree is built.  Brackets inside strings do not count.
 */

static ngx_int_t
ngx_http_timpush_json_depth(u_char *p, u_char *last)
{
    ngx_uint_t  depth, in_string;

    depth = 0;
    in_string = 0;

    for ( /* void */ ; p < last; p++) {

        if (in_string) {
            if (*p == '\\') {
                p++;

            } else if (*p == '"') {
                in_string = 0;
            }

            continue;
        }

        switch (*p) {

        case '"':
            in_string = 1;
            break;

        case '[':
        case '{':
            if (++depth > NGX_HTTP_TIMPUSH_JSON_DEPTH) {
                return NGX_DECLINED;
            }

            break;

        case ']':
        case '}':
            if (depth) {
                depth--;
            }

            break;
        }
    }

    return NGX_OK;
}


static void
ngx_http_timpush_json_tree_cleanup(void *data)
{
    yajl_tree_free(data);
}


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


/* the value of a key of an object, or NULL */

yajl_val
ngx_http_timpush_json_get(yajl_val obj, const char *key)
{
    size_t  i;

    if (!YAJL_IS_OBJECT(obj)) {
        return NULL;
    }

    for (i = 0; i < obj->u.object.len; i++) {
        if (ngx_strcmp(obj->u.object.keys[i], key) == 0) {
            return obj->u.object.values[i];
        }
    }

    return NULL;
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
