
/*
 * Copyright (C) timpush authors
 *
 * Request bodies (DESIGN §10): one strict JSON reader for every body of
 * the API.  No comments, no trailing garbage, strict UTF-8, no NUL byte
 * and no "\u0000", at most NGX_HTTP_TIMPUSH_BODY_DEPTH levels counted by
 * the parser itself, no lone surrogate escape, only JSON's whitespace.
 * Only the values a caller's schema names are kept,
 * in pool memory: neither memory nor recursion depends on what else a
 * body holds.  No nginx I/O here, so that t/unit and t/fuzz link it alone.
 */


#ifndef _NGX_HTTP_TIMPUSH_BODY_H_INCLUDED_
#define _NGX_HTTP_TIMPUSH_BODY_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* nesting allowed in a body, kept or not */
#define NGX_HTTP_TIMPUSH_BODY_DEPTH    32

/* containers kept, the root included */
#define NGX_HTTP_TIMPUSH_BODY_KEEP     4

#define NGX_HTTP_TIMPUSH_JSON_NULL     0
#define NGX_HTTP_TIMPUSH_JSON_FALSE    1
#define NGX_HTTP_TIMPUSH_JSON_TRUE     2
#define NGX_HTTP_TIMPUSH_JSON_NUMBER   3
#define NGX_HTTP_TIMPUSH_JSON_STRING   4
#define NGX_HTTP_TIMPUSH_JSON_OBJECT   5
#define NGX_HTTP_TIMPUSH_JSON_ARRAY    6


typedef struct ngx_http_timpush_json_s  ngx_http_timpush_json_t;

struct ngx_http_timpush_json_s {
    ngx_str_t                   key;       /* as a member of an object */
    ngx_str_t                   str;       /* a string, a number's text */
    ngx_http_timpush_json_t    *child;
    ngx_http_timpush_json_t    *next;
    ngx_uint_t                  nchildren; /* members kept; elements
                                              given, kept or not */
    ngx_uint_t                  type;
    unsigned                    overflow:1; /* more than max_elements */
};


typedef struct {
    const char                 *code;      /* "invalid_json",
                                              "invalid_field" or
                                              "payload_too_large" */
    u_char                      msg[256];  /* NUL-terminated; names the
                                              field, never quotes the
                                              request */
} ngx_http_timpush_body_err_t;


/*
 * The schema: whether the value about to start is kept.  open[0..depth-1]
 * are the containers kept that enclose it (depth 0: the root); key is its
 * member name, or NULL for an element of an array.  Called only for values
 * whose enclosing containers are all kept, and never at depth
 * NGX_HTTP_TIMPUSH_BODY_KEEP.
 */
typedef ngx_uint_t (*ngx_http_timpush_body_want_pt)(
    ngx_http_timpush_json_t **open, ngx_uint_t depth, const u_char *key,
    size_t len);


/*
 * NGX_OK: *root is the tree of what want() kept (the root is always
 * kept).  An array kept stores at most max_elements elements; past that
 * it only counts them and has overflow set.  NGX_DECLINED: err says why
 * ("invalid_json").  NGX_ERROR: no memory.
 */
ngx_int_t ngx_http_timpush_body_parse(ngx_pool_t *pool, u_char *data,
    size_t len, ngx_http_timpush_body_want_pt want, ngx_uint_t max_elements,
    ngx_http_timpush_json_t **root, ngx_http_timpush_body_err_t *err);

/* a schema for device bodies: an object, the members named, scalars */
ngx_uint_t ngx_http_timpush_body_want_flat(ngx_http_timpush_json_t **open,
    ngx_uint_t depth, const u_char *key, size_t len);

/* the first member of that name; null counts as absent */
ngx_http_timpush_json_t *ngx_http_timpush_body_get(
    ngx_http_timpush_json_t *obj, const char *key);

ngx_int_t ngx_http_timpush_body_object(ngx_http_timpush_json_t *obj,
    const char *key, ngx_http_timpush_json_t **value,
    ngx_http_timpush_body_err_t *err);
ngx_int_t ngx_http_timpush_body_str(ngx_http_timpush_json_t *obj,
    const char *prefix, const char *key, ngx_str_t *value,
    ngx_http_timpush_body_err_t *err);
ngx_int_t ngx_http_timpush_body_bool(ngx_http_timpush_json_t *obj,
    const char *prefix, const char *key, ngx_uint_t *value,
    ngx_http_timpush_body_err_t *err);

/*
 * An integer from min to max, written as one (no fraction or exponent);
 * NGX_DONE when absent (value untouched).
 */
ngx_int_t ngx_http_timpush_body_int(ngx_http_timpush_json_t *obj,
    const char *key, int64_t min, int64_t max, int64_t *value,
    ngx_http_timpush_body_err_t *err);

/*
 * Well-formed UTF-8 (no overlong forms, surrogates or code points above
 * U+10FFFF); with controls, also no C0, DEL or C1 control characters.
 */
ngx_int_t ngx_http_timpush_utf8_check(u_char *p, size_t len,
    ngx_uint_t controls);

ngx_uint_t ngx_http_timpush_json_is(ngx_str_t *s, const char *name);

/* records the first error: code and message; returns NGX_DECLINED */
ngx_int_t ngx_http_timpush_body_error(ngx_http_timpush_body_err_t *err,
    const char *code, const char *fmt, ...);


#endif /* _NGX_HTTP_TIMPUSH_BODY_H_INCLUDED_ */
