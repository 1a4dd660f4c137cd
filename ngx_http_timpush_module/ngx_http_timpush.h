
/*
 * Copyright (C) timpush authors
 */


#ifndef _NGX_HTTP_TIMPUSH_H_INCLUDED_
#define _NGX_HTTP_TIMPUSH_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <yajl/yajl_gen.h>
#include <hiredis/hiredis.h>

#include "ngx_http_timpush_redis.h"
#include "ngx_http_timpush_cluster.h"


#define NGX_HTTP_TIMPUSH_ENV_SANDBOX      0
#define NGX_HTTP_TIMPUSH_ENV_PRODUCTION   1

#define NGX_HTTP_TIMPUSH_AUTH_CERTIFICATE 0
#define NGX_HTTP_TIMPUSH_AUTH_TOKEN       1

#define NGX_HTTP_TIMPUSH_USER_MAX         128
#define NGX_HTTP_TIMPUSH_TOKEN_MIN        16
#define NGX_HTTP_TIMPUSH_TOKEN_MAX        200
#define NGX_HTTP_TIMPUSH_UNREAD_MAX       99999
#define NGX_HTTP_TIMPUSH_DEVICE_BODY_MAX  4096


/* one app: a business_id bound to a .p12 certificate or a .p8 token key */
typedef struct {
    ngx_uint_t                    id;
    ngx_uint_t                    env;
    ngx_uint_t                    auth;
    ngx_str_t                     topic;
    ngx_str_t                     file;
    ngx_str_t                     key_id;
    ngx_str_t                     team_id;
    X509                         *cert;
    STACK_OF(X509)               *chain;
    EVP_PKEY                     *pkey;
    u_char                        pkey_id[32]; /* SHA-256, public part */
    ngx_uint_t                    index;     /* in credentials */
    ngx_ssl_t                    *ssl;       /* TLS to APNs */
    time_t                        not_before; /* certificates */
    time_t                        not_after;
} ngx_http_timpush_credential_t;


typedef struct {
    ngx_str_t                     name;      /* as configured, for logs */
    ngx_str_t                     host;      /* its host name or address */
    ngx_addr_t                    addr;      /* the first address, or path */
    ngx_str_t                     prefix;
    ngx_msec_t                    timeout;
    ngx_uint_t                    max_pending;
    ngx_str_t                     password_file;
    ngx_flag_t                    tls;
    ngx_str_t                     trusted;   /* trusted_certificate= */
    ngx_http_timpush_redis_opts_t opts;      /* TLS, AUTH: every connection */
} ngx_http_timpush_redis_conf_t;


typedef struct {
    ngx_http_timpush_redis_conf_t  redis;
    ngx_uint_t                     redis_set;
    ngx_http_timpush_cluster_conf_t  *cluster;  /* timpush_redis_cluster */
    ngx_array_t                    credentials;  /* credential_t * */
    ngx_uint_t                     devices_per_app;
    ngx_uint_t                     max_recipients;
    ngx_array_t                    api_locations; /* core loc conf * */

    ngx_str_t                      apns_upstream[2];  /* by environment */
    void                          *apns_peers[2];
    ngx_str_t                      apns_trusted;
    ngx_uint_t                     apns_connections;
    ngx_msec_t                     apns_timeout;
    ngx_msec_t                     apns_read_timeout;
    ngx_uint_t                     apns_queue;
    ngx_msec_t                     credential_recheck;
    ngx_msec_t                     dedup_window;
    ngx_shm_zone_t                *metrics_zone;
    ngx_shm_zone_t                *jwt_zone;     /* provider tokens */
    ngx_flag_t                     async;
    ngx_msec_t                     async_keep;
    ngx_msec_t                     async_claim;
    ngx_msec_t                     async_retry;
} ngx_http_timpush_main_conf_t;


typedef struct {
    ngx_flag_t                     api;
    ngx_array_t                   *allow_origin;  /* ngx_str_t */
} ngx_http_timpush_loc_conf_t;


/* Redis store: one pipelined connection per worker (store.c, redis.c) */

