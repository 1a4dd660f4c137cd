
/*
 * Copyright (C) timpush authors
 *
 * The APNs simulator (DESIGN 7.5): nginx's own HTTP/2 server answering
 * notification requests as api.push.apple.com does, with injected failures
 * and a shared-memory log of the notifications it accepted.
 *
 *   timpush_apns_mock [key=AuthKey_ID.p8 key_id=ID team_id=TEAM] [topic=T];
 *   timpush_apns_mock_rule <hex token prefix> <4xx|5xx> <Reason> [times=N];
 *   timpush_apns_mock_log [size=10m];
 *
 * Checks, first failure answers: method, path, token, apns-* headers
 * (duplicates, apns-id, push type, priority, expiration, collapse id),
 * auth (a certificate nginx verified wins over a token), topic, declared
 * length, payload; then the rules in order; then the log and 200.
 * HTTP/1.1 is answered too, which Apple does not, for plain tools.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <yajl/yajl_tree.h>

#include "ngx_http_timpush_x509.h"


#define NGX_HTTP_TIMPUSH_MOCK_PAYLOAD        4096
#define NGX_HTTP_TIMPUSH_MOCK_PAYLOAD_VOIP   5120
#define NGX_HTTP_TIMPUSH_MOCK_COLLAPSE_ID    64
#define NGX_HTTP_TIMPUSH_MOCK_ZONE_SIZE      (10 * 1024 * 1024)
#define NGX_HTTP_TIMPUSH_MOCK_MAX_RULES      1024
#define NGX_HTTP_TIMPUSH_MOCK_JWT_LIFETIME   3600
#define NGX_HTTP_TIMPUSH_MOCK_JWT_SKEW       300
#define NGX_HTTP_TIMPUSH_MOCK_JWT_CACHE      8
#define NGX_HTTP_TIMPUSH_MOCK_JWT_MAX        512
#define NGX_HTTP_TIMPUSH_MOCK_UUID_LEN       36


/* indexes into ngx_http_timpush_mock_reasons[] */
#define NGX_HTTP_TIMPUSH_MOCK_OK                      0
#define NGX_HTTP_TIMPUSH_MOCK_BAD_COLLAPSE_ID         1
#define NGX_HTTP_TIMPUSH_MOCK_BAD_DEVICE_TOKEN        2
#define NGX_HTTP_TIMPUSH_MOCK_BAD_EXPIRATION_DATE     3
#define NGX_HTTP_TIMPUSH_MOCK_BAD_MESSAGE_ID          4
#define NGX_HTTP_TIMPUSH_MOCK_BAD_PRIORITY            5
#define NGX_HTTP_TIMPUSH_MOCK_BAD_TOPIC               6
#define NGX_HTTP_TIMPUSH_MOCK_NOT_FOR_TOPIC           7
#define NGX_HTTP_TIMPUSH_MOCK_DUPLICATE_HEADERS       8
#define NGX_HTTP_TIMPUSH_MOCK_INVALID_PUSH_TYPE       9
#define NGX_HTTP_TIMPUSH_MOCK_MISSING_DEVICE_TOKEN    10
#define NGX_HTTP_TIMPUSH_MOCK_MISSING_TOPIC           11
#define NGX_HTTP_TIMPUSH_MOCK_PAYLOAD_EMPTY           12
#define NGX_HTTP_TIMPUSH_MOCK_BAD_CERTIFICATE         13
#define NGX_HTTP_TIMPUSH_MOCK_EXPIRED_PROVIDER_TOKEN  14
#define NGX_HTTP_TIMPUSH_MOCK_INVALID_PROVIDER_TOKEN  15
#define NGX_HTTP_TIMPUSH_MOCK_MISSING_PROVIDER_TOKEN  16
#define NGX_HTTP_TIMPUSH_MOCK_BAD_PATH                17
#define NGX_HTTP_TIMPUSH_MOCK_METHOD_NOT_ALLOWED      18
#define NGX_HTTP_TIMPUSH_MOCK_PAYLOAD_TOO_LARGE       19
#define NGX_HTTP_TIMPUSH_MOCK_INTERNAL_ERROR          20


typedef struct {
    ngx_uint_t                  status;
    ngx_str_t                   reason;
} ngx_http_timpush_mock_reason_t;


typedef struct {
    ngx_str_t                   prefix;
    ngx_uint_t                  status;
    ngx_str_t                   reason;
    ngx_uint_t                  times;      /* 0: every time */
    ngx_uint_t                  counter;    /* index in the shared counters */
} ngx_http_timpush_mock_rule_t;


typedef struct {
    EVP_PKEY                   *key;
    ngx_str_t                   key_id;
    ngx_str_t                   team_id;
    ngx_str_t                   topic;
    ngx_array_t                *rules;
} ngx_http_timpush_mock_loc_conf_t;


typedef struct {
    ngx_shm_zone_t             *zone;
    size_t                      size;
    ngx_uint_t                  nrules;
    ngx_uint_t                  log;        /* a log location exists */
    ngx_uint_t                  enabled;    /* timpush_apns_mock is used */
} ngx_http_timpush_mock_main_conf_t;


/*
 * The shared zone: counters of the times= rules, and a byte ring of log
 * entries.  Entries lie in [head, end) and then [0, tail) once the ring has
 * wrapped, in [head, tail) before; appending evicts the oldest entries.
 */

typedef struct {
    ngx_atomic_t                counters[NGX_HTTP_TIMPUSH_MOCK_MAX_RULES];
    size_t                      size;
    size_t                      head;
    size_t                      tail;
    size_t                      end;
    ngx_uint_t                  count;
    u_char                      data[1];
} ngx_http_timpush_mock_shm_t;


/* a log entry: this header, then its JSON text; the token is at offset 10 */

typedef struct {
    uint32_t                    size;       /* of the entry, 8-aligned */
    uint32_t                    len;        /* of the text */
    uint32_t                    token_len;
} ngx_http_timpush_mock_entry_t;


typedef struct {
    ngx_str_t                   token;
    ngx_str_t                   apns_id;
    ngx_str_t                   allowed;    /* the topic auth allows */
    ngx_str_t                   payload;
    ngx_array_t                 apns;       /* ngx_table_elt_t *, in order */
    ngx_table_elt_t            *id;
    ngx_table_elt_t            *topic;
    ngx_table_elt_t            *push_type;
    ngx_table_elt_t            *priority;
    ngx_table_elt_t            *expiration;
    ngx_table_elt_t            *collapse_id;
    size_t                      received;
    unsigned                    jwt:1;
    unsigned                    voip:1;
    unsigned                    too_large:1;
} ngx_http_timpush_mock_ctx_t;


/* signatures verified by this worker, so a reused JWT costs no ECDSA */

typedef struct {
    ngx_http_timpush_mock_loc_conf_t  *conf;
    time_t                             iat;
    size_t                             len;
    u_char                             jwt[NGX_HTTP_TIMPUSH_MOCK_JWT_MAX];
} ngx_http_timpush_mock_jwt_t;


static ngx_int_t ngx_http_timpush_mock_handler(ngx_http_request_t *r);
static ngx_uint_t ngx_http_timpush_mock_check_request(ngx_http_request_t *r,
    ngx_http_timpush_mock_loc_conf_t *mlcf, ngx_http_timpush_mock_ctx_t *ctx);
static ngx_uint_t ngx_http_timpush_mock_check_path(ngx_http_request_t *r,
    ngx_http_timpush_mock_ctx_t *ctx);
static ngx_uint_t ngx_http_timpush_mock_check_headers(ngx_http_request_t *r,
    ngx_http_timpush_mock_ctx_t *ctx);
static ngx_int_t ngx_http_timpush_mock_collect_headers(ngx_http_request_t *r,
    ngx_http_timpush_mock_ctx_t *ctx);
static ngx_uint_t ngx_http_timpush_mock_check_auth(ngx_http_request_t *r,
    ngx_http_timpush_mock_loc_conf_t *mlcf, ngx_http_timpush_mock_ctx_t *ctx);
static ngx_uint_t ngx_http_timpush_mock_check_jwt(ngx_http_request_t *r,
    ngx_http_timpush_mock_loc_conf_t *mlcf, ngx_str_t *value);
static ngx_int_t ngx_http_timpush_mock_verify_jwt(ngx_http_request_t *r,
    ngx_http_timpush_mock_loc_conf_t *mlcf, ngx_str_t *jwt, time_t *iat);
