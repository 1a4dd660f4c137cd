
/*
 * Copyright (C) timpush authors
 *
 * A pool here is a list of separately malloc()ed blocks, so that
 * AddressSanitizer sees every overrun of a pool allocation (nginx's own
 * pools would hide it inside a larger block), and destroying the pool runs
 * the cleanups as nginx does.  Allocation N can be made to fail
 * (ngx_stubs_fail_at) to walk the NGX_ERROR paths.
 *
 * ngx_vslprintf() knows only the formats the rendering code uses and
 * aborts on any other, so that a new format cannot go unnoticed.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <strings.h>

#include "ngx_stubs.h"


ngx_uint_t  ngx_stubs_allocs;
ngx_uint_t  ngx_stubs_fail_at;


static void *ngx_stubs_alloc(ngx_pool_t *pool, size_t size);


ngx_pool_t *
ngx_create_pool(size_t size, ngx_log_t *log)
{
    ngx_pool_t  *pool;

    pool = calloc(1, sizeof(ngx_pool_t));
    if (pool == NULL) {
        return NULL;
    }

    pool->log = log;

    return pool;
}


void
ngx_destroy_pool(ngx_pool_t *pool)
{
    ngx_pool_large_t    *l, *next;
    ngx_pool_cleanup_t  *c;

    for (c = pool->cleanup; c; c = c->next) {
        if (c->handler) {
            c->handler(c->data);
        }
    }

    for (l = pool->large; l; l = next) {
        next = l->next;
        free(l);
    }

    free(pool);
}


/* the block header and the memory in one malloc(), memory 16-aligned */

static void *
ngx_stubs_alloc(ngx_pool_t *pool, size_t size)
{
    ngx_pool_large_t  *l;

    if (++ngx_stubs_allocs == ngx_stubs_fail_at) {
        return NULL;
    }

    l = malloc(ngx_align(sizeof(ngx_pool_large_t), 16) + size);
    if (l == NULL) {
        return NULL;
    }

    l->alloc = (u_char *) l + ngx_align(sizeof(ngx_pool_large_t), 16);
    l->next = pool->large;
    pool->large = l;

    return l->alloc;
}


void *
ngx_palloc(ngx_pool_t *pool, size_t size)
{
    return ngx_stubs_alloc(pool, size);
}


void *
ngx_pnalloc(ngx_pool_t *pool, size_t size)
{
    return ngx_stubs_alloc(pool, size);
}


void *
ngx_pcalloc(ngx_pool_t *pool, size_t size)
{
    void  *p;

    p = ngx_stubs_alloc(pool, size);
    if (p) {
        ngx_memzero(p, size);
    }

    return p;
}


ngx_pool_cleanup_t *
ngx_pool_cleanup_add(ngx_pool_t *p, size_t size)
{
    ngx_pool_cleanup_t  *c;

    c = ngx_palloc(p, sizeof(ngx_pool_cleanup_t));
    if (c == NULL) {
        return NULL;
    }

    if (size) {
        c->data = ngx_palloc(p, size);
        if (c->data == NULL) {
            return NULL;
        }

    } else {
        c->data = NULL;
    }

    c->handler = NULL;
    c->next = p->cleanup;
    p->cleanup = c;

    return c;
}


ngx_array_t *
ngx_array_create(ngx_pool_t *p, ngx_uint_t n, size_t size)
{
    ngx_array_t  *a;

    a = ngx_palloc(p, sizeof(ngx_array_t));
    if (a == NULL) {
        return NULL;
    }

    if (ngx_array_init(a, p, n, size) != NGX_OK) {
        return NULL;
    }

    return a;
}


void *
ngx_array_push(ngx_array_t *a)
{
    return ngx_array_push_n(a, 1);
}


void *
ngx_array_push_n(ngx_array_t *a, ngx_uint_t n)
{
    void        *elts;
    ngx_uint_t   nalloc;

    if (a->nelts + n > a->nalloc) {
        nalloc = 2 * ngx_max(n, a->nalloc);

        elts = ngx_palloc(a->pool, nalloc * a->size);
        if (elts == NULL) {
            return NULL;
        }

        ngx_memcpy(elts, a->elts, a->nelts * a->size);
        a->elts = elts;
        a->nalloc = nalloc;
    }

    elts = (u_char *) a->elts + a->size * a->nelts;
    a->nelts += n;

    return elts;
}


u_char * ngx_cdecl
ngx_sprintf(u_char *buf, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, (void *) -1, fmt, args);
    va_end(args);

    return p;
}


u_char * ngx_cdecl
ngx_snprintf(u_char *buf, size_t max, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + max, fmt, args);
    va_end(args);

    return p;
}


