
/*
 * Copyright (C) timpush authors
 *
 * One device, one account (DESIGN §12): a token belongs to one user.  The
 * reverse index "<prefix>:t:{<token>}" names its holder, and, after it,
 * users that may still have the token in their hash (a registration cut
 * short).  It is a key of its own (its own slot on Redis Cluster), so it
 * and the users' hashes are changed by separate script calls, in an order
 * that keeps them in step:
 *
 *   register B/T:  CLAIM the index: B holds it; the users to clean come
 *                  back (A, the holder before, and any left over);
 *                  B's REGISTER (it may kick tokens of B's);
 *                  T out of each such user's hash if registered there no
 *                  later than B's registration (the answer's moved_from),
 *                  and the kicked tokens' indexes RELEASEd;
 *                  SETTLE: if B still holds the index, the users cleaned
 *                  are forgotten; if another registration claimed it
 *                  meanwhile, B's registration is taken back (UNDO) and
 *                  the answer is 409: the other one holds the token.
 *   remove from B: B's script (UNREGISTER, LOGOUT), then the indexes of
 *                  the tokens it removed RELEASEd if B still holds them;
 *                  a prune (push.c) releases the index alone.
 *
 * So once a registration is answered, no push to A reaches T; of two
 * registrations racing, the one that claimed last keeps T, and the other
 * is told so; a sequence cut short (Redis lost, a timeout) leaves the
 * users to clean in the index, where the next registration finds them.
 * A sequence runs to its end even when the request is gone (detach).
 */


#include "ngx_http_timpush.h"
#include "ngx_http_timpush_metrics.h"


typedef enum {
    NGX_HTTP_TIMPUSH_OWNER_CLAIM = 0,
    NGX_HTTP_TIMPUSH_OWNER_SCRIPT,     /* the user's REGISTER, LOGOUT... */
    NGX_HTTP_TIMPUSH_OWNER_CLEAN,      /* T out of a former holder's hash */
    NGX_HTTP_TIMPUSH_OWNER_RELEASE,
    NGX_HTTP_TIMPUSH_OWNER_SETTLE,
    NGX_HTTP_TIMPUSH_OWNER_UNDO
} ngx_http_timpush_owner_step_e;


struct ngx_http_timpush_owner_s {
    ngx_pool_t                         *pool;
    ngx_log_t                          *log;
    ngx_str_t                           user;
    ngx_str_t                           key;         /* the user's hash */
    ngx_str_t                           token;
    ngx_str_t                           stamp;       /* registration ms */
    ngx_str_t                           before;      /* stamp + 1 */
    ngx_http_timpush_script_e           script;
    ngx_str_t                          *args;
    ngx_uint_t                          nargs;
    ngx_http_timpush_owner_done_pt      done;
    void                               *data;

    ngx_uint_t                          pending;     /* commands out */
    ngx_int_t                           rc;          /* first failure */

    ngx_array_t                         removed;     /* ngx_str_t tokens */
    ngx_uint_t                          business_id; /* registration's */
    ngx_array_t                         cleaned;     /* ngx_str_t users */
    ngx_str_t                           moved_from;
    ngx_str_t                           holder;      /* who won a race */
};


/* one command of a sequence, and what it is about */

typedef struct {
    ngx_http_timpush_owner_t           *owner;
    ngx_http_timpush_owner_step_e       step;
    ngx_str_t                           name;        /* a user, a token */
} ngx_http_timpush_owner_cmd_t;


static ngx_int_t ngx_http_timpush_owner_run(ngx_http_timpush_owner_t *o,
    ngx_http_timpush_owner_step_e step, ngx_str_t *name,
    ngx_http_timpush_script_e script, ngx_str_t *key, ngx_str_t *args,
    ngx_uint_t nargs);
static ngx_int_t ngx_http_timpush_owner_index(ngx_http_timpush_owner_t *o,
    ngx_http_timpush_owner_step_e step, ngx_http_timpush_script_e script,
    ngx_str_t *token);
