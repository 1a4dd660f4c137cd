
/*
 * Copyright (C) timpush authors
 *
 * POST /v1/push body -> validated message -> APNs payload template
 * (DESIGN §4, §6).  No nginx I/O here: only pool memory, so that t/unit and
 * t/fuzz can link this file with a few stand-ins for nginx's core.
 *
 * Payload key order, fixed:
 *   {"aps":{"alert":...,"badge":N,"sound":...,"content-available":1,
 *    "mutable-content":1,"interruption-level":...,"category":...,
 *    "thread-id":...},"ext":...,"image":...}
 * and "alert" is either the body string or {"title","subtitle","body"}.
 * A background push is {"aps":{"content-available":1},"ext":...}.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_timpush_render.h"


/*
 * The body is read by the strict reader of ngx_http_timpush_body.c with
 * the schema below: the members named in the tables (the first of each
 * name), the elements of "to" and "elems", and, where a scalar is
 * expected, a container as its type alone.
 */

#define NGX_HTTP_TIMPUSH_ELLIPSIS      "\xe2\x80\xa6"

/* elements of "elems" (and of "to", past timpush_max_recipients) */
#define NGX_HTTP_TIMPUSH_ELEMS_MAX     10000


/* while measuring a payload pos is NULL and only len grows */
typedef struct {
    u_char                     *pos;
    size_t                      len;
} ngx_http_timpush_out_t;


static ngx_uint_t ngx_http_timpush_push_want(ngx_http_timpush_json_t **open,
    ngx_uint_t depth, const u_char *key, size_t len);
static ngx_int_t ngx_http_timpush_parse_to(ngx_pool_t *pool,
    ngx_http_timpush_json_t *root, ngx_uint_t max,
    ngx_http_timpush_message_t *msg, ngx_http_timpush_render_err_t *err);
static ngx_int_t ngx_http_timpush_parse_user(ngx_http_timpush_json_t *v,
    u_char *path, ngx_str_t *user, ngx_http_timpush_render_err_t *err);
static ngx_uint_t ngx_http_timpush_to_seen(ngx_str_t **table,
    ngx_uint_t mask, ngx_str_t *user);
static ngx_int_t ngx_http_timpush_parse_offline_push(
    ngx_http_timpush_json_t *root, ngx_http_timpush_message_t *msg,
    ngx_str_t *desc, ngx_uint_t *disable,
    ngx_http_timpush_render_err_t *err);
static ngx_int_t ngx_http_timpush_parse_options(ngx_http_timpush_json_t *root,
    ngx_http_timpush_message_t *msg, ngx_uint_t *online_only,
    ngx_http_timpush_render_err_t *err);
static ngx_int_t ngx_http_timpush_parse_content(ngx_pool_t *pool,
    ngx_http_timpush_json_t *root, ngx_uint_t limit, ngx_str_t *content,
    ngx_http_timpush_render_err_t *err);
static ngx_int_t ngx_http_timpush_parse_elem(ngx_http_timpush_json_t *elem,
    ngx_uint_t i, ngx_str_t *text, ngx_http_timpush_render_err_t *err);
static ngx_int_t ngx_http_timpush_parse_names(ngx_http_timpush_json_t *root,
    ngx_str_t *name, ngx_str_t *group_name,
    ngx_http_timpush_render_err_t *err);
static ngx_int_t ngx_http_timpush_compose_body(ngx_pool_t *pool,
    ngx_str_t *name, ngx_str_t *group_name, ngx_str_t *content,
    ngx_http_timpush_message_t *msg);
static void ngx_http_timpush_message_kind(ngx_http_timpush_message_t *msg,
    ngx_uint_t disable, ngx_uint_t online_only);
static void ngx_http_timpush_payload_render(ngx_http_timpush_out_t *out,
    ngx_http_timpush_message_t *msg, ngx_str_t *body, size_t *badge_at);
static void ngx_http_timpush_out_raw(ngx_http_timpush_out_t *out,
    const char *s, size_t len);
static void ngx_http_timpush_out_str(ngx_http_timpush_out_t *out,
    ngx_str_t *s);
static size_t ngx_http_timpush_escaped_len(ngx_str_t *s);
static size_t ngx_http_timpush_cut(ngx_str_t *s, size_t room);


#define ngx_http_timpush_out_lit(out, s)                                      \
    ngx_http_timpush_out_raw(out, s, sizeof(s) - 1)


/* element types, and what each shows; text and custom show a field */
#define NGX_HTTP_TIMPUSH_ELEM_TEXT      0
#define NGX_HTTP_TIMPUSH_ELEM_LOCATION  5
#define NGX_HTTP_TIMPUSH_ELEM_CUSTOM    7

static ngx_str_t  ngx_http_timpush_elem_types[][2] = {
    { ngx_string("text"), ngx_null_string },
    { ngx_string("audio"), ngx_string("[audio]") },
    { ngx_string("file"), ngx_string("[file]") },
    { ngx_string("image"), ngx_string("[image]") },
    { ngx_string("video"), ngx_string("[video]") },
    { ngx_string("location"), ngx_string("[location]") },
    { ngx_string("face"), ngx_string("[face]") },
    { ngx_string("custom"), ngx_null_string },
    { ngx_null_string, ngx_null_string }
};


