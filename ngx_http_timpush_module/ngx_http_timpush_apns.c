
/*
 * Copyright (C) timpush authors
 *
 * The APNs transport (DESIGN 7): per worker and credential, a channel of
 * long-lived TLS connections, each an nghttp2 client session fed from
 * nginx events.  Many streams per connection up to the server's
 * SETTINGS_MAX_CONCURRENT_STREAMS; beyond that notifications wait in a
 * bounded queue.  Every notification has one deadline covering its
 * retries; connections are made on demand and re-made with backoff.
 *
 * nghttp2 only frames: bytes go through our own buffers and nginx's SSL
 * calls, and nothing that may finish a caller's request runs inside an
 * nghttp2 callback (answers are collected and delivered afterwards).
 */


#include "ngx_http_timpush_apns.h"

#include <nghttp2/nghttp2.h>
#include <openssl/ecdsa.h>
#include <openssl/rand.h>


#define NGX_HTTP_TIMPUSH_APNS_CLOSED      0
#define NGX_HTTP_TIMPUSH_APNS_CONNECTING  1
#define NGX_HTTP_TIMPUSH_APNS_READY       2
#define NGX_HTTP_TIMPUSH_APNS_DRAINING    3

#define NGX_HTTP_TIMPUSH_APNS_IN_SIZE     16384
#define NGX_HTTP_TIMPUSH_APNS_OUT_SIZE    65536
#define NGX_HTTP_TIMPUSH_APNS_FRAME_MAX   20480
#define NGX_HTTP_TIMPUSH_APNS_STREAMS     100      /* before SETTINGS */
#define NGX_HTTP_TIMPUSH_APNS_PING        60000
#define NGX_HTTP_TIMPUSH_APNS_BACKOFF_MIN 1000
#define NGX_HTTP_TIMPUSH_APNS_BACKOFF_MAX 60000
#define NGX_HTTP_TIMPUSH_APNS_RETRY_MIN   100
#define NGX_HTTP_TIMPUSH_APNS_RETRY_MAX   2000
#define NGX_HTTP_TIMPUSH_JWT_REUSE        (50 * 60)
#define NGX_HTTP_TIMPUSH_JWT_MIN_AGE      (20 * 60)


typedef struct {
    struct sockaddr                   *sockaddr;
    socklen_t                          socklen;
    ngx_str_t                          name;      /* address, for logs */
    ngx_str_t                          host;      /* SNI and verification */
    ngx_uint_t                         max_fails;
    time_t                             fail_timeout;
    ngx_uint_t                         down;
    ngx_uint_t                         fails;     /* this worker's */
    time_t                             checked;
} ngx_http_timpush_apns_peer_t;


typedef struct {
    ngx_str_t                          name;      /* upstream, for logs */
    ngx_array_t                        peers;     /* apns_peer_t */
} ngx_http_timpush_apns_peers_t;


typedef struct ngx_http_timpush_apns_channel_s
    ngx_http_timpush_apns_channel_t;


typedef struct {
    ngx_http_timpush_apns_channel_t   *channel;
    ngx_peer_connection_t              pc;
    ngx_http_timpush_apns_peer_t      *peer;
    nghttp2_session                   *session;
    ngx_uint_t                         state;
    ngx_uint_t                         streams;
    ngx_uint_t                         answers;   /* streams answered */
    ngx_queue_t                        inflight;  /* notes on streams */
    ngx_queue_t                        answered;  /* notes, after recv */
    ngx_pool_t                        *pool;
    ngx_event_t                        reconnect;
    ngx_event_t                        ping;
    ngx_msec_t                         backoff;
    u_char                            *out;
    size_t                             out_pos;
    size_t                             out_last;
    u_char                            *in;
    unsigned                           ping_sent:1;
    unsigned                           handshaken:1;
} ngx_http_timpush_apns_conn_t;


struct ngx_http_timpush_apns_channel_s {
    ngx_http_timpush_credential_t     *cred;
    ngx_http_timpush_apns_peers_t     *peers;
    ngx_uint_t                         next_peer;
    ngx_http_timpush_apns_conn_t      *conns;
    ngx_uint_t                         nconns;
    ngx_queue_t                        waiting;
    ngx_uint_t                         nwaiting;
    ngx_str_t                          last_error;
    ngx_log_t                         *log;
    ngx_str_t                          jwt;
    time_t                             jwt_iat;
    u_char                             jwt_buf[512];
};


static ngx_int_t ngx_http_timpush_apns_peers(ngx_conf_t *cf,
    ngx_http_timpush_main_conf_t *tmcf, ngx_uint_t env);
static ngx_int_t ngx_http_timpush_apns_peers_upstream(ngx_conf_t *cf,
    ngx_http_timpush_apns_peers_t *peers, ngx_str_t *name);
static ngx_int_t ngx_http_timpush_apns_peers_default(ngx_conf_t *cf,
    ngx_http_timpush_apns_peers_t *peers, ngx_uint_t env);
static void ngx_http_timpush_apns_peer_host(ngx_str_t *server,
    ngx_str_t *host);
static ngx_int_t ngx_http_timpush_apns_ssl(ngx_conf_t *cf,
    ngx_http_timpush_main_conf_t *tmcf, ngx_http_timpush_credential_t *cred);
static u_char *ngx_http_timpush_apns_random(size_t n);
static void ngx_http_timpush_apns_dispatch(
    ngx_http_timpush_apns_channel_t *ch);
static ngx_uint_t ngx_http_timpush_apns_ready(
    ngx_http_timpush_apns_channel_t *ch);
static ngx_http_timpush_apns_conn_t *ngx_http_timpush_apns_pick(
    ngx_http_timpush_apns_channel_t *ch, ngx_uint_t *room);
static ngx_int_t ngx_http_timpush_apns_submit(
    ngx_http_timpush_apns_conn_t *hc, ngx_http_timpush_apns_note_t *note);
static ngx_http_timpush_apns_peer_t *ngx_http_timpush_apns_next_peer(
    ngx_http_timpush_apns_channel_t *ch);
static void ngx_http_timpush_apns_connect(ngx_http_timpush_apns_conn_t *hc);
static void ngx_http_timpush_apns_connected(ngx_event_t *ev);
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
static void ngx_http_timpush_apns_post_flush(
    ngx_http_timpush_apns_conn_t *hc);
static void ngx_http_timpush_apns_answered(
    ngx_http_timpush_apns_conn_t *hc);
static void ngx_http_timpush_apns_idle(ngx_http_timpush_apns_conn_t *hc);
static void ngx_http_timpush_apns_ping_handler(ngx_event_t *ev);
static void ngx_http_timpush_apns_reconnect_handler(ngx_event_t *ev);
static void ngx_http_timpush_apns_fail(ngx_http_timpush_apns_conn_t *hc,
    const char *reason);
static void ngx_http_timpush_apns_close(ngx_http_timpush_apns_conn_t *hc);
static void ngx_http_timpush_apns_outcome(ngx_http_timpush_apns_note_t *note);
static void ngx_http_timpush_apns_again(ngx_http_timpush_apns_note_t *note,
    ngx_uint_t now);
