
/*
 * Copyright (C) timpush authors
 *
 * Private keys are read in a child process (DESIGN §10: keys out of core
 * dumps).  OpenSSL's decoders leave copies of a private key behind in
 * memory they free without wiping (the decrypted PKCS#8 of a .p12, the DER
 * of a .p8's ECPrivateKey): in nginx's master they would stay for good,
 * and in every core dump.  The child runs the reader, then sends back the
 * certificates and the key's parameters through a pipe into OpenSSL's
 * secure heap, from which the key is built again (OpenSSL then keeps its
 * private parts there: they never touch ordinary memory in the master).
 *
 * The message, native byte order: result, flags; the certificates (count:
 * the leaf, if any, then its chain; DERs); the key's type name; its
 * parameters (count, then name, type, size, data each).
 */


#include "ngx_http_timpush.h"

#include <openssl/core.h>
#include <openssl/crypto.h>


/* a certificate, its chain, an RSA or EC key's parameters */
#define NGX_HTTP_TIMPUSH_ISOLATE_MAX   (16 * 1024)


typedef struct {
    u_char                    *pos;
    u_char                    *last;
} ngx_http_timpush_isolate_buf_t;


static void ngx_http_timpush_isolate_child(ngx_http_timpush_keys_read_pt reader,
    void *data, ngx_fd_t fd);
static ngx_int_t ngx_http_timpush_isolate_put(
    ngx_http_timpush_isolate_buf_t *b, const void *p, size_t n);
static ngx_int_t ngx_http_timpush_isolate_put_blob(
    ngx_http_timpush_isolate_buf_t *b, const void *p, size_t n);
static ngx_int_t ngx_http_timpush_isolate_put_x509(
    ngx_http_timpush_isolate_buf_t *b, X509 *x);
static ngx_int_t ngx_http_timpush_isolate_put_key(
    ngx_http_timpush_isolate_buf_t *b, EVP_PKEY *pkey);
static ngx_int_t ngx_http_timpush_isolate_get(
    ngx_http_timpush_isolate_buf_t *b, void *p, size_t n);
static u_char *ngx_http_timpush_isolate_get_blob(
    ngx_http_timpush_isolate_buf_t *b, uint32_t *n);
static X509 *ngx_http_timpush_isolate_get_x509(
    ngx_http_timpush_isolate_buf_t *b);
static ngx_int_t ngx_http_timpush_isolate_unpack(ngx_conf_t *cf,
    ngx_pool_t *pool, ngx_http_timpush_isolate_buf_t *b,
    ngx_http_timpush_keys_t *keys);
static EVP_PKEY *ngx_http_timpush_isolate_get_key(ngx_pool_t *pool,
    ngx_http_timpush_isolate_buf_t *b);


ngx_int_t
ngx_http_timpush_keys_isolated(ngx_conf_t *cf,
    ngx_http_timpush_keys_read_pt reader, void *data,
    ngx_http_timpush_keys_t *keys)
{
    int                              status, fds[2];
    u_char                          *msg;
    ssize_t                          n;
    ngx_int_t                        rc;
    ngx_pid_t                        pid;
    ngx_pool_t                      *pool;
    ngx_http_timpush_isolate_buf_t   b;

    ngx_memzero(keys, sizeof(ngx_http_timpush_keys_t));

    if (pipe(fds) == -1) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, ngx_errno, "pipe() failed");
        return NGX_ERROR;
    }

    pid = fork();

    if (pid == -1) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, ngx_errno, "fork() failed");
        (void) close(fds[0]);
        (void) close(fds[1]);
        return NGX_ERROR;
    }

    if (pid == 0) {
        (void) close(fds[0]);
        ngx_http_timpush_isolate_child(reader, data, fds[1]);
        _exit(0);
    }

    (void) close(fds[1]);

    /* the message and what is made of it, wiped and freed on return */

    pool = ngx_create_pool(1024, cf->log);
    msg = pool ? ngx_http_timpush_secret_alloc(pool,
                                               NGX_HTTP_TIMPUSH_ISOLATE_MAX)
               : NULL;

    if (msg == NULL) {
        (void) close(fds[0]);
        (void) waitpid(pid, &status, 0);

        if (pool) {
            ngx_destroy_pool(pool);
        }

        return NGX_ERROR;
    }

    b.pos = msg;
    b.last = msg;

    for ( ;; ) {
        n = read(fds[0], b.last, msg + NGX_HTTP_TIMPUSH_ISOLATE_MAX - b.last);

        if (n > 0) {
            b.last += n;
            continue;
        }

        if (n == -1 && ngx_errno == NGX_EINTR) {
            continue;
        }

        break;
    }

    (void) close(fds[0]);

    while (waitpid(pid, &status, 0) == -1 && ngx_errno == NGX_EINTR) {
        /* void */
    }

    rc = ngx_http_timpush_isolate_unpack(cf, pool, &b, keys);

    ngx_destroy_pool(pool);

    return rc;
}


