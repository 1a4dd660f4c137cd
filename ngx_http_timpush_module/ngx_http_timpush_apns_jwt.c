
/*
 * Copyright (C) timpush authors
 *
 * Provider tokens for token-based authentication: one per channel (that
 * is, per credential and worker), in secure memory, written as the whole
 * "authorization" value.  Two buffers take turns: requests submitted with
 * the token before a renewal point at it until they are sent.
 */


#include "ngx_http_timpush_apns_int.h"

#include <openssl/ecdsa.h>


#define NGX_HTTP_TIMPUSH_JWT_REUSE        (50 * 60)
#define NGX_HTTP_TIMPUSH_JWT_MIN_AGE      (20 * 60)


/*
 * The provider token: ES256 over {"alg":"ES256","kid":...}.{"iss":...,
 * "iat":...}, reused for 50 minutes and never made more often than every
 * 20 (APNs answers TooManyProviderTokenUpdates).
 */

ngx_int_t
ngx_http_timpush_apns_jwt(ngx_http_timpush_apns_channel_t *ch,
    ngx_uint_t renew)
{
    int                             ok;
    time_t                          now;
    size_t                          siglen;
    u_char                         *p, *buf, *token;
    u_char                          json[256], der[128], raw[64];
    ngx_str_t                       src, dst, signing;
    EVP_MD_CTX                     *md;
    ECDSA_SIG                      *sig;
    const BIGNUM                   *r, *s;
    const u_char                   *dp;
    ngx_http_timpush_credential_t  *cred;

    now = ngx_time();
    cred = ch->cred;

    if (ch->auth.len) {
        if (!renew && now - ch->jwt_iat < NGX_HTTP_TIMPUSH_JWT_REUSE) {
            return NGX_OK;
        }

        if (renew && now - ch->jwt_iat < NGX_HTTP_TIMPUSH_JWT_MIN_AGE) {
            ngx_log_error(NGX_LOG_ERR, ch->log, 0,
                          "timpush apns: credential %ui: APNs says the "
                          "token made %T s ago expired; is the clock "
                          "right?", cred->id, now - ch->jwt_iat);
            return NGX_DECLINED;
        }
    }

    /* header.claims, base64url */

    buf = ch->jwt_buf[ch->jwt_next];
    p = ngx_cpymem(buf, "bearer ", sizeof("bearer ") - 1);
    token = p;

    src.data = json;
    src.len = ngx_sprintf(json, "{\"alg\":\"ES256\",\"kid\":\"%V\"}",
                          &cred->key_id) - json;
    dst.data = p;
    ngx_encode_base64url(&dst, &src);
    p += dst.len;
    *p++ = '.';

    src.len = ngx_sprintf(json, "{\"iss\":\"%V\",\"iat\":%T}",
                          &cred->team_id, now) - json;
    dst.data = p;
    ngx_encode_base64url(&dst, &src);
    p += dst.len;

    signing.data = token;
    signing.len = p - token;

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        return NGX_ERROR;
    }

    siglen = sizeof(der);

    ok = EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, cred->pkey) == 1
         && EVP_DigestSign(md, der, &siglen, signing.data, signing.len) == 1;

    EVP_MD_CTX_free(md);

    if (!ok) {
        ngx_ssl_error(NGX_LOG_ERR, ch->log, 0,
                      "timpush apns: credential %ui: signing the provider "
                      "token failed", cred->id);
        return NGX_ERROR;
    }

    /* JWS wants the raw R || S, OpenSSL gives DER */

    dp = der;
    sig = d2i_ECDSA_SIG(NULL, &dp, siglen);
    if (sig == NULL) {
        return NGX_ERROR;
    }

    ECDSA_SIG_get0(sig, &r, &s);

    ok = BN_bn2binpad(r, raw, 32) == 32 && BN_bn2binpad(s, raw + 32, 32) == 32;

    ECDSA_SIG_free(sig);

    if (!ok) {
        return NGX_ERROR;
    }

    *p++ = '.';
    src.data = raw;
    src.len = 64;
    dst.data = p;
    ngx_encode_base64url(&dst, &src);
    p += dst.len;

    /* the signature is the token's secret part: no copy left behind */

    ngx_explicit_memzero(raw, sizeof(raw));
    ngx_explicit_memzero(der, sizeof(der));

    ch->auth.data = buf;
    ch->auth.len = p - buf;
    ch->jwt_next ^= 1;
    ch->jwt_iat = now;

    ngx_http_timpush_metric_add(ch->metrics.jwt, 1);

    ngx_log_error(NGX_LOG_INFO, ch->log, 0,
                  "timpush apns: credential %ui: new provider token",
                  cred->id);

    return NGX_OK;
}
