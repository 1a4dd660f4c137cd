
/*
 * Copyright (C) timpush authors
 *
 * libFuzzer target: the input is a POST /v1/push body.  A body that is
 * accepted and pushed gets its payload built and written with several
 * badges, and each payload must be JSON yajl reads back, with the alert
 * body and badge expected, no larger than the limit, and valid UTF-8.
 * The same input is then run again with one allocation failing, which must
 * give NGX_ERROR and leak nothing.  Built and run by t/fuzz/run.sh.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <stdio.h>
#include <yajl/yajl_tree.h>

#include "ngx_stubs.h"
#include "ngx_http_timpush_render.h"


#define MAX_RECIPIENTS  64


#define fuzz_assert(cond)                                                     \
    if (!(cond)) {                                                            \
        fprintf(stderr, "fuzz_push.c:%d: %s\n", __LINE__, #cond);            \
        abort();                                                              \
    }


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static ngx_int_t run(const uint8_t *data, size_t size);
static void check_message(ngx_http_timpush_message_t *msg);
static void check_payload(ngx_http_timpush_message_t *msg,
    ngx_http_timpush_payload_t *pl, uint64_t badge);
static int utf8_valid(const u_char *p, size_t len);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_int_t   rc;
    ngx_uint_t  allocs, h;
    size_t      i;

    ngx_stubs_allocs = 0;
    ngx_stubs_fail_at = 0;

    rc = run(data, size);
    fuzz_assert(rc != NGX_ERROR);

    allocs = ngx_stubs_allocs;
    if (allocs == 0) {
        return 0;
    }

    /* some allocation, chosen by the input, fails */

    h = 5381;
    for (i = 0; i < size; i++) {
        h = h * 33 + data[i];
    }

    ngx_stubs_allocs = 0;
    ngx_stubs_fail_at = 1 + h % allocs;

    rc = run(data, size);

    ngx_stubs_fail_at = 0;

    fuzz_assert(rc == NGX_ERROR);

    return 0;
}


static ngx_int_t
run(const uint8_t *data, size_t size)
{
    size_t                          i;
    ngx_int_t                       rc;
    ngx_pool_t                     *pool;
    ngx_http_timpush_payload_t      pl;
    ngx_http_timpush_message_t      msg;
    ngx_http_timpush_render_err_t   err;

    static const uint64_t  badges[] = {
        0, 1, 9, 10, 99999, 4294967295ULL, 9999999999ULL, 10000000000ULL,
        (uint64_t) -1
    };

    pool = ngx_create_pool(1024, NULL);
    fuzz_assert(pool != NULL);

    rc = ngx_http_timpush_message_parse(pool, (u_char *) data, size,
                                        MAX_RECIPIENTS, &msg, &err);

    if (rc == NGX_DECLINED) {
        fuzz_assert(strcmp(err.code, "invalid_json") == 0
                    || strcmp(err.code, "invalid_field") == 0);
        fuzz_assert(strlen((char *) err.msg) > 0);
        fuzz_assert(utf8_valid(err.msg, strlen((char *) err.msg)));
    }

    if (rc != NGX_OK) {
        goto done;
    }

    check_message(&msg);

    if (msg.skip != NGX_HTTP_TIMPUSH_SKIP_NONE) {
        goto done;
    }

    rc = ngx_http_timpush_payload_build(pool, &msg, &pl, &err);

    if (rc == NGX_DECLINED) {
        fuzz_assert(strcmp(err.code, "payload_too_large") == 0);
        rc = NGX_OK;
        goto done;
    }

    if (rc != NGX_OK) {
        goto done;
    }

    for (i = 0; i < sizeof(badges) / sizeof(badges[0]); i++) {
        check_payload(&msg, &pl, badges[i]);
    }

done:

    ngx_destroy_pool(pool);

    return rc;
}


static void
check_message(ngx_http_timpush_message_t *msg)
{
    ngx_str_t   *to;
    ngx_uint_t   i, j;

    to = msg->to.elts;

    fuzz_assert(msg->to.nelts >= 1 && msg->to.nelts <= MAX_RECIPIENTS);

    for (i = 0; i < msg->to.nelts; i++) {
        fuzz_assert(to[i].len >= 1 && to[i].len <= 128);
        fuzz_assert(utf8_valid(to[i].data, to[i].len));

        for (j = 0; j < to[i].len; j++) {
            fuzz_assert(to[i].data[j] >= 0x20 && to[i].data[j] != 0x7f);
        }

        for (j = 0; j < i; j++) {
            fuzz_assert(to[i].len != to[j].len
                        || memcmp(to[i].data, to[j].data, to[i].len) != 0);
        }
    }

    fuzz_assert(utf8_valid(msg->body.data, msg->body.len));
    fuzz_assert(msg->collapse_id.len <= 64);
    fuzz_assert(msg->priority == 10 || msg->priority == 5
                || msg->priority == 1);
    fuzz_assert(msg->expiration >= -1);
    fuzz_assert(msg->max_payload == (msg->voip ? 5120u : 4096u));
    fuzz_assert(!msg->background || msg->priority != 10 || msg->voip);
    fuzz_assert(msg->skip != NGX_HTTP_TIMPUSH_SKIP_NONE
                || msg->body.len > 0 || msg->background);
}