typedef enum {
    NGX_HTTP_TIMPUSH_SCRIPT_REGISTER = 0,
    NGX_HTTP_TIMPUSH_SCRIPT_UNREGISTER,
    NGX_HTTP_TIMPUSH_SCRIPT_LIST,
    NGX_HTTP_TIMPUSH_SCRIPT_LOGOUT,
    NGX_HTTP_TIMPUSH_SCRIPT_BACKGROUND,
    NGX_HTTP_TIMPUSH_SCRIPT_FOREGROUND,
    NGX_HTTP_TIMPUSH_SCRIPT_PUSH,
    NGX_HTTP_TIMPUSH_SCRIPT_PRUNE,
    NGX_HTTP_TIMPUSH_SCRIPT_ENQUEUE,
    NGX_HTTP_TIMPUSH_SCRIPT_GROUP,
    NGX_HTTP_TIMPUSH_SCRIPT_RECORD,
    NGX_HTTP_TIMPUSH_SCRIPT_FINISH,
    NGX_HTTP_TIMPUSH_SCRIPT_FETCH,
    NGX_HTTP_TIMPUSH_SCRIPT_AUTOCLAIM,
    NGX_HTTP_TIMPUSH_SCRIPT_TOUCH,
    NGX_HTTP_TIMPUSH_SCRIPT_FEEDBACK,
    NGX_HTTP_TIMPUSH_SCRIPT_CLAIM,
    NGX_HTTP_TIMPUSH_SCRIPT_SETTLE,
    NGX_HTTP_TIMPUSH_SCRIPT_RELEASE,
    NGX_HTTP_TIMPUSH_SCRIPT_UNDO,
    NGX_HTTP_TIMPUSH_SCRIPT_QUEUED,
    NGX_HTTP_TIMPUSH_SCRIPT_DONE,
    NGX_HTTP_TIMPUSH_SCRIPT_ACK,
    NGX_HTTP_TIMPUSH_SCRIPT_LAST
} ngx_http_timpush_script_e;

typedef struct ngx_http_timpush_store_cmd_s  ngx_http_timpush_store_cmd_t;

/*
 * Called once per command: with the reply (rc NGX_OK), or with NULL and
 * NGX_DECLINED (Redis not reachable, or the connection was lost),
 * NGX_AGAIN (no reply within the deadline) or NGX_ERROR (Redis answered
 * an error).  The reply is freed by the store after the call.
 */
typedef void (*ngx_http_timpush_store_handler_pt)(void *data,
    redisReply *reply, ngx_int_t rc);


ngx_int_t ngx_http_timpush_store_init_process(ngx_cycle_t *cycle,
    ngx_http_timpush_main_conf_t *tmcf);
void ngx_http_timpush_store_exit_process(ngx_cycle_t *cycle);
ngx_int_t ngx_http_timpush_store_run(ngx_http_timpush_script_e script,
    ngx_str_t *keys, ngx_uint_t nkeys, ngx_str_t *args, ngx_uint_t nargs,
    ngx_http_timpush_store_handler_pt handler, void *data,
    ngx_http_timpush_store_cmd_t **cmdp);
ngx_int_t ngx_http_timpush_store_command(ngx_uint_t blocking, ngx_str_t *argv,
    ngx_uint_t argc, ngx_msec_t timeout,
    ngx_http_timpush_store_handler_pt handler, void *data,
    ngx_http_timpush_store_cmd_t **cmdp);
void ngx_http_timpush_store_forget(ngx_http_timpush_store_cmd_t *cmd);
ngx_int_t ngx_http_timpush_store_room(ngx_uint_t n);
ngx_uint_t ngx_http_timpush_store_clustered(void);
const char *ngx_http_timpush_store_strerror(ngx_int_t rc);
ngx_int_t ngx_http_timpush_store_key(ngx_pool_t *pool, ngx_str_t *user,
    ngx_str_t *key);
ngx_int_t ngx_http_timpush_store_token_key(ngx_pool_t *pool,
    ngx_str_t *token, ngx_str_t *key);
ngx_int_t ngx_http_timpush_store_msg_key(ngx_pool_t *pool, ngx_str_t *msg_id,
    ngx_str_t *key);
ngx_int_t ngx_http_timpush_store_msg_slot_key(ngx_pool_t *pool,
    ngx_str_t *msg_id, ngx_uint_t slot, ngx_str_t *key);
