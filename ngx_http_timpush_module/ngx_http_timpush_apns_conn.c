
/*
 * Copyright (C) timpush authors
 *
 * One APNs connection's life (DESIGN §7, §11): connect, TLS (ALPN h2,
 * SNI, the server verified), an nghttp2 client session fed from nginx
 * events, PING when idle, PING and then close when a connection with
 * streams in flight stays silent, close.
 *
 * nghttp2 only frames: bytes go through our buffers and nginx's SSL calls.
 * Its callbacks only record; a stream that ends, wherever nghttp2 ends it
 * (in a read, in mem_send, by its own RST_STREAM, by GOAWAY), is handed to
 * apns.c, which answers it from a posted event.  A connection is failed
 * or closed only from the top of an event handler, never from inside a
 * call that still uses it.
 */


#include "ngx_http_timpush_apns_int.h"

#include <sys/mman.h>


/* nghttp2's blocks at least this large hold frames: kept out of cores */
#define NGX_HTTP_TIMPUSH_APNS_MEM_BIG     4096


typedef struct {
    size_t                             size;
    size_t                             mapped;    /* 0: malloc'd */
} ngx_http_timpush_apns_mem_t;


static void *ngx_http_timpush_apns_mem_malloc(size_t size, void *data);
static void ngx_http_timpush_apns_mem_free(void *ptr, void *data);
static void *ngx_http_timpush_apns_mem_calloc(size_t n, size_t size,
    void *data);
static void *ngx_http_timpush_apns_mem_realloc(void *ptr, size_t size,
    void *data);
static void *ngx_http_timpush_apns_dontdump(ngx_cycle_t *cycle, size_t size);
static void ngx_http_timpush_apns_dontdump_free(void *data);
static ngx_http_timpush_apns_peer_t *ngx_http_timpush_apns_next_peer(
    ngx_http_timpush_apns_channel_t *ch);
static ngx_http_timpush_apns_peer_t *ngx_http_timpush_apns_peer(
    ngx_http_timpush_apns_conn_t *hc);
static void ngx_http_timpush_apns_connected(ngx_event_t *ev);
static ngx_int_t ngx_http_timpush_apns_test_connect(ngx_connection_t *c,
    ngx_http_timpush_apns_conn_t *hc);
static void ngx_http_timpush_apns_handshake(ngx_connection_t *c);
static void ngx_http_timpush_apns_handshaked(ngx_connection_t *c);
static ngx_int_t ngx_http_timpush_apns_verify(
    ngx_http_timpush_apns_conn_t *hc);
static ngx_int_t ngx_http_timpush_apns_session(
    ngx_http_timpush_apns_conn_t *hc);
static void ngx_http_timpush_apns_read_handler(ngx_event_t *ev);
static void ngx_http_timpush_apns_write_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_timpush_apns_flush(
    ngx_http_timpush_apns_conn_t *hc);
static ngx_uint_t ngx_http_timpush_apns_over(
    ngx_http_timpush_apns_conn_t *hc);
static void ngx_http_timpush_apns_idle(ngx_http_timpush_apns_conn_t *hc);
static void ngx_http_timpush_apns_watch_handler(ngx_event_t *ev);
static void ngx_http_timpush_apns_reconnect_handler(ngx_event_t *ev);
static void ngx_http_timpush_apns_fail(ngx_http_timpush_apns_conn_t *hc,
    const char *reason);

static int ngx_http_timpush_apns_on_header(nghttp2_session *session,
    const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
    const uint8_t *value, size_t valuelen, uint8_t flags, void *data);
static int ngx_http_timpush_apns_on_data(nghttp2_session *session,
    uint8_t flags, int32_t stream_id, const uint8_t *buf, size_t len,
    void *data);
static int ngx_http_timpush_apns_on_frame(nghttp2_session *session,
    const nghttp2_frame *frame, void *data);
static int ngx_http_timpush_apns_on_close(nghttp2_session *session,
    int32_t stream_id, uint32_t error_code, void *data);