static void
ngx_http_timpush_isolate_child(ngx_http_timpush_keys_read_pt reader,
    void *data, ngx_fd_t fd)
{
    int                              i;
    u_char                          *p, buf[NGX_HTTP_TIMPUSH_ISOLATE_MAX];
    int64_t                          rc;
    ssize_t                          n;
    uint64_t                         flags;
    uint32_t                         nleaf, nchain;
    ngx_http_timpush_keys_t          keys;
    ngx_http_timpush_isolate_buf_t   b;

    ngx_memzero(&keys, sizeof(ngx_http_timpush_keys_t));

    b.pos = buf;
    b.last = buf + sizeof(buf);

    rc = reader(data, &keys);
    flags = keys.flags;

    if (rc == NGX_OK && keys.pkey == NULL) {
        rc = NGX_ERROR;
    }

    nleaf = keys.cert ? 1 : 0;
    nchain = keys.chain ? sk_X509_num(keys.chain) : 0;

    if (ngx_http_timpush_isolate_put(&b, &rc, sizeof(rc)) != NGX_OK
        || ngx_http_timpush_isolate_put(&b, &flags, sizeof(flags)) != NGX_OK
        || rc != NGX_OK
        || ngx_http_timpush_isolate_put(&b, &nleaf, sizeof(nleaf)) != NGX_OK
        || (nleaf
            && ngx_http_timpush_isolate_put_x509(&b, keys.cert) != NGX_OK)
        || ngx_http_timpush_isolate_put(&b, &nchain, sizeof(nchain))
           != NGX_OK)
    {
        goto send;
    }

    for (i = 0; i < (int) nchain; i++) {
        if (ngx_http_timpush_isolate_put_x509(&b,
                                              sk_X509_value(keys.chain, i))
            != NGX_OK)
        {
            goto send;
        }
    }

    (void) ngx_http_timpush_isolate_put_key(&b, keys.pkey);

send:

    for (p = buf; p < b.pos; p += n) {
        n = write(fd, p, b.pos - p);

        if (n <= 0) {
            break;
        }
    }

    ngx_explicit_memzero(buf, sizeof(buf));

    EVP_PKEY_free(keys.pkey);
    X509_free(keys.cert);
    sk_X509_pop_free(keys.chain, X509_free);
}


static ngx_int_t
ngx_http_timpush_isolate_put(ngx_http_timpush_isolate_buf_t *b,
    const void *p, size_t n)
{
    if ((size_t) (b->last - b->pos) < n) {
        return NGX_ERROR;
    }

    b->pos = ngx_cpymem(b->pos, p, n);

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_isolate_put_blob(ngx_http_timpush_isolate_buf_t *b,
    const void *p, size_t n)
{
    uint32_t  len;

    len = (uint32_t) n;

    if (ngx_http_timpush_isolate_put(b, &len, sizeof(len)) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_timpush_isolate_put(b, p, n);
}


static ngx_int_t
ngx_http_timpush_isolate_put_x509(ngx_http_timpush_isolate_buf_t *b, X509 *x)
{
    int         len;
    ngx_int_t   rc;
    u_char     *der;

    der = NULL;

    len = i2d_X509(x, &der);
    if (len <= 0) {
        return NGX_ERROR;
    }

    rc = ngx_http_timpush_isolate_put_blob(b, der, len);

    OPENSSL_free(der);

    return rc;
}


/* the key's type name and every parameter of the key pair */

static ngx_int_t
ngx_http_timpush_isolate_put_key(ngx_http_timpush_isolate_buf_t *b,
    EVP_PKEY *pkey)
{
    uint32_t     n, type, size;
    ngx_int_t    rc;
    OSSL_PARAM  *params, *p;
    const char  *name;

    name = EVP_PKEY_get0_type_name(pkey);
    params = NULL;

    if (name == NULL
        || EVP_PKEY_todata(pkey, EVP_PKEY_KEYPAIR, &params) != 1)
    {
        return NGX_ERROR;
    }

    for (n = 0, p = params; p->key; p++) {
        n++;
    }

    rc = ngx_http_timpush_isolate_put_blob(b, name, ngx_strlen(name));
    rc |= ngx_http_timpush_isolate_put(b, &n, sizeof(n));

    for (p = params; p->key && rc == NGX_OK; p++) {
        type = p->data_type;
        size = (uint32_t) p->data_size;

        rc = ngx_http_timpush_isolate_put_blob(b, p->key, ngx_strlen(p->key));
        rc |= ngx_http_timpush_isolate_put(b, &type, sizeof(type));
        rc |= ngx_http_timpush_isolate_put_blob(b, p->data, size);
    }

    OSSL_PARAM_free(params);

    return rc;
}


static ngx_int_t
ngx_http_timpush_isolate_get(ngx_http_timpush_isolate_buf_t *b, void *p,
    size_t n)
{
    if ((size_t) (b->last - b->pos) < n) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, b->pos, n);
    b->pos += n;

    return NGX_OK;
}


/* a blob of the message, in place */

static u_char *
ngx_http_timpush_isolate_get_blob(ngx_http_timpush_isolate_buf_t *b,
    uint32_t *n)
{
    u_char  *p;

    if (ngx_http_timpush_isolate_get(b, n, sizeof(*n)) != NGX_OK
        || (size_t) (b->last - b->pos) < *n)
    {
        return NULL;
    }

    p = b->pos;
    b->pos += *n;

    return p;
}


static X509 *
ngx_http_timpush_isolate_get_x509(ngx_http_timpush_isolate_buf_t *b)
{
    uint32_t        n;
    const u_char   *p;

    p = ngx_http_timpush_isolate_get_blob(b, &n);
    if (p == NULL) {
        return NULL;
    }

    return d2i_X509(NULL, &p, n);
}


static ngx_int_t
ngx_http_timpush_isolate_unpack(ngx_conf_t *cf, ngx_pool_t *pool,
    ngx_http_timpush_isolate_buf_t *b, ngx_http_timpush_keys_t *keys)
{
    X509      *x;
    int64_t    rc;
    uint32_t   i, nleaf, nchain;
    uint64_t   flags;

    if (ngx_http_timpush_isolate_get(b, &rc, sizeof(rc)) != NGX_OK
        || ngx_http_timpush_isolate_get(b, &flags, sizeof(flags)) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "the process reading a key ended without an answer");
        return NGX_ERROR;
    }

    keys->flags = flags;

    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_timpush_isolate_get(b, &nleaf, sizeof(nleaf)) != NGX_OK) {
        goto failed;
    }

    if (nleaf) {
        keys->cert = ngx_http_timpush_isolate_get_x509(b);
        if (keys->cert == NULL) {
            goto failed;
        }
    }

    if (ngx_http_timpush_isolate_get(b, &nchain, sizeof(nchain)) != NGX_OK) {
        goto failed;
    }

    if (nchain) {
        keys->chain = sk_X509_new_null();
        if (keys->chain == NULL) {
            goto failed;
        }
    }

    for (i = 0; i < nchain; i++) {
        x = ngx_http_timpush_isolate_get_x509(b);

        if (x == NULL || !sk_X509_push(keys->chain, x)) {
            X509_free(x);
            goto failed;
        }
    }

    keys->pkey = ngx_http_timpush_isolate_get_key(pool, b);

    if (keys->pkey) {
        return NGX_OK;
    }

