
/*
 * Copyright (C) timpush authors
 *
 * APNs host names resolved again (DESIGN §15): with nginx's "resolver" in
 * the http block, a connection to a host given by name (Apple's, or
 * "timpush_apns_upstream ... host:port") first asks the resolver, which
 * answers from its cache while the answer's TTL (or "valid=") lasts, and
 * then dials one of the addresses.  Apple moves its servers: a gateway
 * that runs for months must follow without a reload.
 *
 * The addresses live in the environment's peers, shared by the
 * credentials of a worker, so that one answer serves them all.  A failing
 * DNS server leaves the last good addresses in use.
 */


#include "ngx_http_timpush_apns_int.h"


static void ngx_http_timpush_apns_resolve_handler(ngx_resolver_ctx_t *ctx);
static ngx_uint_t ngx_http_timpush_apns_peers_same(
    ngx_http_timpush_apns_peers_t *peers, ngx_addr_t *addrs, ngx_uint_t n);


/*
 * The peers become these addresses (at most APNS_ADDRS of them), with the
 * port of the name; an address already known keeps its failures.
 */

ngx_int_t
ngx_http_timpush_apns_peers_set(ngx_http_timpush_apns_peers_t *peers,
    ngx_addr_t *addrs, ngx_uint_t n, ngx_log_t *log)
{
    size_t                         len;
    ngx_uint_t                     i, j;
    ngx_http_timpush_apns_addr_t  *a;
    ngx_http_timpush_apns_peer_t  *p, *old;
    ngx_http_timpush_apns_peer_t   next[NGX_HTTP_TIMPUSH_APNS_ADDRS];
    ngx_http_timpush_apns_addr_t   next_addrs[NGX_HTTP_TIMPUSH_APNS_ADDRS];

    n = ngx_min(n, NGX_HTTP_TIMPUSH_APNS_ADDRS);

    if (n == 0) {
        return NGX_DECLINED;
    }

    if (ngx_http_timpush_apns_peers_same(peers, addrs, n)) {
        return NGX_OK;
    }

    old = peers->peers.elts;

    for (i = 0; i < n; i++) {
        p = &next[i];
        a = &next_addrs[i];

        ngx_memzero(p, sizeof(ngx_http_timpush_apns_peer_t));

        ngx_memcpy(&a->sockaddr, addrs[i].sockaddr,
                   ngx_min(addrs[i].socklen, sizeof(ngx_sockaddr_t)));
        p->socklen = addrs[i].socklen;
        ngx_inet_set_port(&a->sockaddr.sockaddr, peers->port);

        len = ngx_sock_ntop(&a->sockaddr.sockaddr, p->socklen, a->name,
                            NGX_SOCKADDR_STRLEN, 1);
        p->name.len = len;
        p->host = peers->host;
        p->max_fails = 1;
        p->fail_timeout = 10;

        for (j = 0; j < peers->peers.nelts; j++) {
            if (ngx_cmp_sockaddr(old[j].sockaddr, old[j].socklen,
                                 &a->sockaddr.sockaddr, p->socklen, 1)
                == NGX_OK)
            {
                p->fails = old[j].fails;
                p->checked = old[j].checked;
                break;
            }
        }
    }

    /* the array was made for APNS_ADDRS: it never moves */

    ngx_memcpy(peers->addrs, next_addrs,
               n * sizeof(ngx_http_timpush_apns_addr_t));
    ngx_memcpy(old, next, n * sizeof(ngx_http_timpush_apns_peer_t));
    peers->peers.nelts = n;

    for (i = 0; i < n; i++) {
        old[i].sockaddr = &peers->addrs[i].sockaddr.sockaddr;
        old[i].name.data = peers->addrs[i].name;
    }

    ngx_log_error(NGX_LOG_INFO, log, 0,
                  "timpush apns: \"%V\" resolved to %ui address(es), "
                  "%V first", &peers->host, n, &old[0].name);

    return NGX_OK;
}


/* the same addresses in any order (the resolver rotates them) */

