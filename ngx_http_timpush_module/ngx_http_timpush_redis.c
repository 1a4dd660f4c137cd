
/*
 * Copyright (C) timpush authors
 *
 * One connection to one Redis node on nginx's own machinery: connected
 * by ngx_event_connect_peer (TCP or a unix socket), with ngx_ssl when TLS
 * is set (the server certificate always verified, SNI with the host name),
 * its own pool.  Commands are formatted by hiredis into one write buffer
 * and written in a batch per turn of the event loop (posted write event);
 * replies are parsed by hiredis's reader and given to the commands in the
 * order they were sent (the FIFO).  AUTH goes first, and nothing else is
 * written until Redis has accepted it.  Any failure closes the connection,
 * calls back every command waiting with NULL, and the connection is made
 * again after a backoff.  Deadlines of commands are their caller's.
 */


#include "ngx_http_timpush_redis.h"

#include <openssl/x509v3.h>


#define NGX_HTTP_TIMPUSH_REDIS_BACKOFF_MIN   100
#define NGX_HTTP_TIMPUSH_REDIS_BACKOFF_MAX   3000
#define NGX_HTTP_TIMPUSH_REDIS_BACKOFF_AUTH  10000  /* AUTH refused */

/* what a hostile or broken peer may make us hold (replies of ours are
 * far smaller: a user's hash, a batch's badges, one push's body) */
#define NGX_HTTP_TIMPUSH_REDIS_MAX_REPLY     (64 * 1024 * 1024)
#define NGX_HTTP_TIMPUSH_REDIS_MAX_ELEMENTS  (1024 * 1024)

#define NGX_HTTP_TIMPUSH_REDIS_OUT_MIN       16384
#define NGX_HTTP_TIMPUSH_REDIS_OUT_KEEP      (1024 * 1024)
#define NGX_HTTP_TIMPUSH_REDIS_READ          16384


typedef enum {
    NGX_HTTP_TIMPUSH_REDIS_DOWN = 0,       /* waiting to connect again */
    NGX_HTTP_TIMPUSH_REDIS_CONNECTING,
    NGX_HTTP_TIMPUSH_REDIS_HANDSHAKE,
    NGX_HTTP_TIMPUSH_REDIS_AUTH,
    NGX_HTTP_TIMPUSH_REDIS_UP,
    NGX_HTTP_TIMPUSH_REDIS_CLOSED          /* destroyed */
} ngx_http_timpush_redis_state_e;


struct ngx_http_timpush_redis_s {
    ngx_peer_connection_t              pc;
    ngx_log_t                         *log;
    ngx_http_timpush_redis_opts_t     *opts;
    ngx_str_t                          name;
    ngx_str_t                          host;
    ngx_addr_t                         addr;
    ngx_http_timpush_redis_state_pt    state_handler;
    void                              *data;
    ngx_pool_t                        *pool;       /* the connection's */
    redisReader                       *reader;
    ngx_queue_t                        fifo;       /* sent, not answered */
    ngx_http_timpush_redis_req_t       auth;
    u_char                            *out;
    u_char                            *out_pos;
    u_char                            *out_last;
    u_char                            *out_end;
    u_char                            *out_hold;   /* AUTH's end */
    uint64_t                           queued;     /* bytes, this conn. */
    uint64_t                           written;
    ngx_event_t                        timer;      /* connect, TLS, AUTH */
    ngx_event_t                        reconnect;
    ngx_event_t                        free;       /* destroyed in use */
    ngx_msec_t                         backoff;
    ngx_msec_t                         last_reply;
    ngx_uint_t                         state;
    ngx_uint_t                         gen;        /* connections made */
    ngx_uint_t                         calling;    /* callbacks running */
    unsigned                           auth_failed:1;
    unsigned                           destroyed:1;
};


static void ngx_http_timpush_redis_connect(ngx_http_timpush_redis_t *rd);
static void ngx_http_timpush_redis_connected(ngx_event_t *ev);
static ngx_int_t ngx_http_timpush_redis_test_connect(ngx_connection_t *c,
    ngx_http_timpush_redis_t *rd);
static void ngx_http_timpush_redis_handshake(ngx_http_timpush_redis_t *rd);
static void ngx_http_timpush_redis_handshaked(ngx_connection_t *c);
static ngx_int_t ngx_http_timpush_redis_verify(ngx_http_timpush_redis_t *rd);
static void ngx_http_timpush_redis_talk(ngx_http_timpush_redis_t *rd);
static ngx_int_t ngx_http_timpush_redis_auth_command(
    ngx_http_timpush_redis_t *rd);
static void ngx_http_timpush_redis_auth_reply(
    ngx_http_timpush_redis_req_t *req, redisReply *reply);
