
/*
 * Copyright (C) timpush authors
 *
 * The APNs transport's own parts, shared by its files:
 *   apns_conf.c   peers (upstream{} or Apple's hosts) and TLS contexts
 *   apns_resolve.c  host names resolved again with nginx's resolver
 *   apns_conn.c   one connection's life: connect, TLS, the nghttp2
 *                 session, reads and writes, PING, close
 *   apns.c        one notification's life: queue, stream, outcome,
 *                 retry, deadline; the channels of a worker
 *   apns_jwt.c    provider tokens
 *   jwt_shm.c     the instance's provider token of each key, shared
 */


#ifndef _NGX_HTTP_TIMPUSH_APNS_INT_H_INCLUDED_
#define _NGX_HTTP_TIMPUSH_APNS_INT_H_INCLUDED_


#include "ngx_http_timpush_apns.h"
#include "ngx_http_timpush_metrics.h"

#include <nghttp2/nghttp2.h>


/* a connection's states */
#define NGX_HTTP_TIMPUSH_APNS_CLOSED      0
#define NGX_HTTP_TIMPUSH_APNS_CONNECTING  1
#define NGX_HTTP_TIMPUSH_APNS_READY       2
#define NGX_HTTP_TIMPUSH_APNS_DRAINING    3    /* takes no new streams */

/* a notification's states: where it is, and so what holds it */
#define NGX_HTTP_TIMPUSH_NOTE_IDLE        0    /* not ours, or done */
#define NGX_HTTP_TIMPUSH_NOTE_WAITING     1    /* ch->waiting, by queue */
#define NGX_HTTP_TIMPUSH_NOTE_BACKOFF     2    /* its retry timer */
#define NGX_HTTP_TIMPUSH_NOTE_STREAM      3    /* hc->inflight, by link */
#define NGX_HTTP_TIMPUSH_NOTE_ANSWERED    4    /* ch->answered, by queue */

#define NGX_HTTP_TIMPUSH_APNS_IN_SIZE     16384
#define NGX_HTTP_TIMPUSH_APNS_OUT_SIZE    65536
#define NGX_HTTP_TIMPUSH_APNS_FRAME_MAX   20480
#define NGX_HTTP_TIMPUSH_APNS_STREAMS     100      /* before SETTINGS */
#define NGX_HTTP_TIMPUSH_APNS_STREAMS_MAX 1000     /* none, or more */
#define NGX_HTTP_TIMPUSH_APNS_PING        60000    /* idle */
#define NGX_HTTP_TIMPUSH_APNS_BACKOFF_MIN 1000
#define NGX_HTTP_TIMPUSH_APNS_BACKOFF_MAX 60000
#define NGX_HTTP_TIMPUSH_APNS_RETRY_MIN   100
#define NGX_HTTP_TIMPUSH_APNS_RETRY_MAX   2000
#define NGX_HTTP_TIMPUSH_APNS_REFUSED_MAX 3        /* re-sends of a note */
#define NGX_HTTP_TIMPUSH_APNS_ADDRS       16       /* of a resolved name */

/* stream ids are 31 bits and odd: a connection drains before the end */
#define NGX_HTTP_TIMPUSH_APNS_LAST_ID     0x7ff00000

/* "bearer " and a provider token */
#define NGX_HTTP_TIMPUSH_APNS_AUTH_SIZE   512

/* key_id and team_id (auth.c) */
#define NGX_HTTP_TIMPUSH_JWT_ID_MAX       32


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


/* where a peer's address and its text live when they are our own */

typedef struct {
    ngx_sockaddr_t                     sockaddr;
    u_char                             name[NGX_SOCKADDR_STRLEN];
} ngx_http_timpush_apns_addr_t;


typedef struct {
    ngx_str_t                          name;      /* upstream, for logs */
    ngx_array_t                        peers;     /* apns_peer_t */

    /* a host name resolved again when a connection opens; else NULL */
    ngx_resolver_t                    *resolver;
    ngx_msec_t                         resolver_timeout;
    ngx_str_t                          host;
    in_port_t                          port;
    ngx_http_timpush_apns_addr_t      *addrs;     /* APNS_ADDRS, by peer */
} ngx_http_timpush_apns_peers_t;


typedef struct ngx_http_timpush_apns_channel_s
    ngx_http_timpush_apns_channel_t;


/* a key's provider token, in shared memory (jwt_shm.c) */
typedef struct {
    u_char                             key_id[NGX_HTTP_TIMPUSH_JWT_ID_MAX];
    u_char                             team_id[NGX_HTTP_TIMPUSH_JWT_ID_MAX];
    u_char                             pkey_id[32]; /* the signing key */
    size_t                             key_id_len;  /* 0: a free slot */
    size_t                             team_id_len;
    time_t                             iat;       /* 0: none made yet */
    size_t                             len;
    u_char                             auth[NGX_HTTP_TIMPUSH_APNS_AUTH_SIZE];
} ngx_http_timpush_jwt_slot_t;


