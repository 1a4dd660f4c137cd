
/*
 * Copyright (C) timpush authors
 *
 * The APNs transport: notifications in, APNs answers out.  It knows
 * nothing of chat messages (DESIGN 7).
 */


#ifndef _NGX_HTTP_TIMPUSH_APNS_H_INCLUDED_
#define _NGX_HTTP_TIMPUSH_APNS_H_INCLUDED_


#include "ngx_http_timpush.h"


#define NGX_HTTP_TIMPUSH_APNS_ID_LEN  36


typedef struct ngx_http_timpush_apns_note_s  ngx_http_timpush_apns_note_t;

typedef void (*ngx_http_timpush_apns_done_pt)(
    ngx_http_timpush_apns_note_t *note);


/* what every notification of one message shares */

typedef struct {
    ngx_str_t                        push_type;
    ngx_str_t                        topic_suffix;
    ngx_str_t                        collapse_id;
    ngx_uint_t                       priority;
    int64_t                          expiration;    /* -1: none */
    ngx_msec_t                       expires;       /* 0: timeout from now */
} ngx_http_timpush_apns_headers_t;


/*
 * One notification to one device.  The caller fills the first part and
 * keeps the structure (and what it points to) until done() is called,
 * which happens exactly once: with APNs' answer, or with status 0 and a
 * reason of our own when it could not be delivered in time.
 */

struct ngx_http_timpush_apns_note_s {
    ngx_http_timpush_credential_t   *cred;
    ngx_str_t                        token;
    ngx_str_t                        payload[3];    /* sent one after another */
    ngx_http_timpush_apns_headers_t *headers;
    ngx_http_timpush_apns_done_pt    done;
    void                            *data;

    /* the answer */
    ngx_uint_t                       status;        /* :status, 0: none */
    ngx_str_t                        reason;
    int64_t                          timestamp;     /* ms, with 410 */
    u_char                           apns_id[NGX_HTTP_TIMPUSH_APNS_ID_LEN];

    /* the transport's */
    ngx_queue_t                      queue;         /* waiting, answered */
    ngx_queue_t                      link;          /* on a connection */
    ngx_event_t                      deadline;
    ngx_event_t                      retry;
    void                            *conn;          /* its stream's */
    void                            *avoid;         /* last connection */
    int32_t                          stream_id;
    ngx_msec_t                       sent;          /* its stream's start */
    time_t                           jwt_iat;       /* token sent with */
    ngx_uint_t                       state;
    ngx_uint_t                       attempts;
    ngx_uint_t                       refused;       /* REFUSED_STREAMs */
    ngx_uint_t                       part;
    size_t                           offset;
    u_char                           body[128];
    size_t                           body_len;
    unsigned                         refused_now:1;
    unsigned                         jwt_retried:1;
    unsigned                         finished:1;
};


char *ngx_http_timpush_apns_upstream(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_timpush_apns_init_conf(ngx_conf_t *cf,
    ngx_http_timpush_main_conf_t *tmcf);
ngx_int_t ngx_http_timpush_jwt_shm_conf(ngx_conf_t *cf,
    ngx_http_timpush_main_conf_t *tmcf);
ngx_int_t ngx_http_timpush_apns_init_process(ngx_cycle_t *cycle,
    ngx_http_timpush_main_conf_t *tmcf);
void ngx_http_timpush_apns_exit_process(ngx_cycle_t *cycle);

/*
 * NGX_OK: done() will be called; NGX_BUSY: the queue is full;
 * NGX_DECLINED: headers->expires (ngx_current_msec of the deadline) is past.
 */
ngx_int_t ngx_http_timpush_apns_send(ngx_http_timpush_apns_note_t *note);

/* how many notifications a credential's connections carry at once */
ngx_uint_t ngx_http_timpush_apns_capacity(ngx_uint_t index);

/* the caller is gone: done() is not called and the stream is reset */
void ngx_http_timpush_apns_cancel(ngx_http_timpush_apns_note_t *note);


#endif /* _NGX_HTTP_TIMPUSH_APNS_H_INCLUDED_ */