failed:

    ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                  "the key read by a child process cannot be built again");

    X509_free(keys->cert);
    sk_X509_pop_free(keys->chain, X509_free);
    ngx_memzero(keys, sizeof(ngx_http_timpush_keys_t));

    return NGX_ERROR;
}


/*
 * The parameters point into the message, in secure memory: OpenSSL makes
 * secure BIGNUMs of what is in secure memory.  Each datum is copied so
 * that strings get their terminating NUL.
 */

static EVP_PKEY *
ngx_http_timpush_isolate_get_key(ngx_pool_t *pool,
    ngx_http_timpush_isolate_buf_t *b)
{
    u_char        *p, *name, *key, *type;
    uint32_t       i, n, len, size, dtype;
    EVP_PKEY      *pkey;
    OSSL_PARAM    *params;
    EVP_PKEY_CTX  *ctx;

    p = ngx_http_timpush_isolate_get_blob(b, &len);
    if (p == NULL || len == 0 || len > 64) {
        return NULL;
    }

    type = ngx_http_timpush_secret_alloc(pool, len + 1);
    if (type == NULL) {
        return NULL;
    }

    ngx_memcpy(type, p, len);

    if (ngx_http_timpush_isolate_get(b, &n, sizeof(n)) != NGX_OK || n > 64) {
        return NULL;
    }

    params = ngx_http_timpush_secret_alloc(pool,
                                           (n + 1) * sizeof(OSSL_PARAM));
    if (params == NULL) {
        return NULL;
    }

    for (i = 0; i < n; i++) {
        name = ngx_http_timpush_isolate_get_blob(b, &len);
        if (name == NULL
            || ngx_http_timpush_isolate_get(b, &dtype, sizeof(dtype))
               != NGX_OK)
        {
            return NULL;
        }

        key = ngx_http_timpush_secret_alloc(pool, len + 1);
        if (key == NULL) {
            return NULL;
        }

        ngx_memcpy(key, name, len);

        p = ngx_http_timpush_isolate_get_blob(b, &size);
        if (p == NULL) {
            return NULL;
        }

        params[i].key = (char *) key;
        params[i].data_type = dtype;
        params[i].data_size = size;
        params[i].return_size = OSSL_PARAM_UNMODIFIED;
        params[i].data = ngx_http_timpush_secret_alloc(pool,
                                                       size + 1);
        if (params[i].data == NULL) {
            return NULL;
        }

        ngx_memcpy(params[i].data, p, size);
    }

    params[n] = OSSL_PARAM_construct_end();

    pkey = NULL;

    ctx = EVP_PKEY_CTX_new_from_name(NULL, (char *) type, NULL);

    if (ctx == NULL
        || EVP_PKEY_fromdata_init(ctx) != 1
        || EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_KEYPAIR, params) != 1)
    {
        pkey = NULL;
    }

    EVP_PKEY_CTX_free(ctx);

    return pkey;
}
