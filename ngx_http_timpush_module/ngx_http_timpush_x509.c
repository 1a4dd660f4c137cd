
/*
 * Copyright (C) timpush authors
 *
 * What the gateway and the APNs simulator both read of a certificate:
 * linked into both modules (each its own .so).
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
