
/*
 * Copyright (C) timpush authors
 *
 * libFuzzer target: the input is a device body (PUT .../devices/{token},
 * POST .../logout, POST .../background), read as ngx_http_timpush_api.c
 * reads it: an empty body is "{}", ngx_http_timpush_body_parse() with the
 * flat schema, then business_id, unread and token taken from the tree.
 *
 * Every outcome is compared with a reference written here apart from
 * body.c and yajl: a strict RFC 8259 reader (no comments, no trailing
 * garbage, well-formed UTF-8 after unescaping, no "\u0000", no unpaired
 * surrogate, at most 32 levels) that also lists the root's members as the
 * flat schema keeps them, the first of each name.  The body must be
 * accepted exactly when the reference accepts it; the tree must hold what the
 * reference read, and only one level under the root; every string kept
 * must be well-formed UTF-8 without NUL; the integers must be what a
 * strict decimal reading of the number's text gives, within range.
 *
 * Apart from the reference, a plain scan that knows only strings and
 * escapes finds a comment, a NUL byte or more than 32 levels, any of which
 * must refuse the body.  A scan like it, beside yajl, was once all the
 * depth check there was, and a '"' inside a comment hid every bracket
 * from it: here a comment alone refuses the body.
 *
 * The same input is then run again with one allocation failing, which must
 * give NGX_ERROR and leak nothing.  Built and run by t/fuzz/run.sh.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <stdio.h>

#include "ngx_stubs.h"
#include "ngx_http_timpush_body.h"


/* as in ngx_http_timpush.h, which needs ngx_http.h, OpenSSL and hiredis */
#define BUSINESS_ID_MIN  1
#define BUSINESS_ID_MAX  0xffffffff
#define UNREAD_MAX       99999

#define DEPTH_MAX        NGX_HTTP_TIMPUSH_BODY_DEPTH


/*
 * What yajl lets through, found by this target, which body.c now
 * refuses (ref_t.lax): "\v" and "\f" as whitespace; a "\uD8xx" escape
 * without a low surrogate after it, which yajl turns into "?", or into
 * one code point with whatever "\uXXXX" follows ("\uD800\u0000" is
 * U+10000); trailing garbage that is a string never closed, which yajl
 * takes for a token still arriving ({"unread":1} "x).
 */


