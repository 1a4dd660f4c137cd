
/*
 * Copyright (C) timpush authors
 *
 * One strict JSON reader for every request body (DESIGN §10).
 *
 * The tree is built from yajl's callbacks rather than by yajl_tree_parse():
 * yajl's tree parser accepts comments (and a '"' inside a comment once hid
 * every bracket from a depth check made beside it), cuts a string at
 * "\u0000", lets overlong forms through, mallocs outside the pool and
 * frees by recursion.  Here the depth is counted in the callbacks, every
 * string is checked again, and only what the caller's schema names is
 * kept, in the pool: a value not kept costs nothing but its parsing.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <yajl/yajl_parse.h>

#include "ngx_http_timpush_body.h"


typedef struct {
    ngx_pool_t                     *pool;
    ngx_http_timpush_body_want_pt   want_value;
    ngx_uint_t                      max_elements;
    ngx_http_timpush_json_t        *root;
    ngx_http_timpush_json_t        *open[NGX_HTTP_TIMPUSH_BODY_KEEP];
    ngx_http_timpush_json_t        *last[NGX_HTTP_TIMPUSH_BODY_KEEP];
    ngx_str_t                       key;       /* of the member now read */
    ngx_uint_t                      depth;     /* kept containers open */
    ngx_uint_t                      skip;      /* open, not kept */
    const char                     *error;
    unsigned                        want:1;    /* the member is kept */
    unsigned                        nomem:1;
} ngx_http_timpush_body_ctx_t;


static const char *ngx_http_timpush_body_scan(u_char *p, u_char *last);
static ngx_int_t ngx_http_timpush_body_hex4(u_char *p, u_char *last,
    uint32_t *v);
static ngx_uint_t ngx_http_timpush_body_keep(ngx_http_timpush_body_ctx_t *ctx,
    const u_char *key, size_t len);
static ngx_http_timpush_json_t *ngx_http_timpush_body_add(
    ngx_http_timpush_body_ctx_t *ctx, ngx_uint_t type);
static int ngx_http_timpush_body_on_null(void *data);
static int ngx_http_timpush_body_on_boolean(void *data, int value);
static int ngx_http_timpush_body_on_number(void *data, const char *s,
    size_t len);
static int ngx_http_timpush_body_add_text(ngx_http_timpush_body_ctx_t *ctx,
    ngx_uint_t type, const u_char *s, size_t len);
static ngx_int_t ngx_http_timpush_body_text(ngx_http_timpush_body_ctx_t *ctx,
    const u_char *s, size_t len, ngx_uint_t key);
static int ngx_http_timpush_body_on_string(void *data, const u_char *s,
    size_t len);
static int ngx_http_timpush_body_on_key(void *data, const u_char *s,
    size_t len);
static int ngx_http_timpush_body_on_open_object(void *data);
static int ngx_http_timpush_body_on_open_array(void *data);
static int ngx_http_timpush_body_on_open(ngx_http_timpush_body_ctx_t *ctx,
    ngx_uint_t type);
static int ngx_http_timpush_body_on_close(void *data);


static yajl_callbacks  ngx_http_timpush_body_callbacks = {
    ngx_http_timpush_body_on_null,
    ngx_http_timpush_body_on_boolean,
    NULL,
    NULL,
    ngx_http_timpush_body_on_number,
    ngx_http_timpush_body_on_string,
    ngx_http_timpush_body_on_open_object,
    ngx_http_timpush_body_on_key,
    ngx_http_timpush_body_on_close,
    ngx_http_timpush_body_on_open_array,
    ngx_http_timpush_body_on_close
};