static void ngx_http_timpush_redis_up(ngx_http_timpush_redis_t *rd);
static void ngx_http_timpush_redis_read_handler(ngx_event_t *ev);
static void ngx_http_timpush_redis_write_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_timpush_redis_parse(ngx_http_timpush_redis_t *rd);
static ngx_int_t ngx_http_timpush_redis_too_large(
    ngx_http_timpush_redis_t *rd);
static ngx_int_t ngx_http_timpush_redis_flush(ngx_http_timpush_redis_t *rd);
static ngx_int_t ngx_http_timpush_redis_append(ngx_http_timpush_redis_t *rd,
    u_char *data, size_t len);
static void ngx_http_timpush_redis_timeout(ngx_event_t *ev);
static void ngx_http_timpush_redis_reconnect(ngx_event_t *ev);
static void ngx_http_timpush_redis_schedule(ngx_http_timpush_redis_t *rd);
static void ngx_http_timpush_redis_close(ngx_http_timpush_redis_t *rd,
    const char *error);
static void ngx_http_timpush_redis_fail(ngx_http_timpush_redis_t *rd);
static ngx_int_t ngx_http_timpush_redis_call(ngx_http_timpush_redis_t *rd,
    ngx_http_timpush_redis_req_t *req, redisReply *reply);
static void ngx_http_timpush_redis_free(ngx_event_t *ev);
static void *ngx_http_timpush_redis_create_array(const redisReadTask *task,
    int elements);


static redisReplyObjectFunctions   ngx_http_timpush_redis_functions;
static void                     *(*ngx_http_timpush_redis_array)(
                                     const redisReadTask *task, int n);

/* the reply being handled, when its handler keeps it */
static redisReply                 *ngx_http_timpush_redis_kept;


/*
 * The node, and its first connection started.  addr: a copy is kept;
 * host: the name the server certificate is checked against (and SNI).
 */

ngx_http_timpush_redis_t *
ngx_http_timpush_redis_create(ngx_log_t *log,
    ngx_http_timpush_redis_opts_t *opts, ngx_str_t *name, ngx_str_t *host,
    ngx_addr_t *addr, ngx_http_timpush_redis_state_pt state, void *data)
{
    u_char                    *p;
    ngx_http_timpush_redis_t  *rd;

    rd = ngx_calloc(sizeof(ngx_http_timpush_redis_t) + name->len + 1
                    + host->len + 1 + addr->socklen, log);
    if (rd == NULL) {
        return NULL;
    }

    p = (u_char *) (rd + 1);

    rd->name.data = p;
    rd->name.len = name->len;
    p = ngx_cpymem(p, name->data, name->len);
    *p++ = '\0';

    rd->host.data = p;
    rd->host.len = host->len;
    p = ngx_cpymem(p, host->data, host->len);
    *p++ = '\0';

    rd->addr.sockaddr = (struct sockaddr *) p;
    rd->addr.socklen = addr->socklen;
    ngx_memcpy(p, addr->sockaddr, addr->socklen);

    rd->log = log;
    rd->opts = opts;
    rd->state_handler = state;
    rd->data = data;
    rd->backoff = NGX_HTTP_TIMPUSH_REDIS_BACKOFF_MIN;

    ngx_queue_init(&rd->fifo);

    rd->auth.handler = ngx_http_timpush_redis_auth_reply;
    rd->auth.data = rd;

    rd->timer.handler = ngx_http_timpush_redis_timeout;
    rd->timer.data = rd;
    rd->timer.log = log;
    rd->timer.cancelable = 1;

    rd->reconnect.handler = ngx_http_timpush_redis_reconnect;
    rd->reconnect.data = rd;
    rd->reconnect.log = log;
    rd->reconnect.cancelable = 1;

    rd->free.handler = ngx_http_timpush_redis_free;
    rd->free.data = rd;
    rd->free.log = log;

    ngx_http_timpush_redis_connect(rd);

    return rd;
}


/*
 * Closed for good: the commands waiting are called back with NULL, the
 * state handler is not called.  Safe from inside a callback of this node:
 * it is then freed once the event being handled is over.
 */

void
ngx_http_timpush_redis_destroy(ngx_http_timpush_redis_t *rd)
{
    if (rd == NULL || rd->destroyed) {
        return;
    }

    rd->destroyed = 1;
    rd->state_handler = NULL;

    if (rd->reconnect.timer_set) {
        ngx_del_timer(&rd->reconnect);
    }

    ngx_http_timpush_redis_close(rd, NULL);

    rd->state = NGX_HTTP_TIMPUSH_REDIS_CLOSED;

    if (rd->out) {
        ngx_free(rd->out);
        rd->out = NULL;
    }

    if (rd->calling == 0) {
        ngx_free(rd);
        return;
    }

    ngx_post_event(&rd->free, &ngx_posted_events);
}