static yajl_val ngx_http_timpush_mock_jwt_part(ngx_http_request_t *r,
    u_char *start, u_char *end);
static ngx_int_t ngx_http_timpush_mock_jwt_header(ngx_http_request_t *r,
    ngx_http_timpush_mock_loc_conf_t *mlcf, u_char *start, u_char *end);
static ngx_int_t ngx_http_timpush_mock_jwt_claims(ngx_http_request_t *r,
    ngx_http_timpush_mock_loc_conf_t *mlcf, u_char *start, u_char *end,
    time_t *iat);
static ngx_int_t ngx_http_timpush_mock_verify_es256(EVP_PKEY *key,
    u_char *data, size_t len, u_char *sig);
static ngx_int_t ngx_http_timpush_mock_jwt_cached(
    ngx_http_timpush_mock_loc_conf_t *mlcf, ngx_str_t *jwt, time_t *iat);
static void ngx_http_timpush_mock_jwt_cache(
    ngx_http_timpush_mock_loc_conf_t *mlcf, ngx_str_t *jwt, time_t iat);
static ngx_uint_t ngx_http_timpush_mock_check_topic(
    ngx_http_timpush_mock_ctx_t *ctx);
static ngx_int_t ngx_http_timpush_mock_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static void ngx_http_timpush_mock_body_handler(ngx_http_request_t *r);
static ngx_uint_t ngx_http_timpush_mock_check_payload(ngx_http_request_t *r,
    ngx_http_timpush_mock_ctx_t *ctx);
static ngx_http_timpush_mock_rule_t *ngx_http_timpush_mock_match_rule(
    ngx_http_request_t *r, ngx_http_timpush_mock_loc_conf_t *mlcf,
    ngx_http_timpush_mock_ctx_t *ctx);
static void ngx_http_timpush_mock_log_append(ngx_http_request_t *r,
    ngx_http_timpush_mock_ctx_t *ctx);
static u_char *ngx_http_timpush_mock_ring_reserve(
    ngx_http_timpush_mock_shm_t *sh, size_t size);
static void ngx_http_timpush_mock_ring_reset(ngx_http_timpush_mock_shm_t *sh);
static ngx_int_t ngx_http_timpush_mock_fail(ngx_http_request_t *r,
    ngx_uint_t err);
static ngx_int_t ngx_http_timpush_mock_reply(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *reason);
static ngx_int_t ngx_http_timpush_mock_output(ngx_http_request_t *r,
    ngx_uint_t status, ngx_buf_t *b);
static void ngx_http_timpush_mock_uuid(u_char *p);
static ngx_int_t ngx_http_timpush_mock_is_uuid(ngx_str_t *s);
static ngx_int_t ngx_http_timpush_mock_is_hex(u_char *p, size_t len);

static ngx_int_t ngx_http_timpush_mock_log_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_timpush_mock_log_get(ngx_http_request_t *r);

static ngx_int_t ngx_http_timpush_mock_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_timpush_mock_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_timpush_mock_reset_counters(
    ngx_http_timpush_mock_shm_t *sh);