#define fuzz_assert(cond)                                                     \
    if (!(cond)) {                                                            \
        fprintf(stderr, "fuzz_device.c:%d: %s\n", __LINE__, #cond);          \
        abort();                                                              \
    }


/* a member of the root object as the reference reads it */
typedef struct {
    u_char         *key;
    size_t          key_len;
    ngx_uint_t      type;           /* NGX_HTTP_TIMPUSH_JSON_* */
    u_char         *str;            /* a string unescaped, a number's text */
    size_t          len;
} ref_member_t;


typedef struct {
    const char     *why;            /* NULL: a valid body */
    const char     *lax;            /* what of it yajl lets through */
    ngx_uint_t      root_type;
    u_char         *root_str;
    size_t          root_len;
    ref_member_t   *members;        /* the first of each name */
    ngx_uint_t      nmembers;
    u_char         *buf;            /* unescaped strings, never longer */
    size_t          used;           /* than their text */
} ref_t;


/* what the plain scan finds, with no JSON grammar at all */
typedef struct {
    ngx_uint_t      depth;          /* the most brackets open */
    unsigned        comment:1;      /* "/" "*" or "//" outside strings */
    unsigned        nul:1;
} scan_t;


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static ngx_int_t run(u_char *data, size_t len, ref_t *ref);
static void check_tree(ngx_http_timpush_json_t *root);
static void check_ref(ngx_http_timpush_json_t *root, ref_t *ref);
static void check_int(ngx_http_timpush_json_t *root, ref_t *ref,
    const char *key, int64_t min, int64_t max);
static void check_token(ngx_http_timpush_json_t *root, ref_t *ref);

static void scan(const u_char *p, size_t len, scan_t *s);

static void ref_parse(ref_t *ref, const u_char *p, const u_char *last);
static const u_char *ref_ws(ref_t *ref, const u_char *p,
    const u_char *last);
static const u_char *ref_string(ref_t *ref, const u_char *p,
    const u_char *last, u_char **str, size_t *len);
static ngx_uint_t ref_unterminated(const u_char *p, const u_char *last);
static const u_char *ref_hex4(const u_char *p, const u_char *last,
    uint32_t *cp);
static const u_char *ref_number(const u_char *p, const u_char *last);
static ref_member_t *ref_member(ref_t *ref, u_char *key, size_t len);
static ref_member_t *ref_find(ref_t *ref, const char *key);
static ngx_int_t ref_decimal(u_char *p, size_t len, int64_t min, int64_t max,
    int64_t *value);

static size_t utf8_char(const u_char *p, const u_char *last);
static int utf8_valid(const u_char *p, size_t len);
static u_char *utf8_put(u_char *p, uint32_t cp);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char      *body;
    size_t       len, i;
    ref_t        ref;
    scan_t       s;
    ngx_int_t    rc;
    ngx_uint_t   allocs, h;

    /* ngx_http_timpush_api_body_json(): an empty body is taken as {} */

    if (size == 0) {
        data = (const uint8_t *) "{}";
        size = 2;
    }

    /* a copy exactly as long: AddressSanitizer sees any overread */

    len = size;
    body = malloc(len);
    fuzz_assert(body != NULL);
    memcpy(body, data, len);

    scan(body, len, &s);

    ngx_memzero(&ref, sizeof(ref_t));
    ref.buf = malloc(len);
    ref.members = malloc((len / 4 + 1) * sizeof(ref_member_t));
    fuzz_assert(ref.buf != NULL && ref.members != NULL);

    ref_parse(&ref, body, body + len);

    /* the two checkers of this file agree with each other */

    if (s.comment || s.nul || s.depth > DEPTH_MAX) {
        fuzz_assert(ref.why != NULL);
    }

    ngx_stubs_allocs = 0;
    ngx_stubs_fail_at = 0;

    rc = run(body, len, &ref);
    fuzz_assert(rc != NGX_ERROR);

    if (s.comment) {
        fuzz_assert(rc != NGX_OK);      /* a comment accepted */
    }

    if (s.nul) {
        fuzz_assert(rc != NGX_OK);      /* a NUL byte accepted */
    }

    if (s.depth > DEPTH_MAX) {
        fuzz_assert(rc != NGX_OK);      /* more than 32 levels accepted */
    }

    /* the parser only reads the body */

    fuzz_assert(memcmp(body, data, len) == 0);

    allocs = ngx_stubs_allocs;

    if (allocs) {

        /* some allocation, chosen by the input, fails */

        h = 5381;
        for (i = 0; i < len; i++) {
            h = h * 33 + body[i];
        }

        ngx_stubs_allocs = 0;
        ngx_stubs_fail_at = 1 + h % allocs;

        rc = run(body, len, NULL);

        ngx_stubs_fail_at = 0;

        fuzz_assert(rc == NGX_ERROR);
    }

    free(ref.members);
    free(ref.buf);
    free(body);

    return 0;
}


/* ref: what must come out; NULL when an allocation is made to fail */

static ngx_int_t
run(u_char *data, size_t len, ref_t *ref)
{
    size_t                        i;
    ngx_int_t                     rc;
    ngx_pool_t                   *pool;
    ngx_http_timpush_json_t      *root;
    ngx_http_timpush_body_err_t   err;

    pool = ngx_create_pool(1024, NULL);
    fuzz_assert(pool != NULL);

    err.code = NULL;

    rc = ngx_http_timpush_body_parse(pool, data, len,
                                     ngx_http_timpush_body_want_flat, 1,
                                     &root, &err);

    fuzz_assert(rc == NGX_OK || rc == NGX_DECLINED || rc == NGX_ERROR);
    fuzz_assert((rc == NGX_OK) == (root != NULL));

    if (rc == NGX_DECLINED) {
        fuzz_assert(err.code != NULL
                    && strcmp(err.code, "invalid_json") == 0);

        /* a fixed text: never the request quoted back */

        fuzz_assert(err.msg[0] != '\0');

        for (i = 0; err.msg[i]; i++) {
            fuzz_assert(err.msg[i] >= 0x20 && err.msg[i] < 0x7f);
        }
    }

    if (rc == NGX_OK) {
        check_tree(root);
    }

    if (ref == NULL) {
        goto done;
    }

    if (ref->why) {
        if (rc == NGX_OK) {
            fprintf(stderr, "accepted, but the reference refuses it: %s\n",
                    ref->why);
            fuzz_assert(rc != NGX_OK);
        }

        goto done;
    }

    if (rc != NGX_OK) {
        fprintf(stderr, "refused, but the reference accepts it: %s\n",
                err.msg);
        fuzz_assert(rc == NGX_OK);
    }

    check_ref(root, ref);

    /* the caller refuses any other root */

    if (root->type != NGX_HTTP_TIMPUSH_JSON_OBJECT) {
        goto done;
    }

    /* one body, read as each of the three requests */

    check_int(root, ref, "business_id", BUSINESS_ID_MIN, BUSINESS_ID_MAX);
    check_int(root, ref, "unread", 0, UNREAD_MAX);
    check_token(root, ref);

done:

    ngx_destroy_pool(pool);

    return rc;
}


