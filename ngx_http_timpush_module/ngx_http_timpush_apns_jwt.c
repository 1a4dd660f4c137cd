
/*
 * Copyright (C) timpush authors
 *
 * Provider tokens for token-based authentication: one per key for the
 * whole instance, kept in shared memory (jwt_shm.c) and made by the first
 * worker that needs one; each worker writes its copy, in secure memory,
 * as the whole "authorization" value.  Two buffers take turns: requests
 * submitted with the token before a change point at it until they are
 * sent (the shared token changes at most every 20 minutes).
 */


#include "ngx_http_timpush_apns_int.h"

#include <openssl/ecdsa.h>


#define NGX_HTTP_TIMPUSH_JWT_REUSE        (50 * 60)
#define NGX_HTTP_TIMPUSH_JWT_MIN_AGE      (20 * 60)


static ngx_int_t ngx_http_timpush_apns_jwt_locked(
    ngx_http_timpush_apns_channel_t *ch, ngx_http_timpush_jwt_slot_t *slot,
    time_t failed, time_t now);
static void ngx_http_timpush_apns_jwt_take(ngx_http_timpush_apns_channel_t *ch,
    ngx_http_timpush_jwt_slot_t *slot);
static ngx_int_t ngx_http_timpush_apns_jwt_sign(
    ngx_http_timpush_apns_channel_t *ch, time_t now);


/*
 * The provider token: ES256 over {"alg":"ES256","kid":...}.{"iss":...,
 * "iat":...}, reused for 50 minutes and never made more often than every
 * 20 (APNs answers TooManyProviderTokenUpdates).  failed: 0, or the iat of
 * a token APNs called expired.
 */

ngx_int_t
ngx_http_timpush_apns_jwt(ngx_http_timpush_apns_channel_t *ch, time_t failed)
{
    time_t                        now;
    ngx_int_t                     rc;
    ngx_shm_zone_t               *zone;
    ngx_http_timpush_jwt_slot_t  *slot;

    now = ngx_time();

    /* the shared token is looked at once a second at most */

    if (!failed
        && ch->auth.len
        && ch->jwt_checked == now
        && now - ch->jwt_iat < NGX_HTTP_TIMPUSH_JWT_REUSE)
    {
        return NGX_OK;
    }

    zone = ngx_http_timpush_apns.conf->jwt_zone;

    /* signing under the lock: the other workers wait, then take it */

    slot = ngx_http_timpush_jwt_shm_lock(zone, ch->cred, now);

    rc = ngx_http_timpush_apns_jwt_locked(ch, slot, failed, now);

    ngx_http_timpush_jwt_shm_unlock(zone);

    return rc;
}


/*
 * The current token is the key's shared one, or this worker's own when
 * the zone has no room for the key: reused while young enough, or, after
 * an expiry, if it is not the one APNs refused (it is newer).
 */

static ngx_int_t
ngx_http_timpush_apns_jwt_locked(ngx_http_timpush_apns_channel_t *ch,
    ngx_http_timpush_jwt_slot_t *slot, time_t failed, time_t now)
{
    time_t  iat;

    ch->jwt_checked = now;

    if (slot) {
        iat = slot->iat;

    } else {
        iat = ch->auth.len ? ch->jwt_iat : 0;
    }

    if (iat) {
        if ((!failed && now - iat < NGX_HTTP_TIMPUSH_JWT_REUSE)
            || (failed && failed != iat))
        {
            ngx_http_timpush_apns_jwt_take(ch, slot);
            return NGX_OK;
        }

        if (failed && now - iat < NGX_HTTP_TIMPUSH_JWT_MIN_AGE) {
            ngx_log_error(NGX_LOG_ERR, ch->log, 0,
                          "timpush apns: credential %ui: APNs says the "
                          "token made %T s ago expired; is the clock "
                          "right?", ch->cred->id, now - iat);
            return NGX_DECLINED;
        }
    }

    if (ngx_http_timpush_apns_jwt_sign(ch, now) != NGX_OK) {
        return NGX_ERROR;
    }

    if (slot == NULL) {
        ngx_log_error(NGX_LOG_WARN, ch->log, 0,
                      "timpush apns: credential %ui: no room for its key "
                      "among the shared provider tokens: the token is "
                      "this worker's own", ch->cred->id);
        return NGX_OK;
    }

    ngx_memcpy(slot->auth, ch->auth.data, ch->auth.len);
    slot->len = ch->auth.len;
    slot->iat = now;

    return NGX_OK;
}


/* the shared token into this worker's next buffer, if it changed */

static void
ngx_http_timpush_apns_jwt_take(ngx_http_timpush_apns_channel_t *ch,
    ngx_http_timpush_jwt_slot_t *slot)
{
    u_char  *buf;

    if (slot == NULL || (ch->auth.len && slot->iat == ch->jwt_iat)) {
        return;
    }

    buf = ch->jwt_buf[ch->jwt_next];
    ngx_memcpy(buf, slot->auth, slot->len);

    ch->auth.data = buf;
    ch->auth.len = slot->len;
    ch->jwt_next ^= 1;
    ch->jwt_iat = slot->iat;
}


static ngx_int_t
ngx_http_timpush_apns_jwt_sign(ngx_http_timpush_apns_channel_t *ch,
    time_t now)
{
    int                             ok;
    size_t                          siglen;
    u_char                         *p, *buf, *token;
    u_char                          json[256], der[128], raw[64];
    ngx_str_t                       src, dst, signing;
    EVP_MD_CTX                     *md;
    ECDSA_SIG                      *sig;
    const BIGNUM                   *r, *s;
    const u_char                   *dp;
    ngx_http_timpush_credential_t  *cred;

    cred = ch->cred;

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