static void
ngx_http_timpush_redis_free(ngx_event_t *ev)
{
    ngx_free(ev->data);
}


ngx_str_t *
ngx_http_timpush_redis_name(ngx_http_timpush_redis_t *rd)
{
    return &rd->name;
}


/* NGX_OK: a command sent now is written (after AUTH) on this connection */

ngx_int_t
ngx_http_timpush_redis_ready(ngx_http_timpush_redis_t *rd)
{
    if (rd == NULL || rd->auth_failed
        || rd->state == NGX_HTTP_TIMPUSH_REDIS_DOWN
        || rd->state == NGX_HTTP_TIMPUSH_REDIS_CLOSED)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* since the last reply (or since the connection was started) */

ngx_msec_t
ngx_http_timpush_redis_idle(ngx_http_timpush_redis_t *rd)
{
    return ngx_current_msec - rd->last_reply;
}


/* dropped by the caller (not answering): made again after the backoff */

void
ngx_http_timpush_redis_reset(ngx_http_timpush_redis_t *rd)
{
    if (ngx_http_timpush_redis_ready(rd) != NGX_OK) {
        return;
    }

    ngx_http_timpush_redis_close(rd, NULL);
    ngx_http_timpush_redis_schedule(rd);
}


/*
 * Queued: NGX_OK, and the handler will be called once, later (never from
 * in here).  NGX_DECLINED: no connection now; NGX_ERROR: out of memory.
 */

ngx_int_t
ngx_http_timpush_redis_send(ngx_http_timpush_redis_t *rd,
    ngx_http_timpush_redis_req_t *req, int argc, const char **argv,
    const size_t *argvlen)
{
    int                n;
    char              *cmd;
    ngx_int_t          rc;
    ngx_connection_t  *c;

    if (ngx_http_timpush_redis_ready(rd) != NGX_OK) {
        return NGX_DECLINED;
    }

    n = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (n < 0) {
        return NGX_ERROR;
    }

    rc = ngx_http_timpush_redis_append(rd, (u_char *) cmd, n);

    redisFreeCommand(cmd);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    req->end = rd->queued;
    ngx_queue_insert_tail(&rd->fifo, &req->queue);

    /* written once this turn of the event loop has queued all it has */

    c = rd->pc.connection;

    if (rd->state == NGX_HTTP_TIMPUSH_REDIS_UP && !c->write->posted) {
        ngx_post_event(c->write, &ngx_posted_events);
    }

    return NGX_OK;
}


static void
ngx_http_timpush_redis_connect(ngx_http_timpush_redis_t *rd)
{
    ngx_int_t          rc;
    ngx_err_t          err;
    ngx_log_t          quiet;
    ngx_connection_t  *c;

    rd->gen++;
    rd->last_reply = ngx_current_msec;

    ngx_memzero(&rd->pc, sizeof(ngx_peer_connection_t));

    /*
     * nginx logs a failed connect() itself, at [crit] for a unix socket
     * that is not there: we say it once, as an [error], below.
     */

    quiet = *rd->log;
    quiet.log_level = NGX_LOG_EMERG;

    rd->pc.sockaddr = rd->addr.sockaddr;
    rd->pc.socklen = rd->addr.socklen;
    rd->pc.name = &rd->name;
    rd->pc.get = ngx_event_get_peer;
    rd->pc.log = &quiet;
    rd->pc.log_error = NGX_ERROR_INFO;

    rc = ngx_event_connect_peer(&rd->pc);
    err = ngx_socket_errno;

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        if (rd->pc.connection) {
            ngx_close_connection(rd->pc.connection);
            rd->pc.connection = NULL;
        }

        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "timpush: Redis %V: connect failed: %s", &rd->name,
                      err ? strerror(err) : "no connection");

        ngx_http_timpush_redis_close(rd, "connect");
        ngx_http_timpush_redis_schedule(rd);
        return;
    }

    c = rd->pc.connection;
    c->log = rd->log;
    c->read->log = rd->log;
    c->write->log = rd->log;
    rd->pc.log = rd->log;

    rd->pool = ngx_create_pool(1024, rd->log);
    rd->reader = redisReaderCreate();

    if (rd->pool == NULL || rd->reader == NULL) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "timpush: Redis %V: out of memory", &rd->name);
        ngx_http_timpush_redis_close(rd, "connect");
        ngx_http_timpush_redis_schedule(rd);
        return;
    }

    if (ngx_http_timpush_redis_array == NULL) {
        ngx_http_timpush_redis_functions = *rd->reader->fn;
        ngx_http_timpush_redis_array =
                                 ngx_http_timpush_redis_functions.createArray;
        ngx_http_timpush_redis_functions.createArray =
                                 ngx_http_timpush_redis_create_array;
    }

    rd->reader->fn = &ngx_http_timpush_redis_functions;
    rd->reader->privdata = rd;

    c->pool = rd->pool;
    c->data = rd;
    c->read->handler = ngx_http_timpush_redis_connected;
    c->write->handler = ngx_http_timpush_redis_connected;

    rd->state = NGX_HTTP_TIMPUSH_REDIS_CONNECTING;

    /* AUTH, the first command of the connection */

    if (ngx_http_timpush_redis_auth_command(rd) != NGX_OK) {
        ngx_http_timpush_redis_close(rd, "connect");
        ngx_http_timpush_redis_schedule(rd);
        return;
    }

    /*
     * Each step (connect, TLS, AUTH) gets the whole timeout from when the
     * event loop starts it: a worker's first connect is made before its
     * clock moves past the other modules' start.
     */

    ngx_add_timer(&rd->timer, rd->opts->timeout);

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rd->log, 0,
                   "timpush: Redis %V: connecting", &rd->name);

    if (rc == NGX_OK) {
        ngx_http_timpush_redis_connected(c->write);
    }
}