ngx_int_t
ngx_http_timpush_body_parse(ngx_pool_t *pool, u_char *data, size_t len,
    ngx_http_timpush_body_want_pt want, ngx_uint_t max_elements,
    ngx_http_timpush_json_t **root, ngx_http_timpush_body_err_t *err)
{
    u_char                       *text, *nl;
    yajl_handle                   h;
    yajl_status                   st;
    ngx_http_timpush_body_ctx_t   ctx;

    *root = NULL;

    if (len == 0) {
        return ngx_http_timpush_body_error(err, "invalid_json", "empty body");
    }

    /* yajl stops at a raw NUL as at the end of the text: say why */

    if (ngx_strlchr(data, data + len, '\0') != NULL) {
        return ngx_http_timpush_body_error(err, "invalid_json",
                                           "NUL byte in the body");
    }

    text = (u_char *) ngx_http_timpush_body_scan(data, data + len);
    if (text) {
        return ngx_http_timpush_body_error(err, "invalid_json", "%s", text);
    }

    ngx_memzero(&ctx, sizeof(ngx_http_timpush_body_ctx_t));
    ctx.pool = pool;
    ctx.want_value = want;
    ctx.max_elements = max_elements;

    /* yajl's defaults are strict: no comments, no trailing garbage */

    h = yajl_alloc(&ngx_http_timpush_body_callbacks, NULL, &ctx);
    if (h == NULL) {
        return NGX_ERROR;
    }

    st = yajl_parse(h, data, len);

    if (st == yajl_status_ok) {
        st = yajl_complete_parse(h);
    }

    if (st == yajl_status_ok) {
        yajl_free(h);
        *root = ctx.root;
        return NGX_OK;
    }

    if (ctx.nomem) {
        yajl_free(h);
        return NGX_ERROR;
    }

    if (ctx.error) {
        yajl_free(h);
        return ngx_http_timpush_body_error(err, "invalid_json", "%s",
                                           ctx.error);
    }

    /* keep yajl's first line: its verbose form quotes the input back */

    text = yajl_get_error(h, 0, NULL, 0);
    if (text == NULL) {
        yajl_free(h);
        return NGX_ERROR;
    }

    nl = (u_char *) ngx_strchr(text, '\n');
    if (nl) {
        *nl = '\0';
    }

    (void) ngx_http_timpush_body_error(err, "invalid_json", "%s", text);

    yajl_free_error(h, text);
    yajl_free(h);

    return NGX_DECLINED;
}


/*
 * What yajl lets through, found by fuzzing against a strict reader: a
 * string left open at the very end (taken for a token still to come,
 * even after a complete document), a high surrogate escape not followed
 * by a low one (made "?", or merged with the next escape: "\ud800\u0000"
 * became U+10000 and hid the NUL), and \v and \f taken for whitespace.
 * One pass over the body, before yajl's.
 */

static const char *
ngx_http_timpush_body_scan(u_char *p, u_char *last)
{
    uint32_t    v, low;
    ngx_uint_t  in_string;

    in_string = 0;

    while (p < last) {

        if (!in_string) {
            if (*p == '"') {
                in_string = 1;

            } else if (*p == '\v' || *p == '\f') {
                return "\\v or \\f outside a string";
            }

            p++;
            continue;
        }

        if (*p == '"') {
            in_string = 0;
            p++;
            continue;
        }

        if (*p != '\\') {
            p++;
            continue;
        }

        /* an escape: \uXXXX is checked, any other is yajl's */

        if (last - p < 2 || p[1] != 'u') {
            p += 2;
            continue;
        }

        if (ngx_http_timpush_body_hex4(p + 2, last, &v) != NGX_OK) {
            /* yajl says what is wrong with it */
            return NULL;
        }

        p += 6;

        if (v >= 0xdc00 && v <= 0xdfff) {
            return "a low surrogate escape without a high one";
        }

        if (v < 0xd800 || v > 0xdbff) {
            continue;
        }

        if (last - p < 6 || p[0] != '\\' || p[1] != 'u'
            || ngx_http_timpush_body_hex4(p + 2, last, &low) != NGX_OK
            || low < 0xdc00 || low > 0xdfff)
        {
            return "a high surrogate escape without a low one";
        }

        p += 6;
    }

    if (in_string) {
        return "a string left open";
    }

    return NULL;
}


