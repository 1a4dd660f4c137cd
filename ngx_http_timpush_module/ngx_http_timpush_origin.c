
/*
 * Copyright (C) timpush authors
 *
 * Browsers are refused (DESIGN §10).  The API is for backends, which send
 * no Origin header; a web page always does, even for a "simple" request
 * (text/plain, no preflight) that a browser sends without asking.  So a
 * request with an Origin is refused unless timpush_api allow_origin= lists
 * it, e.g. an operator's console; a listed origin gets the CORS headers
 * and its preflights answered.
 */


#include "ngx_http_timpush.h"


static ngx_table_elt_t *ngx_http_timpush_origin_header(ngx_http_request_t *r,
    const char *name, size_t len);
static ngx_int_t ngx_http_timpush_origin_allowed(
    ngx_http_timpush_loc_conf_t *tlcf, ngx_str_t *origin);
static ngx_int_t ngx_http_timpush_origin_add(ngx_http_request_t *r,
    const char *name, ngx_str_t *value);
static ngx_int_t ngx_http_timpush_origin_preflight(ngx_http_request_t *r);


/* timpush_api [allow_origin=URL ...] */

char *
ngx_http_timpush_origin_conf(ngx_conf_t *cf, ngx_http_timpush_loc_conf_t *tlcf)
{
    ngx_str_t   *value, *o;
    ngx_uint_t   i;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "allow_origin=", 13) != 0
            || value[i].len == 13)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "timpush_api: invalid parameter \"%V\"",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        if (tlcf->allow_origin == NULL) {
            tlcf->allow_origin = ngx_array_create(cf->pool, 2,
                                                  sizeof(ngx_str_t));
            if (tlcf->allow_origin == NULL) {
                return NGX_CONF_ERROR;
            }
        }

        o = ngx_array_push(tlcf->allow_origin);
        if (o == NULL) {
            return NGX_CONF_ERROR;
        }

        o->data = value[i].data + 13;
        o->len = value[i].len - 13;

        /* an origin is scheme://host[:port], compared as sent */

        if (ngx_strlchr(o->data, o->data + o->len, '/') == NULL
            || o->data[o->len - 1] == '/')
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "timpush_api: allow_origin=\"%V\" is not an "
                               "origin such as https://console.example.com "
                               "(no path, no trailing slash)", o);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/*
 * NGX_OK: go on (no Origin, or an allowed one, whose CORS headers are set);
 * NGX_DONE: a preflight, to be answered 204 with the headers set here;
 * NGX_DECLINED: refused, the error is recorded for the caller's answer;
 * NGX_ERROR.
 */

ngx_int_t
ngx_http_timpush_origin_check(ngx_http_request_t *r)
{
    ngx_str_t                     vary;
    ngx_table_elt_t              *h;
    ngx_http_timpush_loc_conf_t  *tlcf;

    h = ngx_http_timpush_origin_header(r, "origin", 6);
    if (h == NULL) {
        return NGX_OK;
    }

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_timpush_module);

    if (ngx_http_timpush_origin_allowed(tlcf, &h->value) != NGX_OK) {
        return ngx_http_timpush_api_error(r, NGX_HTTP_FORBIDDEN, "forbidden",
                                          "requests from web pages are "
                                          "refused (Origin header); the API "
                                          "is for backends, see "
                                          "timpush_api allow_origin=");
    }

    ngx_str_set(&vary, "Origin");

    if (ngx_http_timpush_origin_add(r, "Access-Control-Allow-Origin",
                                    &h->value)
        != NGX_OK
        || ngx_http_timpush_origin_add(r, "Vary", &vary) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (r->method == NGX_HTTP_OPTIONS) {
        return ngx_http_timpush_origin_preflight(r);
    }

    return NGX_OK;
}


static ngx_table_elt_t *
ngx_http_timpush_origin_header(ngx_http_request_t *r, const char *name,
    size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


static ngx_int_t
ngx_http_timpush_origin_allowed(ngx_http_timpush_loc_conf_t *tlcf,
    ngx_str_t *origin)
{
    ngx_str_t   *o;
    ngx_uint_t   i;

    if (tlcf->allow_origin == NULL) {
        return NGX_DECLINED;
    }

    o = tlcf->allow_origin->elts;

    for (i = 0; i < tlcf->allow_origin->nelts; i++) {
        if (o[i].len == origin->len
            && ngx_strncasecmp(o[i].data, origin->data, o[i].len) == 0)
        {
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_timpush_origin_add(ngx_http_request_t *r, const char *name,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value = *value;

    return NGX_OK;
}


/* OPTIONS with an allowed Origin: what the API takes, for ten minutes */

static ngx_int_t
ngx_http_timpush_origin_preflight(ngx_http_request_t *r)
{
    ngx_str_t         v;
    ngx_table_elt_t  *h;

    ngx_str_set(&v, "GET, PUT, POST, DELETE");

    if (ngx_http_timpush_origin_add(r, "Access-Control-Allow-Methods", &v)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    h = ngx_http_timpush_origin_header(r, "access-control-request-headers",
                                       30);
    if (h) {
        if (ngx_http_timpush_origin_add(r, "Access-Control-Allow-Headers",
                                        &h->value)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    ngx_str_set(&v, "600");

    if (ngx_http_timpush_origin_add(r, "Access-Control-Max-Age", &v)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_DONE;
}