static void
ngx_http_timpush_redis_connected(ngx_event_t *ev)
{
    ngx_connection_t          *c = ev->data;
    ngx_http_timpush_redis_t  *rd = c->data;

    if (ngx_http_timpush_redis_test_connect(c, rd) != NGX_OK) {
        ngx_http_timpush_redis_close(rd, "connect");
        ngx_http_timpush_redis_schedule(rd);
        return;
    }

    if (rd->opts->ssl) {
        ngx_add_timer(&rd->timer, rd->opts->timeout);
        ngx_http_timpush_redis_handshake(rd);
        return;
    }

    ngx_http_timpush_redis_talk(rd);
}


static ngx_int_t
ngx_http_timpush_redis_test_connect(ngx_connection_t *c,
    ngx_http_timpush_redis_t *rd)
{
    int        err;
    socklen_t  len;

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    if (err) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "timpush: Redis %V: connect failed: %s", &rd->name,
                      strerror(err));
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_timpush_redis_handshake(ngx_http_timpush_redis_t *rd)
{
    u_char            *name;
    ngx_int_t          rc;
    ngx_str_t         *host;
    ngx_connection_t  *c;

    c = rd->pc.connection;

    if (ngx_ssl_create_connection(rd->opts->ssl, c, NGX_SSL_CLIENT)
        != NGX_OK)
    {
        ngx_http_timpush_redis_close(rd, "connect");
        ngx_http_timpush_redis_schedule(rd);
        return;
    }

    /* our write buffer moves and grows between two tries of a write */

    SSL_set_mode(c->ssl->connection, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
                                     |SSL_MODE_ENABLE_PARTIAL_WRITE);

    host = rd->opts->tls_name.len ? &rd->opts->tls_name : &rd->host;

    /* SNI takes names only, not addresses */

    if (host->len
        && ngx_inet_addr(host->data, host->len) == INADDR_NONE
#if (NGX_HAVE_INET6)
        && ngx_inet6_addr(host->data, host->len, NULL) != NGX_OK
#endif
       )
    {
        name = ngx_pnalloc(rd->pool, host->len + 1);
        if (name == NULL) {
            ngx_http_timpush_redis_close(rd, "connect");
            ngx_http_timpush_redis_schedule(rd);
            return;
        }

        ngx_cpystrn(name, host->data, host->len + 1);

        if (SSL_set_tlsext_host_name(c->ssl->connection, (char *) name)
            != 1)
        {
            ngx_http_timpush_redis_close(rd, "connect");
            ngx_http_timpush_redis_schedule(rd);
            return;
        }
    }

    rd->state = NGX_HTTP_TIMPUSH_REDIS_HANDSHAKE;

    rc = ngx_ssl_handshake(c);

    if (rc == NGX_AGAIN) {
        c->ssl->handler = ngx_http_timpush_redis_handshaked;
        return;
    }

    ngx_http_timpush_redis_handshaked(c);
}


static void
ngx_http_timpush_redis_handshaked(ngx_connection_t *c)
{
    ngx_http_timpush_redis_t  *rd = c->data;

    if (!c->ssl->handshaked) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "timpush: Redis %V: TLS handshake failed (is it a TLS "
                      "port?)", &rd->name);
        ngx_http_timpush_redis_close(rd, "connect");
        ngx_http_timpush_redis_schedule(rd);
        return;
    }

    if (ngx_http_timpush_redis_verify(rd) != NGX_OK) {
        ngx_http_timpush_redis_close(rd, "connect");
        ngx_http_timpush_redis_schedule(rd);
        return;
    }

    ngx_http_timpush_redis_talk(rd);
}