static void *ngx_http_timpush_mock_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_timpush_mock_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_timpush_mock_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_timpush_mock_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_timpush_mock(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_timpush_mock_load_key(ngx_conf_t *cf,
    ngx_http_timpush_mock_loc_conf_t *mlcf, ngx_str_t *file);
static void ngx_http_timpush_mock_free_key(void *data);
static char *ngx_http_timpush_mock_rule(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_timpush_mock_log(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_timpush_mock_add_zone(ngx_conf_t *cf);
static ngx_int_t ngx_http_timpush_mock_is_apple_id(ngx_str_t *s);


static ngx_http_timpush_mock_reason_t  ngx_http_timpush_mock_reasons[] = {
    { NGX_HTTP_OK, ngx_null_string },
    { NGX_HTTP_BAD_REQUEST, ngx_string("BadCollapseId") },
    { NGX_HTTP_BAD_REQUEST, ngx_string("BadDeviceToken") },
    { NGX_HTTP_BAD_REQUEST, ngx_string("BadExpirationDate") },
    { NGX_HTTP_BAD_REQUEST, ngx_string("BadMessageId") },
    { NGX_HTTP_BAD_REQUEST, ngx_string("BadPriority") },
    { NGX_HTTP_BAD_REQUEST, ngx_string("BadTopic") },
    { NGX_HTTP_BAD_REQUEST, ngx_string("DeviceTokenNotForTopic") },
    { NGX_HTTP_BAD_REQUEST, ngx_string("DuplicateHeaders") },
    { NGX_HTTP_BAD_REQUEST, ngx_string("InvalidPushType") },
    { NGX_HTTP_BAD_REQUEST, ngx_string("MissingDeviceToken") },
    { NGX_HTTP_BAD_REQUEST, ngx_string("MissingTopic") },
    { NGX_HTTP_BAD_REQUEST, ngx_string("PayloadEmpty") },
    { NGX_HTTP_FORBIDDEN, ngx_string("BadCertificate") },
    { NGX_HTTP_FORBIDDEN, ngx_string("ExpiredProviderToken") },
    { NGX_HTTP_FORBIDDEN, ngx_string("InvalidProviderToken") },
    { NGX_HTTP_FORBIDDEN, ngx_string("MissingProviderToken") },
    { NGX_HTTP_NOT_FOUND, ngx_string("BadPath") },
    { NGX_HTTP_NOT_ALLOWED, ngx_string("MethodNotAllowed") },
    { NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, ngx_string("PayloadTooLarge") },
    { NGX_HTTP_INTERNAL_SERVER_ERROR, ngx_string("InternalServerError") }
};


static ngx_str_t  ngx_http_timpush_mock_push_types[] = {
    ngx_string("alert"),
    ngx_string("background"),
    ngx_string("voip"),
    ngx_string("complication"),
    ngx_string("fileprovider"),
    ngx_string("mdm"),
    ngx_string("location"),
    ngx_string("liveactivity"),
    ngx_string("pushtotalk"),
    ngx_null_string
};


/* the topic suffixes Apple documents for the push types */

static ngx_str_t  ngx_http_timpush_mock_topic_suffixes[] = {
    ngx_string(".voip"),
    ngx_string(".complication"),
    ngx_string(".pushkit.fileprovider"),
    ngx_string(".location-query"),
    ngx_string(".push-type.liveactivity"),
    ngx_string(".voip-ptt"),
    ngx_null_string
};


static ngx_str_t  ngx_http_timpush_mock_zone_name =
    ngx_string("timpush_apns_mock");


static ngx_http_timpush_mock_jwt_t
    ngx_http_timpush_mock_jwts[NGX_HTTP_TIMPUSH_MOCK_JWT_CACHE];
static ngx_uint_t  ngx_http_timpush_mock_jwt_next;


static ngx_http_request_body_filter_pt  ngx_http_next_request_body_filter;


static ngx_command_t  ngx_http_timpush_mock_commands[] = {

    { ngx_string("timpush_apns_mock"),
      NGX_HTTP_LOC_CONF|NGX_CONF_ANY,
      ngx_http_timpush_mock,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("timpush_apns_mock_rule"),
      NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE3|NGX_CONF_TAKE4,
      ngx_http_timpush_mock_rule,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("timpush_apns_mock_log"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_timpush_mock_log,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_timpush_mock_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_timpush_mock_init,            /* postconfiguration */

    ngx_http_timpush_mock_create_main_conf, /* create main configuration */
    ngx_http_timpush_mock_init_main_conf,  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_timpush_mock_create_loc_conf, /* create location configuration */
    ngx_http_timpush_mock_merge_loc_conf   /* merge location configuration */
};


ngx_module_t  ngx_http_timpush_mock_module = {
    NGX_MODULE_V1,
    &ngx_http_timpush_mock_module_ctx,     /* module context */
    ngx_http_timpush_mock_commands,        /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_timpush_mock_handler(ngx_http_request_t *r)
{
    ngx_int_t                          rc;
    ngx_uint_t                         err;
    ngx_http_timpush_mock_ctx_t       *ctx;
    ngx_http_timpush_mock_loc_conf_t  *mlcf;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_timpush_mock_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_array_init(&ctx->apns, r->pool, 8, sizeof(ngx_table_elt_t *))
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_timpush_mock_module);

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_timpush_mock_module);

    err = ngx_http_timpush_mock_check_request(r, mlcf, ctx);

    if (err != NGX_HTTP_TIMPUSH_MOCK_OK) {
        rc = ngx_http_discard_request_body(r);

        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_timpush_mock_fail(r, err);
    }

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_timpush_mock_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/*
 * Apple's order of precedence: method, path, token, headers, auth, topic;
 * then the declared length, so an oversized body is never read.
 */

static ngx_uint_t
ngx_http_timpush_mock_check_request(ngx_http_request_t *r,
    ngx_http_timpush_mock_loc_conf_t *mlcf, ngx_http_timpush_mock_ctx_t *ctx)
{
    off_t       limit;
    ngx_uint_t  err;

    if (r->method != NGX_HTTP_POST) {
        return NGX_HTTP_TIMPUSH_MOCK_METHOD_NOT_ALLOWED;
    }

    err = ngx_http_timpush_mock_check_path(r, ctx);
    if (err != NGX_HTTP_TIMPUSH_MOCK_OK) {
        return err;
    }

    err = ngx_http_timpush_mock_check_headers(r, ctx);
    if (err != NGX_HTTP_TIMPUSH_MOCK_OK) {
        return err;
    }

    err = ngx_http_timpush_mock_check_auth(r, mlcf, ctx);
    if (err != NGX_HTTP_TIMPUSH_MOCK_OK) {
        return err;
    }

    err = ngx_http_timpush_mock_check_topic(ctx);
    if (err != NGX_HTTP_TIMPUSH_MOCK_OK) {
        return err;
    }

    limit = ctx->voip ? NGX_HTTP_TIMPUSH_MOCK_PAYLOAD_VOIP
                      : NGX_HTTP_TIMPUSH_MOCK_PAYLOAD;

    if (r->headers_in.content_length_n > limit) {
        return NGX_HTTP_TIMPUSH_MOCK_PAYLOAD_TOO_LARGE;
    }

    return NGX_HTTP_TIMPUSH_MOCK_OK;
}


static ngx_uint_t
ngx_http_timpush_mock_check_path(ngx_http_request_t *r,
    ngx_http_timpush_mock_ctx_t *ctx)
{
    size_t  len;

    len = sizeof("/3/device/") - 1;

    if (r->uri.len < len || ngx_strncmp(r->uri.data, "/3/device/", len) != 0)
    {
        return NGX_HTTP_TIMPUSH_MOCK_BAD_PATH;
    }

    ctx->token.data = r->uri.data + len;
    ctx->token.len = r->uri.len - len;

    if (ctx->token.len == 0) {
        return NGX_HTTP_TIMPUSH_MOCK_MISSING_DEVICE_TOKEN;
    }

    if (ctx->token.len < 16 || ctx->token.len > 200 || ctx->token.len % 2
        || ngx_http_timpush_mock_is_hex(ctx->token.data, ctx->token.len)
           != NGX_OK)
    {
        return NGX_HTTP_TIMPUSH_MOCK_BAD_DEVICE_TOKEN;
    }

    return NGX_HTTP_TIMPUSH_MOCK_OK;
}


static ngx_uint_t
ngx_http_timpush_mock_check_headers(ngx_http_request_t *r,
    ngx_http_timpush_mock_ctx_t *ctx)
{
    size_t      i;
    ngx_int_t   rc;
    ngx_str_t  *v, *t;

    rc = ngx_http_timpush_mock_collect_headers(r, ctx);

    if (rc == NGX_DECLINED) {
        return NGX_HTTP_TIMPUSH_MOCK_DUPLICATE_HEADERS;
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_TIMPUSH_MOCK_INTERNAL_ERROR;
    }

    if (ctx->id) {
        if (ngx_http_timpush_mock_is_uuid(&ctx->id->value) != NGX_OK) {
            return NGX_HTTP_TIMPUSH_MOCK_BAD_MESSAGE_ID;
        }

        ctx->apns_id = ctx->id->value;
    }

    if (ctx->push_type) {
        v = &ctx->push_type->value;

        for (t = ngx_http_timpush_mock_push_types; t->len; t++) {
            if (v->len == t->len && ngx_strncmp(v->data, t->data, t->len) == 0)
            {
                break;
            }
        }

        if (t->len == 0) {
            return NGX_HTTP_TIMPUSH_MOCK_INVALID_PUSH_TYPE;
        }

        ctx->voip = (v->len == 4 && ngx_strncmp(v->data, "voip", 4) == 0);
    }

    if (ctx->priority) {
        v = &ctx->priority->value;

        if (!((v->len == 2 && v->data[0] == '1' && v->data[1] == '0')
              || (v->len == 1 && (v->data[0] == '5' || v->data[0] == '1'))))
        {
            return NGX_HTTP_TIMPUSH_MOCK_BAD_PRIORITY;
        }
    }

    if (ctx->expiration) {
        v = &ctx->expiration->value;

        if (v->len == 0 || v->len > 19) {
            return NGX_HTTP_TIMPUSH_MOCK_BAD_EXPIRATION_DATE;
        }

        for (i = 0; i < v->len; i++) {
            if (v->data[i] < '0' || v->data[i] > '9') {
                return NGX_HTTP_TIMPUSH_MOCK_BAD_EXPIRATION_DATE;
            }
        }
    }

    if (ctx->collapse_id
        && ctx->collapse_id->value.len > NGX_HTTP_TIMPUSH_MOCK_COLLAPSE_ID)
    {
        return NGX_HTTP_TIMPUSH_MOCK_BAD_COLLAPSE_ID;
    }

    return NGX_HTTP_TIMPUSH_MOCK_OK;
}


/*
 * Keeps every apns-* header in arrival order for the log and notes the
 * known ones; NGX_DECLINED when a name comes twice.
 */

static ngx_int_t
ngx_http_timpush_mock_collect_headers(ngx_http_request_t *r,
    ngx_http_timpush_mock_ctx_t *ctx)
{
    size_t             len;
    u_char            *name;
    ngx_uint_t         i, n;
    ngx_list_part_t   *part;
    ngx_table_elt_t   *h, **seen, **hp;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        len = h[i].key.len;
        name = h[i].lowcase_key;

        if (len < 5 || ngx_strncmp(name, "apns-", 5) != 0) {
            continue;
        }

        seen = ctx->apns.elts;

        for (n = 0; n < ctx->apns.nelts; n++) {
            if (seen[n]->key.len == len
                && ngx_strncmp(seen[n]->lowcase_key, name, len) == 0)
            {
                return NGX_DECLINED;
            }
        }

        hp = ngx_array_push(&ctx->apns);
        if (hp == NULL) {
            return NGX_ERROR;
        }

        *hp = &h[i];

        if (len == 7 && ngx_strncmp(name, "apns-id", 7) == 0) {
            ctx->id = &h[i];

        } else if (len == 10 && ngx_strncmp(name, "apns-topic", 10) == 0) {
            ctx->topic = &h[i];

        } else if (len == 14 && ngx_strncmp(name, "apns-push-type", 14) == 0)
        {
            ctx->push_type = &h[i];

        } else if (len == 13 && ngx_strncmp(name, "apns-priority", 13) == 0)
        {
            ctx->priority = &h[i];

        } else if (len == 15 && ngx_strncmp(name, "apns-expiration", 15) == 0)
        {
            ctx->expiration = &h[i];

        } else if (len == 16 && ngx_strncmp(name, "apns-collapse-id", 16) == 0)
        {
            ctx->collapse_id = &h[i];
        }
    }

    return NGX_OK;
}


/*
 * A certificate verified by nginx authenticates the connection, and Apple
 * does not use the authorization header then; otherwise a bearer JWT.
 */

static ngx_uint_t
ngx_http_timpush_mock_check_auth(ngx_http_request_t *r,
    ngx_http_timpush_mock_loc_conf_t *mlcf, ngx_http_timpush_mock_ctx_t *ctx)
{
    SSL        *ssl;
    X509       *cert;
    ngx_int_t   rc;

    if (r->connection->ssl) {
        ssl = r->connection->ssl->connection;
        cert = SSL_get0_peer_certificate(ssl);

        if (cert) {
            /* only reached with ssl_verify_client optional_no_ca */

            if (SSL_get_verify_result(ssl) != X509_V_OK) {
                return NGX_HTTP_TIMPUSH_MOCK_BAD_CERTIFICATE;
            }

            rc = ngx_http_timpush_cert_uid(r->pool, cert, &ctx->allowed);

            if (rc == NGX_DECLINED) {
                ctx->allowed = mlcf->topic;

            } else if (rc != NGX_OK) {
                return NGX_HTTP_TIMPUSH_MOCK_INTERNAL_ERROR;
            }

            return NGX_HTTP_TIMPUSH_MOCK_OK;
        }
    }

    if (r->headers_in.authorization == NULL) {
        return NGX_HTTP_TIMPUSH_MOCK_MISSING_PROVIDER_TOKEN;
    }

    ctx->jwt = 1;
    ctx->allowed = mlcf->topic;

    return ngx_http_timpush_mock_check_jwt(r, mlcf,
                                           &r->headers_in.authorization->value);
}


static ngx_uint_t
ngx_http_timpush_mock_check_jwt(ngx_http_request_t *r,
    ngx_http_timpush_mock_loc_conf_t *mlcf, ngx_str_t *value)
{
    time_t     iat, now;
    ngx_int_t  rc;
    ngx_str_t  jwt;

    if (mlcf->key == NULL
        || value->len <= sizeof("bearer ") - 1
        || ngx_strncasecmp(value->data, (u_char *) "bearer ",
                           sizeof("bearer ") - 1)
           != 0)
    {
        return NGX_HTTP_TIMPUSH_MOCK_INVALID_PROVIDER_TOKEN;
    }

    jwt.data = value->data + sizeof("bearer ") - 1;
    jwt.len = value->len - (sizeof("bearer ") - 1);

    if (ngx_http_timpush_mock_jwt_cached(mlcf, &jwt, &iat) != NGX_OK) {

        rc = ngx_http_timpush_mock_verify_jwt(r, mlcf, &jwt, &iat);

        if (rc == NGX_DECLINED) {
            return NGX_HTTP_TIMPUSH_MOCK_INVALID_PROVIDER_TOKEN;
        }

        if (rc != NGX_OK) {
            return NGX_HTTP_TIMPUSH_MOCK_INTERNAL_ERROR;
        }

        ngx_http_timpush_mock_jwt_cache(mlcf, &jwt, iat);
    }

    now = ngx_time();

    if (iat > now + NGX_HTTP_TIMPUSH_MOCK_JWT_SKEW) {
        return NGX_HTTP_TIMPUSH_MOCK_INVALID_PROVIDER_TOKEN;
    }

    if (now - iat > NGX_HTTP_TIMPUSH_MOCK_JWT_LIFETIME) {
        return NGX_HTTP_TIMPUSH_MOCK_EXPIRED_PROVIDER_TOKEN;
    }

    return NGX_HTTP_TIMPUSH_MOCK_OK;
}


static ngx_int_t
ngx_http_timpush_mock_verify_jwt(ngx_http_request_t *r,
    ngx_http_timpush_mock_loc_conf_t *mlcf, ngx_str_t *jwt, time_t *iat)
{
    u_char     *dot1, *dot2, *end;
    ngx_str_t   src, sig;

    end = jwt->data + jwt->len;

    dot1 = ngx_strlchr(jwt->data, end, '.');
    if (dot1 == NULL) {
        return NGX_DECLINED;
    }

    dot2 = ngx_strlchr(dot1 + 1, end, '.');
    if (dot2 == NULL || ngx_strlchr(dot2 + 1, end, '.') != NULL) {
        return NGX_DECLINED;
    }

    if (ngx_http_timpush_mock_jwt_header(r, mlcf, jwt->data, dot1) != NGX_OK
        || ngx_http_timpush_mock_jwt_claims(r, mlcf, dot1 + 1, dot2, iat)
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    src.data = dot2 + 1;
    src.len = end - src.data;

    if (src.len != 86) {
        return NGX_DECLINED;
    }

    sig.data = ngx_pnalloc(r->pool, ngx_base64_decoded_length(src.len));
    if (sig.data == NULL) {
        return NGX_ERROR;
    }

    if (ngx_decode_base64url(&sig, &src) != NGX_OK || sig.len != 64) {
        return NGX_DECLINED;
    }

    return ngx_http_timpush_mock_verify_es256(mlcf->key, jwt->data,
                                              dot2 - jwt->data, sig.data);
}


static yajl_val
ngx_http_timpush_mock_jwt_part(ngx_http_request_t *r, u_char *start,
    u_char *end)
{
    ngx_str_t  src, dst;

    src.data = start;
    src.len = end - start;

    dst.data = ngx_pnalloc(r->pool, ngx_base64_decoded_length(src.len) + 1);
    if (dst.data == NULL) {
        return NULL;
    }

    if (ngx_decode_base64url(&dst, &src) != NGX_OK
        || ngx_strlchr(dst.data, dst.data + dst.len, '\0') != NULL)
    {
        return NULL;
    }

    dst.data[dst.len] = '\0';

    return yajl_tree_parse((char *) dst.data, NULL, 0);
}


static ngx_int_t
ngx_http_timpush_mock_jwt_header(ngx_http_request_t *r,
    ngx_http_timpush_mock_loc_conf_t *mlcf, u_char *start, u_char *end)
{
    char        *s;
    yajl_val     header, v;
    ngx_int_t    rc;
    const char  *alg[] = { "alg", NULL };
    const char  *kid[] = { "kid", NULL };

    header = ngx_http_timpush_mock_jwt_part(r, start, end);
    if (header == NULL) {
        return NGX_DECLINED;
    }

    rc = NGX_DECLINED;

    v = yajl_tree_get(header, alg, yajl_t_string);

    if (v == NULL || ngx_strcmp(v->u.string, "ES256") != 0) {
        goto done;
    }

    v = yajl_tree_get(header, kid, yajl_t_string);

    if (v == NULL) {
        goto done;
    }

    s = v->u.string;

    if (ngx_strlen(s) == mlcf->key_id.len
        && ngx_strncmp(s, mlcf->key_id.data, mlcf->key_id.len) == 0)
    {
        rc = NGX_OK;
    }

done:

    yajl_tree_free(header);

    return rc;
}


static ngx_int_t
ngx_http_timpush_mock_jwt_claims(ngx_http_request_t *r,
    ngx_http_timpush_mock_loc_conf_t *mlcf, u_char *start, u_char *end,
    time_t *iat)
{
    char        *s;
    yajl_val     claims, v;
    ngx_int_t    rc;
    const char  *iss[] = { "iss", NULL };
    const char  *issued[] = { "iat", NULL };

    claims = ngx_http_timpush_mock_jwt_part(r, start, end);
    if (claims == NULL) {
        return NGX_DECLINED;
    }

    rc = NGX_DECLINED;

    v = yajl_tree_get(claims, iss, yajl_t_string);

    if (v == NULL) {
        goto done;
    }

    s = v->u.string;

    if (ngx_strlen(s) != mlcf->team_id.len
        || ngx_strncmp(s, mlcf->team_id.data, mlcf->team_id.len) != 0)
    {
        goto done;
    }

    v = yajl_tree_get(claims, issued, yajl_t_number);

    if (v == NULL || !YAJL_IS_INTEGER(v) || YAJL_GET_INTEGER(v) < 0) {
        goto done;
    }

    *iat = (time_t) YAJL_GET_INTEGER(v);
    rc = NGX_OK;

done:

    yajl_tree_free(claims);

    return rc;
}


/* a JWT signature is R || S; OpenSSL verifies the DER form */

static ngx_int_t
ngx_http_timpush_mock_verify_es256(EVP_PKEY *key, u_char *data, size_t len,
    u_char *sig)
{
    int            n, ok;
    BIGNUM        *br, *bs;
    u_char        *der;
    ECDSA_SIG     *es;
    EVP_MD_CTX    *md;

    es = ECDSA_SIG_new();
    br = BN_bin2bn(sig, 32, NULL);
    bs = BN_bin2bn(sig + 32, 32, NULL);

    if (es == NULL || br == NULL || bs == NULL || !ECDSA_SIG_set0(es, br, bs))
    {
        ECDSA_SIG_free(es);
        BN_free(br);
        BN_free(bs);
        ERR_clear_error();
        return NGX_ERROR;
    }

    der = NULL;
    n = i2d_ECDSA_SIG(es, &der);

    ECDSA_SIG_free(es);

    if (n <= 0) {
        ERR_clear_error();
        return NGX_ERROR;
    }

    ok = 0;
    md = EVP_MD_CTX_new();

    if (md != NULL
        && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1)
    {
        ok = (EVP_DigestVerify(md, der, n, data, len) == 1);
    }

    EVP_MD_CTX_free(md);
    OPENSSL_free(der);

    if (!ok) {
        ERR_clear_error();
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_mock_jwt_cached(ngx_http_timpush_mock_loc_conf_t *mlcf,
    ngx_str_t *jwt, time_t *iat)
{
    ngx_uint_t                    i;
    ngx_http_timpush_mock_jwt_t  *c;

    for (i = 0; i < NGX_HTTP_TIMPUSH_MOCK_JWT_CACHE; i++) {
        c = &ngx_http_timpush_mock_jwts[i];

        if (c->conf == mlcf && c->len == jwt->len
            && ngx_memcmp(c->jwt, jwt->data, jwt->len) == 0)
        {
            *iat = c->iat;
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


static void
ngx_http_timpush_mock_jwt_cache(ngx_http_timpush_mock_loc_conf_t *mlcf,
    ngx_str_t *jwt, time_t iat)
{
    ngx_http_timpush_mock_jwt_t  *c;

    if (jwt->len > NGX_HTTP_TIMPUSH_MOCK_JWT_MAX) {
        return;
    }

    c = &ngx_http_timpush_mock_jwts[ngx_http_timpush_mock_jwt_next];

    ngx_http_timpush_mock_jwt_next = (ngx_http_timpush_mock_jwt_next + 1)
                                     % NGX_HTTP_TIMPUSH_MOCK_JWT_CACHE;

    c->conf = mlcf;
    c->iat = iat;
    c->len = jwt->len;
    ngx_memcpy(c->jwt, jwt->data, jwt->len);
}


/*
 * With a certificate the topic defaults to its UID; a token needs the
 * header.  A key configured without topic= serves every topic of the team.
 */

static ngx_uint_t
ngx_http_timpush_mock_check_topic(ngx_http_timpush_mock_ctx_t *ctx)
{
    ngx_str_t  *topic, *s;

    if (ctx->topic == NULL) {
        return (ctx->jwt || ctx->allowed.len == 0)
               ? NGX_HTTP_TIMPUSH_MOCK_MISSING_TOPIC
               : NGX_HTTP_TIMPUSH_MOCK_OK;
    }

    if (ctx->jwt && ctx->allowed.len == 0) {
        return NGX_HTTP_TIMPUSH_MOCK_OK;
    }

    topic = &ctx->topic->value;

    if (ctx->allowed.len && topic->len >= ctx->allowed.len
        && ngx_strncmp(topic->data, ctx->allowed.data, ctx->allowed.len) == 0)
    {
        if (topic->len == ctx->allowed.len) {
            return NGX_HTTP_TIMPUSH_MOCK_OK;
        }

        for (s = ngx_http_timpush_mock_topic_suffixes; s->len; s++) {
            if (topic->len == ctx->allowed.len + s->len
                && ngx_strncmp(topic->data + ctx->allowed.len, s->data, s->len)
                   == 0)
            {
                return NGX_HTTP_TIMPUSH_MOCK_OK;
            }
        }
    }

    return ctx->jwt ? NGX_HTTP_TIMPUSH_MOCK_NOT_FOR_TOPIC
                    : NGX_HTTP_TIMPUSH_MOCK_BAD_TOPIC;
}


/*
 * Past the size APNs accepts the body is consumed here, unsaved: it never
 * reaches a temporary file, and the answer is still Apple's 413.
 */

static ngx_int_t
ngx_http_timpush_mock_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    size_t                        limit;
    ngx_uint_t                    last;
    ngx_chain_t                  *cl;
    ngx_http_timpush_mock_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_timpush_mock_module);

    if (ctx == NULL) {
        return ngx_http_next_request_body_filter(r, in);
    }

    /* a flush would make the save filter spill what it holds to a file */

    if (in == NULL) {
        return ctx->too_large ? NGX_OK
                              : ngx_http_next_request_body_filter(r, in);
    }

    limit = ctx->voip ? NGX_HTTP_TIMPUSH_MOCK_PAYLOAD_VOIP
                      : NGX_HTTP_TIMPUSH_MOCK_PAYLOAD;
    last = 0;

    for (cl = in; cl; cl = cl->next) {
        ctx->received += ngx_buf_size(cl->buf);
        last |= cl->buf->last_buf;
    }

    if (ctx->received <= limit && !ctx->too_large) {
        return ngx_http_next_request_body_filter(r, in);
    }

    if (!ctx->too_large) {
        ctx->too_large = 1;

        /* what was saved goes too, or its buffers would stay busy */

        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            cl->buf->pos = cl->buf->last;
            cl->buf->file_pos = cl->buf->file_last;
        }

        r->request_body->bufs = NULL;
    }

    for (cl = in; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;
        cl->buf->file_pos = cl->buf->file_last;
    }

    /* the save filter only needs to learn that the body ended */

    return last ? ngx_http_next_request_body_filter(r, in) : NGX_OK;
}


static void
ngx_http_timpush_mock_body_handler(ngx_http_request_t *r)
{
    ngx_int_t                          rc;
    ngx_uint_t                         err;
    ngx_http_timpush_mock_ctx_t       *ctx;
    ngx_http_timpush_mock_rule_t      *rule;
    ngx_http_timpush_mock_loc_conf_t  *mlcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_timpush_mock_module);
    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_timpush_mock_module);

    err = ngx_http_timpush_mock_check_payload(r, ctx);

    if (err != NGX_HTTP_TIMPUSH_MOCK_OK) {
        ngx_http_finalize_request(r, ngx_http_timpush_mock_fail(r, err));
        return;
    }

    /* rules act on requests APNs would have accepted */

    rule = ngx_http_timpush_mock_match_rule(r, mlcf, ctx);

    if (rule) {
        rc = ngx_http_timpush_mock_reply(r, rule->status, &rule->reason);
        ngx_http_finalize_request(r, rc);
        return;
    }

    ngx_http_timpush_mock_log_append(r, ctx);

    rc = ngx_http_timpush_mock_reply(r, NGX_HTTP_OK, NULL);
    ngx_http_finalize_request(r, rc);
}


static ngx_uint_t
ngx_http_timpush_mock_check_payload(ngx_http_request_t *r,
    ngx_http_timpush_mock_ctx_t *ctx)
{
    size_t        len, limit;
    u_char       *p;
    yajl_val      root;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;
    const char   *aps[] = { "aps", NULL };

    if (ctx->too_large) {
        return NGX_HTTP_TIMPUSH_MOCK_PAYLOAD_TOO_LARGE;
    }

    len = 0;

    for (cl = r->request_body ? r->request_body->bufs : NULL;
         cl;
         cl = cl->next)
    {
        b = cl->buf;

        if (b->in_file) {
            return NGX_HTTP_TIMPUSH_MOCK_PAYLOAD_TOO_LARGE;
        }

        len += b->last - b->pos;
    }

    if (len == 0) {
        return NGX_HTTP_TIMPUSH_MOCK_PAYLOAD_EMPTY;
    }

    limit = ctx->voip ? NGX_HTTP_TIMPUSH_MOCK_PAYLOAD_VOIP
                      : NGX_HTTP_TIMPUSH_MOCK_PAYLOAD;

    if (len > limit) {
        return NGX_HTTP_TIMPUSH_MOCK_PAYLOAD_TOO_LARGE;
    }

    /* yajl_tree_parse() wants a C string, and the log one piece */

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_HTTP_TIMPUSH_MOCK_INTERNAL_ERROR;
    }

    ctx->payload.data = p;
    ctx->payload.len = len;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
    }

    *p = '\0';

    if (ngx_strlchr(ctx->payload.data, p, '\0') != NULL) {
        return NGX_HTTP_TIMPUSH_MOCK_PAYLOAD_EMPTY;
    }

    root = yajl_tree_parse((char *) ctx->payload.data, NULL, 0);

    if (root == NULL) {
        return NGX_HTTP_TIMPUSH_MOCK_PAYLOAD_EMPTY;
    }

    if (!YAJL_IS_OBJECT(root)
        || yajl_tree_get(root, aps, yajl_t_object) == NULL)
    {
        yajl_tree_free(root);
        return NGX_HTTP_TIMPUSH_MOCK_PAYLOAD_EMPTY;
    }

    yajl_tree_free(root);

    return NGX_HTTP_TIMPUSH_MOCK_OK;
}


static ngx_http_timpush_mock_rule_t *
ngx_http_timpush_mock_match_rule(ngx_http_request_t *r,
    ngx_http_timpush_mock_loc_conf_t *mlcf, ngx_http_timpush_mock_ctx_t *ctx)
{
    ngx_uint_t                          i;
    ngx_atomic_uint_t                   n;
    ngx_http_timpush_mock_shm_t        *sh;
    ngx_http_timpush_mock_rule_t       *rule;
    ngx_http_timpush_mock_main_conf_t  *mmcf;

    if (mlcf->rules == NULL) {
        return NULL;
    }

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_timpush_mock_module);

    rule = mlcf->rules->elts;

    for (i = 0; i < mlcf->rules->nelts; i++) {

        if (ctx->token.len < rule[i].prefix.len
            || ngx_strncasecmp(ctx->token.data, rule[i].prefix.data,
                               rule[i].prefix.len)
               != 0)
        {
            continue;
        }

        if (rule[i].times == 0) {
            return &rule[i];
        }

        sh = mmcf->zone->data;
        n = ngx_atomic_fetch_add(&sh->counters[rule[i].counter], 1);

        if (n < rule[i].times) {
            return &rule[i];
        }
    }

    return NULL;
}


/*
 * Appending formats the entry straight into the ring under the zone's
 * mutex: no allocation, cost proportional to the entry.
 */

static void
ngx_http_timpush_mock_log_append(ngx_http_request_t *r,
    ngx_http_timpush_mock_ctx_t *ctx)
{
    size_t                              len, size;
    u_char                             *p, *start;
    ngx_uint_t                          i;
    ngx_time_t                         *tp;
    ngx_table_elt_t                   **h;
    ngx_slab_pool_t                    *shpool;
    ngx_http_timpush_mock_shm_t        *sh;
    ngx_http_timpush_mock_entry_t      *e;
    ngx_http_timpush_mock_main_conf_t  *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_timpush_mock_module);

    if (!mmcf->log) {
        return;
    }

    h = ctx->apns.elts;

    len = sizeof("{\"token\":\"\",\"connection\":,\"time\":,"
                 "\"headers\":{},\"payload\":}") - 1
          + ctx->token.len + NGX_ATOMIC_T_LEN + NGX_INT64_LEN
          + ctx->payload.len;

    for (i = 0; i < ctx->apns.nelts; i++) {
        len += sizeof(",\"\":\"\"") - 1
               + h[i]->key.len
               + ngx_escape_json(NULL, h[i]->lowcase_key, h[i]->key.len)
               + h[i]->value.len
               + ngx_escape_json(NULL, h[i]->value.data, h[i]->value.len);
    }

    size = ngx_align(sizeof(ngx_http_timpush_mock_entry_t) + len, 8);

    sh = mmcf->zone->data;

    if (size > sh->size / 8) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "timpush_apns_mock: notification of %uz bytes "
                      "too large for the log", size);
        return;
    }

    tp = ngx_timeofday();
    shpool = (ngx_slab_pool_t *) mmcf->zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    e = (ngx_http_timpush_mock_entry_t *)
            ngx_http_timpush_mock_ring_reserve(sh, size);

    start = (u_char *) e + sizeof(ngx_http_timpush_mock_entry_t);

    p = ngx_sprintf(start, "{\"token\":\"%V\",\"connection\":%uA,"
                    "\"time\":%L,\"headers\":{",
                    &ctx->token, r->connection->number,
                    (int64_t) tp->sec * 1000 + tp->msec);

    for (i = 0; i < ctx->apns.nelts; i++) {
        if (i) {
            *p++ = ',';
        }

        *p++ = '"';
        p = (u_char *) ngx_escape_json(p, h[i]->lowcase_key, h[i]->key.len);
        p = ngx_cpymem(p, "\":\"", 3);
        p = (u_char *) ngx_escape_json(p, h[i]->value.data, h[i]->value.len);
        *p++ = '"';
    }

    p = ngx_cpymem(p, "},\"payload\":", sizeof("},\"payload\":") - 1);
    p = ngx_cpymem(p, ctx->payload.data, ctx->payload.len);
    *p++ = '}';

    e->size = size;
    e->len = p - start;
    e->token_len = ctx->token.len;

    ngx_shmtx_unlock(&shpool->mutex);
}