static ngx_str_t  ngx_http_timpush_levels[] = {
    ngx_string("passive"),
    ngx_string("active"),
    ngx_string("time-sensitive"),
    ngx_string("critical"),
    ngx_null_string
};


/* the members read (keep in step with the parse functions) */

static ngx_str_t  ngx_http_timpush_root_keys[] = {
    ngx_string("to"), ngx_string("from"), ngx_string("group"),
    ngx_string("elems"), ngx_string("offline_push"), ngx_string("priority"),
    ngx_string("expiration"), ngx_string("online_user_only"),
    ngx_string("msg_id"), ngx_string("async"), ngx_null_string
};


static ngx_str_t  ngx_http_timpush_from_keys[] = {
    ngx_string("user_id"), ngx_string("nickname"), ngx_string("name_card"),
    ngx_null_string
};


static ngx_str_t  ngx_http_timpush_group_keys[] = {
    ngx_string("id"), ngx_string("name"), ngx_null_string
};


static ngx_str_t  ngx_http_timpush_offline_push_keys[] = {
    ngx_string("disable"), ngx_string("title"), ngx_string("subtitle"),
    ngx_string("desc"), ngx_string("ext"), ngx_string("sound"),
    ngx_string("ignore_badge"), ngx_string("mutable_content"),
    ngx_string("content_available"), ngx_string("image"),
    ngx_string("interruption_level"), ngx_string("category"),
    ngx_string("thread_id"), ngx_string("collapse_id"), ngx_string("voip"),
    ngx_null_string
};


static ngx_str_t  ngx_http_timpush_elem_keys[] = {
    ngx_string("type"), ngx_string("text"), ngx_string("desc"),
    ngx_null_string
};


static ngx_str_t  ngx_http_timpush_skip_reasons[] = {
    ngx_null_string,
    ngx_string("disabled"),
    ngx_string("online_only"),
    ngx_string("no_content")
};


