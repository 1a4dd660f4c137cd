
/*
 * Copyright (C) timpush authors
 */


#ifndef _NGX_HTTP_TIMPUSH_X509_H_INCLUDED_
#define _NGX_HTTP_TIMPUSH_X509_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include <ngx_event.h>

#include <openssl/x509.h>


/*
 * The subject's UID, which is the app's bundle id in Apple's push
 * certificates.  NGX_DECLINED: there is none.
 */
ngx_int_t ngx_http_timpush_cert_uid(ngx_pool_t *pool, X509 *cert,
    ngx_str_t *uid);


/*
 * A TLS client context for the configuration's life (TLS 1.2 and 1.3)
 * that verifies its servers against "trusted" (a PEM file), or else the
 * system's CAs; "what" (the directive) and "option" (how the file was
 * given) name it in the [emerg] when it cannot be used.
 */
ngx_ssl_t *ngx_http_timpush_ssl_client(ngx_conf_t *cf, ngx_str_t *trusted,
    const char *what, const char *option);


#endif /* _NGX_HTTP_TIMPUSH_X509_H_INCLUDED_ */