static u_char *
ngx_http_timpush_mock_ring_reserve(ngx_http_timpush_mock_shm_t *sh,
    size_t size)
{
    u_char                         *p;
    ngx_http_timpush_mock_entry_t  *e;

    for ( ;; ) {

        if (sh->count == 0) {
            ngx_http_timpush_mock_ring_reset(sh);
            break;
        }

        if (sh->head < sh->tail) {
            if (sh->size - sh->tail >= size) {
                break;
            }

            /* no room up to the end: wrap */

            sh->end = sh->tail;
            sh->tail = 0;
            continue;
        }

        if (sh->head - sh->tail >= size) {
            break;
        }

        e = (ngx_http_timpush_mock_entry_t *) (sh->data + sh->head);

        sh->head += e->size;
        sh->count--;

        if (sh->head == sh->end) {
            sh->head = 0;
            sh->end = sh->size;
        }
    }

    p = sh->data + sh->tail;

    sh->tail += size;
    sh->count++;

    return p;
}


static void
ngx_http_timpush_mock_ring_reset(ngx_http_timpush_mock_shm_t *sh)
{
    sh->head = 0;
    sh->tail = 0;
    sh->end = sh->size;
    sh->count = 0;
}


static ngx_int_t
ngx_http_timpush_mock_fail(ngx_http_request_t *r, ngx_uint_t err)
{
    ngx_http_timpush_mock_reason_t  *reason;

    reason = &ngx_http_timpush_mock_reasons[err];

    return ngx_http_timpush_mock_reply(r, reason->status, &reason->reason);
}


