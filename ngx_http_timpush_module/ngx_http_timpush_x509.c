
/*
 * Copyright (C) timpush authors
 *
 * What the gateway and the APNs simulator both read of a certificate,
 * and the gateway's TLS client contexts (APNs, Redis): linked into both
 * modules (each its own .so).
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_timpush_x509.h"


ngx_int_t
ngx_http_timpush_cert_uid(ngx_pool_t *pool, X509 *cert, ngx_str_t *uid)
{
    int               i, n;
    u_char           *utf8;
    X509_NAME        *name;
    X509_NAME_ENTRY  *entry;

    name = X509_get_subject_name(cert);

    i = X509_NAME_get_index_by_NID(name, NID_userId, -1);
    if (i < 0) {
        return NGX_DECLINED;
    }

    entry = X509_NAME_get_entry(name, i);

    n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(entry));
    if (n <= 0) {
        return NGX_DECLINED;
    }

    uid->data = ngx_pnalloc(pool, n);
    if (uid->data == NULL) {
        OPENSSL_free(utf8);
        return NGX_ERROR;
    }

    ngx_memcpy(uid->data, utf8, n);
    uid->len = n;

    OPENSSL_free(utf8);

    return NGX_OK;
}


ngx_ssl_t *
ngx_http_timpush_ssl_client(ngx_conf_t *cf, ngx_str_t *trusted,
    const char *what, const char *option)
{
    ngx_ssl_t           *ssl;
    ngx_pool_cleanup_t  *cln;

    ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
    if (ssl == NULL) {
        return NULL;
    }

    ssl->log = cf->log;

    if (ngx_ssl_create(ssl, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL)
        != NGX_OK)
    {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(ssl);
        return NULL;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = ssl;

    /* with an empty file name, only the depth and the callback are set */

    if (ngx_ssl_trusted_certificate(cf, ssl, trusted, 5) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s: cannot use %s\"%V\"", what, option, trusted);
        return NULL;
    }

    if (trusted->len == 0
        && SSL_CTX_set_default_verify_paths(ssl->ctx) != 1)
    {
        ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                      "%s: SSL_CTX_set_default_verify_paths()", what);
        return NULL;
    }

    return ssl;
}