/*
 * What holds for any tree the flat schema keeps, whatever the reference
 * says: the root and, if it is an object, its members; nothing below.
 */

static void
check_tree(ngx_http_timpush_json_t *root)
{
    ngx_uint_t                n;
    ngx_http_timpush_json_t  *v, *w;

    fuzz_assert(root->type <= NGX_HTTP_TIMPUSH_JSON_ARRAY);
    fuzz_assert(root->key.len == 0 && root->next == NULL);
    fuzz_assert(!root->overflow);

    if (root->type == NGX_HTTP_TIMPUSH_JSON_STRING) {
        fuzz_assert(utf8_valid(root->str.data, root->str.len));
        fuzz_assert(memchr(root->str.data, 0, root->str.len) == NULL);
    }

    if (root->type != NGX_HTTP_TIMPUSH_JSON_OBJECT) {
        /* an array's elements have no name: not kept */
        fuzz_assert(root->child == NULL);
        return;
    }

    n = 0;

    for (v = root->child; v; v = v->next) {
        n++;

        fuzz_assert(v->type <= NGX_HTTP_TIMPUSH_JSON_ARRAY);

        /* one level kept under the root, and only that */
        fuzz_assert(v->child == NULL);

        fuzz_assert(v->key.len == 0 || v->key.data != NULL);
        fuzz_assert(utf8_valid(v->key.data, v->key.len));
        fuzz_assert(memchr(v->key.data, 0, v->key.len) == NULL);

        if (v->type == NGX_HTTP_TIMPUSH_JSON_STRING) {
            fuzz_assert(v->str.len == 0 || v->str.data != NULL);
            fuzz_assert(utf8_valid(v->str.data, v->str.len));
            fuzz_assert(memchr(v->str.data, 0, v->str.len) == NULL);
        }

        if (v->type == NGX_HTTP_TIMPUSH_JSON_NUMBER) {
            fuzz_assert(v->str.len > 0);
            fuzz_assert(ref_number(v->str.data, v->str.data + v->str.len)
                        == v->str.data + v->str.len);
        }

        /* the first member of a name is kept, the others are not */

        for (w = root->child; w != v; w = w->next) {
            fuzz_assert(w->key.len != v->key.len
                        || memcmp(w->key.data, v->key.data, v->key.len)
                           != 0);
        }
    }

    fuzz_assert(root->nchildren >= n);
}


/* the tree holds exactly what the reference read */

static void
check_ref(ngx_http_timpush_json_t *root, ref_t *ref)
{
    ngx_uint_t                i;
    ref_member_t             *m;
    ngx_http_timpush_json_t  *v;

    fuzz_assert(root->type == ref->root_type);

    if (root->type == NGX_HTTP_TIMPUSH_JSON_STRING
        || root->type == NGX_HTTP_TIMPUSH_JSON_NUMBER)
    {
        fuzz_assert(root->str.len == ref->root_len);
        fuzz_assert(memcmp(root->str.data, ref->root_str, ref->root_len)
                    == 0);
    }

    if (root->type != NGX_HTTP_TIMPUSH_JSON_OBJECT) {
        return;
    }

    v = root->child;

    for (i = 0; i < ref->nmembers; i++, v = v->next) {
        m = &ref->members[i];

        fuzz_assert(v != NULL);
        fuzz_assert(v->key.len == m->key_len);
        fuzz_assert(memcmp(v->key.data, m->key, m->key_len) == 0);
        fuzz_assert(v->type == m->type);

        if (m->type == NGX_HTTP_TIMPUSH_JSON_STRING
            || m->type == NGX_HTTP_TIMPUSH_JSON_NUMBER)
        {
            fuzz_assert(v->str.len == m->len);
            fuzz_assert(memcmp(v->str.data, m->str, m->len) == 0);
        }
    }

    fuzz_assert(v == NULL);
}