/* Apple's answer: apns-id always, and the reason as JSON on failure */

static ngx_int_t
ngx_http_timpush_mock_reply(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *reason)
{
    ngx_buf_t                    *b;
    ngx_time_t                   *tp;
    ngx_table_elt_t              *h;
    ngx_http_timpush_mock_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_timpush_mock_module);

    if (ctx) {
        if (ctx->apns_id.len == 0) {
            ctx->apns_id.data = ngx_pnalloc(r->pool,
                                            NGX_HTTP_TIMPUSH_MOCK_UUID_LEN);
            if (ctx->apns_id.data == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            ngx_http_timpush_mock_uuid(ctx->apns_id.data);
            ctx->apns_id.len = NGX_HTTP_TIMPUSH_MOCK_UUID_LEN;
        }

        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "apns-id");
        h->value = ctx->apns_id;
    }

    if (reason == NULL) {
        return ngx_http_timpush_mock_output(r, status, NULL);
    }

    b = ngx_create_temp_buf(r->pool, sizeof("{\"reason\":\"\",\"timestamp\":}")
                                     - 1 + reason->len + NGX_INT64_LEN);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (status == 410) {
        tp = ngx_timeofday();
        b->last = ngx_sprintf(b->last, "{\"reason\":\"%V\",\"timestamp\":%L}",
                              reason, (int64_t) tp->sec * 1000 + tp->msec);

    } else {
        b->last = ngx_sprintf(b->last, "{\"reason\":\"%V\"}", reason);
    }

    return ngx_http_timpush_mock_output(r, status, b);
}