/*
 * The server's certificate, always: its chain against the trusted CAs,
 * and its name (tls_name=, or the host as configured: a DNS name or an
 * IP address in its subjectAltName).
 */

static ngx_int_t
ngx_http_timpush_redis_verify(ngx_http_timpush_redis_t *rd)
{
    long               rc;
    X509              *cert;
    u_char            *name;
    ngx_str_t         *host;
    ngx_connection_t  *c;

    c = rd->pc.connection;

    rc = SSL_get_verify_result(c->ssl->connection);

    if (rc != X509_V_OK) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "timpush: Redis %V: the server certificate is not "
                      "trusted: (%l:%s); nothing is sent to it",
                      &rd->name, rc, X509_verify_cert_error_string(rc));
        return NGX_ERROR;
    }

    cert = SSL_get1_peer_certificate(c->ssl->connection);
    if (cert == NULL) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "timpush: Redis %V: no server certificate",
                      &rd->name);
        return NGX_ERROR;
    }

    host = rd->opts->tls_name.len ? &rd->opts->tls_name : &rd->host;

    name = ngx_pnalloc(rd->pool, host->len + 1);
    if (name == NULL) {
        X509_free(cert);
        return NGX_ERROR;
    }

    ngx_cpystrn(name, host->data, host->len + 1);

    if (host->len == 0
        || (X509_check_host(cert, (char *) name, host->len, 0, NULL) != 1
            && X509_check_ip_asc(cert, (char *) name, 0) != 1))
    {
        X509_free(cert);
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "timpush: Redis %V: the server certificate is not "
                      "for \"%s\"; nothing is sent to it", &rd->name, name);
        return NGX_ERROR;
    }

    X509_free(cert);

    return NGX_OK;
}


/* connected (and TLS done): AUTH, or the commands at once */

static void
ngx_http_timpush_redis_talk(ngx_http_timpush_redis_t *rd)
{
    ngx_connection_t  *c;

    c = rd->pc.connection;

    c->read->handler = ngx_http_timpush_redis_read_handler;
    c->write->handler = ngx_http_timpush_redis_write_handler;

    /* bytes that came while connecting get no new edge */
    if (c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
    }

    if (rd->out_hold == NULL) {
        ngx_http_timpush_redis_up(rd);
        return;
    }

    rd->state = NGX_HTTP_TIMPUSH_REDIS_AUTH;
    ngx_add_timer(&rd->timer, rd->opts->timeout);

    (void) ngx_http_timpush_redis_flush(rd);
}


/*
 * AUTH [user] password, first in the buffer and the FIFO; the commands
 * queued behind it are held until it is accepted (out_hold).
 */

static ngx_int_t
ngx_http_timpush_redis_auth_command(ngx_http_timpush_redis_t *rd)
{
    int                             n, argc;
    char                           *cmd;
    size_t                          argvlen[3];
    ngx_int_t                       rc;
    const char                     *argv[3];
    ngx_http_timpush_redis_opts_t  *opts;

    opts = rd->opts;

    rd->out_pos = rd->out;
    rd->out_last = rd->out;
    rd->out_hold = NULL;
    rd->queued = 0;
    rd->written = 0;

    if (opts->password.len == 0) {
        return NGX_OK;
    }

    argc = 0;
    argv[argc] = "AUTH";
    argvlen[argc++] = 4;

    if (opts->user.len) {
        argv[argc] = (char *) opts->user.data;
        argvlen[argc++] = opts->user.len;
    }

    argv[argc] = (char *) opts->password.data;
    argvlen[argc++] = opts->password.len;

    n = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (n < 0) {
        return NGX_ERROR;
    }

    rc = ngx_http_timpush_redis_append(rd, (u_char *) cmd, n);

    /* the password is not left in freed memory */
    ngx_explicit_memzero(cmd, n);
    redisFreeCommand(cmd);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    rd->out_hold = rd->out_last;
    rd->auth.end = rd->queued;

    ngx_queue_insert_head(&rd->fifo, &rd->auth.queue);

    return NGX_OK;
}


/*
 * A refusal is the operator's to fix: logged (Redis's words, never the
 * password), the connection dropped, and made again after a longer
 * backoff; until Redis takes the password, no command is taken.
 */

