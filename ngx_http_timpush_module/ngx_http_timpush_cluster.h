
/*
 * Copyright (C) timpush authors
 *
 * Redis Cluster routing (DESIGN §15): key to hash slot, the slot map read
 * from CLUSTER SLOTS, MOVED and ASK redirections, keys grouped by slot,
 * and the timpush_redis_cluster arguments.  Logic only: no I/O, no event;
 * the store sends what this file decides.
 */


#ifndef _NGX_HTTP_TIMPUSH_CLUSTER_H_INCLUDED_
#define _NGX_HTTP_TIMPUSH_CLUSTER_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include <hiredis/hiredis.h>


#define NGX_HTTP_TIMPUSH_CLUSTER_SLOTS          16384

/* redirections (MOVED and ASK) that one command may follow */
#define NGX_HTTP_TIMPUSH_CLUSTER_REDIRECTS_MAX  5

/* a map's nodes (Redis Cluster's own bound), and replicas kept per range */
#define NGX_HTTP_TIMPUSH_CLUSTER_NODES_MAX      1000
#define NGX_HTTP_TIMPUSH_CLUSTER_REPLICAS_MAX   16

/* a host name in a redirection or a map: 253 by DNS, and room for IPv6 */
#define NGX_HTTP_TIMPUSH_CLUSTER_HOST_MAX       255


/*
 * A node as CLUSTER SLOTS names it.  "host" is the preferred endpoint, an
 * address or a host name, without brackets, NUL-terminated.  When Redis
 * does not know it (NULL, "" or "?") the node is reached on the host of
 * the node that answered, at "port" (the Redis documentation of CLUSTER
 * SLOTS): the map has that host, given to map_build().
 */
typedef struct {
    ngx_str_t                     host;
    ngx_str_t                     id;        /* may be empty */
    ngx_str_t                     hostname;  /* Redis 7 metadata, or empty */
    in_port_t                     port;
    ngx_int_t                     master;    /* its master's index; -1 */
    ngx_uint_t                    replicas;  /* a master's, in the map */
} ngx_http_timpush_cluster_node_t;


/*
 * A slot map never changes once built: a refresh builds a new one and
 * swaps it in (ngx_http_timpush_cluster_map_swap()).  A command in flight
 * may hold a reference to the map it was routed with; the map is freed
 * when its last reference goes.
 */
typedef struct {
    ngx_pool_t                   *pool;      /* the map and its nodes */
    ngx_array_t                   nodes;     /* node_t: masters, replicas */
    ngx_uint_t                    nmasters;  /* masters are nodes[0..n-1] */
    ngx_uint_t                    covered;   /* slots that have a master */
    ngx_uint_t                    refs;
    uint16_t                      slot[NGX_HTTP_TIMPUSH_CLUSTER_SLOTS];
                                             /* master index + 1; 0: none */
} ngx_http_timpush_cluster_map_t;


typedef enum {
    NGX_HTTP_TIMPUSH_CLUSTER_MOVED = 1,
    NGX_HTTP_TIMPUSH_CLUSTER_ASK
} ngx_http_timpush_cluster_redirect_e;


/* "MOVED 3999 127.0.0.1:6381" or "ASK ...", copied out of the reply */
typedef struct {
    ngx_http_timpush_cluster_redirect_e  type;
    ngx_uint_t                    slot;
    ngx_str_t                     host;      /* into host_buf; empty: the
                                                host that answered, the
                                                caller's to fill in */
    in_port_t                     port;
    u_char                        host_buf[NGX_HTTP_TIMPUSH_CLUSTER_HOST_MAX
                                           + 1];
} ngx_http_timpush_cluster_redirect_t;