static ngx_uint_t
ngx_http_timpush_apns_peers_same(ngx_http_timpush_apns_peers_t *peers,
    ngx_addr_t *addrs, ngx_uint_t n)
{
    ngx_uint_t                     i, j;
    ngx_sockaddr_t                 sa;
    ngx_http_timpush_apns_peer_t  *p;

    if (peers->peers.nelts != n) {
        return 0;
    }

    p = peers->peers.elts;

    for (i = 0; i < n; i++) {
        ngx_memcpy(&sa, addrs[i].sockaddr,
                   ngx_min(addrs[i].socklen, sizeof(ngx_sockaddr_t)));
        ngx_inet_set_port(&sa.sockaddr, peers->port);

        for (j = 0; j < n; j++) {
            if (ngx_cmp_sockaddr(p[j].sockaddr, p[j].socklen, &sa.sockaddr,
                                 addrs[i].socklen, 1)
                == NGX_OK)
            {
                break;
            }
        }

        if (j == n) {
            return 0;
        }
    }

    return 1;
}


/*
 * The connection's first step: the name is resolved (from the resolver's
 * cache while it is valid), then a peer is dialled.  The resolver may
 * answer at once, from inside ngx_resolve_name().
 */

void
ngx_http_timpush_apns_resolve(ngx_http_timpush_apns_conn_t *hc)
{
    ngx_msec_t                      timeout;
    ngx_resolver_ctx_t             *ctx, temp;
    ngx_http_timpush_apns_peers_t  *peers;

    peers = hc->channel->peers;

    ngx_memzero(&temp, sizeof(ngx_resolver_ctx_t));
    temp.name = peers->host;

    ctx = ngx_resolve_start(peers->resolver, &temp);

    if (ctx == NULL || ctx == NGX_NO_RESOLVER) {
        ngx_log_error(NGX_LOG_WARN, hc->channel->log, 0,
                      "timpush apns: cannot resolve \"%V\": %s",
                      &peers->host,
                      peers->peers.nelts ? "its last addresses are used"
                                         : "no address yet");
        ngx_http_timpush_apns_connect_peer(hc);
        return;
    }

    /* no longer than a connect may take */

    timeout = ngx_min(ngx_http_timpush_apns.conf->apns_timeout, 10000);

    ctx->name = peers->host;
    ctx->handler = ngx_http_timpush_apns_resolve_handler;
    ctx->data = hc;
    ctx->timeout = ngx_min(peers->resolver_timeout, timeout);
    ctx->cancelable = 1;

    hc->resolving = ctx;

    if (ngx_resolve_name(ctx) != NGX_OK) {
        /* the resolver has freed ctx */
        hc->resolving = NULL;
        ngx_log_error(NGX_LOG_WARN, hc->channel->log, 0,
                      "timpush apns: cannot resolve \"%V\": %s",
                      &peers->host,
                      peers->peers.nelts ? "its last addresses are used"
                                         : "no address yet");
        ngx_http_timpush_apns_connect_peer(hc);
    }
}


static void
ngx_http_timpush_apns_resolve_handler(ngx_resolver_ctx_t *ctx)
{
    ngx_http_timpush_apns_conn_t *hc = ctx->data;

    ngx_uint_t                      i, n;
    ngx_addr_t                      addrs[NGX_HTTP_TIMPUSH_APNS_ADDRS];
    ngx_http_timpush_apns_peers_t  *peers;

    peers = hc->channel->peers;
    hc->resolving = NULL;

    if (ctx->state) {
        ngx_log_error(NGX_LOG_WARN, hc->channel->log, 0,
                      "timpush apns: \"%V\" could not be resolved "
                      "(%i: %s): %s", &ctx->name, ctx->state,
                      ngx_resolver_strerror(ctx->state),
                      peers->peers.nelts ? "its last addresses are used"
                                         : "no address yet");

    } else {
        n = ngx_min(ctx->naddrs, NGX_HTTP_TIMPUSH_APNS_ADDRS);

        for (i = 0; i < n; i++) {
            addrs[i].sockaddr = ctx->addrs[i].sockaddr;
            addrs[i].socklen = ctx->addrs[i].socklen;
        }

        (void) ngx_http_timpush_apns_peers_set(peers, addrs, n,
                                               hc->channel->log);
    }

    ngx_resolve_name_done(ctx);

    ngx_http_timpush_apns_connect_peer(hc);
}


/* the connection is closed while its name is being resolved */

void
ngx_http_timpush_apns_resolve_cancel(ngx_http_timpush_apns_conn_t *hc)
{
    if (hc->resolving) {
        ngx_resolve_name_done(hc->resolving);
        hc->resolving = NULL;
    }
}
