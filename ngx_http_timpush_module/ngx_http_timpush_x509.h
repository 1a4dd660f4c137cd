
/*
 * Copyright (C) timpush authors
 */


#ifndef _NGX_HTTP_TIMPUSH_X509_H_INCLUDED_
#define _NGX_HTTP_TIMPUSH_X509_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include <openssl/x509.h>


/*
 * The subject's UID, which is the app's bundle id in Apple's push
 * certificates.  NGX_DECLINED: there is none.
 */
ngx_int_t ngx_http_timpush_cert_uid(ngx_pool_t *pool, X509 *cert,
    ngx_str_t *uid);


#endif /* _NGX_HTTP_TIMPUSH_X509_H_INCLUDED_ */