/* what the store does with a command after a reply */
typedef enum {
    NGX_HTTP_TIMPUSH_CLUSTER_DONE = 0,       /* not a redirection: answer */
    NGX_HTTP_TIMPUSH_CLUSTER_RESEND,         /* MOVED: refresh the map, send
                                                again to the node named */
    NGX_HTTP_TIMPUSH_CLUSTER_ASKING,         /* ASK: ASKING then the command
                                                to the node named, once */
    NGX_HTTP_TIMPUSH_CLUSTER_RETRY,          /* TRYAGAIN: the same node,
                                                a little later, ASKING
                                                again if it was sent */
    NGX_HTTP_TIMPUSH_CLUSTER_FAIL            /* too many redirections, or a
                                                redirection unreadable */
} ngx_http_timpush_cluster_action_e;


/* one command's redirections, zeroed when the command is made */
typedef struct {
    ngx_uint_t                    redirects;
    unsigned                      asking:1;  /* next send is after ASKING */
} ngx_http_timpush_cluster_route_t;


/* keys of one slot, by their index in the list given */
typedef struct {
    ngx_uint_t                    slot;
    ngx_uint_t                   *index;
    ngx_uint_t                    nkeys;
} ngx_http_timpush_cluster_group_t;


typedef struct {
    ngx_str_t                     name;      /* as configured, for logs */
    ngx_str_t                     host;      /* NUL-terminated, no [] */
    in_port_t                     port;
} ngx_http_timpush_cluster_seed_t;


/* timpush_redis_cluster: the same options as timpush_redis */
typedef struct {
    ngx_array_t                   seeds;     /* seed_t */
    ngx_str_t                     prefix;
    ngx_msec_t                    timeout;
    ngx_uint_t                    max_pending;
    ngx_uint_t                    wait;      /* replicas a write waits for */
    ngx_str_t                     user;      /* AUTH user, or empty */
    ngx_str_t                     password;  /* secret memory, or empty */
    ngx_str_t                     password_file;
    ngx_str_t                     trusted_certificate;
    ngx_flag_t                    tls;
} ngx_http_timpush_cluster_conf_t;


ngx_uint_t ngx_http_timpush_cluster_slot(u_char *key, size_t len);

ngx_http_timpush_cluster_map_t *ngx_http_timpush_cluster_map_build(
    redisReply *reply, ngx_str_t *asked, ngx_log_t *log);
void ngx_http_timpush_cluster_map_ref(ngx_http_timpush_cluster_map_t *map);
void ngx_http_timpush_cluster_map_unref(ngx_http_timpush_cluster_map_t *map);
void ngx_http_timpush_cluster_map_swap(ngx_http_timpush_cluster_map_t **cur,
    ngx_http_timpush_cluster_map_t *map);
ngx_http_timpush_cluster_node_t *ngx_http_timpush_cluster_map_master(
    ngx_http_timpush_cluster_map_t *map, ngx_uint_t slot);
ngx_int_t ngx_http_timpush_cluster_map_find(
    ngx_http_timpush_cluster_map_t *map, ngx_str_t *host, in_port_t port);

ngx_int_t ngx_http_timpush_cluster_redirect_parse(u_char *err, size_t len,
    ngx_http_timpush_cluster_redirect_t *rd);
ngx_http_timpush_cluster_action_e ngx_http_timpush_cluster_route(
    ngx_http_timpush_cluster_route_t *route, redisReply *reply,
    ngx_http_timpush_cluster_redirect_t *rd);

ngx_int_t ngx_http_timpush_cluster_address(u_char *s, size_t len,
    ngx_str_t *host, in_port_t *port);
ngx_http_timpush_cluster_group_t *ngx_http_timpush_cluster_group(
    ngx_pool_t *pool, ngx_str_t *keys, ngx_uint_t nkeys,
    ngx_uint_t *ngroups);

char *ngx_http_timpush_cluster_parse(ngx_pool_t *pool, ngx_str_t *args,
    ngx_uint_t nargs, ngx_http_timpush_cluster_conf_t *ccf);
char *ngx_http_timpush_cluster_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


#endif /* _NGX_HTTP_TIMPUSH_CLUSTER_H_INCLUDED_ */