static void
check_payload(ngx_http_timpush_message_t *msg, ngx_http_timpush_payload_t *pl,
    uint64_t badge)
{
    char        *text, *s;
    u_char      *buf, *end;
    size_t       len;
    yajl_val     v, aps, alert, b;

    static const char  *aps_path[] = { "aps", NULL };
    static const char  *alert_path[] = { "alert", NULL };
    static const char  *body_path[] = { "body", NULL };
    static const char  *badge_path[] = { "badge", NULL };

    len = ngx_http_timpush_payload_len(pl, badge);
    fuzz_assert(len <= msg->max_payload);

    /* exactly len bytes: AddressSanitizer sees any overrun */

    buf = malloc(len);
    fuzz_assert(buf != NULL);

    end = ngx_http_timpush_payload_write(buf, pl, badge);
    fuzz_assert((size_t) (end - buf) == len);
    fuzz_assert(utf8_valid(buf, len));

    text = malloc(len + 1);
    fuzz_assert(text != NULL);
    memcpy(text, buf, len);
    text[len] = '\0';

    v = yajl_tree_parse(text, NULL, 0);
    if (v == NULL) {
        fprintf(stderr, "not JSON: %s\n", text);
    }
    fuzz_assert(v != NULL);

    aps = yajl_tree_get(v, aps_path, yajl_t_object);
    fuzz_assert(aps != NULL);

    /* the body as sent: the message's, or a prefix of it and "…" */

    fuzz_assert(utf8_valid(pl->body.data, pl->body.len));

    if (pl->cut) {
        fuzz_assert(pl->body.len >= 3);
        fuzz_assert(memcmp(pl->body.data + pl->body.len - 3, "\xe2\x80\xa6",
                           3) == 0);
        fuzz_assert(pl->body.len - 3 < msg->body.len);
        fuzz_assert(memcmp(pl->body.data, msg->body.data,
                           pl->body.len - 3) == 0);

    } else if (!msg->background) {
        fuzz_assert(pl->body.len == msg->body.len);
        fuzz_assert(memcmp(pl->body.data, msg->body.data, pl->body.len) == 0);
    }

    alert = yajl_tree_get(aps, alert_path, yajl_t_any);

    if (msg->background) {
        fuzz_assert(alert == NULL);

    } else {
        fuzz_assert(alert != NULL);

        if (YAJL_IS_OBJECT(alert)) {
            fuzz_assert(msg->title.len || msg->subtitle.len);
            alert = yajl_tree_get(alert, body_path, yajl_t_string);
            fuzz_assert(alert != NULL);
        }

        fuzz_assert(YAJL_IS_STRING(alert));

        /* yajl_tree strings end at a NUL character */
        s = YAJL_GET_STRING(alert);
        if (memchr(pl->body.data, '\0', pl->body.len) == NULL) {
            fuzz_assert(strlen(s) == pl->body.len);
            fuzz_assert(memcmp(s, pl->body.data, pl->body.len) == 0);
        }
    }

    b = yajl_tree_get(aps, badge_path, yajl_t_any);

    if (pl->has_badge) {
        fuzz_assert(b != NULL && YAJL_IS_INTEGER(b));
        fuzz_assert((uint64_t) YAJL_GET_INTEGER(b)
                    == (badge > 9999999999ULL ? 9999999999ULL : badge));

    } else {
        fuzz_assert(b == NULL);
    }

    yajl_tree_free(v);
    free(text);
    free(buf);
}


/* written apart from the renderer's own check, on purpose */

static int
utf8_valid(const u_char *p, size_t len)
{
    size_t    i, n, k;
    uint32_t  c;

    for (i = 0; i < len; i += n) {
        c = p[i];

        if (c < 0x80) {
            n = 1;
            continue;
        }

        if ((c & 0xe0) == 0xc0) {
            n = 2;
            c &= 0x1f;

        } else if ((c & 0xf0) == 0xe0) {
            n = 3;
            c &= 0x0f;

        } else if ((c & 0xf8) == 0xf0) {
            n = 4;
            c &= 0x07;

        } else {
            return 0;
        }

        if (i + n > len) {
            return 0;
        }

        for (k = 1; k < n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return 0;
            }

            c = (c << 6) | (p[i + k] & 0x3f);
        }

        if ((n == 2 && c < 0x80) || (n == 3 && c < 0x800)
            || (n == 4 && c < 0x10000) || c > 0x10ffff
            || (c >= 0xd800 && c <= 0xdfff))
        {
            return 0;
        }
    }

    return 1;
}