static void ngx_http_timpush_apns_retry_handler(ngx_event_t *ev);
static void ngx_http_timpush_apns_deadline_handler(ngx_event_t *ev);
static void ngx_http_timpush_apns_detach(ngx_http_timpush_apns_note_t *note);
static void ngx_http_timpush_apns_finish(ngx_http_timpush_apns_note_t *note);
static void ngx_http_timpush_apns_reason(ngx_http_timpush_apns_note_t *note);
static ngx_int_t ngx_http_timpush_apns_jwt(
    ngx_http_timpush_apns_channel_t *ch, ngx_uint_t renew);

static ssize_t ngx_http_timpush_apns_read_payload(nghttp2_session *session,
    int32_t stream_id, uint8_t *buf, size_t length, uint32_t *flags,
    nghttp2_data_source *source, void *data);
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


static ngx_str_t  ngx_http_timpush_apns_hosts[] = {
    ngx_string("api.sandbox.push.apple.com:443"),
    ngx_string("api.push.apple.com:443")
};

static const char  *ngx_http_timpush_apns_envs[] = {
    "sandbox", "production"
};


static ngx_http_timpush_apns_channel_t  *ngx_http_timpush_apns_channels;
static ngx_uint_t                        ngx_http_timpush_apns_nchannels;
static ngx_http_timpush_main_conf_t     *ngx_http_timpush_apns_conf;
static nghttp2_session_callbacks        *ngx_http_timpush_apns_callbacks;
static nghttp2_option                   *ngx_http_timpush_apns_option;
static ngx_uint_t                        ngx_http_timpush_apns_exiting;


/* configuration */

char *
ngx_http_timpush_apns_upstream(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_timpush_main_conf_t *tmcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   env;

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "sandbox") == 0) {
        env = NGX_HTTP_TIMPUSH_ENV_SANDBOX;

    } else if (ngx_strcmp(value[1].data, "production") == 0) {
        env = NGX_HTTP_TIMPUSH_ENV_PRODUCTION;

    } else {
        return "takes \"sandbox\" or \"production\" first";
    }

    if (tmcf->apns_upstream[env].len) {
        return "is duplicate";
    }

    tmcf->apns_upstream[env] = value[2];

    return NGX_CONF_OK;
}


/* after the upstream blocks are ready: peers and TLS contexts */

char *
ngx_http_timpush_apns_init_conf(ngx_conf_t *cf,
    ngx_http_timpush_main_conf_t *tmcf)
{
    ngx_uint_t                       i, env, used[2];
    ngx_http_timpush_credential_t  **cred;

    used[0] = 0;
    used[1] = 0;

    cred = tmcf->credentials.elts;

    for (i = 0; i < tmcf->credentials.nelts; i++) {
        cred[i]->index = i;
        used[cred[i]->env] = 1;

        if (ngx_http_timpush_apns_ssl(cf, tmcf, cred[i]) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    for (env = 0; env < 2; env++) {
        if (used[env] || tmcf->apns_upstream[env].len) {
            if (ngx_http_timpush_apns_peers(cf, tmcf, env) != NGX_OK) {
                return NGX_CONF_ERROR;
            }
        }
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_timpush_apns_peers(ngx_conf_t *cf,
    ngx_http_timpush_main_conf_t *tmcf, ngx_uint_t env)
{
    ngx_http_timpush_apns_peers_t  *peers;

    peers = ngx_pcalloc(cf->pool, sizeof(ngx_http_timpush_apns_peers_t));
    if (peers == NULL) {
        return NGX_ERROR;
    }

    if (ngx_array_init(&peers->peers, cf->pool, 4,
                       sizeof(ngx_http_timpush_apns_peer_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    tmcf->apns_peers[env] = peers;

    if (tmcf->apns_upstream[env].len) {
        return ngx_http_timpush_apns_peers_upstream(cf, peers,
                                                   &tmcf->apns_upstream[env]);
    }

    return ngx_http_timpush_apns_peers_default(cf, peers, env);
}


static ngx_int_t
ngx_http_timpush_apns_peers_upstream(ngx_conf_t *cf,
    ngx_http_timpush_apns_peers_t *peers, ngx_str_t *name)
{
    ngx_uint_t                        i;
    ngx_http_upstream_rr_peer_t      *rp;
    ngx_http_upstream_rr_peers_t     *rr;
    ngx_http_timpush_apns_peer_t     *p;
    ngx_http_upstream_srv_conf_t    **uscfp;
    ngx_http_upstream_main_conf_t    *umcf;

    umcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_upstream_module);
    uscfp = umcf->upstreams.elts;

    for (i = 0; i < umcf->upstreams.nelts; i++) {
        if (uscfp[i]->srv_conf != NULL
            && uscfp[i]->host.len == name->len
            && ngx_strncmp(uscfp[i]->host.data, name->data, name->len) == 0)
        {
            break;
        }
    }

    if (i == umcf->upstreams.nelts) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "timpush_apns_upstream: no upstream \"%V\"", name);
        return NGX_ERROR;
    }

    /* NULL means round robin, the default */

    if (uscfp[i]->peer.init_upstream != NULL
        && uscfp[i]->peer.init_upstream != ngx_http_upstream_init_round_robin)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "timpush_apns_upstream: upstream \"%V\" must use the "
                      "default round robin balancer", name);
        return NGX_ERROR;
    }

    peers->name = *name;
    rr = uscfp[i]->peer.data;

    for (rp = rr->peer; rp; rp = rp->next) {
        p = ngx_array_push(&peers->peers);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_memzero(p, sizeof(ngx_http_timpush_apns_peer_t));

        p->sockaddr = rp->sockaddr;
        p->socklen = rp->socklen;
        p->name = rp->name;
        p->max_fails = rp->max_fails;
        p->fail_timeout = rp->fail_timeout;
        p->down = rp->down;

        ngx_http_timpush_apns_peer_host(&rp->server, &p->host);
    }

    return NGX_OK;
}


/* Apple's hosts, resolved once, when the configuration is read */

static ngx_int_t
ngx_http_timpush_apns_peers_default(ngx_conf_t *cf,
    ngx_http_timpush_apns_peers_t *peers, ngx_uint_t env)
{
    ngx_uint_t                     i;
    ngx_url_t                      u;
    ngx_http_timpush_apns_peer_t  *p;

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = ngx_http_timpush_apns_hosts[env];
    u.default_port = 443;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "timpush: cannot resolve \"%V\" for the %s "
                      "credentials (%s): set \"timpush_apns_upstream %s\"",
                      &u.url, ngx_http_timpush_apns_envs[env],
                      u.err ? u.err : "no address",
                      ngx_http_timpush_apns_envs[env]);
        return NGX_ERROR;
    }

    peers->name = u.url;

    for (i = 0; i < u.naddrs; i++) {
        p = ngx_array_push(&peers->peers);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_memzero(p, sizeof(ngx_http_timpush_apns_peer_t));

        p->sockaddr = u.addrs[i].sockaddr;
        p->socklen = u.addrs[i].socklen;
        p->name = u.addrs[i].name;
        p->max_fails = 1;
        p->fail_timeout = 10;
        p->host = u.host;
    }

    return NGX_OK;
}