static ngx_int_t
ngx_http_timpush_body_hex4(u_char *p, u_char *last, uint32_t *v)
{
    u_char      c;
    ngx_uint_t  i;

    if (last - p < 4) {
        return NGX_DECLINED;
    }

    *v = 0;

    for (i = 0; i < 4; i++) {
        c = ngx_tolower(p[i]);

        if (c >= '0' && c <= '9') {
            *v = (*v << 4) | (c - '0');

        } else if (c >= 'a' && c <= 'f') {
            *v = (*v << 4) | (c - 'a' + 10);

        } else {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/*
 * Whether the value about to start is kept: not inside a container that
 * is not; a member as decided at its key; an element or the root by the
 * schema; never deeper than the tree goes.
 */

static ngx_uint_t
ngx_http_timpush_body_keep(ngx_http_timpush_body_ctx_t *ctx,
    const u_char *key, size_t len)
{
    ngx_http_timpush_json_t  *parent;

    if (ctx->skip || ctx->depth == NGX_HTTP_TIMPUSH_BODY_KEEP) {
        return 0;
    }

    if (ctx->depth == 0) {
        return 1;
    }

    parent = ctx->open[ctx->depth - 1];

    if (parent->type == NGX_HTTP_TIMPUSH_JSON_OBJECT) {
        return ctx->want;
    }

    if (ctx->max_elements && parent->nchildren >= ctx->max_elements) {
        /* counted, not kept */
        parent->nchildren++;
        parent->overflow = 1;
        return 0;
    }

    return ctx->want_value(ctx->open, ctx->depth, key, len);
}


static ngx_http_timpush_json_t *
ngx_http_timpush_body_add(ngx_http_timpush_body_ctx_t *ctx, ngx_uint_t type)
{
    ngx_uint_t                d;
    ngx_http_timpush_json_t  *v, *parent;

    d = ctx->depth;

    v = ngx_pcalloc(ctx->pool, sizeof(ngx_http_timpush_json_t));
    if (v == NULL) {
        ctx->nomem = 1;
        return NULL;
    }

    v->type = type;

    if (d == 0) {
        ctx->root = v;
        return v;
    }

    parent = ctx->open[d - 1];

    if (parent->type == NGX_HTTP_TIMPUSH_JSON_OBJECT) {
        v->key = ctx->key;
    }

    if (ctx->last[d - 1]) {
        ctx->last[d - 1]->next = v;

    } else {
        parent->child = v;
    }

    ctx->last[d - 1] = v;
    parent->nchildren++;

    return v;
}


static int
ngx_http_timpush_body_on_null(void *data)
{
    ngx_http_timpush_body_ctx_t  *ctx = data;

    if (!ngx_http_timpush_body_keep(ctx, NULL, 0)) {
        return 1;
    }

    return ngx_http_timpush_body_add(ctx, NGX_HTTP_TIMPUSH_JSON_NULL) != NULL;
}


static int
ngx_http_timpush_body_on_boolean(void *data, int value)
{
    ngx_http_timpush_body_ctx_t  *ctx = data;

    if (!ngx_http_timpush_body_keep(ctx, NULL, 0)) {
        return 1;
    }

    return ngx_http_timpush_body_add(ctx, value ? NGX_HTTP_TIMPUSH_JSON_TRUE
                                                : NGX_HTTP_TIMPUSH_JSON_FALSE)
           != NULL;
}


/*
 * Numbers are kept as text: a number too large for a C type in a field
 * timpush never reads (a custom element's data) must not refuse the body.
 */

static int
ngx_http_timpush_body_on_number(void *data, const char *s, size_t len)
{
    ngx_http_timpush_body_ctx_t  *ctx = data;

    if (!ngx_http_timpush_body_keep(ctx, NULL, 0)) {
        return 1;
    }

    return ngx_http_timpush_body_add_text(ctx, NGX_HTTP_TIMPUSH_JSON_NUMBER,
                                          (const u_char *) s, len);
}


/* a number or a string: its text, copied */

static int
ngx_http_timpush_body_add_text(ngx_http_timpush_body_ctx_t *ctx,
    ngx_uint_t type, const u_char *s, size_t len)
{
    ngx_http_timpush_json_t  *v;

    v = ngx_http_timpush_body_add(ctx, type);
    if (v == NULL) {
        return 0;
    }

    if (len == 0) {
        ngx_str_set(&v->str, "");
        return 1;
    }

    v->str.data = ngx_pnalloc(ctx->pool, len);
    if (v->str.data == NULL) {
        ctx->nomem = 1;
        return 0;
    }

    ngx_memcpy(v->str.data, s, len);
    v->str.len = len;

    return 1;
}


/*
 * Every string and key, read or not: yajl lets overlong forms, surrogates
 * and code points above U+10FFFF through, makes surrogates of lone
 * "\uDC00" escapes, and turns "\u0000" into a NUL that C code would take
 * for the end (a logout of "<token>\u0000zz" logged out <token>).
 */

static ngx_int_t
ngx_http_timpush_body_text(ngx_http_timpush_body_ctx_t *ctx, const u_char *s,
    size_t len, ngx_uint_t key)
{
    if (ngx_strlchr((u_char *) s, (u_char *) s + len, '\0') != NULL) {
        ctx->error = key ? "\\u0000 in a key" : "\\u0000 in a string";
        return NGX_DECLINED;
    }

    if (ngx_http_timpush_utf8_check((u_char *) s, len, 0) != NGX_OK) {
        ctx->error = key ? "invalid UTF-8 in a key"
                         : "invalid UTF-8 in a string";
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static int
ngx_http_timpush_body_on_string(void *data, const u_char *s, size_t len)
{
    ngx_http_timpush_body_ctx_t  *ctx = data;

    if (ngx_http_timpush_body_text(ctx, s, len, 0) != NGX_OK) {
        return 0;
    }

    if (!ngx_http_timpush_body_keep(ctx, NULL, 0)) {
        return 1;
    }

    return ngx_http_timpush_body_add_text(ctx, NGX_HTTP_TIMPUSH_JSON_STRING,
                                          s, len);
}


static int
ngx_http_timpush_body_on_key(void *data, const u_char *s, size_t len)
{
    ngx_http_timpush_json_t      *v;
    ngx_http_timpush_body_ctx_t  *ctx = data;

    if (ngx_http_timpush_body_text(ctx, s, len, 1) != NGX_OK) {
        return 0;
    }

    if (ctx->skip || ctx->depth == NGX_HTTP_TIMPUSH_BODY_KEEP) {
        ctx->want = 0;
        return 1;
    }

    ctx->want = ctx->want_value(ctx->open, ctx->depth, s, len);

    if (!ctx->want) {
        return 1;
    }

    /* a repeated member: the first one counts, the others are not kept */

    for (v = ctx->open[ctx->depth - 1]->child; v; v = v->next) {
        if (v->key.len == len && ngx_memcmp(v->key.data, s, len) == 0) {
            ctx->want = 0;
            return 1;
        }
    }

    ctx->key.len = len;
    ctx->key.data = ngx_pnalloc(ctx->pool, len);
    if (ctx->key.data == NULL) {
        ctx->nomem = 1;
        return 0;
    }

    ngx_memcpy(ctx->key.data, s, len);

    return 1;
}


static int
ngx_http_timpush_body_on_open_object(void *data)
{
    return ngx_http_timpush_body_on_open(data, NGX_HTTP_TIMPUSH_JSON_OBJECT);
}


static int
ngx_http_timpush_body_on_open_array(void *data)
{
    return ngx_http_timpush_body_on_open(data, NGX_HTTP_TIMPUSH_JSON_ARRAY);
}


static int
ngx_http_timpush_body_on_open(ngx_http_timpush_body_ctx_t *ctx,
    ngx_uint_t type)
{
    ngx_http_timpush_json_t  *v;

    /* yajl itself keeps a byte per level: the limit is ours */

    if (ctx->depth + ctx->skip >= NGX_HTTP_TIMPUSH_BODY_DEPTH) {
        ctx->error = "nested deeper than 32 levels";
        return 0;
    }

    if (!ngx_http_timpush_body_keep(ctx, NULL, 0)) {
        ctx->skip++;
        return 1;
    }

    v = ngx_http_timpush_body_add(ctx, type);
    if (v == NULL) {
        return 0;
    }

    ctx->open[ctx->depth] = v;
    ctx->last[ctx->depth] = NULL;
    ctx->depth++;

    return 1;
}


static int
ngx_http_timpush_body_on_close(void *data)
{
    ngx_http_timpush_body_ctx_t  *ctx = data;

    if (ctx->skip) {
        ctx->skip--;

    } else {
        ctx->depth--;
    }

    return 1;
}


ngx_uint_t
ngx_http_timpush_body_want_flat(ngx_http_timpush_json_t **open,
    ngx_uint_t depth, const u_char *key, size_t len)
{
    return depth == 1 && key != NULL;
}


ngx_http_timpush_json_t *
ngx_http_timpush_body_get(ngx_http_timpush_json_t *obj, const char *key)
{
    size_t                    len;
    ngx_http_timpush_json_t  *v;

    len = ngx_strlen(key);

    for (v = obj->child; v; v = v->next) {
        if (v->key.len == len && ngx_memcmp(v->key.data, key, len) == 0) {
            return v->type == NGX_HTTP_TIMPUSH_JSON_NULL ? NULL : v;
        }
    }

    return NULL;
}


ngx_int_t
ngx_http_timpush_body_object(ngx_http_timpush_json_t *obj, const char *key,
    ngx_http_timpush_json_t **value, ngx_http_timpush_body_err_t *err)
{
    ngx_http_timpush_json_t  *v;

    *value = NULL;

    v = ngx_http_timpush_body_get(obj, key);
    if (v == NULL) {
        return NGX_OK;
    }

    if (v->type != NGX_HTTP_TIMPUSH_JSON_OBJECT) {
        return ngx_http_timpush_body_error(err, "invalid_field",
                                           "%s: must be an object", key);
    }

    *value = v;

    return NGX_OK;
}


/* an optional string: empty when absent */

ngx_int_t
ngx_http_timpush_body_str(ngx_http_timpush_json_t *obj, const char *prefix,
    const char *key, ngx_str_t *value, ngx_http_timpush_body_err_t *err)
{
    ngx_http_timpush_json_t  *v;

    ngx_str_set(value, "");

    if (obj == NULL) {
        return NGX_OK;
    }

    v = ngx_http_timpush_body_get(obj, key);
    if (v == NULL) {
        return NGX_OK;
    }

    if (v->type != NGX_HTTP_TIMPUSH_JSON_STRING) {
        return ngx_http_timpush_body_error(err, "invalid_field",
                                           "%s%s: must be a string",
                                           prefix, key);
    }

    *value = v->str;

    return NGX_OK;
}


ngx_int_t
ngx_http_timpush_body_bool(ngx_http_timpush_json_t *obj, const char *prefix,
    const char *key, ngx_uint_t *value, ngx_http_timpush_body_err_t *err)
{
    ngx_http_timpush_json_t  *v;

    *value = 0;

    if (obj == NULL) {
        return NGX_OK;
    }

    v = ngx_http_timpush_body_get(obj, key);
    if (v == NULL) {
        return NGX_OK;
    }

    if (v->type != NGX_HTTP_TIMPUSH_JSON_TRUE
        && v->type != NGX_HTTP_TIMPUSH_JSON_FALSE)
    {
        return ngx_http_timpush_body_error(err, "invalid_field",
                                           "%s%s: must be true or false",
                                           prefix, key);
    }

    *value = (v->type == NGX_HTTP_TIMPUSH_JSON_TRUE);

    return NGX_OK;
}


ngx_int_t
ngx_http_timpush_body_int(ngx_http_timpush_json_t *obj, const char *key,
    int64_t min, int64_t max, int64_t *value, ngx_http_timpush_body_err_t *err)
{
    u_char                   *p, *last;
    int64_t                   n;
    ngx_uint_t                neg;
    ngx_http_timpush_json_t  *v;

    v = ngx_http_timpush_body_get(obj, key);
    if (v == NULL) {
        return NGX_DONE;
    }

    if (v->type != NGX_HTTP_TIMPUSH_JSON_NUMBER) {
        goto invalid;
    }

    p = v->str.data;
    last = p + v->str.len;
    neg = (p < last && *p == '-');
    p += neg;

    /* 18 digits cannot overflow; JSON has no leading zeros */

    if (p == last || last - p > 18) {
        goto invalid;
    }

    for (n = 0; p < last; p++) {
        if (*p < '0' || *p > '9') {
            goto invalid;
        }

        n = n * 10 + (*p - '0');
    }

    n = neg ? -n : n;

    if (n < min || n > max) {
        goto invalid;
    }

    *value = n;

    return NGX_OK;

invalid:

    return ngx_http_timpush_body_error(err, "invalid_field",
                                       "%s: must be an integer from %L to %L",
                                       key, min, max);
}


ngx_int_t
ngx_http_timpush_utf8_check(u_char *p, size_t len, ngx_uint_t controls)
{
    u_char      c, *last;
    uint32_t    u, min;
    ngx_uint_t  i, n;

    last = p + len;

    while (p < last) {
        c = *p;

        if (c < 0x80) {
            if (controls && (c < 0x20 || c == 0x7f)) {
                return NGX_DECLINED;
            }

            p++;
            continue;
        }

        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            u = c & 0x1f;
            min = 0x80;

        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            u = c & 0x0f;
            min = 0x800;

        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            u = c & 0x07;
            min = 0x10000;

        } else {
            return NGX_DECLINED;
        }

        if ((size_t) (last - p) <= n) {
            return NGX_DECLINED;
        }

        for (i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) {
                return NGX_DECLINED;
            }

            u = (u << 6) | (p[i] & 0x3f);
        }

        if (u < min || u > 0x10ffff || (u >= 0xd800 && u <= 0xdfff)) {
            return NGX_DECLINED;
        }

        if (controls && u <= 0x9f) {
            return NGX_DECLINED;
        }

        p += n + 1;
    }

    return NGX_OK;
}


ngx_uint_t
ngx_http_timpush_json_is(ngx_str_t *s, const char *name)
{
    size_t  len;

    len = ngx_strlen(name);

    return s->len == len && ngx_memcmp(s->data, name, len) == 0;
}


ngx_int_t
ngx_http_timpush_body_error(ngx_http_timpush_body_err_t *err,
    const char *code, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    err->code = code;

    va_start(args, fmt);
    p = ngx_vslprintf(err->msg, err->msg + sizeof(err->msg) - 1, fmt, args);
    va_end(args);

    *p = '\0';

    return NGX_DECLINED;
}