ngx_int_t ngx_http_timpush_store_plain_key(ngx_pool_t *pool, const char *name,
    ngx_str_t *key);
ngx_int_t ngx_http_timpush_store_push_key(ngx_pool_t *pool, ngx_str_t *id,
    ngx_str_t *key);


/*
 * One device, one account (owner.c, DESIGN §12): the registrations and
 * removals of tokens that keep the reverse index "<prefix>:t:{<token>}" in
 * step with the users' hashes.  A sequence runs to its end even when its
 * caller goes away (detach): it never leaves the two halves apart.
 */

typedef struct ngx_http_timpush_owner_s  ngx_http_timpush_owner_t;

/*
 * rc: NGX_OK; a store error (NGX_DECLINED, NGX_AGAIN, NGX_ERROR) for the
 * first step that failed; NGX_BUSY: the registration lost a race to
 * another one, which holds the token now.  The owner is freed on return.
 */
typedef void (*ngx_http_timpush_owner_done_pt)(void *data,
    ngx_http_timpush_owner_t *o, ngx_int_t rc);

ngx_http_timpush_owner_t *ngx_http_timpush_owner_create(ngx_log_t *log,
    ngx_str_t *user);
ngx_int_t ngx_http_timpush_owner_register(ngx_http_timpush_owner_t *o,
    ngx_str_t *token, ngx_str_t *args, ngx_uint_t nargs,
    ngx_http_timpush_owner_done_pt done, void *data);
ngx_int_t ngx_http_timpush_owner_remove(ngx_http_timpush_owner_t *o,
    ngx_http_timpush_script_e script, ngx_str_t *args, ngx_uint_t nargs,
    ngx_http_timpush_owner_done_pt done, void *data);
ngx_int_t ngx_http_timpush_owner_release(ngx_http_timpush_owner_t *o,
    ngx_str_t *token, ngx_http_timpush_owner_done_pt done, void *data);
void ngx_http_timpush_owner_detach(ngx_http_timpush_owner_t *o);
void ngx_http_timpush_owner_destroy(ngx_http_timpush_owner_t *o);
ngx_array_t *ngx_http_timpush_owner_removed(ngx_http_timpush_owner_t *o);
ngx_str_t *ngx_http_timpush_owner_moved_from(ngx_http_timpush_owner_t *o);
ngx_str_t *ngx_http_timpush_owner_holder(ngx_http_timpush_owner_t *o);


/* credentials (auth.c) */