static void
ngx_http_timpush_apns_peer_host(ngx_str_t *server, ngx_str_t *host)
{
    u_char  *p, *last;

    *host = *server;
    last = server->data + server->len;

    if (server->len && server->data[0] == '[') {
        p = ngx_strlchr(server->data, last, ']');
        if (p) {
            host->data = server->data + 1;
            host->len = p - host->data;
        }

        return;
    }

    p = ngx_strlchr(server->data, last, ':');
    if (p) {
        host->len = p - server->data;
    }
}


static ngx_int_t
ngx_http_timpush_apns_ssl(ngx_conf_t *cf, ngx_http_timpush_main_conf_t *tmcf,
    ngx_http_timpush_credential_t *cred)
{
    int                  i;
    ngx_ssl_t           *ssl;
    ngx_pool_cleanup_t  *cln;

    ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
    if (ssl == NULL) {
        return NGX_ERROR;
    }

    ssl->log = cf->log;

    if (ngx_ssl_create(ssl, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(ssl);
        return NGX_ERROR;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = ssl;

    if (SSL_CTX_set_alpn_protos(ssl->ctx, (u_char *) "\x02h2", 3) != 0) {
        ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0, "SSL_CTX_set_alpn_protos()");
        return NGX_ERROR;
    }

    if (cred->auth == NGX_HTTP_TIMPUSH_AUTH_CERTIFICATE) {
        if (SSL_CTX_use_certificate(ssl->ctx, cred->cert) != 1
            || SSL_CTX_use_PrivateKey(ssl->ctx, cred->pkey) != 1)
        {
            ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                          "timpush_credential %ui: cannot use the "
                          "certificate of \"%V\"", cred->id, &cred->file);
            return NGX_ERROR;
        }

        for (i = 0; cred->chain && i < sk_X509_num(cred->chain); i++) {
            if (SSL_CTX_add1_chain_cert(ssl->ctx,
                                        sk_X509_value(cred->chain, i))
                != 1)
            {
                ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                              "SSL_CTX_add1_chain_cert()");
                return NGX_ERROR;
            }
        }
    }

    /* the APNs server is always verified */

    if (ngx_ssl_trusted_certificate(cf, ssl, &tmcf->apns_trusted, 5)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (tmcf->apns_trusted.len == 0
        && SSL_CTX_set_default_verify_paths(ssl->ctx) != 1)
    {
        ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                      "SSL_CTX_set_default_verify_paths()");
        return NGX_ERROR;
    }

    cred->ssl = ssl;

    return NGX_OK;
}


/* worker start and exit */