static ngx_int_t
ngx_http_timpush_mock_output(ngx_http_request_t *r, ngx_uint_t status,
    ngx_buf_t *b)
{
    ngx_int_t    rc;
    ngx_chain_t  out;

    r->headers_out.status = status;

    if (b == NULL) {
        r->headers_out.content_length_n = 0;
        r->header_only = 1;
        return ngx_http_send_header(r);
    }

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_length_n = b->last - b->pos;

    b->last_buf = (r == r->main);
    b->last_in_chain = 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* a version 4 UUID, lowercase as in Apple's documentation */

static void
ngx_http_timpush_mock_uuid(u_char *p)
{
    long        v;
    u_char      b[16];
    ngx_uint_t  i;

    for (i = 0; i < 16; i += 2) {
        v = ngx_random();
        b[i] = (u_char) v;
        b[i + 1] = (u_char) (v >> 8);
    }

    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;

    p = ngx_hex_dump(p, b, 4);
    *p++ = '-';
    p = ngx_hex_dump(p, b + 4, 2);
    *p++ = '-';
    p = ngx_hex_dump(p, b + 6, 2);
    *p++ = '-';
    p = ngx_hex_dump(p, b + 8, 2);
    *p++ = '-';
    (void) ngx_hex_dump(p, b + 10, 6);
}


static ngx_int_t
ngx_http_timpush_mock_is_uuid(ngx_str_t *s)
{
    ngx_uint_t  i;

    if (s->len != NGX_HTTP_TIMPUSH_MOCK_UUID_LEN) {
        return NGX_DECLINED;
    }

    for (i = 0; i < s->len; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s->data[i] != '-') {
                return NGX_DECLINED;
            }

            continue;
        }

        if (ngx_http_timpush_mock_is_hex(&s->data[i], 1) != NGX_OK) {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_mock_is_hex(u_char *p, size_t len)
{
    u_char  c;

    while (len--) {
        c = (u_char) (*p++ | 0x20);

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_mock_log_handler(ngx_http_request_t *r)
{
    ngx_int_t                           rc;
    ngx_slab_pool_t                    *shpool;
    ngx_http_timpush_mock_main_conf_t  *mmcf;

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    if (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)) {
        return ngx_http_timpush_mock_log_get(r);
    }

    if (r->method == NGX_HTTP_DELETE) {
        mmcf = ngx_http_get_module_main_conf(r, ngx_http_timpush_mock_module);
        shpool = (ngx_slab_pool_t *) mmcf->zone->shm.addr;

        ngx_shmtx_lock(&shpool->mutex);
        ngx_http_timpush_mock_ring_reset(mmcf->zone->data);
        ngx_shmtx_unlock(&shpool->mutex);

        return ngx_http_timpush_mock_output(r, NGX_HTTP_NO_CONTENT, NULL);
    }

    return ngx_http_timpush_mock_fail(r,
                                      NGX_HTTP_TIMPUSH_MOCK_METHOD_NOT_ALLOWED);
}


static ngx_int_t
ngx_http_timpush_mock_log_get(ngx_http_request_t *r)
{
    size_t                              len, pos;
    u_char                             *text;
    ngx_buf_t                          *b;
    ngx_str_t                           token;
    ngx_uint_t                          i, filter, first, pass;
    ngx_slab_pool_t                    *shpool;
    ngx_http_timpush_mock_shm_t        *sh;
    ngx_http_timpush_mock_entry_t      *e;
    ngx_http_timpush_mock_main_conf_t  *mmcf;

    filter = (ngx_http_arg(r, (u_char *) "token", 5, &token) == NGX_OK);

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_timpush_mock_module);
    sh = mmcf->zone->data;
    shpool = (ngx_slab_pool_t *) mmcf->zone->shm.addr;

    b = NULL;
    len = sizeof("{\"notifications\":[]}\n") - 1;

    ngx_shmtx_lock(&shpool->mutex);

    /* the first pass sizes the answer, the second copies the entries */

    for (pass = 0; pass < 2; pass++) {
        pos = sh->head;
        first = 1;

        if (pass == 1) {
            b = ngx_create_temp_buf(r->pool, len);
            if (b == NULL) {
                break;
            }

            b->last = ngx_cpymem(b->last, "{\"notifications\":[",
                                 sizeof("{\"notifications\":[") - 1);
        }

        for (i = 0; i < sh->count; i++) {
            e = (ngx_http_timpush_mock_entry_t *) (sh->data + pos);
            text = (u_char *) e + sizeof(ngx_http_timpush_mock_entry_t);

            pos += e->size;

            if (pos == sh->end) {
                pos = 0;
            }

            if (filter
                && (token.len != e->token_len
                    || ngx_strncasecmp(text + sizeof("{\"token\":\"") - 1,
                                       token.data, token.len)
                       != 0))
            {
                continue;
            }

            if (pass == 0) {
                len += e->len + 1;
                continue;
            }

            if (!first) {
                *b->last++ = ',';
            }

            first = 0;
            b->last = ngx_cpymem(b->last, text, e->len);
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *b->last++ = ']';
    *b->last++ = '}';
    *b->last++ = LF;

    return ngx_http_timpush_mock_output(r, NGX_HTTP_OK, b);
}


/*
 * The zone survives reloads with the log it holds; the rules may have
 * changed, so their counters start again.
 */

static ngx_int_t
ngx_http_timpush_mock_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    size_t                        len;
    ngx_slab_pool_t              *shpool;
    ngx_http_timpush_mock_shm_t  *sh;

    if (data) {
        sh = data;
        ngx_http_timpush_mock_reset_counters(sh);
        shm_zone->data = sh;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    len = sizeof(" in timpush_apns_mock zone \"\"") + shm_zone->shm.name.len;

    shpool->log_ctx = ngx_slab_alloc(shpool, len);
    if (shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(shpool->log_ctx, " in timpush_apns_mock zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* the ring takes every page left but one */

    if (shpool->pfree < 2) {
        return NGX_ERROR;
    }

    len = (shpool->pfree - 1) * ngx_pagesize;

    sh = ngx_slab_alloc(shpool, len);
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ngx_http_timpush_mock_reset_counters(sh);
    sh->size = len - offsetof(ngx_http_timpush_mock_shm_t, data);
    ngx_http_timpush_mock_ring_reset(sh);

    shpool->data = sh;
    shm_zone->data = sh;

    return NGX_OK;
}


static ngx_int_t
ngx_http_timpush_mock_init(ngx_conf_t *cf)
{
    ngx_http_timpush_mock_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_timpush_mock_module);

    /* loaded by mistake into a production configuration, it says so */

    if (mmcf->enabled) {
        ngx_log_error(NGX_LOG_WARN, cf->log, 0,
                      "APNs simulator enabled: timpush_apns_mock answers as "
                      "APNs does, for development and tests only");
    }

    ngx_http_next_request_body_filter = ngx_http_top_request_body_filter;
    ngx_http_top_request_body_filter = ngx_http_timpush_mock_body_filter;

    return NGX_OK;
}


static void
ngx_http_timpush_mock_reset_counters(ngx_http_timpush_mock_shm_t *sh)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_TIMPUSH_MOCK_MAX_RULES; i++) {
        sh->counters[i] = 0;
    }
}


static void *
ngx_http_timpush_mock_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_timpush_mock_main_conf_t  *mmcf;

    mmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_timpush_mock_main_conf_t));
    if (mmcf == NULL) {
        return NULL;
    }

    return mmcf;
}