static void
ngx_http_timpush_redis_auth_reply(ngx_http_timpush_redis_req_t *req,
    redisReply *reply)
{
    ngx_http_timpush_redis_t  *rd = req->data;

    if (reply == NULL) {
        return;
    }

    if (reply->type != REDIS_REPLY_ERROR) {
        rd->auth_failed = 0;
        ngx_http_timpush_redis_up(rd);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                  "timpush: Redis %V: AUTH%s%V refused: %*s",
                  &rd->name, rd->opts->user.len ? " as " : "",
                  &rd->opts->user, (size_t) reply->len, reply->str);

    rd->auth_failed = 1;
    rd->backoff = NGX_HTTP_TIMPUSH_REDIS_BACKOFF_AUTH;

    ngx_http_timpush_redis_close(rd, "auth");
    ngx_http_timpush_redis_schedule(rd);
}


static void
ngx_http_timpush_redis_up(ngx_http_timpush_redis_t *rd)
{
    ngx_connection_t  *c;

    if (rd->timer.timer_set) {
        ngx_del_timer(&rd->timer);
    }

    if (rd->backoff > NGX_HTTP_TIMPUSH_REDIS_BACKOFF_MIN * 2) {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      "timpush: Redis %V: connected", &rd->name);
    }

    rd->backoff = NGX_HTTP_TIMPUSH_REDIS_BACKOFF_MIN;
    rd->state = NGX_HTTP_TIMPUSH_REDIS_UP;
    rd->out_hold = NULL;

    c = rd->pc.connection;

    if (rd->out_last > rd->out_pos && !c->write->posted) {
        ngx_post_event(c->write, &ngx_posted_events);
    }

    if (rd->state_handler) {
        rd->state_handler(rd->data, 1, NULL);
    }
}


static void
ngx_http_timpush_redis_read_handler(ngx_event_t *ev)
{
    ngx_connection_t          *c = ev->data;
    ngx_http_timpush_redis_t  *rd = c->data;

    ssize_t    n;
    u_char     buf[NGX_HTTP_TIMPUSH_REDIS_READ];
    ngx_err_t  err;

    do {
        n = c->recv(c, buf, sizeof(buf));
        err = ngx_socket_errno;

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "timpush: Redis %V: connection lost: %s",
                          &rd->name,
                          n == 0 ? "closed by the server"
                          : (c->ssl == NULL && err) ? strerror(err)
                          : "read failed");
            ngx_http_timpush_redis_close(rd, "connect");
            ngx_http_timpush_redis_schedule(rd);
            return;
        }

        if (redisReaderFeed(rd->reader, (char *) buf, n) != REDIS_OK) {
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "timpush: Redis %V: out of memory", &rd->name);
            ngx_http_timpush_redis_close(rd, "reply");
            ngx_http_timpush_redis_schedule(rd);
            return;
        }

        if (ngx_http_timpush_redis_parse(rd) != NGX_OK) {
            /* closed, or destroyed */
            return;
        }

    } while (c->read->ready);

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_timpush_redis_close(rd, "connect");
        ngx_http_timpush_redis_schedule(rd);
    }
}


/*
 * Every whole reply read, each to the command at the FIFO's head.
 * NGX_OK: the connection is still the same; anything else: it is closed
 * (or the node destroyed) and nothing of it may be touched.
 */

static ngx_int_t
ngx_http_timpush_redis_parse(ngx_http_timpush_redis_t *rd)
{
    void                          *r;
    ngx_uint_t                     gen;
    ngx_queue_t                   *q;
    redisReply                    *reply;
    ngx_http_timpush_redis_req_t  *req;

    gen = rd->gen;

    for ( ;; ) {
        if (redisReaderGetReply(rd->reader, &r) != REDIS_OK) {
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "timpush: Redis %V: not a Redis reply: %s%s",
                          &rd->name, rd->reader->errstr,
                          rd->opts->ssl == NULL
                          && (ngx_strstr(rd->reader->errstr, "\"\\x15\"")
                              || ngx_strstr(rd->reader->errstr, "\"\\x16\""))
                          ? " (a TLS port? see \"tls\" of timpush_redis)"
                          : "");
            ngx_http_timpush_redis_close(rd, "reply");
            ngx_http_timpush_redis_schedule(rd);
            return NGX_ERROR;
        }

        reply = r;

        if (reply == NULL) {
            break;
        }

        /* an honest server answers only what it has read whole */

        q = ngx_queue_head(&rd->fifo);
        req = ngx_queue_data(q, ngx_http_timpush_redis_req_t, queue);

        if (ngx_queue_empty(&rd->fifo) || req->end > rd->written) {
            freeReplyObject(reply);
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "timpush: Redis %V: a reply to no command sent",
                          &rd->name);
            ngx_http_timpush_redis_close(rd, "reply");
            ngx_http_timpush_redis_schedule(rd);
            return NGX_ERROR;
        }

        ngx_queue_remove(q);

        rd->last_reply = ngx_current_msec;

        if (ngx_http_timpush_redis_call(rd, req, reply) != NGX_OK
            || rd->gen != gen
            || rd->state == NGX_HTTP_TIMPUSH_REDIS_DOWN)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_timpush_redis_too_large(rd);
}