static void ngx_http_timpush_owner_reply(void *data, redisReply *reply,
    ngx_int_t rc);
static ngx_int_t ngx_http_timpush_owner_step(ngx_http_timpush_owner_t *o,
    ngx_http_timpush_owner_cmd_t *cmd, redisReply *reply);
static ngx_int_t ngx_http_timpush_owner_cleanup(ngx_http_timpush_owner_t *o,
    redisReply *reply);
static ngx_int_t ngx_http_timpush_owner_settle(ngx_http_timpush_owner_t *o);
static ngx_int_t ngx_http_timpush_owner_stamp(ngx_http_timpush_owner_t *o);
static ngx_int_t ngx_http_timpush_owner_strings(ngx_http_timpush_owner_t *o,
    redisReply *reply, ngx_array_t *a);
static ngx_int_t ngx_http_timpush_owner_logout(ngx_http_timpush_owner_t *o,
    redisReply *reply);
static ngx_uint_t ngx_http_timpush_owner_business_id(redisReply *r);
static ngx_int_t ngx_http_timpush_owner_release_all(
    ngx_http_timpush_owner_t *o);
static ngx_int_t ngx_http_timpush_owner_copy(ngx_pool_t *pool, ngx_str_t *dst,
    u_char *data, size_t len);
static void ngx_http_timpush_owner_end(ngx_http_timpush_owner_t *o);


ngx_http_timpush_owner_t *
ngx_http_timpush_owner_create(ngx_log_t *log, ngx_str_t *user)
{
    ngx_pool_t                *pool;
    ngx_http_timpush_owner_t  *o;

    pool = ngx_create_pool(1024, log);
    if (pool == NULL) {
        return NULL;
    }

    o = ngx_pcalloc(pool, sizeof(ngx_http_timpush_owner_t));
    if (o == NULL) {
        goto failed;
    }

    o->pool = pool;
    o->log = log;

    if (ngx_array_init(&o->removed, pool, 4, sizeof(ngx_str_t)) != NGX_OK
        || ngx_array_init(&o->cleaned, pool, 2, sizeof(ngx_str_t)) != NGX_OK
        || ngx_http_timpush_owner_copy(pool, &o->user, user->data, user->len)
           != NGX_OK
        || ngx_http_timpush_store_key(pool, &o->user, &o->key) != NGX_OK)
    {
        goto failed;
    }

    return o;

failed:

    ngx_destroy_pool(pool);
    return NULL;
}


/*
 * The registration of token by the user: args are the user's REGISTER
 * script's (token, business_id, registered_ms, max), copied.  NGX_OK:
 * done() will be called; else a store error, nothing was sent, and the
 * caller destroys the owner.
 */