char *ngx_http_timpush_credential(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_http_timpush_credential_t *ngx_http_timpush_credential_find(
    ngx_http_timpush_main_conf_t *tmcf, ngx_uint_t id);
ngx_int_t ngx_http_timpush_credential_expiry(ngx_log_t *log,
    ngx_http_timpush_credential_t *cred, ngx_uint_t warn);
ngx_uint_t ngx_http_timpush_credential_expired(
    ngx_http_timpush_credential_t *cred);
ngx_int_t ngx_http_timpush_expiry_init_process(ngx_cycle_t *cycle,
    ngx_http_timpush_main_conf_t *tmcf);


/* secrets in secure memory (secret.c) */

ngx_int_t ngx_http_timpush_secret_init(ngx_conf_t *cf);
void *ngx_http_timpush_secret_alloc(ngx_pool_t *pool, size_t size);
void ngx_http_timpush_secret_mode(ngx_conf_t *cf, u_char *what,
    const char *noun, ngx_str_t *file);
ngx_int_t ngx_http_timpush_secret_file(ngx_conf_t *cf, u_char *what,
    const char *noun, ngx_str_t *file, ngx_pool_t *pool, ngx_str_t *data);
ngx_int_t ngx_http_timpush_secret_password(ngx_conf_t *cf, u_char *what,
    const char *noun, ngx_str_t *file, ngx_pool_t *pool,
    ngx_str_t *password);


/* private keys read in a child process (isolate.c) */

typedef struct {
    EVP_PKEY                      *pkey;
    X509                          *cert;     /* a .p12's */
    STACK_OF(X509)                *chain;
    ngx_uint_t                     flags;    /* the reader's own */
} ngx_http_timpush_keys_t;

/* runs in the child: NGX_OK, or a code of the caller's, or NGX_ERROR */
typedef ngx_int_t (*ngx_http_timpush_keys_read_pt)(void *data,
    ngx_http_timpush_keys_t *keys);

ngx_int_t ngx_http_timpush_keys_isolated(ngx_conf_t *cf,
    ngx_http_timpush_keys_read_pt reader, void *data,
    ngx_http_timpush_keys_t *keys);


/* JSON (json.c) */

yajl_gen ngx_http_timpush_json_gen(ngx_pool_t *pool);
ngx_int_t ngx_http_timpush_json_str(yajl_gen g, ngx_str_t *s);
ngx_int_t ngx_http_timpush_json_cstr(yajl_gen g, const char *s);
ngx_int_t ngx_http_timpush_json_key_str(yajl_gen g, const char *key,
    ngx_str_t *value);
ngx_int_t ngx_http_timpush_json_key_int(yajl_gen g, const char *key,
    int64_t value);
ngx_int_t ngx_http_timpush_json_key_bool(yajl_gen g, const char *key,
    ngx_uint_t value);
size_t ngx_http_timpush_json_escape_len(ngx_str_t *s);
u_char *ngx_http_timpush_json_escape(u_char *dst, ngx_str_t *s);


/* REST API (api.c) */

/* what a request of the API shows in logs (vars.c) */
typedef struct {
    ngx_str_t                      user;     /* the path's, decoded */
    ngx_str_t                      token;
    ngx_str_t                      msg_id;
    ngx_uint_t                     recipients;
    ngx_uint_t                     sent;
    ngx_uint_t                     failed;
    ngx_uint_t                     skipped;
    unsigned                       pushed:1; /* the counts are set */
} ngx_http_timpush_request_info_t;

ngx_http_timpush_request_info_t *ngx_http_timpush_api_info(
    ngx_http_request_t *r);
ngx_http_timpush_store_cmd_t **ngx_http_timpush_api_cmd(
    ngx_http_request_t *r);

ngx_int_t ngx_http_timpush_api_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_timpush_api_init(ngx_conf_t *cf);
ngx_int_t ngx_http_timpush_api_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, const char *fmt, ...);
ngx_int_t ngx_http_timpush_api_finish(ngx_http_request_t *r, ngx_int_t rc);
ngx_int_t ngx_http_timpush_api_send(ngx_http_request_t *r,
    ngx_uint_t status, yajl_gen g);
ngx_int_t ngx_http_timpush_api_send_buf(ngx_http_request_t *r,
    ngx_uint_t status, ngx_buf_t *b);
ngx_int_t ngx_http_timpush_api_store_error(ngx_http_request_t *r,
    ngx_int_t rc);
u_char *ngx_http_timpush_short_token(u_char *buf, ngx_str_t *token);


/* browsers refused, listed origins let in (origin.c) */

char *ngx_http_timpush_origin_conf(ngx_conf_t *cf,
    ngx_http_timpush_loc_conf_t *tlcf);
ngx_int_t ngx_http_timpush_origin_check(ngx_http_request_t *r);


/* GET /v1/health (health.c) */

ngx_int_t ngx_http_timpush_health(ngx_http_request_t *r);


/* the log variables (vars.c) */

ngx_int_t ngx_http_timpush_vars_add(ngx_conf_t *cf);


/* durable asynchronous pushes (async.c) */

ngx_int_t ngx_http_timpush_async_enqueue(ngx_http_request_t *r,
    u_char *data, size_t len);
ngx_int_t ngx_http_timpush_async_get(ngx_http_request_t *r, ngx_str_t *id);
ngx_int_t ngx_http_timpush_async_init_process(ngx_cycle_t *cycle,
    ngx_http_timpush_main_conf_t *tmcf);
void ngx_http_timpush_async_exit_process(ngx_cycle_t *cycle);


/* POST /v1/push (push.c) */

ngx_int_t ngx_http_timpush_push(ngx_http_request_t *r, u_char *data,
    size_t len);


extern ngx_module_t  ngx_http_timpush_module;


#endif /* _NGX_HTTP_TIMPUSH_H_INCLUDED_ */