/* ngx_http_timpush_api_int(), against the number's text as written */

static void
check_int(ngx_http_timpush_json_t *root, ref_t *ref, const char *key,
    int64_t min, int64_t max)
{
    int64_t                       v, want;
    ngx_int_t                     rc, expect;
    ref_member_t                 *m;
    ngx_http_timpush_body_err_t   err;

    m = ref_find(ref, key);

    if (m == NULL || m->type == NGX_HTTP_TIMPUSH_JSON_NULL) {
        expect = NGX_DONE;
        want = -1;

    } else if (m->type != NGX_HTTP_TIMPUSH_JSON_NUMBER) {
        expect = NGX_DECLINED;
        want = -1;

    } else {
        want = -1;
        expect = ref_decimal(m->str, m->len, min, max, &want);
    }

    v = -1;
    err.code = NULL;

    rc = ngx_http_timpush_body_int(root, key, min, max, &v, &err);

    fuzz_assert(rc == expect);

    if (rc == NGX_OK) {
        fuzz_assert(v >= min && v <= max);
        fuzz_assert(v == want);

    } else {
        /* untouched */
        fuzz_assert(v == -1);
    }

    if (rc == NGX_DECLINED) {
        fuzz_assert(err.code != NULL
                    && strcmp(err.code, "invalid_field") == 0);
        fuzz_assert(strstr((char *) err.msg, key) == (char *) err.msg);
    }
}


/* the logout: a string, or absent */

static void
check_token(ngx_http_timpush_json_t *root, ref_t *ref)
{
    ref_member_t             *m;
    ngx_http_timpush_json_t  *token;

    m = ref_find(ref, "token");
    token = ngx_http_timpush_body_get(root, "token");

    if (m == NULL || m->type == NGX_HTTP_TIMPUSH_JSON_NULL) {
        fuzz_assert(token == NULL);
        return;
    }

    fuzz_assert(token != NULL && token->type == m->type);

    if (token->type != NGX_HTTP_TIMPUSH_JSON_STRING) {
        return;
    }

    /* "<token>\u0000zz" once logged out <token> */

    fuzz_assert(memchr(token->str.data, 0, token->str.len) == NULL);
    fuzz_assert(utf8_valid(token->str.data, token->str.len));
    fuzz_assert(token->str.len == m->len);
    fuzz_assert(memcmp(token->str.data, m->str, m->len) == 0);
}


/*
 * Brackets outside strings, a string being '"' to the next '"' not
 * escaped; no other grammar.  A comment is seen where it starts, even if
 * it holds a '"' that misleads the scan about the rest.
 */

static void
scan(const u_char *p, size_t len, scan_t *s)
{
    size_t      i;
    ngx_uint_t  depth, string;

    ngx_memzero(s, sizeof(scan_t));

    depth = 0;
    string = 0;

    for (i = 0; i < len; i++) {

        if (string) {
            if (p[i] == '\\') {
                i++;

            } else if (p[i] == '"') {
                string = 0;
            }

            continue;
        }

        switch (p[i]) {

        case '"':
            string = 1;
            break;

        case '/':
            if (i + 1 < len && (p[i + 1] == '*' || p[i + 1] == '/')) {
                s->comment = 1;
            }
            break;

        case '[':
        case '{':
            if (++depth > s->depth) {
                s->depth = depth;
            }
            break;

        case ']':
        case '}':
            if (depth) {
                depth--;
            }
            break;
        }
    }

    s->nul = (memchr(p, '\0', len) != NULL);
}


/*
 * RFC 8259, strictly, without recursion: whitespace is only space, tab,
 * CR and LF; a string is well-formed UTF-8 once unescaped, without
 * "\u0000" or a surrogate that is not half of a pair.
 */