/* runs once the http block is read: the zone gets its size */

static char *
ngx_http_timpush_mock_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_timpush_mock_main_conf_t *mmcf = conf;

    if (mmcf->zone && mmcf->zone->shm.size == 0) {
        mmcf->zone->shm.size = mmcf->size ? mmcf->size
                                          : NGX_HTTP_TIMPUSH_MOCK_ZONE_SIZE;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_timpush_mock_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_timpush_mock_loc_conf_t  *mlcf;

    mlcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_timpush_mock_loc_conf_t));
    if (mlcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mlcf->key = NULL;
     *     mlcf->key_id = { 0, NULL };
     *     mlcf->team_id = { 0, NULL };
     *     mlcf->topic = { 0, NULL };
     */

    mlcf->rules = NGX_CONF_UNSET_PTR;

    return mlcf;
}


static char *
ngx_http_timpush_mock_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_timpush_mock_loc_conf_t *prev = parent;
    ngx_http_timpush_mock_loc_conf_t *conf = child;

    ngx_conf_merge_ptr_value(conf->rules, prev->rules, NULL);

    return NGX_CONF_OK;
}


static char *
ngx_http_timpush_mock(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_timpush_mock_loc_conf_t *mlcf = conf;

    ngx_str_t                          *value, key;
    ngx_uint_t                          i;
    ngx_http_core_loc_conf_t           *clcf;
    ngx_http_timpush_mock_main_conf_t  *mmcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler == ngx_http_timpush_mock_handler) {
        return "is duplicate";
    }

    mmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_timpush_mock_module);
    mmcf->enabled = 1;

    value = cf->args->elts;
    ngx_str_null(&key);

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "key=", 4) == 0) {
            key.data = value[i].data + 4;
            key.len = value[i].len - 4;
            continue;
        }

        if (ngx_strncmp(value[i].data, "key_id=", 7) == 0) {
            mlcf->key_id.data = value[i].data + 7;
            mlcf->key_id.len = value[i].len - 7;
            continue;
        }

        if (ngx_strncmp(value[i].data, "team_id=", 8) == 0) {
            mlcf->team_id.data = value[i].data + 8;
            mlcf->team_id.len = value[i].len - 8;
            continue;
        }

        if (ngx_strncmp(value[i].data, "topic=", 6) == 0
            && value[i].len > 6)
        {
            mlcf->topic.data = value[i].data + 6;
            mlcf->topic.len = value[i].len - 6;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"timpush_apns_mock\": invalid parameter \"%V\"",
                           &value[i]);
        return NGX_CONF_ERROR;
    }

    if (key.len == 0) {
        if (key.data || mlcf->key_id.data || mlcf->team_id.data) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"timpush_apns_mock\": key_id= and team_id= "
                               "go with key=");
            return NGX_CONF_ERROR;
        }

    } else {
        if (ngx_http_timpush_mock_is_apple_id(&mlcf->key_id) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"timpush_apns_mock\": key_id=\"%V\" is not "
                               "10 letters and digits", &mlcf->key_id);
            return NGX_CONF_ERROR;
        }

        if (ngx_http_timpush_mock_is_apple_id(&mlcf->team_id) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"timpush_apns_mock\": team_id=\"%V\" is not "
                               "10 letters and digits", &mlcf->team_id);
            return NGX_CONF_ERROR;
        }

        if (ngx_http_timpush_mock_load_key(cf, mlcf, &key) != NGX_CONF_OK) {
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_http_timpush_mock_add_zone(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    clcf->handler = ngx_http_timpush_mock_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_timpush_mock_load_key(ngx_conf_t *cf,
    ngx_http_timpush_mock_loc_conf_t *mlcf, ngx_str_t *file)
{
    BIO                 *bio;
    char                 group[64];
    u_char              *base;
    size_t               len;
    EVP_PKEY            *key;
    ngx_pool_cleanup_t  *cln;

    if (ngx_conf_full_name(cf->cycle, file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* Apple names the file after the key: a mismatch is a typo */

    for (base = file->data + file->len; base > file->data; base--) {
        if (base[-1] == '/') {
            break;
        }
    }

    len = file->data + file->len - base;

    if (len == sizeof("AuthKey_.p8") - 1 + mlcf->key_id.len
        && ngx_strncmp(base, "AuthKey_", 8) == 0
        && ngx_strncmp(base + 8, mlcf->key_id.data, mlcf->key_id.len) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"timpush_apns_mock\": key_id=\"%V\" does not "
                           "match the key file \"%s\"",
                           &mlcf->key_id, file->data);
        return NGX_CONF_ERROR;
    }

    bio = BIO_new_file((char *) file->data, "r");
    if (bio == NULL) {
        ERR_clear_error();
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"timpush_apns_mock\": cannot read key file \"%s\"",
                           file->data);
        return NGX_CONF_ERROR;
    }

    /* an empty passphrase: never prompt on the terminal */

    key = PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *) "");
    BIO_free(bio);

    if (key == NULL) {
        ERR_clear_error();
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"timpush_apns_mock\": no private key in \"%s\"",
                           file->data);
        return NGX_CONF_ERROR;
    }

    if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC
        || EVP_PKEY_get_group_name(key, group, sizeof(group), NULL) != 1
        || ngx_strcmp(group, SN_X9_62_prime256v1) != 0)
    {
        EVP_PKEY_free(key);
        ERR_clear_error();
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"timpush_apns_mock\": the key in \"%s\" is not "
                           "a P-256 (ES256) key", file->data);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        EVP_PKEY_free(key);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_timpush_mock_free_key;
    cln->data = key;

    mlcf->key = key;

    return NGX_CONF_OK;
}


