
/*
 * Copyright (C) timpush authors
 *
 * The instance's provider tokens: one per key (key_id and team_id) in a
 * shared memory zone, whatever the number of workers.  APNs answers
 * TooManyProviderTokenUpdates when a key's token changes more often than
 * every 20 minutes: with a token per worker, N workers would change it N
 * times as often.  The zone outlives a reload (same size, same zone), and
 * so does the token.
 *
 * A slot is a key's: its key_id and team_id, and the digest of its public
 * part, so that a .p8 replaced under the same key_id (a wrong file fixed
 * by a reload) gets a token of its own, not the old key's.
 *
 * A token is a bearer credential: the zone is kept out of core dumps
 * (MADV_DONTDUMP), as the secure heap of the workers' own copies is.
 * Slots are looked up and filled under the zone's mutex, which nginx
 * frees if a worker dies holding it.
 */


#include "ngx_http_timpush_apns_int.h"

#include <sys/mman.h>


/* at least; and twice the token credentials, for keys a reload brings */
#define NGX_HTTP_TIMPUSH_JWT_SLOTS     64

/* APNs refuses a token older than an hour: its slot is free */
#define NGX_HTTP_TIMPUSH_JWT_LIFETIME  3600


typedef struct {
    ngx_uint_t                     nslots;
    ngx_http_timpush_jwt_slot_t    slots[1];
} ngx_http_timpush_jwt_sh_t;


typedef struct {
    ngx_http_timpush_jwt_sh_t     *sh;
    ngx_slab_pool_t               *shpool;
    ngx_uint_t                     nslots;
} ngx_http_timpush_jwt_ctx_t;


static ngx_int_t ngx_http_timpush_jwt_shm_pkey_id(ngx_conf_t *cf,
    ngx_http_timpush_credential_t *cred);
static ngx_int_t ngx_http_timpush_jwt_shm_init_zone(ngx_shm_zone_t *zone,
    void *data);
static ngx_uint_t ngx_http_timpush_jwt_shm_is(ngx_http_timpush_jwt_slot_t *s,
    ngx_http_timpush_credential_t *cred);


/* the zone, made by a configuration with token credentials */

ngx_int_t
ngx_http_timpush_jwt_shm_conf(ngx_conf_t *cf,
    ngx_http_timpush_main_conf_t *tmcf)
{
    size_t                           size;
    ngx_str_t                        name;
    ngx_uint_t                       i, n;
    ngx_shm_zone_t                  *zone;
    ngx_http_timpush_jwt_ctx_t      *ctx;
    ngx_http_timpush_credential_t  **cred;

    cred = tmcf->credentials.elts;
    n = 0;

    for (i = 0; i < tmcf->credentials.nelts; i++) {
        if (cred[i]->auth == NGX_HTTP_TIMPUSH_AUTH_TOKEN) {
            if (ngx_http_timpush_jwt_shm_pkey_id(cf, cred[i]) != NGX_OK) {
                return NGX_ERROR;
            }

            n++;
        }
    }

    if (n == 0) {
        return NGX_OK;
    }

    /* the size changes rarely, so that a reload keeps the zone */

    n = ngx_max(NGX_HTTP_TIMPUSH_JWT_SLOTS,
                ngx_align(2 * n, NGX_HTTP_TIMPUSH_JWT_SLOTS));

    size = ngx_align(sizeof(ngx_http_timpush_jwt_sh_t)
                     + n * sizeof(ngx_http_timpush_jwt_slot_t)
                     + 8 * ngx_pagesize, ngx_pagesize);

    ngx_str_set(&name, "timpush_jwt");

    zone = ngx_shared_memory_add(cf, &name, size, &ngx_http_timpush_module);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    if (zone->data == NULL) {
        ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_timpush_jwt_ctx_t));
        if (ctx == NULL) {
            return NGX_ERROR;
        }

        ctx->nslots = n;

        zone->init = ngx_http_timpush_jwt_shm_init_zone;
        zone->data = ctx;
    }

    tmcf->jwt_zone = zone;

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_jwt_shm_pkey_id(ngx_conf_t *cf,
    ngx_http_timpush_credential_t *cred)
{
    int            len;
    u_char        *der;
    unsigned int   n;

    der = NULL;
    len = i2d_PUBKEY(cred->pkey, &der);

    if (len <= 0
        || EVP_Digest(der, len, cred->pkey_id, &n, EVP_sha256(), NULL) != 1)
    {
        OPENSSL_free(der);
        ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                      "timpush_credential %ui: the key's digest failed",
                      cred->id);
        return NGX_ERROR;
    }

    OPENSSL_free(der);

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_jwt_shm_init_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_http_timpush_jwt_ctx_t *octx = data;

    ngx_http_timpush_jwt_ctx_t  *ctx;

    ctx = zone->data;

    if (octx) {
        /* a reload: the same mapping, already out of core dumps */
        ctx->sh = octx->sh;
        ctx->shpool = octx->shpool;
        return NGX_OK;
    }

    /* before any token is in it; the workers inherit the mapping's flag */

    if (madvise(zone->shm.addr, zone->shm.size, MADV_DONTDUMP) == -1) {
        ngx_log_error(NGX_LOG_WARN, zone->shm.log, ngx_errno,
                      "timpush: madvise(MADV_DONTDUMP) of the provider "
                      "tokens' zone failed: a core dump may hold them");
    }

    ctx->shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (zone->shm.exists) {
        ctx->sh = ctx->shpool->data;
        return NGX_OK;
    }

    ctx->sh = ngx_slab_calloc(ctx->shpool,
                              sizeof(ngx_http_timpush_jwt_sh_t)
                              + (ctx->nslots - 1)
                                * sizeof(ngx_http_timpush_jwt_slot_t));
    if (ctx->sh == NULL) {
        return NGX_ERROR;
    }

    ctx->sh->nslots = ctx->nslots;
    ctx->shpool->data = ctx->sh;
    ctx->shpool->log_nomem = 0;

    return NGX_OK;
}


