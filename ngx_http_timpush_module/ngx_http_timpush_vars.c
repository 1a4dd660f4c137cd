
/*
 * Copyright (C) timpush authors
 *
 * Variables for log_format (DESIGN §13): what an API request was about.
 * Empty ("-" in an access log) where they do not apply.  No variable
 * holds a whole device token: $timpush_token_short is "c0ffee...0001".
 *
 *   $timpush_recipients  users a push named (distinct)
 *   $timpush_sent        its notifications APNs accepted
 *   $timpush_failed      its notifications that failed, and users unread
 *   $timpush_skipped     its users or devices skipped
 *   $timpush_msg_id      its msg_id
 *   $timpush_user        the path's user id, percent-decoded
 *   $timpush_token_short the path's (or a logout body's) token, shortened
 */


#include "ngx_http_timpush.h"


#define NGX_HTTP_TIMPUSH_VAR_RECIPIENTS   0
#define NGX_HTTP_TIMPUSH_VAR_SENT         1
#define NGX_HTTP_TIMPUSH_VAR_FAILED       2
#define NGX_HTTP_TIMPUSH_VAR_SKIPPED      3
#define NGX_HTTP_TIMPUSH_VAR_MSG_ID       4
#define NGX_HTTP_TIMPUSH_VAR_USER         5
#define NGX_HTTP_TIMPUSH_VAR_TOKEN_SHORT  6


static ngx_int_t ngx_http_timpush_var(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_http_variable_t  ngx_http_timpush_vars[] = {

    { ngx_string("timpush_recipients"), NULL, ngx_http_timpush_var,
      NGX_HTTP_TIMPUSH_VAR_RECIPIENTS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("timpush_sent"), NULL, ngx_http_timpush_var,
      NGX_HTTP_TIMPUSH_VAR_SENT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("timpush_failed"), NULL, ngx_http_timpush_var,
      NGX_HTTP_TIMPUSH_VAR_FAILED, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("timpush_skipped"), NULL, ngx_http_timpush_var,
      NGX_HTTP_TIMPUSH_VAR_SKIPPED, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("timpush_msg_id"), NULL, ngx_http_timpush_var,
      NGX_HTTP_TIMPUSH_VAR_MSG_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("timpush_user"), NULL, ngx_http_timpush_var,
      NGX_HTTP_TIMPUSH_VAR_USER, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("timpush_token_short"), NULL, ngx_http_timpush_var,
      NGX_HTTP_TIMPUSH_VAR_TOKEN_SHORT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_timpush_vars_add(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_timpush_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_var(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    u_char                           *p;
    ngx_str_t                        *s;
    ngx_uint_t                        n;
    ngx_http_timpush_request_info_t  *info;

    info = ngx_http_timpush_api_info(r);

    if (info == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case NGX_HTTP_TIMPUSH_VAR_MSG_ID:
    case NGX_HTTP_TIMPUSH_VAR_USER:
        s = (data == NGX_HTTP_TIMPUSH_VAR_USER) ? &info->user : &info->msg_id;

        if (s->len == 0) {
            v->not_found = 1;
            return NGX_OK;
        }

        v->data = s->data;
        v->len = s->len;
        break;

    case NGX_HTTP_TIMPUSH_VAR_TOKEN_SHORT:
        if (info->token.len == 0) {
            v->not_found = 1;
            return NGX_OK;
        }

        p = ngx_pnalloc(r->pool, 32);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;
        v->len = ngx_http_timpush_short_token(p, &info->token) - p;
        break;

    default: /* the counts of a push */
        if (!info->pushed) {
            v->not_found = 1;
            return NGX_OK;
        }

        n = (data == NGX_HTTP_TIMPUSH_VAR_RECIPIENTS) ? info->recipients
            : (data == NGX_HTTP_TIMPUSH_VAR_SENT) ? info->sent
            : (data == NGX_HTTP_TIMPUSH_VAR_FAILED) ? info->failed
            : info->skipped;

        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;
        v->len = ngx_sprintf(p, "%ui", n) - p;
        break;
    }

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}