/*
 * hiredis waits for as many bytes as a reply says it has: a bulk string
 * is refused at its length, anything else when it has grown too large.
 */

static ngx_int_t
ngx_http_timpush_redis_too_large(ngx_http_timpush_redis_t *rd)
{
    u_char       *p, *last;
    size_t        len;
    redisReader  *r;

    r = rd->reader;

    p = (u_char *) r->buf + r->pos;
    last = (u_char *) r->buf + r->len;
    len = last - p;

    if (len > NGX_HTTP_TIMPUSH_REDIS_MAX_REPLY) {
        goto large;
    }

    /* a bulk string begun: its type byte read, its length next */

    if (r->ridx < 0 || r->rstack[r->ridx].type != REDIS_REPLY_STRING) {
        return NGX_OK;
    }

    for (len = 0; p < last && *p >= '0' && *p <= '9'; p++) {
        len = len * 10 + (*p - '0');

        if (len > NGX_HTTP_TIMPUSH_REDIS_MAX_REPLY) {
            goto large;
        }
    }

    return NGX_OK;

large:

    ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                  "timpush: Redis %V: a reply of more than %uz bytes",
                  &rd->name, (size_t) NGX_HTTP_TIMPUSH_REDIS_MAX_REPLY);
    ngx_http_timpush_redis_close(rd, "reply");
    ngx_http_timpush_redis_schedule(rd);

    return NGX_ERROR;
}


static void *
ngx_http_timpush_redis_create_array(const redisReadTask *task, int elements)
{
    if (elements > NGX_HTTP_TIMPUSH_REDIS_MAX_ELEMENTS) {
        /* the reader fails: "Out of memory" */
        return NULL;
    }

    return ngx_http_timpush_redis_array(task, elements);
}


static void
ngx_http_timpush_redis_write_handler(ngx_event_t *ev)
{
    ngx_connection_t          *c = ev->data;
    ngx_http_timpush_redis_t  *rd = c->data;

    (void) ngx_http_timpush_redis_flush(rd);
}


/* as much as the socket takes; before AUTH is accepted, AUTH only */

static ngx_int_t
ngx_http_timpush_redis_flush(ngx_http_timpush_redis_t *rd)
{
    u_char            *limit;
    ssize_t            n;
    ngx_connection_t  *c;

    c = rd->pc.connection;
    limit = rd->out_hold ? rd->out_hold : rd->out_last;

    while (rd->out_pos < limit) {
        n = c->send(c, rd->out_pos, limit - rd->out_pos);

        if (n == NGX_ERROR) {
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "timpush: Redis %V: connection lost: write failed",
                          &rd->name);
            ngx_http_timpush_redis_close(rd, "connect");
            ngx_http_timpush_redis_schedule(rd);
            return NGX_ERROR;
        }

        if (n == NGX_AGAIN || n == 0) {
            break;
        }

        rd->out_pos += n;
        rd->written += n;
    }

    if (rd->out_pos == rd->out_last && rd->out_hold == NULL) {
        if (rd->out_end - rd->out > NGX_HTTP_TIMPUSH_REDIS_OUT_KEEP) {
            ngx_free(rd->out);
            rd->out = NULL;
            rd->out_end = NULL;
        }

        rd->out_pos = rd->out;
        rd->out_last = rd->out;
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        ngx_http_timpush_redis_close(rd, "connect");
        ngx_http_timpush_redis_schedule(rd);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_redis_append(ngx_http_timpush_redis_t *rd, u_char *data,
    size_t len)
{
    u_char  *out;
    size_t   used, size;

    if ((size_t) (rd->out_end - rd->out_last) < len) {
        used = rd->out_last - rd->out_pos;
        size = rd->out_end - rd->out;

        if (size - used < len) {
            size = ngx_max(ngx_max(size * 2, used + len),
                           NGX_HTTP_TIMPUSH_REDIS_OUT_MIN);

            out = ngx_alloc(size, rd->log);
            if (out == NULL) {
                return NGX_ERROR;
            }

        } else {
            out = rd->out;
        }

        if (used) {
            ngx_memmove(out, rd->out_pos, used);
        }

        if (rd->out_hold) {
            rd->out_hold = out + (rd->out_hold - rd->out_pos);
        }

        if (out != rd->out && rd->out) {
            ngx_free(rd->out);
        }

        rd->out = out;
        rd->out_end = out + size;
        rd->out_pos = out;
        rd->out_last = out + used;
    }

    rd->out_last = ngx_cpymem(rd->out_last, data, len);
    rd->queued += len;

    return NGX_OK;
}


static void
ngx_http_timpush_redis_timeout(ngx_event_t *ev)
{
    ngx_http_timpush_redis_t  *rd = ev->data;

    static const char  *what[] = { "", "connect", "TLS handshake",
                                   "AUTH", "", "" };

    ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                  "timpush: Redis %V: %s timed out", &rd->name,
                  what[rd->state]);

    ngx_http_timpush_redis_close(rd, "connect");
    ngx_http_timpush_redis_schedule(rd);
}


