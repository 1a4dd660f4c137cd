
/*
 * Copyright (C) timpush authors
 */


#ifndef _NGX_HTTP_TIMPUSH_REDIS_H_INCLUDED_
#define _NGX_HTTP_TIMPUSH_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_event_connect.h>

#include <hiredis/hiredis.h>


/*
 * One connection to one Redis node (redis.c), on nginx's own connections
 * (TCP or a unix socket, with TLS when "ssl" is set): AUTH first, then the
 * commands, pipelined, each reply given to the command it answers, in
 * order.  Made again with backoff when it fails.  What is shared by every
 * node of a configuration (TLS, password, timeouts) is in the options; a
 * Redis Cluster client holds one node per master: its address from
 * CLUSTER SLOTS by ngx_parse_addr_port(), commands sent back to back
 * (ASKING, then the command) pipelined in that order, the state handler
 * telling it when to look at the slot map again.
 */

typedef struct ngx_http_timpush_redis_s      ngx_http_timpush_redis_t;
typedef struct ngx_http_timpush_redis_req_s  ngx_http_timpush_redis_req_t;


typedef struct {
    ngx_ssl_t                         *ssl;       /* NULL: no TLS */
    ngx_str_t                          tls_name;  /* empty: the host's */
    ngx_str_t                          user;      /* AUTH user, or empty */
    ngx_str_t                          password;  /* empty: no AUTH */
    ngx_msec_t                         timeout;   /* connect, TLS, AUTH */
} ngx_http_timpush_redis_opts_t;


/*
 * Called once for each command sent: with its reply (freed after the
 * call, unless the handler keeps it: ngx_http_timpush_redis_keep()), or
 * with NULL when the connection was lost or closed first.
 */
typedef void (*ngx_http_timpush_redis_reply_pt)(
    ngx_http_timpush_redis_req_t *req, redisReply *reply);

/*
 * The node can take commands (up), or no longer (error: "connect",
 * "auth" or "reply", the kind of failure; NULL when it was closed).
 */
typedef void (*ngx_http_timpush_redis_state_pt)(void *data, ngx_uint_t up,
    const char *error);


/* the caller's, for as long as the command waits (the FIFO links it) */
struct ngx_http_timpush_redis_req_s {
    ngx_queue_t                        queue;
    ngx_http_timpush_redis_reply_pt    handler;
    void                              *data;
    uint64_t                           end;      /* redis.c's */
};


ngx_http_timpush_redis_t *ngx_http_timpush_redis_create(ngx_log_t *log,
    ngx_http_timpush_redis_opts_t *opts, ngx_str_t *name, ngx_str_t *host,
    ngx_addr_t *addr, ngx_http_timpush_redis_state_pt state, void *data);
void ngx_http_timpush_redis_destroy(ngx_http_timpush_redis_t *rd);
ngx_int_t ngx_http_timpush_redis_send(ngx_http_timpush_redis_t *rd,
    ngx_http_timpush_redis_req_t *req, int argc, const char **argv,
    const size_t *argvlen);
ngx_int_t ngx_http_timpush_redis_ready(ngx_http_timpush_redis_t *rd);
ngx_msec_t ngx_http_timpush_redis_idle(ngx_http_timpush_redis_t *rd);
void ngx_http_timpush_redis_reset(ngx_http_timpush_redis_t *rd);
ngx_str_t *ngx_http_timpush_redis_name(ngx_http_timpush_redis_t *rd);
void ngx_http_timpush_redis_keep(redisReply *reply);


#endif /* _NGX_HTTP_TIMPUSH_REDIS_H_INCLUDED_ */