static void
ref_parse(ref_t *ref, const u_char *p, const u_char *last)
{
    u_char         stack[DEPTH_MAX], *s;
    size_t         n;
    const char    *lit;
    ngx_uint_t     depth, type;
    ref_member_t  *m;

    enum {
        VALUE, FIRST_VALUE, KEY, FIRST_KEY, COLON, NEXT
    } state;

    depth = 0;
    state = VALUE;
    m = NULL;

    for ( ;; ) {
        p = ref_ws(ref, p, last);

        switch (state) {

        case FIRST_VALUE:
            if (p < last && *p == ']') {
                p++;
                depth--;
                state = NEXT;
                break;
            }

            /* fall through */

        case VALUE:
            if (p == last) {
                ref->why = "no value";
                return;
            }

            s = NULL;
            n = 0;

            switch (*p) {

            case '{':
            case '[':
                if (depth == DEPTH_MAX) {
                    ref->why = "deeper than 32 levels";
                    return;
                }

                type = (*p == '{') ? NGX_HTTP_TIMPUSH_JSON_OBJECT
                                   : NGX_HTTP_TIMPUSH_JSON_ARRAY;
                break;

            case '"':
                type = NGX_HTTP_TIMPUSH_JSON_STRING;
                break;

            case 't':
                type = NGX_HTTP_TIMPUSH_JSON_TRUE;
                break;

            case 'f':
                type = NGX_HTTP_TIMPUSH_JSON_FALSE;
                break;

            case 'n':
                type = NGX_HTTP_TIMPUSH_JSON_NULL;
                break;

            default:
                type = NGX_HTTP_TIMPUSH_JSON_NUMBER;
                break;
            }

            switch (type) {

            case NGX_HTTP_TIMPUSH_JSON_OBJECT:
            case NGX_HTTP_TIMPUSH_JSON_ARRAY:
                stack[depth] = *p++;
                break;

            case NGX_HTTP_TIMPUSH_JSON_STRING:
                p = ref_string(ref, p, last, &s, &n);
                if (p == NULL) {
                    return;
                }
                break;

            case NGX_HTTP_TIMPUSH_JSON_NUMBER:
                s = (u_char *) p;
                p = ref_number(p, last);
                if (p == NULL) {
                    ref->why = "not a value";
                    return;
                }
                n = p - s;
                break;

            default:
                lit = (type == NGX_HTTP_TIMPUSH_JSON_TRUE) ? "true"
                      : (type == NGX_HTTP_TIMPUSH_JSON_FALSE) ? "false"
                      : "null";
                n = strlen(lit);

                if ((size_t) (last - p) < n || memcmp(p, lit, n) != 0) {
                    ref->why = "not a value";
                    return;
                }

                p += n;
                n = 0;
                break;
            }

            if (depth == 0) {
                ref->root_type = type;
                ref->root_str = s;
                ref->root_len = n;
            }

            if (m) {
                m->type = type;
                m->str = s;
                m->len = n;
                m = NULL;
            }

            if (type == NGX_HTTP_TIMPUSH_JSON_OBJECT) {
                depth++;
                state = FIRST_KEY;

            } else if (type == NGX_HTTP_TIMPUSH_JSON_ARRAY) {
                depth++;
                state = FIRST_VALUE;

            } else {
                state = NEXT;
            }

            break;

        case FIRST_KEY:
            if (p < last && *p == '}') {
                p++;
                depth--;
                state = NEXT;
                break;
            }

            /* fall through */

        case KEY:
            if (p == last || *p != '"') {
                ref->why = "no key";
                return;
            }

            p = ref_string(ref, p, last, &s, &n);
            if (p == NULL) {
                return;
            }

            if (depth == 1) {
                m = ref_member(ref, s, n);
            }

            state = COLON;
            break;

        case COLON:
            if (p == last || *p != ':') {
                ref->why = "no colon";
                return;
            }

            p++;
            state = VALUE;
            break;

        case NEXT:
            if (depth == 0) {
                if (p != last && ref_unterminated(p, last)) {
                    /* yajl waits for its end */
                    ref->lax = "an unterminated string after the value";
                    p = last;
                }

                if (p != last) {
                    ref->why = "trailing garbage";

                } else if (ref->lax) {
                    ref->why = ref->lax;
                }

                return;
            }

            if (p < last && *p == ',') {
                p++;
                state = (stack[depth - 1] == '{') ? KEY : VALUE;
                break;
            }

            if (p < last
                && ((*p == '}' && stack[depth - 1] == '{')
                    || (*p == ']' && stack[depth - 1] == '[')))
            {
                p++;
                depth--;
                break;
            }

            ref->why = "no comma or bracket";
            return;
        }
    }
}


static const u_char *
ref_ws(ref_t *ref, const u_char *p, const u_char *last)
{
    while (p < last) {

        if (*p == '\v' || *p == '\f') {
            /* yajl's own whitespace */
            ref->lax = "\\v or \\f taken as whitespace";

        } else if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            break;
        }

        p++;
    }

    return p;
}