typedef struct {
    ngx_http_timpush_apns_channel_t   *channel;
    ngx_peer_connection_t              pc;
    ngx_http_timpush_apns_peer_t      *peer;      /* &dialed */
    ngx_http_timpush_apns_peer_t       dialed;    /* a copy: peers change */
    ngx_http_timpush_apns_addr_t       dialed_addr;
    ngx_resolver_ctx_t                *resolving;
    nghttp2_session                   *session;
    ngx_uint_t                         state;
    ngx_uint_t                         streams;   /* open, ours */
    ngx_uint_t                         answers;   /* streams answered */
    ngx_queue_t                        inflight;  /* notes on streams */
    ngx_pool_t                        *pool;
    ngx_event_t                        reconnect;
    ngx_event_t                        watch;     /* PING, read timeout */
    ngx_msec_t                         backoff;
    u_char                            *out;
    size_t                             out_pos;
    size_t                             out_last;
    u_char                            *in;
    const char                        *error;     /* fail it, at top level */
    int32_t                            goaway_last; /* -1: no GOAWAY */
    unsigned                           ping_sent:1;
    unsigned                           handshaken:1;
    unsigned                           failed:1;  /* since its last answer */
    unsigned                           settings:1; /* the server's came */
} ngx_http_timpush_apns_conn_t;


struct ngx_http_timpush_apns_channel_s {
    ngx_http_timpush_credential_t     *cred;
    ngx_http_timpush_apns_peers_t     *peers;
    ngx_uint_t                         next_peer;
    ngx_http_timpush_apns_conn_t      *conns;
    ngx_uint_t                         nconns;
    ngx_queue_t                        waiting;
    ngx_uint_t                         nwaiting;
    ngx_queue_t                        answered;  /* streams over */
    ngx_event_t                        dispatch;  /* posted */
    ngx_event_t                        outcomes;  /* posted */
    ngx_str_t                          last_error;
    ngx_log_t                         *log;
    ngx_str_t                          auth;      /* "bearer <token>" */
    time_t                             jwt_iat;
    time_t                             jwt_checked; /* the shared one */
    u_char                            *jwt_buf[2]; /* secure memory */
    ngx_uint_t                         jwt_next;
    ngx_http_timpush_cred_metrics_t    metrics;
};


typedef struct {
    ngx_http_timpush_apns_channel_t   *channels;
    ngx_uint_t                         nchannels;
    ngx_http_timpush_main_conf_t      *conf;
    nghttp2_session_callbacks         *callbacks;
    nghttp2_option                    *option;
    nghttp2_mem                        mem;
    ngx_uint_t                         exiting;
} ngx_http_timpush_apns_t;


extern ngx_http_timpush_apns_t  ngx_http_timpush_apns;

extern const char  *ngx_http_timpush_apns_envs[];


/* apns.c: the notifications */
void ngx_http_timpush_apns_kick(ngx_http_timpush_apns_channel_t *ch);
void ngx_http_timpush_apns_stream_over(ngx_http_timpush_apns_conn_t *hc,
    ngx_http_timpush_apns_note_t *note, uint32_t error_code);
void ngx_http_timpush_apns_gauges(ngx_http_timpush_apns_channel_t *ch);

/* apns_conn.c: the connections */
ngx_int_t ngx_http_timpush_apns_conn_init(ngx_cycle_t *cycle);
void ngx_http_timpush_apns_conn_exit(void);
ngx_int_t ngx_http_timpush_apns_conn_alloc(ngx_cycle_t *cycle,
    ngx_http_timpush_apns_conn_t *hc);
void ngx_http_timpush_apns_connect(ngx_http_timpush_apns_conn_t *hc);
void ngx_http_timpush_apns_connect_peer(ngx_http_timpush_apns_conn_t *hc);
void ngx_http_timpush_apns_close(ngx_http_timpush_apns_conn_t *hc);
void ngx_http_timpush_apns_error(ngx_http_timpush_apns_conn_t *hc,
    const char *reason);
void ngx_http_timpush_apns_post_flush(ngx_http_timpush_apns_conn_t *hc);
ngx_uint_t ngx_http_timpush_apns_max_streams(
    ngx_http_timpush_apns_conn_t *hc);

/* apns_resolve.c: host names resolved again */
ngx_int_t ngx_http_timpush_apns_peers_set(ngx_http_timpush_apns_peers_t *peers,
    ngx_addr_t *addrs, ngx_uint_t n, ngx_log_t *log);
void ngx_http_timpush_apns_resolve(ngx_http_timpush_apns_conn_t *hc);
void ngx_http_timpush_apns_resolve_cancel(ngx_http_timpush_apns_conn_t *hc);

/* apns_jwt.c: provider tokens; failed: the iat of one APNs called expired */
ngx_int_t ngx_http_timpush_apns_jwt(ngx_http_timpush_apns_channel_t *ch,
    time_t failed);

/* jwt_shm.c: the shared tokens */
ngx_http_timpush_jwt_slot_t *ngx_http_timpush_jwt_shm_lock(
    ngx_shm_zone_t *zone, ngx_http_timpush_credential_t *cred, time_t now);
void ngx_http_timpush_jwt_shm_unlock(ngx_shm_zone_t *zone);


#endif /* _NGX_HTTP_TIMPUSH_APNS_INT_H_INCLUDED_ */