/*
 * Locks the zone; the slot of the credential's key, claimed (iat 0) if it
 * had none, or NULL when every slot holds a live token of another key.
 */

ngx_http_timpush_jwt_slot_t *
ngx_http_timpush_jwt_shm_lock(ngx_shm_zone_t *zone,
    ngx_http_timpush_credential_t *cred, time_t now)
{
    ngx_uint_t                    i;
    ngx_http_timpush_jwt_sh_t    *sh;
    ngx_http_timpush_jwt_ctx_t   *ctx;
    ngx_http_timpush_jwt_slot_t  *s, *empty;

    ctx = zone->data;
    sh = ctx->sh;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    empty = NULL;

    for (i = 0; i < sh->nslots; i++) {
        s = &sh->slots[i];

        if (s->key_id_len && ngx_http_timpush_jwt_shm_is(s, cred)) {
            return s;
        }

        if (empty == NULL
            && (s->key_id_len == 0
                || now - s->iat >= NGX_HTTP_TIMPUSH_JWT_LIFETIME))
        {
            empty = s;
        }
    }

    if (empty == NULL) {
        return NULL;
    }

    ngx_explicit_memzero(empty, sizeof(ngx_http_timpush_jwt_slot_t));

    empty->key_id_len = cred->key_id.len;
    ngx_memcpy(empty->key_id, cred->key_id.data, cred->key_id.len);
    empty->team_id_len = cred->team_id.len;
    ngx_memcpy(empty->team_id, cred->team_id.data, cred->team_id.len);
    ngx_memcpy(empty->pkey_id, cred->pkey_id, sizeof(empty->pkey_id));

    return empty;
}


void
ngx_http_timpush_jwt_shm_unlock(ngx_shm_zone_t *zone)
{
    ngx_http_timpush_jwt_ctx_t  *ctx;

    ctx = zone->data;

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


static ngx_uint_t
ngx_http_timpush_jwt_shm_is(ngx_http_timpush_jwt_slot_t *s,
    ngx_http_timpush_credential_t *cred)
{
    return s->key_id_len == cred->key_id.len
           && s->team_id_len == cred->team_id.len
           && ngx_memcmp(s->key_id, cred->key_id.data, s->key_id_len) == 0
           && ngx_memcmp(s->team_id, cred->team_id.data, s->team_id_len)
              == 0
           && ngx_memcmp(s->pkey_id, cred->pkey_id, sizeof(s->pkey_id))
              == 0;
}