ngx_int_t
ngx_http_timpush_message_parse(ngx_pool_t *pool, u_char *data, size_t len,
    ngx_uint_t max_recipients, ngx_http_timpush_message_t *msg,
    ngx_http_timpush_render_err_t *err)
{
    ngx_int_t                 rc;
    ngx_str_t                 desc, content, name, group_name;
    ngx_uint_t                disable, online_only, limit;
    ngx_http_timpush_json_t  *root;

    ngx_memzero(msg, sizeof(ngx_http_timpush_message_t));

    msg->expiration = -1;
    msg->priority = NGX_HTTP_TIMPUSH_PRIORITY_HIGH;
    msg->max_payload = NGX_HTTP_TIMPUSH_PAYLOAD_MAX;
    ngx_str_set(&msg->push_type, "alert");
    ngx_str_set(&msg->topic_suffix, "");

    limit = ngx_max(max_recipients, NGX_HTTP_TIMPUSH_ELEMS_MAX);

    rc = ngx_http_timpush_body_parse(pool, data, len,
                                     ngx_http_timpush_push_want, limit,
                                     &root, err);
    if (rc != NGX_OK) {
        return rc;
    }

    if (root->type != NGX_HTTP_TIMPUSH_JSON_OBJECT) {
        return ngx_http_timpush_body_error(err, "invalid_json",
                                           "the body must be an object");
    }

    /*
     * Every field is checked, whatever is pushed in the end, in the order
     * of DESIGN §4's example, so that the error reported is predictable.
     */

    rc = ngx_http_timpush_parse_to(pool, root, max_recipients, msg, err);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_timpush_parse_names(root, &name, &group_name, err);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_timpush_parse_content(pool, root, limit, &content, err);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_timpush_parse_offline_push(root, msg, &desc, &disable,
                                             err);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_timpush_parse_options(root, msg, &online_only, err);
    if (rc != NGX_OK) {
        return rc;
    }

    if (desc.len) {
        /* §6.2: the whole body, without the sender's name */
        msg->body = desc;

    } else if (content.len) {
        /* §6.4: an empty content is not pushed, names or not */
        rc = ngx_http_timpush_compose_body(pool, &name, &group_name,
                                           &content, msg);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    ngx_http_timpush_message_kind(msg, disable, online_only);

    return NGX_OK;
}


/* the schema of a push body: what the parse functions below read */

static ngx_uint_t
ngx_http_timpush_push_want(ngx_http_timpush_json_t **open, ngx_uint_t depth,
    const u_char *key, size_t len)
{
    ngx_str_t                *keys;
    ngx_uint_t                i;
    ngx_http_timpush_json_t  *parent;

    parent = open[depth - 1];

    switch (depth) {

    case 1:
        keys = ngx_http_timpush_root_keys;
        break;

    case 2:
        if (parent->type == NGX_HTTP_TIMPUSH_JSON_ARRAY) {
            return ngx_http_timpush_json_is(&parent->key, "to")
                   || ngx_http_timpush_json_is(&parent->key, "elems");
        }

        keys = ngx_http_timpush_json_is(&parent->key, "from")
               ? ngx_http_timpush_from_keys
               : ngx_http_timpush_json_is(&parent->key, "group")
               ? ngx_http_timpush_group_keys
               : ngx_http_timpush_json_is(&parent->key, "offline_push")
               ? ngx_http_timpush_offline_push_keys : NULL;
        break;

    case 3:
        keys = (open[1]->type == NGX_HTTP_TIMPUSH_JSON_ARRAY
                && ngx_http_timpush_json_is(&open[1]->key, "elems"))
               ? ngx_http_timpush_elem_keys : NULL;
        break;

    default:
        return 0;
    }

    if (key == NULL || keys == NULL) {
        return 0;
    }

    for (i = 0; keys[i].len; i++) {
        if (keys[i].len == len && ngx_memcmp(keys[i].data, key, len) == 0) {
            return 1;
        }
    }

    return 0;
}

/*
 * "to": a user id or an array of them.  The limit counts the ids as given;
 * repeated ids are pushed to once, in the order first given, found through
 * a small open-addressing table so that 10,000 recipients stay linear.
 */

static ngx_int_t
ngx_http_timpush_parse_to(ngx_pool_t *pool, ngx_http_timpush_json_t *root,
    ngx_uint_t max, ngx_http_timpush_message_t *msg,
    ngx_http_timpush_render_err_t *err)
{
    u_char                    path[32];
    ngx_int_t                 rc;
    ngx_str_t                 user, *u, **table;
    ngx_uint_t                n, i, size;
    ngx_http_timpush_json_t  *to, *v;

    to = ngx_http_timpush_body_get(root, "to");

    if (to == NULL) {
        return ngx_http_timpush_body_error(err, "invalid_field",
                                           "to: is required");
    }

    if (to->type == NGX_HTTP_TIMPUSH_JSON_STRING) {
        n = 1;
        v = to;

    } else if (to->type == NGX_HTTP_TIMPUSH_JSON_ARRAY) {
        n = to->nchildren;
        v = to->child;

    } else {
        return ngx_http_timpush_body_error(err, "invalid_field",
                              "to: must be a string or an array of strings");
    }

    if (n == 0) {
        return ngx_http_timpush_body_error(err, "invalid_field",
                                           "to: must not be empty");
    }

    if (n > max) {
        return ngx_http_timpush_body_error(err, "invalid_field",
                                           "to: at most %ui recipients",
                                           max);
    }

    if (ngx_array_init(&msg->to, pool, n, sizeof(ngx_str_t)) != NGX_OK) {
        return NGX_ERROR;
    }

    for (size = 4; size < 2 * n; size <<= 1) { /* void */ }

    table = ngx_pcalloc(pool, size * sizeof(ngx_str_t *));
    if (table == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(path, "to", sizeof("to"));

    for (i = 0; i < n; i++, v = v->next) {

        if (to->type == NGX_HTTP_TIMPUSH_JSON_ARRAY) {
            *ngx_snprintf(path, sizeof(path) - 1, "to[%ui]", i) = '\0';
        }

        rc = ngx_http_timpush_parse_user(v, path, &user, err);
        if (rc != NGX_OK) {
            return rc;
        }

        u = ngx_array_push(&msg->to);
        if (u == NULL) {
            return NGX_ERROR;
        }

        *u = user;

        if (ngx_http_timpush_to_seen(table, size - 1, u)) {
            msg->to.nelts--;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_parse_user(ngx_http_timpush_json_t *v, u_char *path,
    ngx_str_t *user, ngx_http_timpush_render_err_t *err)
{
    if (v->type != NGX_HTTP_TIMPUSH_JSON_STRING) {
        return ngx_http_timpush_body_error(err, "invalid_field",
                                           "%s: must be a string", path);
    }

    if (v->str.len == 0 || v->str.len > NGX_HTTP_TIMPUSH_USER_MAX) {
        return ngx_http_timpush_body_error(err, "invalid_field",
                                           "%s: must be 1 to %ui bytes",
                                           path,
                                           (ngx_uint_t)
                                           NGX_HTTP_TIMPUSH_USER_MAX);
    }

    if (ngx_http_timpush_utf8_check(v->str.data, v->str.len, 1) != NGX_OK) {
        return ngx_http_timpush_body_error(err, "invalid_field",
                          "%s: must be UTF-8 without control characters",
                          path);
    }

    *user = v->str;

    return NGX_OK;
}


/* whether user is already in the table; if not, it is added */

static ngx_uint_t
ngx_http_timpush_to_seen(ngx_str_t **table, ngx_uint_t mask, ngx_str_t *user)
{
    size_t      i;
    uint32_t    h;
    ngx_uint_t  k;

    /* FNV-1a */

    h = 2166136261u;

    for (i = 0; i < user->len; i++) {
        h = (h ^ user->data[i]) * 16777619u;
    }

    for (k = h & mask; table[k]; k = (k + 1) & mask) {
        if (table[k]->len == user->len
            && ngx_memcmp(table[k]->data, user->data, user->len) == 0)
        {
            return 1;
        }
    }

    table[k] = user;

    return 0;
}


static ngx_int_t
ngx_http_timpush_parse_offline_push(ngx_http_timpush_json_t *root,
    ngx_http_timpush_message_t *msg, ngx_str_t *desc, ngx_uint_t *disable,
    ngx_http_timpush_render_err_t *err)
{
    ngx_str_t                *s;
    ngx_uint_t                i, *b, ignore_badge, mutable_content,
                              content_available, voip;
    ngx_http_timpush_json_t  *op;

    struct {
        const char  *key;
        ngx_str_t   *value;
    } strs[] = {
        { "title", &msg->title },
        { "subtitle", &msg->subtitle },
        { "desc", desc },
        { "ext", &msg->ext },
        { "sound", &msg->sound },
        { "image", &msg->image },
        { "interruption_level", &msg->interruption_level },
        { "category", &msg->category },
        { "thread_id", &msg->thread_id },
        { "collapse_id", &msg->collapse_id },
        { NULL, NULL }
    };

    struct {
        const char  *key;
        ngx_uint_t  *value;
    } bools[] = {
        { "disable", disable },
        { "ignore_badge", &ignore_badge },
        { "mutable_content", &mutable_content },
        { "content_available", &content_available },
        { "voip", &voip },
        { NULL, NULL }
    };

    if (ngx_http_timpush_body_object(root, "offline_push", &op, err)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    for (i = 0; strs[i].key; i++) {
        s = strs[i].value;

        if (ngx_http_timpush_body_str(op, "offline_push.", strs[i].key, s, err)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }
    }

    for (i = 0; bools[i].key; i++) {
        b = bools[i].value;

        if (ngx_http_timpush_body_bool(op, "offline_push.", bools[i].key, b,
                                       err)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }
    }

    msg->ignore_badge = ignore_badge;
    msg->mutable_content = mutable_content;
    msg->content_available = content_available;
    msg->voip = voip;

    /* §6.6: an empty sound is an absent one */

    if (msg->sound.len == 0) {
        ngx_str_set(&msg->sound, "default");

    } else if (msg->sound.len == sizeof("push.no_sound") - 1
               && ngx_memcmp(msg->sound.data, "push.no_sound",
                             msg->sound.len) == 0)
    {
        ngx_str_set(&msg->sound, "");
        msg->sound_none = 1;
    }

    if (msg->interruption_level.len) {
        s = &msg->interruption_level;

        for (i = 0; ngx_http_timpush_levels[i].len; i++) {
            if (s->len == ngx_http_timpush_levels[i].len
                && ngx_memcmp(s->data, ngx_http_timpush_levels[i].data,
                              s->len) == 0)
            {
                break;
            }
        }

        if (ngx_http_timpush_levels[i].len == 0) {
            return ngx_http_timpush_body_error(err, "invalid_field",
                "offline_push.interruption_level: must be passive, active, "
                "time-sensitive or critical");
        }
    }

    /* apns-collapse-id is a header: no CR, LF or other controls in it */

    if (msg->collapse_id.len > NGX_HTTP_TIMPUSH_COLLAPSE_ID_MAX) {
        return ngx_http_timpush_body_error(err, "invalid_field",
                     "offline_push.collapse_id: must be at most %ui bytes",
                     (ngx_uint_t) NGX_HTTP_TIMPUSH_COLLAPSE_ID_MAX);
    }

    if (ngx_http_timpush_utf8_check(msg->collapse_id.data,
                                    msg->collapse_id.len, 1)
        != NGX_OK)
    {
        return ngx_http_timpush_body_error(err, "invalid_field",
                  "offline_push.collapse_id: must not contain control "
                  "characters");
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_parse_options(ngx_http_timpush_json_t *root,
    ngx_http_timpush_message_t *msg, ngx_uint_t *online_only,
    ngx_http_timpush_render_err_t *err)
{
    u_char                   *p, *last;
    int64_t                   e;
    ngx_uint_t                async;
    ngx_http_timpush_json_t  *v;

    v = ngx_http_timpush_body_get(root, "priority");

    if (v) {
        if (v->type == NGX_HTTP_TIMPUSH_JSON_STRING
            && v->str.len == 4 && ngx_memcmp(v->str.data, "high", 4) == 0)
        {
            msg->priority = NGX_HTTP_TIMPUSH_PRIORITY_HIGH;

        } else if (v->type == NGX_HTTP_TIMPUSH_JSON_STRING
                   && v->str.len == 6
                   && ngx_memcmp(v->str.data, "normal", 6) == 0)
        {
            msg->priority = NGX_HTTP_TIMPUSH_PRIORITY_NORMAL;

        } else if (v->type == NGX_HTTP_TIMPUSH_JSON_STRING
                   && v->str.len == 3
                   && ngx_memcmp(v->str.data, "low", 3) == 0)
        {
            msg->priority = NGX_HTTP_TIMPUSH_PRIORITY_LOW;

        } else {
            return ngx_http_timpush_body_error(err, "invalid_field",
                               "priority: must be \"high\", \"normal\" or "
                               "\"low\"");
        }
    }

    v = ngx_http_timpush_body_get(root, "expiration");

    if (v) {
        /* digits only: no sign, fraction or exponent; at most 18 of them */

        if (v->type != NGX_HTTP_TIMPUSH_JSON_NUMBER
            || v->str.len == 0 || v->str.len > 18
            || (v->str.len > 1 && v->str.data[0] == '0'))
        {
            goto invalid;
        }

        e = 0;
        last = v->str.data + v->str.len;

        for (p = v->str.data; p < last; p++) {
            if (*p < '0' || *p > '9') {
                goto invalid;
            }

            e = e * 10 + (*p - '0');
        }

        msg->expiration = e;
    }

    /* DESIGN §12: 1-128 bytes, no control characters (a header, a key) */

    v = ngx_http_timpush_body_get(root, "msg_id");

    if (v) {
        if (v->type != NGX_HTTP_TIMPUSH_JSON_STRING) {
            return ngx_http_timpush_body_error(err, "invalid_field",
                                               "msg_id: must be a string");
        }

        if (v->str.len == 0 || v->str.len > NGX_HTTP_TIMPUSH_MSG_ID_MAX) {
            return ngx_http_timpush_body_error(err, "invalid_field",
                                      "msg_id: must be 1 to %ui bytes",
                                      (ngx_uint_t) NGX_HTTP_TIMPUSH_MSG_ID_MAX);
        }

        if (ngx_http_timpush_utf8_check(v->str.data, v->str.len, 1)
            != NGX_OK)
        {
            return ngx_http_timpush_body_error(err, "invalid_field",
                          "msg_id: must be UTF-8 without control characters");
        }

        msg->msg_id = v->str;
    }

    /* DESIGN §14: queued in Redis, answered 202 */

    if (ngx_http_timpush_body_bool(root, "", "async", &async, err)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    msg->async = async;

    return ngx_http_timpush_body_bool(root, "", "online_user_only",
                                      online_only, err);

invalid:

    return ngx_http_timpush_body_error(err, "invalid_field",
                      "expiration: must be an integer >= 0 (unix seconds)");
}


/* §6.1: the elements' texts joined in order, no separator */

static ngx_int_t
ngx_http_timpush_parse_content(ngx_pool_t *pool,
    ngx_http_timpush_json_t *root, ngx_uint_t limit, ngx_str_t *content,
    ngx_http_timpush_render_err_t *err)
{
    u_char                   *p;
    size_t                    len;
    ngx_int_t                 rc;
    ngx_str_t                 text;
    ngx_uint_t                i;
    ngx_http_timpush_json_t  *elems, *v;

    ngx_str_set(content, "");

    elems = ngx_http_timpush_body_get(root, "elems");
    if (elems == NULL) {
        return NGX_OK;
    }

    if (elems->type != NGX_HTTP_TIMPUSH_JSON_ARRAY) {
        return ngx_http_timpush_body_error(err, "invalid_field",
                                     "elems: must be an array of objects");
    }

    if (elems->overflow) {
        return ngx_http_timpush_body_error(err, "invalid_field",
                                           "elems: at most %ui elements",
                                           limit);
    }

    len = 0;

    for (v = elems->child, i = 0; v; v = v->next, i++) {
        rc = ngx_http_timpush_parse_elem(v, i, &text, err);
        if (rc != NGX_OK) {
            return rc;
        }

        len += text.len;
    }

    if (len == 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    content->data = p;
    content->len = len;

    /* validated above: the second pass cannot fail */

    for (v = elems->child, i = 0; v; v = v->next, i++) {
        (void) ngx_http_timpush_parse_elem(v, i, &text, err);
        p = ngx_cpymem(p, text.data, text.len);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_parse_elem(ngx_http_timpush_json_t *elem, ngx_uint_t i,
    ngx_str_t *text, ngx_http_timpush_render_err_t *err)
{
    u_char                    prefix[32];
    ngx_str_t                 desc, *type;
    ngx_uint_t                t;
    ngx_http_timpush_json_t  *v;

    if (elem->type != NGX_HTTP_TIMPUSH_JSON_OBJECT) {
        return ngx_http_timpush_body_error(err, "invalid_field",
                                           "elems[%ui]: must be an object",
                                           i);
    }

    *ngx_snprintf(prefix, sizeof(prefix) - 1, "elems[%ui].", i) = '\0';

    v = ngx_http_timpush_body_get(elem, "type");

    for (t = 0; ngx_http_timpush_elem_types[t][0].len; t++) {
        type = &ngx_http_timpush_elem_types[t][0];

        if (v && v->type == NGX_HTTP_TIMPUSH_JSON_STRING
            && v->str.len == type->len
            && ngx_memcmp(v->str.data, type->data, type->len) == 0)
        {
            break;
        }
    }

    switch (t) {

    case NGX_HTTP_TIMPUSH_ELEM_TEXT:
        v = ngx_http_timpush_body_get(elem, "text");

        if (v == NULL || v->type != NGX_HTTP_TIMPUSH_JSON_STRING) {
            return ngx_http_timpush_body_error(err, "invalid_field",
                                               "%stext: must be a string",
                                               prefix);
        }

        *text = v->str;
        return NGX_OK;

    case NGX_HTTP_TIMPUSH_ELEM_LOCATION:
    case NGX_HTTP_TIMPUSH_ELEM_CUSTOM:
        if (ngx_http_timpush_body_str(elem, (char *) prefix, "desc", &desc,
                                      err)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }

        /* a custom element shows its desc, never its data */

        *text = (t == NGX_HTTP_TIMPUSH_ELEM_CUSTOM)
                ? desc : ngx_http_timpush_elem_types[t][1];
        return NGX_OK;

    default:
        if (ngx_http_timpush_elem_types[t][0].len == 0) {
            return ngx_http_timpush_body_error(err, "invalid_field",
                               "%stype: must be one of text, audio, file, "
                               "image, video, location, face, custom",
                               prefix);
        }

        *text = ngx_http_timpush_elem_types[t][1];
        return NGX_OK;
    }
}


/*
 * §6.3: the name shown before the content.  A name card belongs to
 * a group: a one-to-one message shows the nickname.  The ids are checked,
 * not shown.
 */

static ngx_int_t
ngx_http_timpush_parse_names(ngx_http_timpush_json_t *root, ngx_str_t *name,
    ngx_str_t *group_name, ngx_http_timpush_render_err_t *err)
{
    ngx_str_t                 nickname, name_card, user_id, group_id;
    ngx_http_timpush_json_t  *from, *group;

    if (ngx_http_timpush_body_object(root, "from", &from, err) != NGX_OK
        || ngx_http_timpush_body_str(from, "from.", "user_id", &user_id, err)
           != NGX_OK
        || ngx_http_timpush_body_str(from, "from.", "nickname", &nickname,
                                     err)
           != NGX_OK
        || ngx_http_timpush_body_str(from, "from.", "name_card", &name_card,
                                     err)
           != NGX_OK
        || ngx_http_timpush_body_object(root, "group", &group, err) != NGX_OK
        || ngx_http_timpush_body_str(group, "group.", "id", &group_id, err)
           != NGX_OK
        || ngx_http_timpush_body_str(group, "group.", "name", group_name, err)
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    *name = (group && name_card.len) ? name_card : nickname;

    return NGX_OK;
}


/* "Name (Group name): ", "(Group name): ", "Name: " or nothing */

static ngx_int_t
ngx_http_timpush_compose_body(ngx_pool_t *pool, ngx_str_t *name,
    ngx_str_t *group_name, ngx_str_t *content,
    ngx_http_timpush_message_t *msg)
{
    u_char  *p;
    size_t   len;

    if (name->len == 0 && group_name->len == 0) {
        msg->body = *content;
        return NGX_OK;
    }

    len = name->len + sizeof(": ") - 1 + content->len;

    if (group_name->len) {
        len += sizeof("()") - 1 + group_name->len + (name->len ? 1 : 0);
    }

    p = ngx_pnalloc(pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    msg->body.data = p;
    msg->body.len = len;

    p = ngx_cpymem(p, name->data, name->len);

    if (group_name->len) {
        if (name->len) {
            *p++ = ' ';
        }

        *p++ = '(';
        p = ngx_cpymem(p, group_name->data, group_name->len);
        *p++ = ')';
    }

    *p++ = ':';
    *p++ = ' ';
    ngx_memcpy(p, content->data, content->len);

    return NGX_OK;
}


/*
 * What is pushed, if anything.  Skip reasons go from the sender's explicit
 * choices to the derived one: disable, then online_user_only, then an
 * empty body.  An empty body with content_available is not skipped but is
 * a background push: Apple wants its aps to hold content-available alone
 * (no alert, sound or badge) and refuses apns-priority 10 for it.
 */

static void
ngx_http_timpush_message_kind(ngx_http_timpush_message_t *msg,
    ngx_uint_t disable, ngx_uint_t online_only)
{
    msg->background = (msg->body.len == 0 && msg->content_available);

    if (disable) {
        msg->skip = NGX_HTTP_TIMPUSH_SKIP_DISABLED;

    } else if (online_only) {
        msg->skip = NGX_HTTP_TIMPUSH_SKIP_ONLINE_ONLY;

    } else if (msg->body.len == 0 && !msg->background) {
        msg->skip = NGX_HTTP_TIMPUSH_SKIP_NO_CONTENT;
    }

    if (msg->voip) {
        ngx_str_set(&msg->push_type, "voip");
        ngx_str_set(&msg->topic_suffix, ".voip");
        msg->max_payload = NGX_HTTP_TIMPUSH_PAYLOAD_MAX_VOIP;

    } else if (msg->background) {
        ngx_str_set(&msg->push_type, "background");

        if (msg->priority == NGX_HTTP_TIMPUSH_PRIORITY_HIGH) {
            msg->priority = NGX_HTTP_TIMPUSH_PRIORITY_NORMAL;
        }
    }
}


ngx_str_t *
ngx_http_timpush_skip_reason(ngx_uint_t skip)
{
    if (skip > NGX_HTTP_TIMPUSH_SKIP_NO_CONTENT) {
        skip = NGX_HTTP_TIMPUSH_SKIP_NONE;
    }

    return &ngx_http_timpush_skip_reasons[skip];
}


/*
 * §6.10.  The fixed parts are measured with an empty body and room for
 * a badge of NGX_HTTP_TIMPUSH_BADGE_DIGITS digits; what is left is the
 * body's, as escaped.  A body that does not fit is cut at a character
 * boundary and ends with "…".
 */

ngx_int_t
ngx_http_timpush_payload_build(ngx_pool_t *pool,
    ngx_http_timpush_message_t *msg, ngx_http_timpush_payload_t *pl,
    ngx_http_timpush_render_err_t *err)
{
    u_char                  *p;
    size_t                   base, fixed, room, esc, n, badge_at;
    ngx_str_t                empty, body;
    ngx_http_timpush_out_t   out;

    ngx_memzero(pl, sizeof(ngx_http_timpush_payload_t));

    pl->has_badge = !msg->ignore_badge && !msg->background;

    ngx_str_set(&empty, "");
    out.pos = NULL;
    out.len = 0;

    ngx_http_timpush_payload_render(&out, msg, &empty, &badge_at);

    base = out.len;
    fixed = base + (pl->has_badge ? NGX_HTTP_TIMPUSH_BADGE_DIGITS : 0);

    if (fixed > msg->max_payload) {
        goto too_large;
    }

    room = msg->max_payload - fixed;
    body = msg->background ? empty : msg->body;
    esc = ngx_http_timpush_escaped_len(&body);

    if (esc > room) {
        if (room < sizeof(NGX_HTTP_TIMPUSH_ELLIPSIS) - 1) {
            goto too_large;
        }

        n = ngx_http_timpush_cut(&body, room
                                 - (sizeof(NGX_HTTP_TIMPUSH_ELLIPSIS) - 1));

        p = ngx_pnalloc(pool, n + sizeof(NGX_HTTP_TIMPUSH_ELLIPSIS) - 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(p, body.data, n);
        ngx_memcpy(p + n, NGX_HTTP_TIMPUSH_ELLIPSIS,
                   sizeof(NGX_HTTP_TIMPUSH_ELLIPSIS) - 1);

        body.data = p;
        body.len = n + sizeof(NGX_HTTP_TIMPUSH_ELLIPSIS) - 1;
        esc = ngx_http_timpush_escaped_len(&body);
        pl->cut = 1;
    }

    n = base + esc;

    p = ngx_pnalloc(pool, n);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out.pos = p;
    out.len = 0;

    ngx_http_timpush_payload_render(&out, msg, &body, &badge_at);

    pl->body = body;

    if (pl->has_badge) {
        pl->head.data = p;
        pl->head.len = badge_at;
        pl->tail.data = p + badge_at;
        pl->tail.len = n - badge_at;

    } else {
        pl->head.data = p;
        pl->head.len = n;
        ngx_str_set(&pl->tail, "");
    }

    return NGX_OK;

too_large:

    return ngx_http_timpush_body_error(err, "payload_too_large",
                  "payload: over %uz bytes even with the alert body cut",
                  msg->max_payload);
}


static void
ngx_http_timpush_payload_render(ngx_http_timpush_out_t *out,
    ngx_http_timpush_message_t *msg, ngx_str_t *body, size_t *badge_at)
{
    *badge_at = 0;

    ngx_http_timpush_out_lit(out, "{\"aps\":{");

    if (msg->background) {
        ngx_http_timpush_out_lit(out, "\"content-available\":1}");
        goto top;
    }

    ngx_http_timpush_out_lit(out, "\"alert\":");

    if (msg->title.len || msg->subtitle.len) {
        ngx_http_timpush_out_lit(out, "{");

        if (msg->title.len) {
            ngx_http_timpush_out_lit(out, "\"title\":");
            ngx_http_timpush_out_str(out, &msg->title);
            ngx_http_timpush_out_lit(out, ",");
        }

        if (msg->subtitle.len) {
            ngx_http_timpush_out_lit(out, "\"subtitle\":");
            ngx_http_timpush_out_str(out, &msg->subtitle);
            ngx_http_timpush_out_lit(out, ",");
        }

        ngx_http_timpush_out_lit(out, "\"body\":");
        ngx_http_timpush_out_str(out, body);
        ngx_http_timpush_out_lit(out, "}");

    } else {
        ngx_http_timpush_out_str(out, body);
    }

    if (!msg->ignore_badge) {
        ngx_http_timpush_out_lit(out, ",\"badge\":");
        *badge_at = out->len;
    }

    if (!msg->sound_none) {
        ngx_http_timpush_out_lit(out, ",\"sound\":");
        ngx_http_timpush_out_str(out, &msg->sound);
    }

    if (msg->content_available) {
        ngx_http_timpush_out_lit(out, ",\"content-available\":1");
    }

    if (msg->mutable_content || msg->image.len) {
        ngx_http_timpush_out_lit(out, ",\"mutable-content\":1");
    }

    if (msg->interruption_level.len) {
        ngx_http_timpush_out_lit(out, ",\"interruption-level\":");
        ngx_http_timpush_out_str(out, &msg->interruption_level);
    }

    if (msg->category.len) {
        ngx_http_timpush_out_lit(out, ",\"category\":");
        ngx_http_timpush_out_str(out, &msg->category);
    }

    if (msg->thread_id.len) {
        ngx_http_timpush_out_lit(out, ",\"thread-id\":");
        ngx_http_timpush_out_str(out, &msg->thread_id);
    }

    ngx_http_timpush_out_lit(out, "}");

top:

    if (msg->ext.len) {
        ngx_http_timpush_out_lit(out, ",\"ext\":");
        ngx_http_timpush_out_str(out, &msg->ext);
    }

    if (msg->image.len && !msg->background) {
        ngx_http_timpush_out_lit(out, ",\"image\":");
        ngx_http_timpush_out_str(out, &msg->image);
    }

    ngx_http_timpush_out_lit(out, "}");
}


static void
ngx_http_timpush_out_raw(ngx_http_timpush_out_t *out, const char *s,
    size_t len)
{
    if (out->pos) {
        out->pos = ngx_cpymem(out->pos, s, len);
    }

    out->len += len;
}


/* a JSON string as yajl_gen writes it; UTF-8 text passes through */

static void
ngx_http_timpush_out_str(ngx_http_timpush_out_t *out, ngx_str_t *s)
{
    u_char      c, *p, *d;
    size_t      i;

    static u_char  hex[] = "0123456789abcdef";

    if (out->pos == NULL) {
        out->len += ngx_http_timpush_escaped_len(s) + 2;
        return;
    }

    d = out->pos;
    *d++ = '"';

    for (i = 0, p = s->data; i < s->len; i++) {
        c = p[i];

        switch (c) {

        case '"':
        case '\\':
            *d++ = '\\';
            *d++ = c;
            break;

        case '\b':
            *d++ = '\\';
            *d++ = 'b';
            break;

        case '\f':
            *d++ = '\\';
            *d++ = 'f';
            break;

        case '\n':
            *d++ = '\\';
            *d++ = 'n';
            break;

        case '\r':
            *d++ = '\\';
            *d++ = 'r';
            break;

        case '\t':
            *d++ = '\\';
            *d++ = 't';
            break;

        default:
            if (c < 0x20) {
                d = ngx_cpymem(d, "\\u00", 4);
                *d++ = hex[c >> 4];
                *d++ = hex[c & 0xf];

            } else {
                *d++ = c;
            }
        }
    }

    *d++ = '"';

    out->len += d - out->pos;
    out->pos = d;
}


static size_t
ngx_http_timpush_escaped_len(ngx_str_t *s)
{
    u_char  c;
    size_t  i, len;

    len = s->len;

    for (i = 0; i < s->len; i++) {
        c = s->data[i];

        if (c == '"' || c == '\\') {
            len++;

        } else if (c < 0x20) {
            len += (c == '\b' || c == '\f' || c == '\n' || c == '\r'
                    || c == '\t') ? 1 : 5;
        }
    }

    return len;
}


/* the length of the longest prefix of whole characters that, escaped,
 * takes at most room bytes */

static size_t
ngx_http_timpush_cut(ngx_str_t *s, size_t room)
{
    u_char     c, *p, *last;
    size_t     used, n, w;
    ngx_str_t  one;

    p = s->data;
    last = p + s->len;
    used = 0;

    while (p < last) {
        c = *p;
        n = (c < 0x80) ? 1 : (c < 0xe0) ? 2 : (c < 0xf0) ? 3 : 4;

        if (n > (size_t) (last - p)) {
            break;
        }

        one.data = p;
        one.len = n;
        w = ngx_http_timpush_escaped_len(&one);

        if (used + w > room) {
            break;
        }

        used += w;
        p += n;
    }

    return p - s->data;
}


size_t
ngx_http_timpush_payload_len(ngx_http_timpush_payload_t *pl, uint64_t badge)
{
    size_t  len;

    len = pl->head.len + pl->tail.len;

    if (pl->has_badge) {
        if (badge > NGX_HTTP_TIMPUSH_BADGE_MAX) {
            badge = NGX_HTTP_TIMPUSH_BADGE_MAX;
        }

        do {
            len++;
            badge /= 10;
        } while (badge);
    }

    return len;
}


u_char *
ngx_http_timpush_payload_write(u_char *dst, ngx_http_timpush_payload_t *pl,
    uint64_t badge)
{
    u_char  *p, digits[NGX_HTTP_TIMPUSH_BADGE_DIGITS];

    dst = ngx_cpymem(dst, pl->head.data, pl->head.len);

    if (!pl->has_badge) {
        return dst;
    }

    if (badge > NGX_HTTP_TIMPUSH_BADGE_MAX) {
        badge = NGX_HTTP_TIMPUSH_BADGE_MAX;
    }

    p = digits + NGX_HTTP_TIMPUSH_BADGE_DIGITS;

    do {
        *--p = (u_char) ('0' + badge % 10);
        badge /= 10;
    } while (badge);

    dst = ngx_cpymem(dst, p, digits + NGX_HTTP_TIMPUSH_BADGE_DIGITS - p);

    return ngx_cpymem(dst, pl->tail.data, pl->tail.len);
}


