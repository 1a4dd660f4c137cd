
/*
 * Copyright (C) timpush authors
 *
 * Secrets (DESIGN §10): passwords, private keys and provider tokens live
 * in OpenSSL's secure heap, a mapping excluded from core dumps
 * (MADV_DONTDUMP) and locked in memory where the limits allow, and are
 * wiped when freed.  Once the heap is set up, OpenSSL itself puts the
 * private parts of the keys it decodes there.  A secret file that the
 * group or others may read is loaded, with a warning naming it.
 */


#include "ngx_http_timpush.h"

#include <openssl/crypto.h>


/* keys, passwords and every worker's provider tokens */
#define NGX_HTTP_TIMPUSH_SECURE_HEAP   (1024 * 1024)
#define NGX_HTTP_TIMPUSH_SECURE_MIN    16

#define NGX_HTTP_TIMPUSH_SECRET_MAX    (64 * 1024)


static void ngx_http_timpush_secret_cleanup(void *data);


ngx_int_t
ngx_http_timpush_secret_init(ngx_conf_t *cf)
{
    int  rc;

    if (CRYPTO_secure_malloc_initialized()) {
        return NGX_OK;
    }

    rc = CRYPTO_secure_malloc_init(NGX_HTTP_TIMPUSH_SECURE_HEAP,
                                   NGX_HTTP_TIMPUSH_SECURE_MIN);

    if (rc == 0) {
        ngx_log_error(NGX_LOG_WARN, cf->log, 0,
                      "timpush: OpenSSL's secure heap cannot be set up: "
                      "keys and passwords stay in ordinary memory, which "
                      "a core dump holds");
        return NGX_OK;
    }

    if (rc == 2) {
        /* mapped and kept out of core dumps, but not locked (ulimit -l) */
        ngx_log_error(NGX_LOG_NOTICE, cf->log, 0,
                      "timpush: OpenSSL's secure heap is not locked in "
                      "memory (RLIMIT_MEMLOCK); it may be swapped out");
    }

    return NGX_OK;
}


/* secure memory, wiped and freed with the pool */

void *
ngx_http_timpush_secret_alloc(ngx_pool_t *pool, size_t size)
{
    void                *p;
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    p = OPENSSL_secure_zalloc(size);
    if (p == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_timpush_secret_cleanup;
    cln->data = p;

    return p;
}


static void
ngx_http_timpush_secret_cleanup(void *data)
{
    OPENSSL_secure_clear_free(data, OPENSSL_secure_actual_size(data));
}


/* [warn] when the group or others may read a secret file */

void
ngx_http_timpush_secret_mode(ngx_conf_t *cf, u_char *what, const char *noun,
    ngx_str_t *file)
{
    ngx_uint_t       mode;
    ngx_file_info_t  fi;

    if (ngx_file_info(file->data, &fi) == NGX_FILE_ERROR) {
        return;
    }

    mode = ngx_file_access(&fi);

    if (mode & 077) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "%s: %s \"%V\" may be read by %s (mode "
                           "0%ui%ui%ui): make it readable by its owner only "
                           "(chmod 600)", what, noun, file,
                           (mode & 07) ? "anyone" : "its group",
                           (ngx_uint_t) (mode >> 6) & 7,
                           (ngx_uint_t) (mode >> 3) & 7,
                           (ngx_uint_t) mode & 7);
    }
}


/*
 * A whole secret file, at most 64 KiB, into secure memory freed with the
 * pool; what reading it left on the stack is wiped.
 */

ngx_int_t
ngx_http_timpush_secret_file(ngx_conf_t *cf, u_char *what, const char *noun,
    ngx_str_t *file, ngx_pool_t *pool, ngx_str_t *data)
{
    u_char           *p;
    off_t             size;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_file_info_t   fi;

    fd = ngx_open_file(file->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "%s: cannot read %s \"%V\"", what, noun, file);
        return NGX_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || !ngx_is_file(&fi)
        || ngx_file_size(&fi) > NGX_HTTP_TIMPUSH_SECRET_MAX)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s: %s \"%V\" is not a regular file of at "
                           "most 64 KiB", what, noun, file);
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    size = ngx_file_size(&fi);

    /* one more byte: a file that grew meanwhile is noticed */

    p = ngx_http_timpush_secret_alloc(pool, size + 2);
    if (p == NULL) {
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    n = ngx_read_fd(fd, p, size + 1);
    ngx_close_file(fd);

    if (n == NGX_ERROR || n > size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "%s: cannot read %s \"%V\"", what, noun, file);
        return NGX_ERROR;
    }

    ngx_http_timpush_secret_mode(cf, what, noun, file);

    data->data = p;
    data->len = n;

    return NGX_OK;
}


/* the first line of a password file, as "openssl -passin file:" reads it */

ngx_int_t
ngx_http_timpush_secret_password(ngx_conf_t *cf, u_char *what,
    const char *noun, ngx_str_t *file, ngx_pool_t *pool, ngx_str_t *password)
{
    u_char     *last;
    ngx_str_t   data;

    if (ngx_http_timpush_secret_file(cf, what, noun, file, pool, &data)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    last = ngx_strlchr(data.data, data.data + data.len, '\n');
    if (last == NULL) {
        last = data.data + data.len;
    }

    if (last > data.data && last[-1] == '\r') {
        last--;
    }

    /* the rest of the file is wiped: only the password stays */

    ngx_explicit_memzero(last, data.data + data.len - last);

    password->data = data.data;
    password->len = last - data.data;

    return NGX_OK;
}
