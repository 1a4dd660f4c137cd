
/*
 * Copyright (C) timpush authors
 *
 * The APNs transport's configuration: where each environment's
 * notifications go (an upstream{} block, resolved when the configuration
 * is read; or a host, Apple's by default, resolved then and, with nginx's
 * "resolver", again by apns_resolve.c) and each credential's TLS context.
 */


#include "ngx_http_timpush_apns_int.h"
#include "ngx_http_timpush_x509.h"


static ngx_int_t ngx_http_timpush_apns_peers(ngx_conf_t *cf,
    ngx_http_timpush_main_conf_t *tmcf, ngx_uint_t env);
static ngx_int_t ngx_http_timpush_apns_peers_upstream(ngx_conf_t *cf,
    ngx_http_timpush_apns_peers_t *peers, ngx_str_t *name);
static ngx_int_t ngx_http_timpush_apns_peers_host(ngx_conf_t *cf,
    ngx_http_timpush_apns_peers_t *peers, ngx_str_t *url, ngx_uint_t env);
static ngx_int_t ngx_http_timpush_apns_peers_resolver(ngx_conf_t *cf,
    ngx_http_timpush_apns_peers_t *peers, ngx_url_t *u, ngx_uint_t env);
static void ngx_http_timpush_apns_peer_host(ngx_str_t *server,
    ngx_str_t *host);
static ngx_int_t ngx_http_timpush_apns_ssl(ngx_conf_t *cf,
    ngx_http_timpush_main_conf_t *tmcf, ngx_http_timpush_credential_t *cred);


static ngx_str_t  ngx_http_timpush_apns_hosts[] = {
    ngx_string("api.sandbox.push.apple.com:443"),
    ngx_string("api.push.apple.com:443")
};

const char  *ngx_http_timpush_apns_envs[] = {
    "sandbox", "production"
};


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
    ngx_str_t                      *url;
    ngx_http_timpush_apns_peers_t  *peers;

    peers = ngx_pcalloc(cf->pool, sizeof(ngx_http_timpush_apns_peers_t));
    if (peers == NULL) {
        return NGX_ERROR;
    }

    /* room for a resolved name's addresses: the array never moves */

    if (ngx_array_init(&peers->peers, cf->pool, NGX_HTTP_TIMPUSH_APNS_ADDRS,
                       sizeof(ngx_http_timpush_apns_peer_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    tmcf->apns_peers[env] = peers;
    url = &tmcf->apns_upstream[env];

    /* "host:port" is a host; a name without a port, an upstream{} */

    if (url->len && ngx_strlchr(url->data, url->data + url->len, ':') == NULL)
    {
        return ngx_http_timpush_apns_peers_upstream(cf, peers, url);
    }

    if (url->len == 0) {
        url = &ngx_http_timpush_apns_hosts[env];
    }

    return ngx_http_timpush_apns_peers_host(cf, peers, url, env);
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


/*
 * A host, Apple's by default: resolved now; without a resolver, these
 * addresses are used as long as the configuration is.
 */

static ngx_int_t
ngx_http_timpush_apns_peers_host(ngx_conf_t *cf,
    ngx_http_timpush_apns_peers_t *peers, ngx_str_t *url, ngx_uint_t env)
{
    ngx_uint_t                     i;
    ngx_url_t                      u;
    ngx_http_timpush_apns_peer_t  *p;

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = *url;
    u.default_port = 443;
    u.no_resolve = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.uri.len || u.host.len == 0)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "timpush_apns_upstream %s: invalid host \"%V\"%s%s",
                      ngx_http_timpush_apns_envs[env], url,
                      u.err ? ": " : "", u.err ? u.err : "");
        return NGX_ERROR;
    }

    peers->name = u.url;

    if (ngx_http_timpush_apns_peers_resolver(cf, peers, &u, env) != NGX_OK) {
        return NGX_ERROR;
    }

    if (peers->resolver) {
        return NGX_OK;
    }

    if (u.naddrs == 0 && ngx_inet_resolve_host(cf->pool, &u) != NGX_OK) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "timpush: cannot resolve \"%V\" for the %s "
                      "credentials (%s): set \"timpush_apns_upstream %s\" "
                      "or nginx's \"resolver\"",
                      &u.url, ngx_http_timpush_apns_envs[env],
                      u.err ? u.err : "no address",
                      ngx_http_timpush_apns_envs[env]);
        return NGX_ERROR;
    }

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


/*
 * With nginx's "resolver" in the http block, a host name is resolved
 * again when a connection opens (apns_resolve.c); what it resolves to now
 * is where the first connections go, and nginx starts without it.
 */

static ngx_int_t
ngx_http_timpush_apns_peers_resolver(ngx_conf_t *cf,
    ngx_http_timpush_apns_peers_t *peers, ngx_url_t *u, ngx_uint_t env)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->resolver == NULL || clcf->resolver->connections.nelts == 0
        || u->naddrs
        || ngx_inet_addr(u->host.data, u->host.len) != INADDR_NONE)
    {
        return NGX_OK;
    }

    peers->addrs = ngx_pcalloc(cf->pool, NGX_HTTP_TIMPUSH_APNS_ADDRS
                                     * sizeof(ngx_http_timpush_apns_addr_t));
    if (peers->addrs == NULL) {
        return NGX_ERROR;
    }

    peers->resolver = clcf->resolver;
    peers->resolver_timeout = clcf->resolver_timeout == NGX_CONF_UNSET_MSEC
                              ? 30000 : clcf->resolver_timeout;
    peers->host = u->host;
    peers->port = u->port;

    if (ngx_inet_resolve_host(cf->pool, u) != NGX_OK
        || ngx_http_timpush_apns_peers_set(peers, u->addrs, u->naddrs,
                                           cf->log)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_WARN, cf->log, 0,
                      "timpush: \"%V\" for the %s credentials cannot be "
                      "resolved yet (%s), resolving when connecting",
                      &u->url, ngx_http_timpush_apns_envs[env],
                      u->err ? u->err : "no address");
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
    int         i;
    ngx_ssl_t  *ssl;

    /* the APNs server is always verified */

    ssl = ngx_http_timpush_ssl_client(cf, &tmcf->apns_trusted,
                                      "timpush_apns_trusted_certificate",
                                      "");
    if (ssl == NULL) {
        return NGX_ERROR;
    }

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

    cred->ssl = ssl;

    return NGX_OK;
}