ngx_int_t
ngx_http_timpush_apns_conn_init(ngx_cycle_t *cycle)
{
    ngx_http_timpush_apns_t  *a;

    a = &ngx_http_timpush_apns;

    if (nghttp2_session_callbacks_new(&a->callbacks) != 0
        || nghttp2_option_new(&a->option) != 0)
    {
        return NGX_ERROR;
    }

    nghttp2_session_callbacks_set_on_header_callback(a->callbacks,
                                      ngx_http_timpush_apns_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(a->callbacks,
                                      ngx_http_timpush_apns_on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(a->callbacks,
                                      ngx_http_timpush_apns_on_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(a->callbacks,
                                      ngx_http_timpush_apns_on_close);

    nghttp2_option_set_peer_max_concurrent_streams(a->option,
                                      NGX_HTTP_TIMPUSH_APNS_STREAMS);

    a->mem.mem_user_data = NULL;
    a->mem.malloc = ngx_http_timpush_apns_mem_malloc;
    a->mem.free = ngx_http_timpush_apns_mem_free;
    a->mem.calloc = ngx_http_timpush_apns_mem_calloc;
    a->mem.realloc = ngx_http_timpush_apns_mem_realloc;

    return NGX_OK;
}


void
ngx_http_timpush_apns_conn_exit(void)
{
    ngx_http_timpush_apns_t  *a;

    a = &ngx_http_timpush_apns;

    if (a->callbacks) {
        nghttp2_session_callbacks_del(a->callbacks);
        a->callbacks = NULL;
    }

    if (a->option) {
        nghttp2_option_del(a->option);
        a->option = NULL;
    }
}


/*
 * nghttp2's memory.  Its frame buffers hold every header sent, the
 * provider token among them: blocks of a page or more are mapped apart
 * and kept out of core dumps; small ones (HPACK entries of headers that
 * are indexed, which the token is not) come from malloc.
 */

static void *
ngx_http_timpush_apns_mem_malloc(size_t size, void *data)
{
    size_t                        total;
    u_char                       *p;
    ngx_http_timpush_apns_mem_t  *m;

    total = sizeof(ngx_http_timpush_apns_mem_t) + size;

    if (size < NGX_HTTP_TIMPUSH_APNS_MEM_BIG) {
        m = malloc(total);
        if (m == NULL) {
            return NULL;
        }

        m->mapped = 0;

    } else {
        total = ngx_align(total, ngx_pagesize);

        p = mmap(NULL, total, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS,
                 -1, 0);
        if (p == MAP_FAILED) {
            return NULL;
        }

        (void) madvise(p, total, MADV_DONTDUMP);

        m = (ngx_http_timpush_apns_mem_t *) p;
        m->mapped = total;
    }

    m->size = size;

    return m + 1;
}


static void
ngx_http_timpush_apns_mem_free(void *ptr, void *data)
{
    ngx_http_timpush_apns_mem_t  *m;

    if (ptr == NULL) {
        return;
    }

    m = (ngx_http_timpush_apns_mem_t *) ptr - 1;

    if (m->mapped) {
        ngx_explicit_memzero(ptr, m->size);
        (void) munmap(m, m->mapped);
        return;
    }

    free(m);
}


static void *
ngx_http_timpush_apns_mem_calloc(size_t n, size_t size, void *data)
{
    void  *p;

    if (size && n > (size_t) -1 / size) {
        return NULL;
    }

    p = ngx_http_timpush_apns_mem_malloc(n * size, data);
    if (p) {
        ngx_memzero(p, n * size);
    }

    return p;
}


static void *
ngx_http_timpush_apns_mem_realloc(void *ptr, size_t size, void *data)
{
    void                         *p;
    ngx_http_timpush_apns_mem_t  *m;

    if (ptr == NULL) {
        return ngx_http_timpush_apns_mem_malloc(size, data);
    }

    if (size == 0) {
        ngx_http_timpush_apns_mem_free(ptr, data);
        return NULL;
    }

    p = ngx_http_timpush_apns_mem_malloc(size, data);
    if (p == NULL) {
        return NULL;
    }

    m = (ngx_http_timpush_apns_mem_t *) ptr - 1;
    ngx_memcpy(p, ptr, ngx_min(size, m->size));
    ngx_http_timpush_apns_mem_free(ptr, data);

    return p;
}


/* a buffer of our own for the frames before TLS: out of core dumps too */

static void *
ngx_http_timpush_apns_dontdump(ngx_cycle_t *cycle, size_t size)
{
    void                *p;
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(cycle->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    p = ngx_http_timpush_apns_mem_malloc(ngx_max(size,
                                         NGX_HTTP_TIMPUSH_APNS_MEM_BIG),
                                         NULL);
    if (p == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_timpush_apns_dontdump_free;
    cln->data = p;

    return p;
}


static void
ngx_http_timpush_apns_dontdump_free(void *data)
{
    ngx_http_timpush_apns_mem_free(data, NULL);
}


ngx_int_t
ngx_http_timpush_apns_conn_alloc(ngx_cycle_t *cycle,
    ngx_http_timpush_apns_conn_t *hc)
{
    hc->backoff = NGX_HTTP_TIMPUSH_APNS_BACKOFF_MIN;
    hc->goaway_last = -1;
    ngx_queue_init(&hc->inflight);

    hc->reconnect.handler = ngx_http_timpush_apns_reconnect_handler;
    hc->reconnect.data = hc;
    hc->reconnect.log = cycle->log;
    hc->reconnect.cancelable = 1;

    hc->watch.handler = ngx_http_timpush_apns_watch_handler;
    hc->watch.data = hc;
    hc->watch.log = cycle->log;
    hc->watch.cancelable = 1;

    hc->in = ngx_palloc(cycle->pool, NGX_HTTP_TIMPUSH_APNS_IN_SIZE);
    hc->out = ngx_http_timpush_apns_dontdump(cycle,
                                             NGX_HTTP_TIMPUSH_APNS_OUT_SIZE);
    if (hc->in == NULL || hc->out == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* what a connection may carry now; a server that says nothing: 1000 */

ngx_uint_t
ngx_http_timpush_apns_max_streams(ngx_http_timpush_apns_conn_t *hc)
{
    uint32_t  max;

    max = nghttp2_session_get_remote_settings(hc->session,
                                     NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);

    return ngx_min(max, NGX_HTTP_TIMPUSH_APNS_STREAMS_MAX);
}


/* round robin over the peers that are up and not failing */

static ngx_http_timpush_apns_peer_t *
ngx_http_timpush_apns_next_peer(ngx_http_timpush_apns_channel_t *ch)
{
    time_t                         now;
    ngx_uint_t                     i, n;
    ngx_http_timpush_apns_peer_t  *peer, *failed;

    n = ch->peers->peers.nelts;
    now = ngx_time();
    failed = NULL;

    for (i = 0; i < n; i++) {
        peer = (ngx_http_timpush_apns_peer_t *) ch->peers->peers.elts
               + (ch->next_peer++ % n);

        if (peer->down) {
            continue;
        }

        if (peer->max_fails && peer->fails >= peer->max_fails
            && now - peer->checked <= peer->fail_timeout)
        {
            if (failed == NULL) {
                failed = peer;
            }

            continue;
        }

        return peer;
    }

    /* every peer that is not down failed: try one anyway, never a down one */

    return failed;
}


/* the peer a connection dialled, if its name still resolves to it */

static ngx_http_timpush_apns_peer_t *
ngx_http_timpush_apns_peer(ngx_http_timpush_apns_conn_t *hc)
{
    ngx_uint_t                     i;
    ngx_http_timpush_apns_peer_t  *peer;

    if (hc->peer == NULL) {
        return NULL;
    }

    peer = hc->channel->peers->peers.elts;

    for (i = 0; i < hc->channel->peers->peers.nelts; i++) {
        if (ngx_cmp_sockaddr(peer[i].sockaddr, peer[i].socklen,
                             hc->peer->sockaddr, hc->peer->socklen, 1)
            == NGX_OK)
        {
            return &peer[i];
        }
    }

    return NULL;
}


void
ngx_http_timpush_apns_connect(ngx_http_timpush_apns_conn_t *hc)
{
    hc->peer = NULL;
    hc->state = NGX_HTTP_TIMPUSH_APNS_CONNECTING;
    hc->handshaken = 0;
    hc->answers = 0;
    hc->streams = 0;
    hc->out_pos = 0;
    hc->out_last = 0;
    hc->ping_sent = 0;
    hc->settings = 0;
    hc->error = NULL;
    hc->goaway_last = -1;

    /* a host name is resolved again first (apns_resolve.c) */

    if (hc->channel->peers->resolver) {
        ngx_http_timpush_apns_resolve(hc);
        return;
    }

    ngx_http_timpush_apns_connect_peer(hc);
}


/*
 * The connection dials a copy of its peer: the peers of a name that
 * resolves to other addresses are rewritten under it.
 */

void
ngx_http_timpush_apns_connect_peer(ngx_http_timpush_apns_conn_t *hc)
{
    ngx_int_t                         rc;
    ngx_connection_t                 *c;
    ngx_http_timpush_apns_peer_t     *peer;
    ngx_http_timpush_apns_channel_t  *ch;

    ch = hc->channel;

    peer = ngx_http_timpush_apns_next_peer(ch);

    if (peer == NULL) {
        ngx_str_set(&ch->last_error, "ConnectionFailed");
        ngx_http_timpush_apns_fail(hc, ch->peers->peers.nelts
                                       ? "every APNs server is down"
                                       : "no address");
        return;
    }

    hc->dialed = *peer;
    hc->dialed.sockaddr = &hc->dialed_addr.sockaddr.sockaddr;
    hc->dialed.name.data = hc->dialed_addr.name;
    hc->dialed.name.len = ngx_min(peer->name.len, NGX_SOCKADDR_STRLEN);
    ngx_memcpy(hc->dialed.sockaddr, peer->sockaddr,
               ngx_min(peer->socklen, sizeof(ngx_sockaddr_t)));
    ngx_memcpy(hc->dialed.name.data, peer->name.data, hc->dialed.name.len);
    hc->peer = &hc->dialed;

    ngx_memzero(&hc->pc, sizeof(ngx_peer_connection_t));

    hc->pc.sockaddr = hc->peer->sockaddr;
    hc->pc.socklen = hc->peer->socklen;
    hc->pc.name = &hc->peer->name;
    hc->pc.get = ngx_event_get_peer;
    hc->pc.log = ch->log;
    hc->pc.log_error = NGX_ERROR_ERR;

    rc = ngx_event_connect_peer(&hc->pc);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        if (hc->pc.connection) {
            ngx_close_connection(hc->pc.connection);
            hc->pc.connection = NULL;
        }

        /* no recursion: fail() only posts the channel's dispatch */
        ngx_http_timpush_apns_fail(hc, "ConnectionFailed");
        return;
    }

    c = hc->pc.connection;

    hc->pool = ngx_create_pool(1024, ch->log);
    if (hc->pool == NULL) {
        ngx_http_timpush_apns_fail(hc, "ConnectionFailed");
        return;
    }

    c->data = hc;
    c->pool = hc->pool;
    c->read->handler = ngx_http_timpush_apns_connected;
    c->write->handler = ngx_http_timpush_apns_connected;

    ngx_add_timer(c->write,
                  ngx_min(ngx_http_timpush_apns.conf->apns_timeout, 10000));

    if (rc == NGX_OK) {
        ngx_http_timpush_apns_connected(c->write);
    }
}


static void
ngx_http_timpush_apns_connected(ngx_event_t *ev)
{
    ngx_connection_t              *c = ev->data;
    ngx_http_timpush_apns_conn_t  *hc = c->data;

    u_char     name[256];
    ngx_str_t  host;

    if (ev->timedout) {
        ngx_log_error(NGX_LOG_ERR, c->log, NGX_ETIMEDOUT,
                      "timpush apns: %V: connect timed out",
                      &hc->peer->name);
        ngx_http_timpush_apns_fail(hc, "ConnectionFailed");
        return;
    }

    if (ngx_http_timpush_apns_test_connect(c, hc) != NGX_OK) {
        ngx_http_timpush_apns_fail(hc, "ConnectionFailed");
        return;
    }

    if (ngx_ssl_create_connection(hc->channel->cred->ssl, c,
                                  NGX_SSL_BUFFER|NGX_SSL_CLIENT)
        != NGX_OK)
    {
        ngx_http_timpush_apns_fail(hc, "ConnectionFailed");
        return;
    }

    host = hc->peer->host;

    /* SNI takes names only, not addresses */

    if (ngx_inet_addr(host.data, host.len) == INADDR_NONE
#if (NGX_HAVE_INET6)
        && ngx_inet6_addr(host.data, host.len, NULL) != NGX_OK
#endif
       )
    {
        ngx_cpystrn(name, host.data, ngx_min(host.len + 1, sizeof(name)));

        if (SSL_set_tlsext_host_name(c->ssl->connection, (char *) name)
            != 1)
        {
            ngx_http_timpush_apns_fail(hc, "ConnectionFailed");
            return;
        }
    }

    ngx_http_timpush_apns_handshake(c);
}


/*
 * A refused or unreachable connect() is said so, rather than left to
 * surface as "peer closed connection in SSL handshake".
 */

static ngx_int_t
ngx_http_timpush_apns_test_connect(ngx_connection_t *c,
    ngx_http_timpush_apns_conn_t *hc)
{
    int        err;
    socklen_t  len;

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    if (err) {
        ngx_log_error(NGX_LOG_ERR, c->log, err,
                      "timpush apns: connect() to %V failed",
                      &hc->peer->name);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_timpush_apns_handshake(ngx_connection_t *c)
{
    ngx_int_t  rc;

    rc = ngx_ssl_handshake(c);

    if (rc == NGX_AGAIN) {
        c->ssl->handler = ngx_http_timpush_apns_handshaked;
        return;
    }

    ngx_http_timpush_apns_handshaked(c);
}


/* also called by nginx when the handshake is over or timed out */

static void
ngx_http_timpush_apns_handshaked(ngx_connection_t *c)
{
    ngx_http_timpush_apns_conn_t  *hc = c->data;

    if (c->read->timedout || c->write->timedout) {
        ngx_log_error(NGX_LOG_ERR, c->log, NGX_ETIMEDOUT,
                      "timpush apns: %V: TLS handshake timed out",
                      &hc->peer->name);
        ngx_http_timpush_apns_fail(hc, "ConnectionFailed");
        return;
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (!c->ssl->handshaked) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "timpush apns: %V: TLS handshake failed",
                      &hc->peer->name);
        ngx_http_timpush_apns_fail(hc, "ConnectionFailed");
        return;
    }

    if (ngx_http_timpush_apns_verify(hc) != NGX_OK) {
        ngx_http_timpush_apns_fail(hc, "CertificateNotTrusted");
        return;
    }

    if (ngx_http_timpush_apns_session(hc) != NGX_OK) {
        ngx_http_timpush_apns_fail(hc, "ProtocolError");
    }
}


static ngx_int_t
ngx_http_timpush_apns_verify(ngx_http_timpush_apns_conn_t *hc)
{
    long               rc;
    X509              *cert;
    u_char             name[256];
    unsigned int       len;
    ngx_connection_t  *c;
    const u_char      *alpn;

    c = hc->pc.connection;

    rc = SSL_get_verify_result(c->ssl->connection);

    if (rc != X509_V_OK) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "timpush apns: %V: the server certificate is not "
                      "trusted: (%l:%s); nothing is sent to it",
                      &hc->peer->name, rc, X509_verify_cert_error_string(rc));
        return NGX_ERROR;
    }

    cert = SSL_get1_peer_certificate(c->ssl->connection);
    if (cert == NULL) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "timpush apns: %V: no server certificate",
                      &hc->peer->name);
        return NGX_ERROR;
    }

    ngx_cpystrn(name, hc->peer->host.data,
                ngx_min(hc->peer->host.len + 1, sizeof(name)));

    if (X509_check_host(cert, (char *) name, 0, 0, NULL) != 1
        && X509_check_ip_asc(cert, (char *) name, 0) != 1)
    {
        X509_free(cert);
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "timpush apns: %V: the server certificate is not "
                      "for \"%s\"; nothing is sent to it",
                      &hc->peer->name, name);
        return NGX_ERROR;
    }

    X509_free(cert);

    SSL_get0_alpn_selected(c->ssl->connection, &alpn, &len);

    if (len != 2 || ngx_strncmp(alpn, "h2", 2) != 0) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "timpush apns: %V: the server did not choose HTTP/2 "
                      "(ALPN h2)", &hc->peer->name);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_apns_session(ngx_http_timpush_apns_conn_t *hc)
{
    ngx_connection_t        *c;
    nghttp2_settings_entry   iv[2];
    ngx_http_timpush_apns_t *a;

    a = &ngx_http_timpush_apns;
    c = hc->pc.connection;

    if (nghttp2_session_client_new3(&hc->session, a->callbacks, hc,
                                    a->option, &a->mem)
        != 0)
    {
        return NGX_ERROR;
    }

    iv[0].settings_id = NGHTTP2_SETTINGS_ENABLE_PUSH;
    iv[0].value = 0;
    iv[1].settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE;
    iv[1].value = 1 << 20;

    if (nghttp2_submit_settings(hc->session, NGHTTP2_FLAG_NONE, iv, 2) != 0) {
        return NGX_ERROR;
    }

    /* the backoff is reset by the first answer, not by a handshake */

    hc->state = NGX_HTTP_TIMPUSH_APNS_READY;
    hc->handshaken = 1;

    c->read->handler = ngx_http_timpush_apns_read_handler;
    c->write->handler = ngx_http_timpush_apns_write_handler;

    ngx_log_error(NGX_LOG_INFO, c->log, 0,
                  "timpush apns: credential %ui: connected to %V (%s)",
                  hc->channel->cred->id, &hc->peer->name,
                  ngx_http_timpush_apns_envs[hc->channel->cred->env]);

    /* the preface and SETTINGS go out with the first notifications */

    ngx_http_timpush_apns_post_flush(hc);
    ngx_http_timpush_apns_kick(hc->channel);

    return NGX_OK;
}


static void
ngx_http_timpush_apns_read_handler(ngx_event_t *ev)
{
    ssize_t                        n, rc;
    ngx_connection_t              *c = ev->data;
    ngx_http_timpush_apns_conn_t  *hc = c->data;

    if (c->close) {
        /* a worker exiting closes its idle connections */
        ngx_http_timpush_apns_close(hc);
        return;
    }

    for ( ;; ) {
        n = c->recv(c, hc->in, NGX_HTTP_TIMPUSH_APNS_IN_SIZE);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_http_timpush_apns_fail(hc, "ConnectionFailed");
            return;
        }

        rc = nghttp2_session_mem_recv(hc->session, hc->in, n);

        if (rc < 0) {
            ngx_log_error(NGX_LOG_ERR, c->log, 0,
                          "timpush apns: %V: %s", &hc->peer->name,
                          nghttp2_strerror(rc));
            ngx_http_timpush_apns_fail(hc, "ProtocolError");
            return;
        }

        /* the peer is alive: the read timeout starts again */

        hc->ping_sent = 0;

        if (hc->streams && hc->state != NGX_HTTP_TIMPUSH_APNS_CLOSED) {
            ngx_add_timer(&hc->watch,
                          ngx_http_timpush_apns.conf->apns_read_timeout);
        }

        if (!c->read->ready) {
            /* drained: another read would only say so */
            break;
        }
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_timpush_apns_fail(hc, "ConnectionFailed");
        return;
    }

    /* answers may have freed streams, SETTINGS made room */

    ngx_http_timpush_apns_kick(hc->channel);

    ngx_http_timpush_apns_write_handler(c->write);
}


static void
ngx_http_timpush_apns_write_handler(ngx_event_t *ev)
{
    ngx_connection_t              *c = ev->data;
    ngx_http_timpush_apns_conn_t  *hc = c->data;

    if (hc->error) {
        ngx_http_timpush_apns_fail(hc, hc->error);
        return;
    }

    if (ngx_http_timpush_apns_flush(hc) != NGX_OK) {
        ngx_http_timpush_apns_fail(hc, "ConnectionFailed");
        return;
    }

    if (ngx_http_timpush_apns_over(hc)) {
        return;
    }

    ngx_http_timpush_apns_idle(hc);
}


/* frames out of nghttp2 into our buffer, our buffer into the socket */

static ngx_int_t
ngx_http_timpush_apns_flush(ngx_http_timpush_apns_conn_t *hc)
{
    ssize_t             n;
    const uint8_t      *data;
    ngx_connection_t   *c;

    c = hc->pc.connection;

    for ( ;; ) {
        if (hc->out_pos == hc->out_last) {
            hc->out_pos = 0;
            hc->out_last = 0;

            /*
             * Frames are taken while the largest one still fits: DATA
             * frames are at most 16 KiB, and our HEADERS far smaller.
             */

            while (hc->out_last <= NGX_HTTP_TIMPUSH_APNS_OUT_SIZE
                                   - NGX_HTTP_TIMPUSH_APNS_FRAME_MAX)
            {
                n = nghttp2_session_mem_send(hc->session, &data);

                if (n < 0) {
                    ngx_log_error(NGX_LOG_ERR, c->log, 0,
                                  "timpush apns: %V: %s", &hc->peer->name,
                                  nghttp2_strerror(n));
                    return NGX_ERROR;
                }

                if (n == 0) {
                    break;
                }

                if ((size_t) n > NGX_HTTP_TIMPUSH_APNS_OUT_SIZE
                                 - hc->out_last)
                {
                    ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                                  "timpush apns: a frame of %z bytes does "
                                  "not fit", n);
                    return NGX_ERROR;
                }

                ngx_memcpy(hc->out + hc->out_last, data, n);
                hc->out_last += n;
            }

            if (hc->out_last == 0) {
                break;
            }
        }

        n = c->send(c, hc->out + hc->out_pos, hc->out_last - hc->out_pos);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == NGX_ERROR) {
            return NGX_ERROR;
        }

        hc->out_pos += n;
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * nghttp2 has ended the session (a connection error, its GOAWAY sent):
 * it will read and write nothing more, so nothing in flight would ever be
 * answered.  The connection is failed; its notifications go elsewhere.
 */

static ngx_uint_t
ngx_http_timpush_apns_over(ngx_http_timpush_apns_conn_t *hc)
{
    if (hc->state == NGX_HTTP_TIMPUSH_APNS_DRAINING && hc->streams == 0) {
        /* a GOAWAY's end: all answered, closed as drained (idle) */
        return 0;
    }

    if (nghttp2_session_want_read(hc->session)
        || nghttp2_session_want_write(hc->session)
        || hc->out_pos != hc->out_last)
    {
        return 0;
    }

    ngx_log_error(NGX_LOG_ERR, hc->channel->log, 0,
                  "timpush apns: %V: the HTTP/2 session was ended by a "
                  "protocol error; %ui notification(s) in flight go to "
                  "another connection", &hc->peer->name, hc->streams);

    ngx_http_timpush_apns_fail(hc, "ProtocolError");

    return 1;
}


void
ngx_http_timpush_apns_post_flush(ngx_http_timpush_apns_conn_t *hc)
{
    ngx_event_t  *wev;

    if (hc->pc.connection == NULL) {
        return;
    }

    wev = hc->pc.connection->write;

    if (!wev->posted) {
        ngx_post_event(wev, &ngx_posted_events);
    }
}


/* a failure found where the connection may not be closed: at the top */

void
ngx_http_timpush_apns_error(ngx_http_timpush_apns_conn_t *hc,
    const char *reason)
{
    if (hc->error == NULL) {
        hc->error = reason;
    }

    ngx_http_timpush_apns_post_flush(hc);
}


/*
 * After every write: a draining connection goes once empty; the watch
 * timer PINGs an idle connection every minute, and a busy one that has
 * been silent for timpush_apns_read_timeout.
 */

static void
ngx_http_timpush_apns_idle(ngx_http_timpush_apns_conn_t *hc)
{
    ngx_connection_t  *c;

    c = hc->pc.connection;

    if (hc->state == NGX_HTTP_TIMPUSH_APNS_CLOSED || c == NULL) {
        return;
    }

    if (hc->state == NGX_HTTP_TIMPUSH_APNS_DRAINING && hc->streams == 0) {

        if (hc->answers == 0) {
            /* sent away before answering anything: not at once again */
            ngx_http_timpush_apns_fail(hc, "ConnectionFailed");
            return;
        }

        ngx_http_timpush_apns_close(hc);

        /* its replacement, if notifications wait */
        ngx_http_timpush_apns_kick(hc->channel);
        return;
    }

    if (ngx_exiting && hc->streams == 0) {
        ngx_http_timpush_apns_close(hc);
        return;
    }

    if (hc->streams == 0) {
        if (!c->idle || !hc->watch.timer_set) {
            c->idle = 1;
            hc->ping_sent = 0;
            ngx_add_timer(&hc->watch, NGX_HTTP_TIMPUSH_APNS_PING);
        }

        return;
    }

    if (c->idle || !hc->watch.timer_set) {
        c->idle = 0;
        ngx_add_timer(&hc->watch,
                      ngx_http_timpush_apns.conf->apns_read_timeout);
    }
}


static void
ngx_http_timpush_apns_watch_handler(ngx_event_t *ev)
{
    ngx_http_timpush_apns_conn_t *hc = ev->data;

    ngx_msec_t  timeout;

    if (hc->state != NGX_HTTP_TIMPUSH_APNS_READY
        && hc->state != NGX_HTTP_TIMPUSH_APNS_DRAINING)
    {
        return;
    }

    timeout = hc->streams ? ngx_http_timpush_apns.conf->apns_read_timeout
                          : NGX_HTTP_TIMPUSH_APNS_PING;

    if (hc->ping_sent) {
        if (hc->streams == 0) {
            ngx_log_error(NGX_LOG_INFO, hc->channel->log, 0,
                          "timpush apns: %V: no answer to PING, closing",
                          &hc->peer->name);
            ngx_http_timpush_apns_close(hc);
            return;
        }

        ngx_log_error(NGX_LOG_ERR, hc->channel->log, 0,
                      "timpush apns: %V: nothing received for %M ms with "
                      "%ui stream(s) open, not even the answer to a PING: "
                      "closing; they go to another connection",
                      &hc->peer->name, 2 * timeout, hc->streams);
        ngx_http_timpush_apns_fail(hc, "Timeout");
        return;
    }

    if (nghttp2_submit_ping(hc->session, NGHTTP2_FLAG_NONE, NULL) != 0) {
        ngx_http_timpush_apns_fail(hc, "ProtocolError");
        return;
    }

    hc->ping_sent = 1;
    ngx_add_timer(&hc->watch, timeout);

    ngx_http_timpush_apns_post_flush(hc);
}


static void
ngx_http_timpush_apns_reconnect_handler(ngx_event_t *ev)
{
    ngx_http_timpush_apns_conn_t *hc = ev->data;

    /* the channel opens what it needs */
    ngx_http_timpush_apns_kick(hc->channel);
}


/*
 * The connection failed: it is made again after a backoff (also while the
 * worker exits: a refused APNs is never retried in a loop), and what it
 * held goes to another connection.
 */

static void
ngx_http_timpush_apns_fail(ngx_http_timpush_apns_conn_t *hc,
    const char *reason)
{
    ngx_http_timpush_apns_peer_t     *peer, *slot;
    ngx_http_timpush_apns_channel_t  *ch;

    ch = hc->channel;
    peer = hc->peer;

    if (hc->answers == 0) {
        hc->failed = 1;

        slot = ngx_http_timpush_apns_peer(hc);

        if (slot) {
            slot->fails++;
            slot->checked = ngx_time();
        }

        if (ngx_strcmp(reason, "CertificateNotTrusted") == 0
            || ngx_strcmp(reason, "ConnectionFailed") == 0)
        {
            ch->last_error.data = (u_char *) reason;
            ch->last_error.len = ngx_strlen(reason);
        }

        ngx_log_error(NGX_LOG_ERR, ch->log, 0,
                      "timpush apns: credential %ui (%s): %s %V: %s; "
                      "retrying in %M ms", ch->cred->id,
                      ngx_http_timpush_apns_envs[ch->cred->env],
                      hc->handshaken ? "nothing answered by"
                                     : "cannot connect to",
                      peer ? &peer->name : &ch->peers->name, reason,
                      hc->backoff);

    } else {
        ngx_log_error(NGX_LOG_INFO, ch->log, 0,
                      "timpush apns: credential %ui (%s): the connection to "
                      "%V failed: %s; %ui notification(s) in flight go to "
                      "another connection", ch->cred->id,
                      ngx_http_timpush_apns_envs[ch->cred->env],
                      &peer->name, reason, hc->streams);
    }

    if (!hc->reconnect.timer_set) {
        ngx_add_timer(&hc->reconnect, hc->backoff);
        hc->backoff = ngx_min(hc->backoff * 2,
                              NGX_HTTP_TIMPUSH_APNS_BACKOFF_MAX);
    }

    ngx_http_timpush_apns_close(hc);

    ngx_http_timpush_apns_gauges(ch);
    ngx_http_timpush_apns_kick(ch);
}


/*
 * The connection is torn down; the notifications on its streams are
 * handed back, unanswered, to be sent again (they may have reached APNs:
 * that is the at-least-once case of a lost connection).
 */

void
ngx_http_timpush_apns_close(ngx_http_timpush_apns_conn_t *hc)
{
    ngx_queue_t                   *q;
    ngx_connection_t              *c;
    ngx_http_timpush_apns_note_t  *note;

    c = hc->pc.connection;

    ngx_http_timpush_apns_resolve_cancel(hc);

    hc->state = NGX_HTTP_TIMPUSH_APNS_CLOSED;
    hc->pc.connection = NULL;
    hc->streams = 0;
    hc->error = NULL;

    if (hc->watch.timer_set) {
        ngx_del_timer(&hc->watch);
    }

    if (hc->session) {
        /* no stream callbacks from here: nghttp2 just frees */
        nghttp2_session_del(hc->session);
        hc->session = NULL;
    }

    while (!ngx_queue_empty(&hc->inflight)) {
        q = ngx_queue_head(&hc->inflight);
        note = ngx_queue_data(q, ngx_http_timpush_apns_note_t, link);
        note->status = 0;
        ngx_http_timpush_apns_stream_over(hc, note, NGHTTP2_CANCEL);
    }

    if (c) {
        if (c->ssl) {
            c->ssl->no_wait_shutdown = 1;
            c->ssl->no_send_shutdown = 1;
            (void) ngx_ssl_shutdown(c);
        }

        ngx_close_connection(c);
    }

    if (hc->pool) {
        ngx_destroy_pool(hc->pool);
        hc->pool = NULL;
    }
}


/* nghttp2 callbacks: they only record */

static int
ngx_http_timpush_apns_on_header(nghttp2_session *session,
    const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
    const uint8_t *value, size_t valuelen, uint8_t flags, void *data)
{
    ngx_http_timpush_apns_note_t  *note;

    if (frame->hd.type != NGHTTP2_HEADERS) {
        return 0;
    }

    note = nghttp2_session_get_stream_user_data(session,
                                                frame->hd.stream_id);
    if (note == NULL) {
        return 0;
    }

    if (namelen == 7 && ngx_strncmp(name, ":status", 7) == 0) {
        note->status = ngx_atoi((u_char *) value, valuelen);
        if (note->status == (ngx_uint_t) NGX_ERROR) {
            note->status = 0;
        }
    }

    return 0;
}


static int
ngx_http_timpush_apns_on_data(nghttp2_session *session, uint8_t flags,
    int32_t stream_id, const uint8_t *buf, size_t len, void *data)
{
    size_t                         n;
    ngx_http_timpush_apns_note_t  *note;

    note = nghttp2_session_get_stream_user_data(session, stream_id);
    if (note == NULL) {
        return 0;
    }

    n = ngx_min(len, sizeof(note->body) - note->body_len);
    ngx_memcpy(note->body + note->body_len, buf, n);
    note->body_len += n;

    return 0;
}


static int
ngx_http_timpush_apns_on_frame(nghttp2_session *session,
    const nghttp2_frame *frame, void *data)
{
    ngx_http_timpush_apns_conn_t *hc = data;

    if (frame->hd.type == NGHTTP2_SETTINGS
        && !(frame->hd.flags & NGHTTP2_FLAG_ACK))
    {
        /* the read handler then dispatches: room may have come */
        hc->settings = 1;
        return 0;
    }

    if (frame->hd.type != NGHTTP2_GOAWAY) {
        return 0;
    }

    ngx_log_error(NGX_LOG_INFO, hc->channel->log, 0,
                  "timpush apns: %V: GOAWAY (error %ud, last stream %D): "
                  "draining", &hc->peer->name, frame->goaway.error_code,
                  frame->goaway.last_stream_id);

    hc->goaway_last = frame->goaway.last_stream_id;

    if (hc->state == NGX_HTTP_TIMPUSH_APNS_READY) {
        hc->state = NGX_HTTP_TIMPUSH_APNS_DRAINING;
    }

    return 0;
}


static int
ngx_http_timpush_apns_on_close(nghttp2_session *session, int32_t stream_id,
    uint32_t error_code, void *data)
{
    ngx_http_timpush_apns_conn_t *hc = data;

    ngx_http_timpush_apns_peer_t  *peer;
    ngx_http_timpush_apns_note_t  *note;

    note = nghttp2_session_get_stream_user_data(session, stream_id);

    if (note == NULL) {
        /* a stream of ours reset at its deadline, now closed */
        if (hc->streams) {
            hc->streams--;
        }

        return 0;
    }

    nghttp2_session_set_stream_user_data(session, stream_id, NULL);

    if (hc->streams) {
        hc->streams--;
    }

    if (note->status && error_code == NGHTTP2_NO_ERROR
        && hc->answers++ == 0)
    {
        /* a server that answers: no longer one that fails */
        hc->backoff = NGX_HTTP_TIMPUSH_APNS_BACKOFF_MIN;
        hc->failed = 0;

        peer = ngx_http_timpush_apns_peer(hc);

        if (peer) {
            peer->fails = 0;
        }
    }

    ngx_http_timpush_apns_stream_over(hc, note, error_code);

    return 0;
}