/* p at the opening '"'; the text unescaped goes to ref->buf */

static const u_char *
ref_string(ref_t *ref, const u_char *p, const u_char *last, u_char **str,
    size_t *len)
{
    u_char    *d;
    size_t     n;
    uint32_t   cp, lo;

    d = ref->buf + ref->used;
    *str = d;
    p++;

    for ( ;; ) {

        if (p == last) {
            ref->why = "unterminated string";
            return NULL;
        }

        if (*p == '"') {
            p++;
            break;
        }

        if (*p < 0x20) {
            ref->why = "control character in a string";
            return NULL;
        }

        if (*p >= 0x80) {
            n = utf8_char(p, last);
            if (n == 0) {
                ref->why = "invalid UTF-8";
                return NULL;
            }

            d = ngx_cpymem(d, p, n);
            p += n;
            continue;
        }

        if (*p != '\\') {
            *d++ = *p++;
            continue;
        }

        if (++p == last) {
            ref->why = "unterminated string";
            return NULL;
        }

        switch (*p++) {
        case '"':  *d++ = '"';  continue;
        case '\\': *d++ = '\\'; continue;
        case '/':  *d++ = '/';  continue;
        case 'b':  *d++ = '\b'; continue;
        case 'f':  *d++ = '\f'; continue;
        case 'n':  *d++ = '\n'; continue;
        case 'r':  *d++ = '\r'; continue;
        case 't':  *d++ = '\t'; continue;
        case 'u':  break;

        default:
            ref->why = "bad escape";
            return NULL;
        }

        p = ref_hex4(p, last, &cp);
        if (p == NULL) {
            ref->why = "bad \\u escape";
            return NULL;
        }

        if (cp == 0) {
            ref->why = "\\u0000";
            return NULL;
        }

        if (cp >= 0xdc00 && cp <= 0xdfff) {
            ref->why = "lone low surrogate";
            return NULL;
        }

        if (cp >= 0xd800 && cp <= 0xdbff) {
            lo = 0;

            if (last - p >= 2 && p[0] == '\\' && p[1] == 'u') {
                p = ref_hex4(p + 2, last, &lo);
                if (p == NULL) {
                    ref->why = "bad \\u escape";
                    return NULL;
                }
            }

            if (lo < 0xdc00 || lo > 0xdfff) {
                /*
                 * yajl makes "?" of it, or a code point of it and any
                 * escape that follows
                 */
                ref->lax = "a high surrogate without a low one";
                *d++ = '?';
                continue;
            }

            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        }

        d = utf8_put(d, cp);
    }

    *len = d - *str;
    ref->used += *len;

    return p;
}


/* '"' and no other '"' not escaped */

static ngx_uint_t
ref_unterminated(const u_char *p, const u_char *last)
{
    if (*p++ != '"') {
        return 0;
    }

    for ( /* void */ ; p < last; p++) {
        if (*p == '\\') {
            p++;

        } else if (*p == '"') {
            return 0;
        }
    }

    return 1;
}


static const u_char *
ref_hex4(const u_char *p, const u_char *last, uint32_t *cp)
{
    ngx_uint_t  i;

    if (last - p < 4) {
        return NULL;
    }

    *cp = 0;

    for (i = 0; i < 4; i++) {
        if (p[i] >= '0' && p[i] <= '9') {
            *cp = *cp * 16 + (p[i] - '0');

        } else if ((p[i] | 0x20) >= 'a' && (p[i] | 0x20) <= 'f') {
            *cp = *cp * 16 + ((p[i] | 0x20) - 'a' + 10);

        } else {
            return NULL;
        }
    }

    return p + 4;
}


/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, or NULL */

static const u_char *
ref_number(const u_char *p, const u_char *last)
{
    if (p < last && *p == '-') {
        p++;
    }

    if (p < last && *p == '0') {
        p++;

    } else if (p < last && *p >= '1' && *p <= '9') {
        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }

    } else {
        return NULL;
    }

    if (p < last && *p == '.') {
        p++;

        if (p == last || *p < '0' || *p > '9') {
            return NULL;
        }

        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p < last && (*p == 'e' || *p == 'E')) {
        p++;

        if (p < last && (*p == '+' || *p == '-')) {
            p++;
        }

        if (p == last || *p < '0' || *p > '9') {
            return NULL;
        }

        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    return p;
}