static void
ngx_http_timpush_mock_free_key(void *data)
{
    EVP_PKEY_free(data);
}


static char *
ngx_http_timpush_mock_rule(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_timpush_mock_loc_conf_t *mlcf = conf;

    ngx_int_t                           n;
    ngx_str_t                          *value;
    ngx_uint_t                          i;
    ngx_http_timpush_mock_rule_t       *rule;
    ngx_http_timpush_mock_main_conf_t  *mmcf;

    value = cf->args->elts;

    if (mlcf->rules == NGX_CONF_UNSET_PTR) {
        mlcf->rules = ngx_array_create(cf->pool, 4,
                                       sizeof(ngx_http_timpush_mock_rule_t));
        if (mlcf->rules == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    rule = ngx_array_push(mlcf->rules);
    if (rule == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(rule, sizeof(ngx_http_timpush_mock_rule_t));

    rule->prefix = value[1];

    if (ngx_http_timpush_mock_is_hex(value[1].data, value[1].len) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"timpush_apns_mock_rule\": token prefix \"%V\" "
                           "is not hexadecimal", &value[1]);
        return NGX_CONF_ERROR;
    }

    n = ngx_atoi(value[2].data, value[2].len);

    if (n < 400 || n > 599) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"timpush_apns_mock_rule\": status \"%V\" is not "
                           "between 400 and 599", &value[2]);
        return NGX_CONF_ERROR;
    }

    rule->status = n;
    rule->reason = value[3];

    for (i = 0; i < value[3].len; i++) {
        if (!isalnum(value[3].data[i])) {
            break;
        }
    }

    if (value[3].len == 0 || i < value[3].len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"timpush_apns_mock_rule\": reason \"%V\" is not "
                           "a word such as Unregistered", &value[3]);
        return NGX_CONF_ERROR;
    }

    if (cf->args->nelts == 4) {
        return NGX_CONF_OK;
    }

    if (ngx_strncmp(value[4].data, "times=", 6) != 0
        || (n = ngx_atoi(value[4].data + 6, value[4].len - 6)) <= 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"timpush_apns_mock_rule\": invalid parameter "
                           "\"%V\"", &value[4]);
        return NGX_CONF_ERROR;
    }

    rule->times = n;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_timpush_mock_module);

    if (mmcf->nrules == NGX_HTTP_TIMPUSH_MOCK_MAX_RULES) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"timpush_apns_mock_rule\": more than %d rules "
                           "with times=", NGX_HTTP_TIMPUSH_MOCK_MAX_RULES);
        return NGX_CONF_ERROR;
    }

    rule->counter = mmcf->nrules++;

    if (ngx_http_timpush_mock_add_zone(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_timpush_mock_log(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ssize_t                             size;
    ngx_str_t                          *value, s;
    ngx_http_core_loc_conf_t           *clcf;
    ngx_http_timpush_mock_main_conf_t  *mmcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler == ngx_http_timpush_mock_log_handler) {
        return "is duplicate";
    }

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_timpush_mock_module);

    if (cf->args->nelts == 2) {
        value = cf->args->elts;

        if (ngx_strncmp(value[1].data, "size=", 5) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"timpush_apns_mock_log\": invalid parameter "
                               "\"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }

        s.data = value[1].data + 5;
        s.len = value[1].len - 5;

        size = ngx_parse_size(&s);

        /* at least 1024 notifications of 5 KiB with their headers */

        if (size < NGX_HTTP_TIMPUSH_MOCK_ZONE_SIZE) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"timpush_apns_mock_log\": \"%V\" is not a "
                               "size of at least 10m", &value[1]);
            return NGX_CONF_ERROR;
        }

        if (mmcf->size && mmcf->size != (size_t) size) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"timpush_apns_mock_log\": size conflicts "
                               "with an earlier one");
            return NGX_CONF_ERROR;
        }

        mmcf->size = size;
    }

    if (ngx_http_timpush_mock_add_zone(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    mmcf->log = 1;
    clcf->handler = ngx_http_timpush_mock_log_handler;

    return NGX_CONF_OK;
}


/* one zone per configuration; init_main_conf gives it its size */

static ngx_int_t
ngx_http_timpush_mock_add_zone(ngx_conf_t *cf)
{
    ngx_http_timpush_mock_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_timpush_mock_module);

    if (mmcf->zone) {
        return NGX_OK;
    }

    mmcf->zone = ngx_shared_memory_add(cf, &ngx_http_timpush_mock_zone_name,
                                       0, &ngx_http_timpush_mock_module);
    if (mmcf->zone == NULL) {
        return NGX_ERROR;
    }

    mmcf->zone->init = ngx_http_timpush_mock_init_zone;

    return NGX_OK;
}


/* key and team identifiers: 10 uppercase letters and digits */

static ngx_int_t
ngx_http_timpush_mock_is_apple_id(ngx_str_t *s)
{
    ngx_uint_t  i;

    if (s->len != 10) {
        return NGX_DECLINED;
    }

    for (i = 0; i < s->len; i++) {
        if (!((s->data[i] >= 'A' && s->data[i] <= 'Z')
              || (s->data[i] >= '0' && s->data[i] <= '9')))
        {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}