u_char * ngx_cdecl
ngx_slprintf(u_char *buf, u_char *last, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, last, fmt, args);
    va_end(args);

    return p;
}


/*
 * %s, %V, %d, %i, %ui, %uz, %L, %%: as nginx's, without width or
 * precision
 */

u_char *
ngx_vslprintf(u_char *buf, u_char *last, const char *fmt, va_list args)
{
    char        num[32];
    size_t      len;
    u_char     *s;
    ngx_str_t  *v;

    while (*fmt && buf < last) {

        if (*fmt != '%') {
            *buf++ = *fmt++;
            continue;
        }

        fmt++;
        s = (u_char *) num;

        if (fmt[0] == 's') {
            s = va_arg(args, u_char *);
            len = ngx_strlen(s);
            fmt++;

        } else if (fmt[0] == 'V') {
            v = va_arg(args, ngx_str_t *);
            s = v->data;
            len = v->len;
            fmt++;

        } else if (fmt[0] == 'd') {
            len = snprintf(num, sizeof(num), "%d", va_arg(args, int));
            fmt++;

        } else if (fmt[0] == 'i') {
            len = snprintf(num, sizeof(num), "%ld",
                           (long) va_arg(args, ngx_int_t));
            fmt++;

        } else if (fmt[0] == 'u' && fmt[1] == 'i') {
            len = snprintf(num, sizeof(num), "%lu",
                           (unsigned long) va_arg(args, ngx_uint_t));
            fmt += 2;

        } else if (fmt[0] == 'L') {
            len = snprintf(num, sizeof(num), "%lld",
                           (long long) va_arg(args, int64_t));
            fmt++;

        } else if (fmt[0] == 'u' && fmt[1] == 'z') {
            len = snprintf(num, sizeof(num), "%zu", va_arg(args, size_t));
            fmt += 2;

        } else if (fmt[0] == '%') {
            num[0] = '%';
            len = 1;
            fmt++;

        } else {
            fprintf(stderr, "ngx_stubs: unsupported format \"%s\"\n", fmt);
            abort();
        }

        len = ngx_min(len, (size_t) (last - buf));
        buf = ngx_cpymem(buf, s, len);
    }

    return buf;
}


/* the last message logged, for the tests to read */

u_char      ngx_stubs_log[NGX_MAX_ERROR_STR];
ngx_uint_t  ngx_stubs_logged;


void ngx_cdecl
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(ngx_stubs_log, ngx_stubs_log + NGX_MAX_ERROR_STR - 1,
                      fmt, args);
    va_end(args);

    *p = '\0';
    ngx_stubs_logged++;
}


ngx_int_t
ngx_strncasecmp(u_char *s1, u_char *s2, size_t n)
{
    return strncasecmp((char *) s1, (char *) s2, n);
}


ngx_int_t
ngx_atoi(u_char *line, size_t n)
{
    ngx_int_t  value;

    if (n == 0) {
        return NGX_ERROR;
    }

    for (value = 0; n--; line++) {
        if (*line < '0' || *line > '9' || value > NGX_MAX_INT_T_VALUE / 10) {
            return NGX_ERROR;
        }

        value = value * 10 + (*line - '0');
    }

    return value;
}


/* "<number><unit>..." with ms, s, m, h, d; a bare number: ms (seconds
 * with is_sec) */

ngx_int_t
ngx_parse_time(ngx_str_t *line, ngx_uint_t is_sec)
{
    u_char      *p, *last;
    ngx_int_t    total, n, scale;

    p = line->data;
    last = p + line->len;
    total = 0;

    if (p == last) {
        return NGX_ERROR;
    }

    while (p < last) {
        if (*p < '0' || *p > '9') {
            return NGX_ERROR;
        }

        for (n = 0; p < last && *p >= '0' && *p <= '9'; p++) {
            n = n * 10 + (*p - '0');
            if (n > 1000000000) {
                return NGX_ERROR;
            }
        }

        if (p == last) {
            scale = 1;

        } else if (last - p >= 2 && p[0] == 'm' && p[1] == 's') {
            scale = is_sec ? 0 : 1;
            p += 2;

        } else {
            switch (*p++) {
            case 's': scale = 1000; break;
            case 'm': scale = 60000; break;
            case 'h': scale = 3600000; break;
            case 'd': scale = 86400000; break;
            default: return NGX_ERROR;
            }

            if (is_sec) {
                scale /= 1000;
            }
        }

        if (scale == 0) {
            return NGX_ERROR;
        }

        total += n * scale;
    }

    return total;
}
