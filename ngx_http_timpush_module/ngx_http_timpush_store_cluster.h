
/*
 * Copyright (C) timpush authors
 *
 * The store on a Redis Cluster (store_cluster.c, DESIGN §15): a worker's
 * slot map, one connection (redis.c) per node, each command sent to the
 * master of its slot and following MOVED, ASK, TRYAGAIN and CLUSTERDOWN.
 * store.c keeps the commands (scripts, deadlines, answers); this file only
 * decides where each goes, and when again.
 */


#ifndef _NGX_HTTP_TIMPUSH_STORE_CLUSTER_H_INCLUDED_
#define _NGX_HTTP_TIMPUSH_STORE_CLUSTER_H_INCLUDED_


#include "ngx_http_timpush.h"
#include "ngx_http_timpush_cluster.h"


typedef struct ngx_http_timpush_store_cluster_s
    ngx_http_timpush_store_cluster_t;
typedef struct ngx_http_timpush_store_route_s
    ngx_http_timpush_store_route_t;


/* the router gave up on the command (Redis did not execute it) */
typedef void (*ngx_http_timpush_store_route_fail_pt)(
    ngx_http_timpush_store_route_t *sr, ngx_int_t rc);


/* a command as the router sees it: part of store.c's, zeroed with it */
struct ngx_http_timpush_store_route_s {
    ngx_queue_t                            queue;    /* parked */
    ngx_event_t                            retry;    /* TRYAGAIN, ... */
    ngx_http_timpush_redis_req_t          *req;      /* the command's */
    int                                    argc;
    const char                           **argv;
    size_t                                *argvlen;
    ngx_http_timpush_store_route_fail_pt   fail;
    ngx_http_timpush_store_cluster_t      *cl;
    void                                  *node;     /* sent to, last */
    void                                  *target;   /* a redirection's */
    ngx_uint_t                             slot;
    ngx_http_timpush_cluster_route_t       route;
    unsigned                               parked:1;
};


/* the cluster's state for metrics and logs, as redis.c's state handler */
ngx_http_timpush_store_cluster_t *ngx_http_timpush_store_cluster_create(
    ngx_cycle_t *cycle, ngx_http_timpush_cluster_conf_t *ccf,
    ngx_http_timpush_redis_opts_t *opts, ngx_http_timpush_redis_state_pt state,
    void *data);
void ngx_http_timpush_store_cluster_destroy(
    ngx_http_timpush_store_cluster_t *cl);
ngx_int_t ngx_http_timpush_store_cluster_ready(
    ngx_http_timpush_store_cluster_t *cl);
ngx_int_t ngx_http_timpush_store_cluster_send(
    ngx_http_timpush_store_route_t *sr);
ngx_int_t ngx_http_timpush_store_cluster_reply(
    ngx_http_timpush_store_route_t *sr, redisReply *reply);
void ngx_http_timpush_store_cluster_cancel(ngx_http_timpush_store_route_t *sr);
ngx_int_t ngx_http_timpush_store_cluster_waiting(
    ngx_http_timpush_store_route_t *sr);
void ngx_http_timpush_store_cluster_stuck(ngx_http_timpush_store_route_t *sr,
    ngx_msec_t timeout);
ngx_int_t ngx_http_timpush_store_cluster_wait(
    ngx_http_timpush_store_route_t *sr, ngx_http_timpush_redis_req_t *req,
    ngx_msec_t timeout, ngx_uint_t *n);
void ngx_http_timpush_store_cluster_unreplicated(
    ngx_http_timpush_store_route_t *sr);
ngx_str_t *ngx_http_timpush_store_cluster_name(
    ngx_http_timpush_store_route_t *sr);


#endif /* _NGX_HTTP_TIMPUSH_STORE_CLUSTER_H_INCLUDED_ */