static void
ngx_http_timpush_redis_schedule(ngx_http_timpush_redis_t *rd)
{
    if (rd->destroyed || ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (!rd->reconnect.timer_set) {
        ngx_add_timer(&rd->reconnect, rd->backoff);
    }

    rd->backoff = ngx_min(rd->backoff * 2, NGX_HTTP_TIMPUSH_REDIS_BACKOFF_MAX);
}


static void
ngx_http_timpush_redis_reconnect(ngx_event_t *ev)
{
    ngx_http_timpush_redis_t  *rd = ev->data;

    if (rd->state == NGX_HTTP_TIMPUSH_REDIS_DOWN) {
        ngx_http_timpush_redis_connect(rd);
    }
}


/*
 * The connection and all that was on it: the commands waiting are called
 * back with NULL, the caller told (error: the kind of failure).
 */

static void
ngx_http_timpush_redis_close(ngx_http_timpush_redis_t *rd, const char *error)
{
    ngx_uint_t         up;
    ngx_connection_t  *c;

    up = (rd->state == NGX_HTTP_TIMPUSH_REDIS_UP);

    rd->calling++;
    rd->state = NGX_HTTP_TIMPUSH_REDIS_DOWN;
    rd->gen++;

    if (rd->timer.timer_set) {
        ngx_del_timer(&rd->timer);
    }

    c = rd->pc.connection;

    if (c) {
        if (c->ssl) {
            c->ssl->no_wait_shutdown = 1;
            c->ssl->no_send_shutdown = 1;
            (void) ngx_ssl_shutdown(c);
        }

        ngx_close_connection(c);
        rd->pc.connection = NULL;
    }

    if (rd->reader) {
        redisReaderFree(rd->reader);
        rd->reader = NULL;
    }

    if (rd->pool) {
        ngx_destroy_pool(rd->pool);
        rd->pool = NULL;
    }

    rd->out_pos = rd->out;
    rd->out_last = rd->out;
    rd->out_hold = NULL;

    ngx_http_timpush_redis_fail(rd);

    if (rd->state_handler && (up || error)) {
        rd->state_handler(rd->data, 0, error);
    }

    rd->calling--;
}


static void
ngx_http_timpush_redis_fail(ngx_http_timpush_redis_t *rd)
{
    ngx_queue_t                    fifo, *q;
    ngx_http_timpush_redis_req_t  *req;

    if (ngx_queue_empty(&rd->fifo)) {
        return;
    }

    /* what the callbacks send now goes to no connection: declined */

    fifo = rd->fifo;
    fifo.next->prev = &fifo;
    fifo.prev->next = &fifo;
    ngx_queue_init(&rd->fifo);

    while (!ngx_queue_empty(&fifo)) {
        q = ngx_queue_head(&fifo);
        ngx_queue_remove(q);
        req = ngx_queue_data(q, ngx_http_timpush_redis_req_t, queue);
        req->handler(req, NULL);
    }
}


/* NGX_ERROR: the node was destroyed by the callback */

static ngx_int_t
ngx_http_timpush_redis_call(ngx_http_timpush_redis_t *rd,
    ngx_http_timpush_redis_req_t *req, redisReply *reply)
{
    rd->calling++;
    req->handler(req, reply);
    rd->calling--;

    if (ngx_http_timpush_redis_kept == reply) {
        ngx_http_timpush_redis_kept = NULL;

    } else {
        freeReplyObject(reply);
    }

    return rd->destroyed ? NGX_ERROR : NGX_OK;
}


/*
 * From within a reply handler: the reply is the handler's, to free with
 * freeReplyObject() (a write answered once a WAIT after it answers).
 * Replies are given one at a time, so one pointer is enough.
 */

void
ngx_http_timpush_redis_keep(redisReply *reply)
{
    ngx_http_timpush_redis_kept = reply;
}
