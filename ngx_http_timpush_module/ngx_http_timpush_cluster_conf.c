
/*
 * Copyright (C) timpush authors
 *
 * The timpush_redis_cluster directive (DESIGN §15): its arguments are read
 * by ngx_http_timpush_cluster_parse(); here what needs the configuration
 * cycle: host names of seeds resolved now (DNS would block the event loop
 * later), the password read into secure memory, and one store only.
 *
 * The command-table entry (ngx_http_timpush_module.c), once the store
 * routes by slot, is:
 *
 *     { ngx_string("timpush_redis_cluster"),
 *       NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
 *       ngx_http_timpush_cluster_directive,
 *       NGX_HTTP_MAIN_CONF_OFFSET,
 *       offsetof(ngx_http_timpush_main_conf_t, cluster),
 *       NULL },
 *
 * with "ngx_http_timpush_cluster_conf_t *cluster" in the main
 * configuration, and timpush_redis refusing to follow it.
 */


#include "ngx_http_timpush.h"
#include "ngx_http_timpush_cluster.h"


static ngx_int_t ngx_http_timpush_cluster_resolve(ngx_conf_t *cf,
    ngx_http_timpush_cluster_seed_t *seed);


char *
ngx_http_timpush_cluster_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_timpush_main_conf_t *tmcf = conf;

    char                              *rv;
    ngx_str_t                         *value;
    ngx_uint_t                         i;
    ngx_http_timpush_cluster_conf_t   *ccf, **field;
    ngx_http_timpush_cluster_seed_t   *seed;

    field = (ngx_http_timpush_cluster_conf_t **) ((char *) conf
                                                  + cmd->offset);

    if (*field) {
        return "is duplicate";
    }

    if (tmcf->redis_set) {
        return "cannot be used with \"timpush_redis\": one store, a single "
               "Redis or a Cluster";
    }

    ccf = ngx_pcalloc(cf->pool, sizeof(ngx_http_timpush_cluster_conf_t));
    if (ccf == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    rv = ngx_http_timpush_cluster_parse(cf->pool, &value[1],
                                        cf->args->nelts - 1, ccf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    seed = ccf->seeds.elts;

    for (i = 0; i < ccf->seeds.nelts; i++) {
        if (ngx_http_timpush_cluster_resolve(cf, &seed[i]) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    if (ccf->trusted_certificate.len
        && ngx_conf_full_name(cf->cycle, &ccf->trusted_certificate, 1)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (ccf->password_file.len) {
        if (ngx_conf_full_name(cf->cycle, &ccf->password_file, 1) != NGX_OK
            || ngx_http_timpush_secret_init(cf) != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        if (ngx_http_timpush_secret_password(cf,
                                             (u_char *) "timpush_redis_cluster",
                                             "password_file",
                                             &ccf->password_file, cf->pool,
                                             &ccf->password)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        if (ccf->password.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "timpush_redis_cluster: password_file \"%V\" "
                               "has no password on its first line",
                               &ccf->password_file);
            return NGX_CONF_ERROR;
        }
    }

    *field = ccf;

    return NGX_CONF_OK;
}


/* the first address of a host name, as timpush_redis takes it */

static ngx_int_t
ngx_http_timpush_cluster_resolve(ngx_conf_t *cf,
    ngx_http_timpush_cluster_seed_t *seed)
{
    u_char     *p;
    ngx_url_t   u;

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = seed->name;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_redis_cluster: cannot use \"%V\": %s",
                           &seed->name,
                           u.err ? u.err : "the host has no address");
        return NGX_ERROR;
    }

    p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    seed->host.data = p;
    seed->host.len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen,
                                   p, NGX_SOCKADDR_STRLEN, 0);
    p[seed->host.len] = '\0';

    if (u.naddrs > 1) {
        ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0,
                           "timpush_redis_cluster: \"%V\" has %ui addresses, "
                           "%V is used", &seed->name, u.naddrs, &seed->host);
    }

    return NGX_OK;
}