/* a member of the root at its key: NULL for a name already seen */

static ref_member_t *
ref_member(ref_t *ref, u_char *key, size_t len)
{
    ngx_uint_t     i;
    ref_member_t  *m;

    for (i = 0; i < ref->nmembers; i++) {
        m = &ref->members[i];

        if (m->key_len == len && memcmp(m->key, key, len) == 0) {
            return NULL;
        }
    }

    m = &ref->members[ref->nmembers++];

    m->key = key;
    m->key_len = len;

    return m;
}


static ref_member_t *
ref_find(ref_t *ref, const char *key)
{
    size_t      len;
    ngx_uint_t  i;

    len = strlen(key);

    for (i = 0; i < ref->nmembers; i++) {
        if (ref->members[i].key_len == len
            && memcmp(ref->members[i].key, key, len) == 0)
        {
            return &ref->members[i];
        }
    }

    return NULL;
}


/*
 * An integer written as one: digits, perhaps a minus, no fraction or
 * exponent, whatever its length; "-0" is 0.
 */

static ngx_int_t
ref_decimal(u_char *p, size_t len, int64_t min, int64_t max, int64_t *value)
{
    size_t    i;
    uint64_t  n;
    int       neg;

    neg = (len > 0 && p[0] == '-');
    i = neg;

    if (i == len) {
        return NGX_DECLINED;
    }

    n = 0;

    for ( /* void */ ; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return NGX_DECLINED;
        }

        /* past any bound: only whether it is 0 matters then */
        if (n < (1ULL << 40)) {
            n = n * 10 + (p[i] - '0');
        }
    }

    if (n >= (1ULL << 40)) {
        return NGX_DECLINED;
    }

    if ((neg ? -(int64_t) n : (int64_t) n) < min
        || (neg ? -(int64_t) n : (int64_t) n) > max)
    {
        return NGX_DECLINED;
    }

    *value = neg ? -(int64_t) n : (int64_t) n;

    return NGX_OK;
}


/*
 * The length of the UTF-8 character at p, 0 if it is not well-formed:
 * Unicode's table 3-7 byte by byte, a way apart from body.c's decoding.
 */

static size_t
utf8_char(const u_char *p, const u_char *last)
{
    size_t  n, i;
    u_char  lo, hi;

    if (p[0] < 0x80) {
        return 1;
    }

    lo = 0x80;
    hi = 0xbf;

    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        n = 2;

    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        n = 3;

        if (p[0] == 0xe0) {
            lo = 0xa0;

        } else if (p[0] == 0xed) {
            hi = 0x9f;
        }

    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        n = 4;

        if (p[0] == 0xf0) {
            lo = 0x90;

        } else if (p[0] == 0xf4) {
            hi = 0x8f;
        }

    } else {
        return 0;
    }

    if ((size_t) (last - p) < n) {
        return 0;
    }

    /* the second byte's range is narrower for some first bytes */

    if (p[1] < lo || p[1] > hi) {
        return 0;
    }

    for (i = 2; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf) {
            return 0;
        }
    }

    return n;
}


static int
utf8_valid(const u_char *p, size_t len)
{
    size_t         n;
    const u_char  *last;

    last = p + len;

    while (p < last) {
        n = utf8_char(p, last);
        if (n == 0) {
            return 0;
        }

        p += n;
    }

    return 1;
}


static u_char *
utf8_put(u_char *p, uint32_t cp)
{
    if (cp < 0x80) {
        *p++ = (u_char) cp;

    } else if (cp < 0x800) {
        *p++ = (u_char) (0xc0 | (cp >> 6));
        *p++ = (u_char) (0x80 | (cp & 0x3f));

    } else if (cp < 0x10000) {
        *p++ = (u_char) (0xe0 | (cp >> 12));
        *p++ = (u_char) (0x80 | ((cp >> 6) & 0x3f));
        *p++ = (u_char) (0x80 | (cp & 0x3f));

    } else {
        *p++ = (u_char) (0xf0 | (cp >> 18));
        *p++ = (u_char) (0x80 | ((cp >> 12) & 0x3f));
        *p++ = (u_char) (0x80 | ((cp >> 6) & 0x3f));
        *p++ = (u_char) (0x80 | (cp & 0x3f));
    }

    return p;
}