ngx_int_t
ngx_http_timpush_apns_init_process(ngx_cycle_t *cycle,
    ngx_http_timpush_main_conf_t *tmcf)
{
    ngx_uint_t                         i, j;
    ngx_http_timpush_apns_conn_t      *hc;
    ngx_http_timpush_credential_t    **cred;
    ngx_http_timpush_apns_channel_t   *ch;

    if (tmcf->credentials.nelts == 0) {
        return NGX_OK;
    }

    if (nghttp2_session_callbacks_new(&ngx_http_timpush_apns_callbacks)
        != 0
        || nghttp2_option_new(&ngx_http_timpush_apns_option) != 0)
    {
        return NGX_ERROR;
    }

    nghttp2_session_callbacks_set_on_header_callback(
        ngx_http_timpush_apns_callbacks, ngx_http_timpush_apns_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        ngx_http_timpush_apns_callbacks, ngx_http_timpush_apns_on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(
        ngx_http_timpush_apns_callbacks, ngx_http_timpush_apns_on_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(
        ngx_http_timpush_apns_callbacks, ngx_http_timpush_apns_on_close);

    nghttp2_option_set_peer_max_concurrent_streams(
        ngx_http_timpush_apns_option, NGX_HTTP_TIMPUSH_APNS_STREAMS);

    ngx_http_timpush_apns_conf = tmcf;
    ngx_http_timpush_apns_nchannels = tmcf->credentials.nelts;

    ch = ngx_pcalloc(cycle->pool, tmcf->credentials.nelts
                                  * sizeof(ngx_http_timpush_apns_channel_t));
    if (ch == NULL) {
        return NGX_ERROR;
    }

    ngx_http_timpush_apns_channels = ch;
    cred = tmcf->credentials.elts;

    for (i = 0; i < tmcf->credentials.nelts; i++, ch++) {
        ch->cred = cred[i];
        ch->peers = tmcf->apns_peers[cred[i]->env];
        ch->log = cycle->log;
        ch->nconns = tmcf->apns_connections;
        ngx_queue_init(&ch->waiting);
        ngx_str_set(&ch->last_error, "ConnectionFailed");

        ch->conns = ngx_pcalloc(cycle->pool,
                            ch->nconns * sizeof(ngx_http_timpush_apns_conn_t));
        if (ch->conns == NULL) {
            return NGX_ERROR;
        }

        for (j = 0; j < ch->nconns; j++) {
            hc = &ch->conns[j];
            hc->channel = ch;
            hc->backoff = NGX_HTTP_TIMPUSH_APNS_BACKOFF_MIN;
            ngx_queue_init(&hc->inflight);
            ngx_queue_init(&hc->answered);

            hc->reconnect.handler = ngx_http_timpush_apns_reconnect_handler;
            hc->reconnect.data = hc;
            hc->reconnect.log = cycle->log;
            hc->reconnect.cancelable = 1;

            hc->ping.handler = ngx_http_timpush_apns_ping_handler;
            hc->ping.data = hc;
            hc->ping.log = cycle->log;
            hc->ping.cancelable = 1;

            hc->in = ngx_palloc(cycle->pool, NGX_HTTP_TIMPUSH_APNS_IN_SIZE);
            hc->out = ngx_palloc(cycle->pool, NGX_HTTP_TIMPUSH_APNS_OUT_SIZE);
            if (hc->in == NULL || hc->out == NULL) {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


void
ngx_http_timpush_apns_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                        i, j;
    ngx_http_timpush_apns_conn_t     *hc;
    ngx_http_timpush_apns_channel_t  *ch;

    /* the requests waiting for answers go with the process */
    ngx_http_timpush_apns_exiting = 1;

    for (i = 0; i < ngx_http_timpush_apns_nchannels; i++) {
        ch = &ngx_http_timpush_apns_channels[i];

        for (j = 0; j < ch->nconns; j++) {
            hc = &ch->conns[j];

            if (hc->reconnect.timer_set) {
                ngx_del_timer(&hc->reconnect);
            }

            if (hc->state != NGX_HTTP_TIMPUSH_APNS_CLOSED) {
                ngx_http_timpush_apns_close(hc);
            }
        }
    }

    ngx_http_timpush_apns_nchannels = 0;

    if (ngx_http_timpush_apns_callbacks) {
        nghttp2_session_callbacks_del(ngx_http_timpush_apns_callbacks);
        ngx_http_timpush_apns_callbacks = NULL;
    }

    if (ngx_http_timpush_apns_option) {
        nghttp2_option_del(ngx_http_timpush_apns_option);
        ngx_http_timpush_apns_option = NULL;
    }
}


/* notifications in */

ngx_int_t
ngx_http_timpush_apns_send(ngx_http_timpush_apns_note_t *note)
{
    u_char                           *p, *r, uuid[16];
    ngx_msec_t                        timeout;
    ngx_msec_int_t                    left;
    ngx_http_timpush_apns_channel_t  *ch;

    ch = &ngx_http_timpush_apns_channels[note->cred->index];

    if (ch->nwaiting >= ngx_http_timpush_apns_conf->apns_queue) {
        return NGX_BUSY;
    }

    timeout = ngx_http_timpush_apns_conf->apns_timeout;

    if (note->headers->expires) {
        left = (ngx_msec_int_t) (note->headers->expires
                                 - ngx_current_msec);

        if (left <= 0) {
            /* too late already: not sent at all */
            return NGX_DECLINED;
        }

        timeout = (ngx_msec_t) left;
    }

    /* the apns-id: a random (version 4) UUID, in the answer too */

    r = ngx_http_timpush_apns_random(16);
    if (r == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(uuid, r, 16);

    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;

    p = ngx_hex_dump(note->apns_id, uuid, 4);
    *p++ = '-';
    p = ngx_hex_dump(p, uuid + 4, 2);
    *p++ = '-';
    p = ngx_hex_dump(p, uuid + 6, 2);
    *p++ = '-';
    p = ngx_hex_dump(p, uuid + 8, 2);
    *p++ = '-';
    (void) ngx_hex_dump(p, uuid + 10, 6);

    note->status = 0;
    note->reason.len = 0;
    note->timestamp = 0;
    note->attempts = 0;
    note->conn = NULL;
    note->finished = 0;
    note->jwt_renewed = 0;

    note->deadline.handler = ngx_http_timpush_apns_deadline_handler;
    note->deadline.data = note;
    note->deadline.log = ch->log;
    note->retry.handler = ngx_http_timpush_apns_retry_handler;
    note->retry.data = note;
    note->retry.log = ch->log;

    ngx_add_timer(&note->deadline, timeout);

    ngx_queue_insert_tail(&ch->waiting, &note->queue);
    ch->nwaiting++;
    note->queued = 1;

    ngx_http_timpush_apns_dispatch(ch);

    return NGX_OK;
}


/*
 * n random bytes from a per-worker buffer: one RAND_bytes() call per 256
 * notifications instead of one each.
 */

static u_char *
ngx_http_timpush_apns_random(size_t n)
{
    u_char  *p;

    static u_char  buf[4096];
    static size_t  pos = sizeof(buf);

    if (pos + n > sizeof(buf)) {
        if (RAND_bytes(buf, sizeof(buf)) != 1) {
            return NULL;
        }

        pos = 0;
    }

    p = buf + pos;
    pos += n;

    return p;
}


/*
 * Streams of a credential's connections, open or not yet (taken at the
 * server's SETTINGS_MAX_CONCURRENT_STREAMS once known, else at the
 * default).
 */

ngx_uint_t
ngx_http_timpush_apns_capacity(ngx_uint_t index)
{
    ngx_uint_t                        j, n;
    ngx_http_timpush_apns_conn_t     *hc;
    ngx_http_timpush_apns_channel_t  *ch;

    if (index >= ngx_http_timpush_apns_nchannels) {
        return 0;
    }

    ch = &ngx_http_timpush_apns_channels[index];
    n = 0;

    for (j = 0; j < ch->nconns; j++) {
        hc = &ch->conns[j];

        if (hc->state == NGX_HTTP_TIMPUSH_APNS_READY) {
            n += nghttp2_session_get_remote_settings(hc->session,
                                 NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);

        } else {
            n += NGX_HTTP_TIMPUSH_APNS_STREAMS;
        }
    }

    return n;
}


void
ngx_http_timpush_apns_cancel(ngx_http_timpush_apns_note_t *note)
{
    if (note->finished) {
        return;
    }

    note->finished = 1;
    ngx_http_timpush_apns_detach(note);
}


/* waiting notifications onto streams, connecting on demand */

static void
ngx_http_timpush_apns_dispatch(ngx_http_timpush_apns_channel_t *ch)
{
    ngx_int_t                      rc;
    ngx_uint_t                     i, room, connecting;
    ngx_queue_t                   *q;
    ngx_http_timpush_apns_conn_t  *hc;
    ngx_http_timpush_apns_note_t  *note;

    while (!ngx_queue_empty(&ch->waiting)) {

        hc = ngx_http_timpush_apns_pick(ch, &room);
        if (hc == NULL) {
            break;
        }

        /* the connection picked is filled as far as it goes */

        for ( /* void */ ;
             room && !ngx_queue_empty(&ch->waiting)
             && hc->state == NGX_HTTP_TIMPUSH_APNS_READY;
             room--)
        {
            q = ngx_queue_head(&ch->waiting);
            note = ngx_queue_data(q, ngx_http_timpush_apns_note_t, queue);

            ngx_queue_remove(q);
            ch->nwaiting--;
            note->queued = 0;

            rc = ngx_http_timpush_apns_submit(hc, note);

            if (rc == NGX_DECLINED) {
                /* no provider token can be made: nothing will change it */
                note->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
                ngx_str_set(&note->reason, "ProviderTokenError");
                ngx_http_timpush_apns_finish(note);
                continue;
            }

            if (rc != NGX_OK) {
                ngx_http_timpush_apns_again(note, 0);
                ngx_http_timpush_apns_fail(hc, "ProtocolError");
                break;
            }

            ngx_http_timpush_apns_post_flush(hc);
        }
    }

    if (ngx_queue_empty(&ch->waiting)) {
        return;
    }

    /* notifications wait: bring up the connections that are down */

    connecting = 0;

    for (i = 0; i < ch->nconns; i++) {
        hc = &ch->conns[i];

        if (hc->state == NGX_HTTP_TIMPUSH_APNS_CONNECTING) {
            connecting++;

        } else if (hc->state == NGX_HTTP_TIMPUSH_APNS_CLOSED
                   && !hc->reconnect.timer_set)
        {
            ngx_http_timpush_apns_connect(hc);
            connecting++;
        }
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ch->log, 0,
                   "timpush apns: %ui waiting, %ui connecting",
                   ch->nwaiting, connecting);
}


/* has the channel a connection that takes streams? */

static ngx_uint_t
ngx_http_timpush_apns_ready(ngx_http_timpush_apns_channel_t *ch)
{
    ngx_uint_t  i;

    for (i = 0; i < ch->nconns; i++) {
        if (ch->conns[i].state == NGX_HTTP_TIMPUSH_APNS_READY) {
            return 1;
        }
    }

    return 0;
}


/* the ready connection with the most free streams */

static ngx_http_timpush_apns_conn_t *
ngx_http_timpush_apns_pick(ngx_http_timpush_apns_channel_t *ch,
    ngx_uint_t *room)
{
    uint32_t                       max;
    ngx_uint_t                     i, free, best_free;
    ngx_http_timpush_apns_conn_t  *hc, *best;

    best = NULL;
    best_free = 0;

    for (i = 0; i < ch->nconns; i++) {
        hc = &ch->conns[i];

        if (hc->state != NGX_HTTP_TIMPUSH_APNS_READY) {
            continue;
        }

        max = nghttp2_session_get_remote_settings(hc->session,
                                 NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);

        free = (max > hc->streams) ? max - hc->streams : 0;

        /*
         * A busy connection is filled up again only once an eighth of
         * what it may carry is free: fewer and larger writes, on both
         * sides; the answers it waits for free the room.
         */

        if (hc->streams && free < max / 8 + (max % 8 != 0)) {
            continue;
        }

        if (free > best_free) {
            best = hc;
            best_free = free;
        }
    }

    *room = best_free;

    return best;
}


static ngx_int_t
ngx_http_timpush_apns_submit(ngx_http_timpush_apns_conn_t *hc,
    ngx_http_timpush_apns_note_t *note)
{
    u_char                           *p;
    size_t                            n;
    int32_t                           id;
    nghttp2_nv                        nv[13];
    nghttp2_data_provider             dp;
    ngx_http_timpush_credential_t    *cred;
    ngx_http_timpush_apns_channel_t  *ch;
    ngx_http_timpush_apns_headers_t  *hd;
    u_char                            path[16 + NGX_HTTP_TIMPUSH_TOKEN_MAX];
    u_char                            topic[512];
    u_char                            prio[NGX_INT_T_LEN];
    u_char                            exp[NGX_INT64_LEN];
    u_char                            clen[NGX_SIZE_T_LEN];
    u_char                            auth[sizeof("bearer ") + 512];

    ch = hc->channel;
    cred = ch->cred;
    hd = note->headers;
    n = 0;

    /*
     * Names are literals (not copied); values that differ on every
     * request (:path, apns-id) are kept out of the HPACK dynamic table,
     * where they would only push out the ones that repeat.
     */

#define ngx_http_timpush_nv_f(nm, v, l, f)                                  \
    nv[n].name = (uint8_t *) nm;                                            \
    nv[n].namelen = sizeof(nm) - 1;                                         \
    nv[n].value = (uint8_t *) (v);                                          \
    nv[n].valuelen = (l);                                                   \
    nv[n].flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | (f);                       \
    n++

#define ngx_http_timpush_nv(nm, v, l)                                       \
    ngx_http_timpush_nv_f(nm, v, l, NGHTTP2_NV_FLAG_NONE)

    p = ngx_snprintf(path, sizeof(path), "/3/device/%V", &note->token);

    ngx_http_timpush_nv(":method", "POST", 4);
    ngx_http_timpush_nv(":scheme", "https", 5);
    ngx_http_timpush_nv_f(":path", path, p - path, NGHTTP2_NV_FLAG_NO_INDEX);
    ngx_http_timpush_nv(":authority", hc->peer->host.data,
                        hc->peer->host.len);

    p = ngx_snprintf(topic, sizeof(topic), "%V%V", &cred->topic,
                     &hd->topic_suffix);
    ngx_http_timpush_nv("apns-topic", topic, p - topic);
    ngx_http_timpush_nv("apns-push-type", hd->push_type.data,
                        hd->push_type.len);

    p = ngx_sprintf(prio, "%ui", hd->priority);
    ngx_http_timpush_nv("apns-priority", prio, p - prio);

    ngx_http_timpush_nv_f("apns-id", note->apns_id,
                          NGX_HTTP_TIMPUSH_APNS_ID_LEN,
                          NGHTTP2_NV_FLAG_NO_INDEX);

    p = ngx_sprintf(clen, "%uz", note->payload[0].len + note->payload[1].len
                                 + note->payload[2].len);
    ngx_http_timpush_nv("content-length", clen, p - clen);

    if (hd->expiration >= 0) {
        p = ngx_sprintf(exp, "%L", hd->expiration);
        ngx_http_timpush_nv("apns-expiration", exp, p - exp);
    }

    if (hd->collapse_id.len) {
        ngx_http_timpush_nv("apns-collapse-id", hd->collapse_id.data,
                            hd->collapse_id.len);
    }

    if (cred->auth == NGX_HTTP_TIMPUSH_AUTH_TOKEN) {
        if (ngx_http_timpush_apns_jwt(ch, 0) != NGX_OK) {
            return NGX_DECLINED;
        }

        p = ngx_snprintf(auth, sizeof(auth), "bearer %V", &ch->jwt);
        ngx_http_timpush_nv("authorization", auth, p - auth);
    }

#undef ngx_http_timpush_nv
#undef ngx_http_timpush_nv_f

    note->part = 0;
    note->offset = 0;
    note->body_len = 0;
    note->status = 0;

    dp.source.ptr = note;
    dp.read_callback = ngx_http_timpush_apns_read_payload;

    id = nghttp2_submit_request(hc->session, NULL, nv, n, &dp, note);
    if (id < 0) {
        ngx_log_error(NGX_LOG_ERR, ch->log, 0,
                      "timpush apns: nghttp2_submit_request() failed: %s",
                      nghttp2_strerror(id));
        return NGX_ERROR;
    }

    note->conn = hc;
    note->stream_id = id;
    note->attempts++;
    ngx_queue_insert_tail(&hc->inflight, &note->link);
    hc->streams++;
    hc->pc.connection->idle = 0;

    return NGX_OK;
}


static ssize_t
ngx_http_timpush_apns_read_payload(nghttp2_session *session,
    int32_t stream_id, uint8_t *buf, size_t length, uint32_t *flags,
    nghttp2_data_source *source, void *data)
{
    ngx_http_timpush_apns_note_t *note = source->ptr;

    size_t      n, copied;
    ngx_str_t  *part;

    copied = 0;

    while (note->part < 3 && copied < length) {
        part = &note->payload[note->part];
        n = ngx_min(part->len - note->offset, length - copied);

        ngx_memcpy(buf + copied, part->data + note->offset, n);
        copied += n;
        note->offset += n;

        if (note->offset == part->len) {
            note->part++;
            note->offset = 0;
        }
    }

    if (note->part == 3) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    }

    return copied;
}


/* connections */

static ngx_http_timpush_apns_peer_t *
ngx_http_timpush_apns_next_peer(ngx_http_timpush_apns_channel_t *ch)
{
    time_t                         now;
    ngx_uint_t                     i, n;
    ngx_http_timpush_apns_peer_t  *peer;

    peer = ch->peers->peers.elts;
    n = ch->peers->peers.nelts;
    now = ngx_time();

    for (i = 0; i < n; i++) {
        peer = (ngx_http_timpush_apns_peer_t *) ch->peers->peers.elts
               + (ch->next_peer++ % n);

        if (peer->down) {
            continue;
        }

        if (peer->max_fails && peer->fails >= peer->max_fails
            && now - peer->checked <= peer->fail_timeout)
        {
            continue;
        }

        return peer;
    }

    /* every peer failed: try them anyway rather than not at all */

    return (ngx_http_timpush_apns_peer_t *) ch->peers->peers.elts
           + (ch->next_peer++ % n);
}


static void
ngx_http_timpush_apns_connect(ngx_http_timpush_apns_conn_t *hc)
{
    ngx_int_t                         rc;
    ngx_connection_t                 *c;
    ngx_http_timpush_apns_channel_t  *ch;

    ch = hc->channel;

    hc->peer = ngx_http_timpush_apns_next_peer(ch);
    hc->state = NGX_HTTP_TIMPUSH_APNS_CONNECTING;
    hc->handshaken = 0;
    hc->answers = 0;
    hc->out_pos = 0;
    hc->out_last = 0;
    hc->ping_sent = 0;

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

        hc->state = NGX_HTTP_TIMPUSH_APNS_CLOSED;
        ngx_http_timpush_apns_fail(hc, "ConnectionFailed");
        return;
    }

    c = hc->pc.connection;

    hc->pool = ngx_create_pool(1024, ch->log);
    if (hc->pool == NULL) {
        ngx_close_connection(c);
        hc->pc.connection = NULL;
        hc->state = NGX_HTTP_TIMPUSH_APNS_CLOSED;
        ngx_http_timpush_apns_fail(hc, "ConnectionFailed");
        return;
    }

    c->data = hc;
    c->pool = hc->pool;
    c->read->handler = ngx_http_timpush_apns_connected;
    c->write->handler = ngx_http_timpush_apns_connected;

    ngx_add_timer(c->write, ngx_min(ngx_http_timpush_apns_conf->apns_timeout,
                                    10000));

    if (rc == NGX_OK) {
        ngx_http_timpush_apns_connected(c->write);
    }
}


static void
ngx_http_timpush_apns_connected(ngx_event_t *ev)
{
    ngx_connection_t              *c = ev->data;
    ngx_http_timpush_apns_conn_t  *hc = c->data;

    ngx_str_t  host;

    if (ev->timedout) {
        ngx_log_error(NGX_LOG_ERR, c->log, NGX_ETIMEDOUT,
                      "timpush apns: %V: connect timed out",
                      &hc->peer->name);
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
        u_char  name[256];

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
        return;
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
    ngx_connection_t  *c;
    nghttp2_settings_entry  iv[2];

    c = hc->pc.connection;

    if (nghttp2_session_client_new2(&hc->session,
                                    ngx_http_timpush_apns_callbacks, hc,
                                    ngx_http_timpush_apns_option)
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

    hc->state = NGX_HTTP_TIMPUSH_APNS_READY;
    hc->handshaken = 1;
    hc->backoff = NGX_HTTP_TIMPUSH_APNS_BACKOFF_MIN;
    hc->peer->fails = 0;

    c->read->handler = ngx_http_timpush_apns_read_handler;
    c->write->handler = ngx_http_timpush_apns_write_handler;

    ngx_log_error(NGX_LOG_INFO, c->log, 0,
                  "timpush apns: credential %ui: connected to %V (%s)",
                  hc->channel->cred->id, &hc->peer->name,
                  ngx_http_timpush_apns_envs[hc->channel->cred->env]);

    ngx_http_timpush_apns_dispatch(hc->channel);

    if (ngx_http_timpush_apns_flush(hc) != NGX_OK) {
        ngx_http_timpush_apns_fail(hc, "ConnectionFailed");
        return NGX_OK;
    }

    ngx_http_timpush_apns_idle(hc);

    return NGX_OK;
}


static void
ngx_http_timpush_apns_read_handler(ngx_event_t *ev)
{
    ssize_t                        n, rc;
    ngx_connection_t              *c = ev->data;
    ngx_http_timpush_apns_conn_t  *hc = c->data;

    if (c->close) {
        /* worker exit: an idle connection goes */
        ngx_http_timpush_apns_close(hc);
        return;
    }

    /*
     * On an error the answers collected so far are left to close(): it
     * takes them once the connection is marked closed, so nothing they
     * re-send goes onto this connection.
     */

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

        hc->ping_sent = 0;

        if (!c->read->ready) {
            /* drained: another read would only say so */
            break;
        }
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_timpush_apns_fail(hc, "ConnectionFailed");
        return;
    }

    /* answers first: they free streams for the notifications waiting */

    ngx_http_timpush_apns_answered(hc);

    if (hc->state == NGX_HTTP_TIMPUSH_APNS_CLOSED) {
        return;
    }

    ngx_http_timpush_apns_dispatch(hc->channel);
    ngx_http_timpush_apns_write_handler(c->write);
}


static void
ngx_http_timpush_apns_write_handler(ngx_event_t *ev)
{
    ngx_connection_t              *c = ev->data;
    ngx_http_timpush_apns_conn_t  *hc = c->data;

    if (ngx_http_timpush_apns_flush(hc) != NGX_OK) {
        ngx_http_timpush_apns_fail(hc, "ConnectionFailed");
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


static void
ngx_http_timpush_apns_post_flush(ngx_http_timpush_apns_conn_t *hc)
{
    ngx_event_t  *wev;

    wev = hc->pc.connection->write;

    if (!wev->posted) {
        ngx_post_event(wev, &ngx_posted_events);
    }
}


/* a connection with nothing on it: PING it, or close it if it must go */

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
        ngx_http_timpush_apns_dispatch(hc->channel);
        return;
    }

    if (ngx_exiting && hc->streams == 0) {
        ngx_http_timpush_apns_close(hc);
        return;
    }

    if (hc->streams == 0) {
        c->idle = 1;

        if (!hc->ping.timer_set) {
            ngx_add_timer(&hc->ping, NGX_HTTP_TIMPUSH_APNS_PING);
        }

    } else {
        c->idle = 0;

        if (hc->ping.timer_set) {
            ngx_del_timer(&hc->ping);
        }
    }
}


static void
ngx_http_timpush_apns_ping_handler(ngx_event_t *ev)
{
    ngx_http_timpush_apns_conn_t *hc = ev->data;

    if (hc->state != NGX_HTTP_TIMPUSH_APNS_READY) {
        return;
    }

    if (hc->ping_sent) {
        ngx_log_error(NGX_LOG_INFO, hc->channel->log, 0,
                      "timpush apns: %V: no answer to PING, closing",
                      &hc->peer->name);
        ngx_http_timpush_apns_close(hc);
        return;
    }

    if (nghttp2_submit_ping(hc->session, NGHTTP2_FLAG_NONE, NULL) != 0
        || ngx_http_timpush_apns_flush(hc) != NGX_OK)
    {
        ngx_http_timpush_apns_close(hc);
        return;
    }

    hc->ping_sent = 1;
    ngx_add_timer(&hc->ping, NGX_HTTP_TIMPUSH_APNS_PING);
}


static void
ngx_http_timpush_apns_reconnect_handler(ngx_event_t *ev)
{
    ngx_http_timpush_apns_conn_t *hc = ev->data;

    if (hc->state == NGX_HTTP_TIMPUSH_APNS_CLOSED
        && !ngx_queue_empty(&hc->channel->waiting))
    {
        ngx_http_timpush_apns_connect(hc);
    }
}


/*
 * The connection failed: its streams are answered again later on another
 * connection, and it is made again after a backoff if there is demand.
 */

static void
ngx_http_timpush_apns_fail(ngx_http_timpush_apns_conn_t *hc,
    const char *reason)
{
    ngx_http_timpush_apns_peer_t     *peer;
    ngx_http_timpush_apns_channel_t  *ch;

    ch = hc->channel;
    peer = hc->peer;

    if (!hc->handshaken && peer) {
        peer->fails++;
        peer->checked = ngx_time();

        ch->last_error.data = (u_char *) reason;
        ch->last_error.len = ngx_strlen(reason);

        ngx_log_error(NGX_LOG_ERR, ch->log, 0,
                      "timpush apns: credential %ui (%s): cannot connect to "
                      "%V: %s; retrying in %M ms", ch->cred->id,
                      ngx_http_timpush_apns_envs[ch->cred->env],
                      &peer->name, reason, hc->backoff);
    }

    /* the backoff first: what close() re-sends must not reopen this one */

    if (!hc->reconnect.timer_set && !ngx_exiting) {
        ngx_add_timer(&hc->reconnect, hc->backoff);
        hc->backoff = ngx_min(hc->backoff * 2,
                              NGX_HTTP_TIMPUSH_APNS_BACKOFF_MAX);
    }

    ngx_http_timpush_apns_close(hc);

    /* other connections may take what this one held */
    ngx_http_timpush_apns_dispatch(ch);
}


/*
 * The connection is torn down first; only then are its notifications
 * given their outcome, which may re-send them and open connections.
 */

static void
ngx_http_timpush_apns_close(ngx_http_timpush_apns_conn_t *hc)
{
    ngx_queue_t                   *q;
    ngx_connection_t              *c;
    ngx_http_timpush_apns_note_t  *note;

    c = hc->pc.connection;

    hc->state = NGX_HTTP_TIMPUSH_APNS_CLOSED;
    hc->pc.connection = NULL;
    hc->streams = 0;

    if (hc->ping.timer_set) {
        ngx_del_timer(&hc->ping);
    }

    if (hc->session) {
        /* no stream callbacks from here: nghttp2 just frees */
        nghttp2_session_del(hc->session);
        hc->session = NULL;
    }

    /* notes on streams never answered: to be sent again elsewhere */

    while (!ngx_queue_empty(&hc->inflight)) {
        q = ngx_queue_head(&hc->inflight);
        ngx_queue_remove(q);
        note = ngx_queue_data(q, ngx_http_timpush_apns_note_t, link);
        note->status = 0;
        ngx_queue_insert_tail(&hc->answered, &note->queue);
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

    if (ngx_http_timpush_apns_exiting) {
        /* the requests waiting for answers go with the process */
        ngx_queue_init(&hc->answered);
        return;
    }

    ngx_http_timpush_apns_answered(hc);
}


/* answers collected during nghttp2_session_mem_recv() */

static void
ngx_http_timpush_apns_answered(ngx_http_timpush_apns_conn_t *hc)
{
    ngx_queue_t                   *q;
    ngx_http_timpush_apns_note_t  *note;

    while (!ngx_queue_empty(&hc->answered)) {
        q = ngx_queue_head(&hc->answered);
        ngx_queue_remove(q);

        note = ngx_queue_data(q, ngx_http_timpush_apns_note_t, queue);
        note->conn = NULL;

        ngx_http_timpush_apns_outcome(note);
    }
}


/* what to do with a note whose stream is over */

static void
ngx_http_timpush_apns_outcome(ngx_http_timpush_apns_note_t *note)
{
    ngx_http_timpush_apns_channel_t  *ch;

    if (note->finished) {
        return;
    }

    ch = &ngx_http_timpush_apns_channels[note->cred->index];

    switch (note->status) {

    case 0:
        /* no answer: the connection failed, or the stream was refused */
        ngx_http_timpush_apns_again(note, note->stream_id == -1);
        return;

    case 429:
    case 500:
    case 503:
        ngx_http_timpush_apns_reason(note);
        ngx_http_timpush_apns_again(note, 0);
        return;

    case 403:
        ngx_http_timpush_apns_reason(note);

        if (note->reason.len == 20
            && ngx_strncmp(note->reason.data, "ExpiredProviderToken", 20)
               == 0
            && note->cred->auth == NGX_HTTP_TIMPUSH_AUTH_TOKEN
            && !note->jwt_renewed
            && ngx_http_timpush_apns_jwt(ch, 1) == NGX_OK)
        {
            note->jwt_renewed = 1;
            ngx_http_timpush_apns_again(note, 1);
            return;
        }

        break;

    default:
        ngx_http_timpush_apns_reason(note);
        break;
    }

    ngx_http_timpush_apns_finish(note);
}


/* back to the queue, at once or after a backoff, while time is left */

static void
ngx_http_timpush_apns_again(ngx_http_timpush_apns_note_t *note,
    ngx_uint_t now)
{
    ngx_msec_t                        delay, left;
    ngx_http_timpush_apns_channel_t  *ch;

    ch = &ngx_http_timpush_apns_channels[note->cred->index];

    if (now) {
        ngx_queue_insert_head(&ch->waiting, &note->queue);
        ch->nwaiting++;
        note->queued = 1;
        ngx_http_timpush_apns_dispatch(ch);
        return;
    }

    delay = NGX_HTTP_TIMPUSH_APNS_RETRY_MIN << ngx_min(note->attempts, 5);
    delay = ngx_min(delay, NGX_HTTP_TIMPUSH_APNS_RETRY_MAX);

    left = note->deadline.timer_set
           ? (ngx_msec_t) (note->deadline.timer.key - ngx_current_msec) : 0;

    if (delay >= left) {
        /* no time for another try: the deadline answers with this one */
        return;
    }

    ngx_add_timer(&note->retry, delay);
}


static void
ngx_http_timpush_apns_retry_handler(ngx_event_t *ev)
{
    ngx_http_timpush_apns_note_t *note = ev->data;

    ngx_http_timpush_apns_again(note, 1);
}


static void
ngx_http_timpush_apns_deadline_handler(ngx_event_t *ev)
{
    ngx_http_timpush_apns_note_t *note = ev->data;

    ngx_http_timpush_apns_channel_t  *ch;

    ch = &ngx_http_timpush_apns_channels[note->cred->index];

    ngx_http_timpush_apns_detach(note);

    if (note->status == 0) {
        /* never answered: say why if the connection is what failed */

        if (note->attempts == 0 && !ngx_http_timpush_apns_ready(ch)) {
            note->status = NGX_HTTP_BAD_GATEWAY;
            note->reason = ch->last_error;

        } else {
            note->status = NGX_HTTP_GATEWAY_TIME_OUT;
            ngx_str_set(&note->reason, "Timeout");
        }
    }

    ngx_http_timpush_apns_finish(note);
}


/* off the queue, the retry timer and its stream */

static void
ngx_http_timpush_apns_detach(ngx_http_timpush_apns_note_t *note)
{
    ngx_http_timpush_apns_conn_t     *hc;
    ngx_http_timpush_apns_channel_t  *ch;

    ch = &ngx_http_timpush_apns_channels[note->cred->index];

    if (note->queued) {
        ngx_queue_remove(&note->queue);
        ch->nwaiting--;
        note->queued = 0;
    }

    if (note->retry.timer_set) {
        ngx_del_timer(&note->retry);
    }

    if (note->deadline.timer_set) {
        ngx_del_timer(&note->deadline);
    }

    hc = note->conn;

    if (hc) {
        ngx_queue_remove(&note->link);
    }

    if (hc && hc->session) {
        nghttp2_session_set_stream_user_data(hc->session, note->stream_id,
                                             NULL);
        (void) nghttp2_submit_rst_stream(hc->session, NGHTTP2_FLAG_NONE,
                                         note->stream_id, NGHTTP2_CANCEL);
        ngx_http_timpush_apns_post_flush(hc);
    }

    note->conn = NULL;
}


static void
ngx_http_timpush_apns_finish(ngx_http_timpush_apns_note_t *note)
{
    if (note->retry.timer_set) {
        ngx_del_timer(&note->retry);
    }

    if (note->deadline.timer_set) {
        ngx_del_timer(&note->deadline);
    }

    note->finished = 1;
    note->done(note);
}


/* Apple's {"reason":"...","timestamp":...} */

static void
ngx_http_timpush_apns_reason(ngx_http_timpush_apns_note_t *note)
{
    u_char  *p, *last, *start;

    note->reason.len = 0;
    note->timestamp = 0;

    p = note->body;
    last = p + note->body_len;

    start = ngx_strlcasestrn(p, last, (u_char *) "\"reason\"", 8 - 1);
    if (start) {
        p = ngx_strlchr(start + 8, last, '"');
        if (p) {
            start = ++p;

            /* Apple's reasons are words: nothing else is taken */

            while (p < last && ((*p >= 'A' && *p <= 'Z')
                                || (*p >= 'a' && *p <= 'z')
                                || (*p >= '0' && *p <= '9')))
            {
                p++;
            }

            if (p < last && *p == '"' && p > start) {
                note->reason.data = start;
                note->reason.len = p - start;
            }
        }
    }

    p = note->body;

    start = ngx_strlcasestrn(p, last, (u_char *) "\"timestamp\"", 11 - 1);
    if (start) {
        p = start + 11;

        while (p < last && (*p == ' ' || *p == ':')) {
            p++;
        }

        start = p;

        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }

        if (p > start) {
            note->timestamp = ngx_atoof(start, p - start);
        }
    }

    if (note->reason.len == 0) {
        ngx_str_set(&note->reason, "Unknown");
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

    if (frame->hd.type == NGHTTP2_GOAWAY) {
        ngx_log_error(NGX_LOG_INFO, hc->channel->log, 0,
                      "timpush apns: %V: GOAWAY (error %ud, last stream "
                      "%D): draining", &hc->peer->name,
                      frame->goaway.error_code,
                      frame->goaway.last_stream_id);

        hc->state = NGX_HTTP_TIMPUSH_APNS_DRAINING;
    }

    return 0;
}


static int
ngx_http_timpush_apns_on_close(nghttp2_session *session, int32_t stream_id,
    uint32_t error_code, void *data)
{
    ngx_http_timpush_apns_conn_t *hc = data;

    ngx_http_timpush_apns_note_t  *note;

    if (hc->streams) {
        hc->streams--;
    }

    note = nghttp2_session_get_stream_user_data(session, stream_id);
    if (note == NULL) {
        return 0;
    }

    nghttp2_session_set_stream_user_data(session, stream_id, NULL);
    ngx_queue_remove(&note->link);

    if (note->status) {
        hc->answers++;
    }

    if (note->status == 0 && error_code == NGHTTP2_REFUSED_STREAM) {
        /* not processed (GOAWAY, REFUSED_STREAM): send it again now */
        note->stream_id = -1;

    } else if (note->status == 0) {
        note->stream_id = 0;
    }

    ngx_queue_insert_tail(&hc->answered, &note->queue);

    return 0;
}


/*
 * The provider token: ES256 over {"alg":"ES256","kid":...}.{"iss":...,
 * "iat":...}, reused for 50 minutes and never made more often than every
 * 20 (APNs answers TooManyProviderTokenUpdates).
 */

static ngx_int_t
ngx_http_timpush_apns_jwt(ngx_http_timpush_apns_channel_t *ch,
    ngx_uint_t renew)
{
    int                             ok;
    time_t                          now;
    size_t                          siglen;
    u_char                         *p;
    u_char                          json[256], der[128], raw[64];
    ngx_str_t                       src, dst, signing;
    EVP_MD_CTX                     *md;
    ECDSA_SIG                      *sig;
    const BIGNUM                   *r, *s;
    const u_char                   *dp;
    ngx_http_timpush_credential_t  *cred;

    now = ngx_time();
    cred = ch->cred;

    if (ch->jwt.len) {
        if (!renew && now - ch->jwt_iat < NGX_HTTP_TIMPUSH_JWT_REUSE) {
            return NGX_OK;
        }

        if (renew && now - ch->jwt_iat < NGX_HTTP_TIMPUSH_JWT_MIN_AGE) {
            ngx_log_error(NGX_LOG_ERR, ch->log, 0,
                          "timpush apns: credential %ui: APNs says the "
                          "token made %T s ago expired; is the clock "
                          "right?", cred->id, now - ch->jwt_iat);
            return NGX_DECLINED;
        }
    }

    /* header.claims, base64url */

    p = ch->jwt_buf;

    src.data = json;
    src.len = ngx_sprintf(json, "{\"alg\":\"ES256\",\"kid\":\"%V\"}",
                          &cred->key_id) - json;
    dst.data = p;
    ngx_encode_base64url(&dst, &src);
    p += dst.len;
    *p++ = '.';

    src.len = ngx_sprintf(json, "{\"iss\":\"%V\",\"iat\":%T}",
                          &cred->team_id, now) - json;
    dst.data = p;
    ngx_encode_base64url(&dst, &src);
    p += dst.len;

    signing.data = ch->jwt_buf;
    signing.len = p - ch->jwt_buf;

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        return NGX_ERROR;
    }

    siglen = sizeof(der);

    ok = EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, cred->pkey) == 1
         && EVP_DigestSign(md, der, &siglen, signing.data, signing.len) == 1;

    EVP_MD_CTX_free(md);

    if (!ok) {
        ngx_ssl_error(NGX_LOG_ERR, ch->log, 0,
                      "timpush apns: credential %ui: signing the provider "
                      "token failed", cred->id);
        return NGX_ERROR;
    }

    /* JWS wants the raw R || S, OpenSSL gives DER */

    dp = der;
    sig = d2i_ECDSA_SIG(NULL, &dp, siglen);
    if (sig == NULL) {
        return NGX_ERROR;
    }

    ECDSA_SIG_get0(sig, &r, &s);

    ok = BN_bn2binpad(r, raw, 32) == 32 && BN_bn2binpad(s, raw + 32, 32) == 32;

    ECDSA_SIG_free(sig);

    if (!ok) {
        return NGX_ERROR;
    }

    *p++ = '.';
    src.data = raw;
    src.len = 64;
    dst.data = p;
    ngx_encode_base64url(&dst, &src);
    p += dst.len;

    ch->jwt.data = ch->jwt_buf;
    ch->jwt.len = p - ch->jwt_buf;
    ch->jwt_iat = now;

    ngx_log_error(NGX_LOG_INFO, ch->log, 0,
                  "timpush apns: credential %ui: new provider token",
                  cred->id);

    return NGX_OK;
}