ngx_int_t
ngx_http_timpush_owner_register(ngx_http_timpush_owner_t *o,
    ngx_str_t *token, ngx_str_t *args, ngx_uint_t nargs,
    ngx_http_timpush_owner_done_pt done, void *data)
{
    ngx_uint_t  i;

    o->script = NGX_HTTP_TIMPUSH_SCRIPT_REGISTER;
    o->done = done;
    o->data = data;

    o->args = ngx_palloc(o->pool, nargs * sizeof(ngx_str_t));
    if (o->args == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < nargs; i++) {
        if (ngx_http_timpush_owner_copy(o->pool, &o->args[i], args[i].data,
                                        args[i].len)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    o->nargs = nargs;
    o->token = o->args[0];
    o->stamp = o->args[2];
    o->business_id = ngx_atoi(o->args[1].data, o->args[1].len);

    return ngx_http_timpush_owner_index(o, NGX_HTTP_TIMPUSH_OWNER_CLAIM,
                                        NGX_HTTP_TIMPUSH_SCRIPT_CLAIM,
                                        &o->token);
}


/*
 * A script of the user's that removes tokens (UNREGISTER token ->
 * business_id|0, LOGOUT [token] -> {token, business_id, ...}), then their
 * indexes released.
 */

ngx_int_t
ngx_http_timpush_owner_remove(ngx_http_timpush_owner_t *o,
    ngx_http_timpush_script_e script, ngx_str_t *args, ngx_uint_t nargs,
    ngx_http_timpush_owner_done_pt done, void *data)
{
    o->script = script;
    o->done = done;
    o->data = data;

    if (nargs
        && ngx_http_timpush_owner_copy(o->pool, &o->token, args[0].data,
                                       args[0].len)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_timpush_owner_run(o, NGX_HTTP_TIMPUSH_OWNER_SCRIPT, NULL,
                                      script, &o->key, args, nargs);
}


/* a token already gone from the user's hash (a prune): its index */

ngx_int_t
ngx_http_timpush_owner_release(ngx_http_timpush_owner_t *o,
    ngx_str_t *token, ngx_http_timpush_owner_done_pt done, void *data)
{
    ngx_str_t  *t;

    o->done = done;
    o->data = data;

    t = ngx_array_push(&o->removed);
    if (t == NULL
        || ngx_http_timpush_owner_copy(o->pool, t, token->data, token->len)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_timpush_owner_release_all(o);
}


/* the caller is going away: the sequence goes on, and frees itself */

void
ngx_http_timpush_owner_detach(ngx_http_timpush_owner_t *o)
{
    o->done = NULL;
    o->data = NULL;

    /* the request's log lives in its connection's pool */
    o->log = ngx_cycle->log;
    o->pool->log = ngx_cycle->log;
}


void
ngx_http_timpush_owner_destroy(ngx_http_timpush_owner_t *o)
{
    ngx_destroy_pool(o->pool);
}


ngx_array_t *
ngx_http_timpush_owner_removed(ngx_http_timpush_owner_t *o)
{
    return &o->removed;
}


ngx_str_t *
ngx_http_timpush_owner_moved_from(ngx_http_timpush_owner_t *o)
{
    return o->moved_from.len ? &o->moved_from : NULL;
}


ngx_str_t *
ngx_http_timpush_owner_holder(ngx_http_timpush_owner_t *o)
{
    return &o->holder;
}


static ngx_int_t
ngx_http_timpush_owner_run(ngx_http_timpush_owner_t *o,
    ngx_http_timpush_owner_step_e step, ngx_str_t *name,
    ngx_http_timpush_script_e script, ngx_str_t *key, ngx_str_t *args,
    ngx_uint_t nargs)
{
    ngx_int_t                      rc;
    ngx_http_timpush_store_cmd_t  *sc;
    ngx_http_timpush_owner_cmd_t  *cmd;

    cmd = ngx_palloc(o->pool, sizeof(ngx_http_timpush_owner_cmd_t));
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    cmd->owner = o;
    cmd->step = step;

    if (name) {
        cmd->name = *name;

    } else {
        ngx_str_null(&cmd->name);
    }

    rc = ngx_http_timpush_store_run(script, key, 1, args, nargs,
                                    ngx_http_timpush_owner_reply, cmd, &sc);
    if (rc != NGX_OK) {
        return rc;
    }

    o->pending++;

    return NGX_OK;
}


/* a script on a token's index, with the user as its first argument */

static ngx_int_t
ngx_http_timpush_owner_index(ngx_http_timpush_owner_t *o,
    ngx_http_timpush_owner_step_e step, ngx_http_timpush_script_e script,
    ngx_str_t *token)
{
    ngx_str_t   key, *args;
    ngx_uint_t  i, n;

    if (ngx_http_timpush_store_token_key(o->pool, token, &key) != NGX_OK) {
        return NGX_ERROR;
    }

    if (script == NGX_HTTP_TIMPUSH_SCRIPT_CLAIM) {
        /* CLAIM user now_ms */

        args = ngx_palloc(o->pool, 2 * sizeof(ngx_str_t));
        if (args == NULL) {
            return NGX_ERROR;
        }

        args[0] = o->user;
        args[1] = o->stamp;

        return ngx_http_timpush_owner_run(o, step, token, script, &key,
                                          args, 2);
    }

    if (script != NGX_HTTP_TIMPUSH_SCRIPT_SETTLE) {
        return ngx_http_timpush_owner_run(o, step, token, script, &key,
                                          &o->user, 1);
    }

    /* SETTLE user cleaned... */

    n = 1 + o->cleaned.nelts;

    args = ngx_palloc(o->pool, n * sizeof(ngx_str_t));
    if (args == NULL) {
        return NGX_ERROR;
    }

    args[0] = o->user;

    for (i = 1; i < n; i++) {
        args[i] = ((ngx_str_t *) o->cleaned.elts)[i - 1];
    }

    return ngx_http_timpush_owner_run(o, step, token, script, &key, args, n);
}


static void
ngx_http_timpush_owner_reply(void *data, redisReply *reply, ngx_int_t rc)
{
    ngx_http_timpush_owner_cmd_t *cmd = data;

    ngx_http_timpush_owner_t  *o;

    o = cmd->owner;
    o->pending--;

    if (rc == NGX_OK && o->rc == NGX_OK) {
        rc = ngx_http_timpush_owner_step(o, cmd, reply);
    }

    if (rc != NGX_OK && o->rc == NGX_OK) {
        o->rc = rc;
    }

    if (o->pending == 0) {
        ngx_http_timpush_owner_end(o);
    }
}


/* what the reply of a step leads to: NGX_OK, or the error to end with */

static ngx_int_t
ngx_http_timpush_owner_step(ngx_http_timpush_owner_t *o,
    ngx_http_timpush_owner_cmd_t *cmd, redisReply *reply)
{
    u_char      tok[32];
    ngx_str_t  *s, args[2];

    switch (cmd->step) {

    case NGX_HTTP_TIMPUSH_OWNER_CLAIM:
        /* the stamp first, then the users to clean, kept in cleaned */

        if (ngx_http_timpush_owner_strings(o, reply, &o->cleaned) != NGX_OK
            || ngx_http_timpush_owner_stamp(o) != NGX_OK)
        {
            return NGX_ERROR;
        }

        return ngx_http_timpush_owner_run(o, NGX_HTTP_TIMPUSH_OWNER_SCRIPT,
                                          NULL, o->script, &o->key, o->args,
                                          o->nargs);

    case NGX_HTTP_TIMPUSH_OWNER_SCRIPT:

        switch (o->script) {

        case NGX_HTTP_TIMPUSH_SCRIPT_UNREGISTER:
            /* the token's business_id if it was there */

            if (reply->type == REDIS_REPLY_STRING) {
                s = ngx_array_push(&o->removed);
                if (s == NULL) {
                    return NGX_ERROR;
                }

                *s = o->token;

                ngx_http_timpush_metric_removed(
                    ngx_http_timpush_owner_business_id(reply), "unset", 1);
            }

            break;

        case NGX_HTTP_TIMPUSH_SCRIPT_LOGOUT:
            if (ngx_http_timpush_owner_logout(o, reply) != NGX_OK) {
                return NGX_ERROR;
            }

            break;

        default: /* NGX_HTTP_TIMPUSH_SCRIPT_REGISTER: the kicked tokens */

            if (ngx_http_timpush_owner_strings(o, reply, &o->removed)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            ngx_http_timpush_metric_removed(o->business_id, "kicked",
                                            o->removed.nelts);

            return ngx_http_timpush_owner_cleanup(o, reply);
        }

        return ngx_http_timpush_owner_release_all(o);

    case NGX_HTTP_TIMPUSH_OWNER_CLEAN:

        if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 1
            && o->moved_from.len == 0)
        {
            o->moved_from = cmd->name;

            *ngx_http_timpush_short_token(tok, &o->token) = '\0';

            ngx_log_error(NGX_LOG_INFO, o->log, 0,
                          "timpush: device %s moved from user \"%V\" to "
                          "user \"%V\"", tok, &o->moved_from, &o->user);

            ngx_http_timpush_metric_removed(o->business_id, "moved", 1);
        }

        s = ngx_array_push(&o->cleaned);
        if (s == NULL) {
            return NGX_ERROR;
        }

        *s = cmd->name;

        return (o->pending == 0) ? ngx_http_timpush_owner_settle(o) : NGX_OK;

    case NGX_HTTP_TIMPUSH_OWNER_RELEASE:

        if (o->script == NGX_HTTP_TIMPUSH_SCRIPT_REGISTER && o->pending == 0) {
            return ngx_http_timpush_owner_settle(o);
        }

        return NGX_OK;

    case NGX_HTTP_TIMPUSH_OWNER_SETTLE:

        if (reply->type != REDIS_REPLY_STRING) {
            return NGX_ERROR;
        }

        if (reply->len == o->user.len
            && ngx_strncmp(reply->str, o->user.data, o->user.len) == 0)
        {
            return NGX_OK;
        }

        /* another registration claimed the token after us: it wins */

        if (ngx_http_timpush_owner_copy(o->pool, &o->holder,
                                        (u_char *) reply->str, reply->len)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        o->moved_from.len = 0;

        args[0] = o->token;
        args[1] = o->stamp;

        return ngx_http_timpush_owner_run(o, NGX_HTTP_TIMPUSH_OWNER_UNDO, NULL,
                                          NGX_HTTP_TIMPUSH_SCRIPT_UNDO,
                                          &o->key, args, 2);

    default: /* NGX_HTTP_TIMPUSH_OWNER_UNDO */
        return NGX_BUSY;
    }
}


/*
 * After the user's REGISTER: the token out of the users the claim named
 * (in "cleaned" until then), the kicked tokens' indexes released, all at
 * once; the settling follows the last of them.
 */

static ngx_int_t
ngx_http_timpush_owner_cleanup(ngx_http_timpush_owner_t *o,
    redisReply *reply)
{
    ngx_int_t    rc;
    ngx_str_t   *users, key, args[2];
    ngx_uint_t   i, n;

    users = o->cleaned.elts;
    n = o->cleaned.nelts;

    /* the users are put back in "cleaned" as each one is */
    o->cleaned.nelts = 0;

    for (i = 0; i < n; i++) {
        if (ngx_http_timpush_store_key(o->pool, &users[i], &key) != NGX_OK) {
            return NGX_ERROR;
        }

        args[0] = o->token;
        args[1] = o->before;

        rc = ngx_http_timpush_owner_run(o, NGX_HTTP_TIMPUSH_OWNER_CLEAN,
                                        &users[i],
                                        NGX_HTTP_TIMPUSH_SCRIPT_PRUNE, &key,
                                        args, 2);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    rc = ngx_http_timpush_owner_release_all(o);
    if (rc != NGX_OK) {
        return rc;
    }

    return (o->pending == 0) ? ngx_http_timpush_owner_settle(o) : NGX_OK;
}


static ngx_int_t
ngx_http_timpush_owner_settle(ngx_http_timpush_owner_t *o)
{
    if (o->rc != NGX_OK) {
        /* a user not cleaned stays in the index, for the next one */
        return NGX_OK;
    }

    return ngx_http_timpush_owner_index(o, NGX_HTTP_TIMPUSH_OWNER_SETTLE,
                                        NGX_HTTP_TIMPUSH_SCRIPT_SETTLE,
                                        &o->token);
}


/*
 * The registration's stamp, as the claim gave it (the first of the
 * strings in cleaned): its time, and the order of registrations of the
 * token; a former holder's registration stamped no later than it goes.
 */

static ngx_int_t
ngx_http_timpush_owner_stamp(ngx_http_timpush_owner_t *o)
{
    u_char     *p;
    int64_t     stamp;
    ngx_str_t  *s;

    if (o->cleaned.nelts == 0) {
        return NGX_ERROR;
    }

    s = o->cleaned.elts;
    stamp = ngx_atoof(s[0].data, s[0].len);

    p = ngx_pnalloc(o->pool, NGX_INT64_LEN);
    if (p == NULL || stamp == NGX_ERROR) {
        return NGX_ERROR;
    }

    o->stamp = s[0];
    o->args[2] = s[0];

    o->before.data = p;
    o->before.len = ngx_sprintf(p, "%L", stamp + 1) - p;

    /* the users to clean, after it */
    ngx_memmove(s, &s[1], (o->cleaned.nelts - 1) * sizeof(ngx_str_t));
    o->cleaned.nelts--;

    return NGX_OK;
}


/* an array of strings into a, copied; anything else is an error */

static ngx_int_t
ngx_http_timpush_owner_strings(ngx_http_timpush_owner_t *o,
    redisReply *reply, ngx_array_t *a)
{
    size_t       i;
    ngx_str_t   *s;
    redisReply  *e;

    if (reply->type != REDIS_REPLY_ARRAY) {
        return NGX_ERROR;
    }

    for (i = 0; i < reply->elements; i++) {
        e = reply->element[i];

        if (e->type != REDIS_REPLY_STRING) {
            return NGX_ERROR;
        }

        if (e->len == 0) {
            continue;
        }

        s = ngx_array_push(a);
        if (s == NULL
            || ngx_http_timpush_owner_copy(o->pool, s, (u_char *) e->str,
                                           e->len)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* LOGOUT's {token, business_id, ...}: the tokens, counted by app */

static ngx_int_t
ngx_http_timpush_owner_logout(ngx_http_timpush_owner_t *o, redisReply *reply)
{
    size_t       i;
    ngx_str_t   *t;
    redisReply  *e;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 2) {
        return NGX_ERROR;
    }

    for (i = 0; i < reply->elements; i += 2) {
        e = reply->element[i];

        if (e->type != REDIS_REPLY_STRING || e->len == 0) {
            return NGX_ERROR;
        }

        t = ngx_array_push(&o->removed);
        if (t == NULL
            || ngx_http_timpush_owner_copy(o->pool, t, (u_char *) e->str,
                                           e->len)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        ngx_http_timpush_metric_removed(
            ngx_http_timpush_owner_business_id(reply->element[i + 1]),
            "logout", 1);
    }

    return NGX_OK;
}


/* a business_id as Redis keeps it; 0 if it is not one */

static ngx_uint_t
ngx_http_timpush_owner_business_id(redisReply *r)
{
    ngx_int_t  n;

    if (r->type != REDIS_REPLY_STRING) {
        return 0;
    }

    n = ngx_atoi((u_char *) r->str, r->len);

    return n == NGX_ERROR ? 0 : (ngx_uint_t) n;
}


/* each token removed from the user: its index, if the user holds it */

static ngx_int_t
ngx_http_timpush_owner_release_all(ngx_http_timpush_owner_t *o)
{
    ngx_int_t   rc;
    ngx_str_t  *t;
    ngx_uint_t  i;

    t = o->removed.elts;

    for (i = 0; i < o->removed.nelts; i++) {
        rc = ngx_http_timpush_owner_index(o, NGX_HTTP_TIMPUSH_OWNER_RELEASE,
                                          NGX_HTTP_TIMPUSH_SCRIPT_RELEASE,
                                          &t[i]);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_owner_copy(ngx_pool_t *pool, ngx_str_t *dst, u_char *data,
    size_t len)
{
    dst->data = ngx_pnalloc(pool, len ? len : 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, data, len);
    dst->len = len;

    return NGX_OK;
}


/* the last reply is in: the caller told, the sequence freed */

static void
ngx_http_timpush_owner_end(ngx_http_timpush_owner_t *o)
{
    ngx_http_timpush_owner_done_pt  done;

    done = o->done;
    o->done = NULL;

    /* done() may free the request, and with it the log the pool was given */
    o->log = ngx_cycle->log;
    o->pool->log = ngx_cycle->log;

    if (done) {
        done(o->data, o, o->rc);
    }

    ngx_destroy_pool(o->pool);
}
