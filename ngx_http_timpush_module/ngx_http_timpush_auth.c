
/*
 * Copyright (C) timpush authors
 *
 * Credentials: .p12 client certificates and .p8 token keys, loaded and
 * checked when the configuration is read, so that a bad file fails
 * "nginx -t" instead of the first push.  Secrets never reach a log.
 */


#include "ngx_http_timpush.h"
#include "ngx_http_timpush_x509.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/provider.h>


typedef struct {
    ngx_str_t                      certificate;
    ngx_str_t                      password_file;
    ngx_str_t                      key;
    ngx_str_t                      env;
} ngx_http_timpush_credential_args_t;


/*
 * What the child reading a key found wrong (isolate.c), and what it says
 * of how it read it.
 */
#define NGX_HTTP_TIMPUSH_KEY_NOT_P12         1
#define NGX_HTTP_TIMPUSH_KEY_WRONG_PASSWORD  2
#define NGX_HTTP_TIMPUSH_KEY_UNDECRYPTABLE   3
#define NGX_HTTP_TIMPUSH_KEY_INCOMPLETE      4
#define NGX_HTTP_TIMPUSH_KEY_NOT_PEM         5
#define NGX_HTTP_TIMPUSH_KEY_NOT_P256        6

#define NGX_HTTP_TIMPUSH_KEY_LEGACY          0x01
#define NGX_HTTP_TIMPUSH_KEY_NO_LEGACY       0x02


typedef struct {
    ngx_str_t                     *file;
    ngx_str_t                     *password;
} ngx_http_timpush_p12_read_t;


static char *ngx_http_timpush_credential_parse(ngx_conf_t *cf,
    ngx_http_timpush_credential_t *cred,
    ngx_http_timpush_credential_args_t *args);
static char *ngx_http_timpush_credential_p12(ngx_conf_t *cf,
    ngx_http_timpush_credential_t *cred, ngx_str_t *password_file);
static ngx_int_t ngx_http_timpush_credential_read_p12(void *data,
    ngx_http_timpush_keys_t *keys);
static ngx_int_t ngx_http_timpush_credential_read_p8(void *data,
    ngx_http_timpush_keys_t *keys);
static int ngx_http_timpush_no_password(char *buf, int size, int rwflag,
    void *u);
static char *ngx_http_timpush_credential_p12_check(ngx_conf_t *cf,
    ngx_http_timpush_credential_t *cred);
static ngx_int_t ngx_http_timpush_credential_validity(
    ngx_http_timpush_credential_t *cred);
static char *ngx_http_timpush_credential_p8(ngx_conf_t *cf,
    ngx_http_timpush_credential_t *cred);
static ngx_int_t ngx_http_timpush_check_id(ngx_str_t *s);
static void ngx_http_timpush_credential_log(ngx_conf_t *cf,
    ngx_http_timpush_credential_t *cred);
static void ngx_http_timpush_credential_cleanup(void *data);


char *
ngx_http_timpush_credential(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_timpush_main_conf_t *tmcf = conf;

    char                                *rv;
    ngx_int_t                            id;
    ngx_str_t                           *value;
    ngx_pool_cleanup_t                  *cln;
    ngx_http_timpush_credential_t       *cred, **credp;
    ngx_http_timpush_credential_args_t   args;

    value = cf->args->elts;

    if (ngx_http_timpush_secret_init(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    id = ngx_atoi(value[1].data, value[1].len);
    if (id <= 0 || id > 0xffffffff) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_credential: invalid business_id \"%V\": a "
                           "positive integer",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_timpush_credential_find(tmcf, (ngx_uint_t) id) != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_credential: business_id %i is configured "
                           "twice", id);
        return NGX_CONF_ERROR;
    }

    credp = ngx_array_push(&tmcf->credentials);
    if (credp == NULL) {
        return NGX_CONF_ERROR;
    }

    cred = ngx_pcalloc(cf->pool, sizeof(ngx_http_timpush_credential_t));
    if (cred == NULL) {
        return NGX_CONF_ERROR;
    }

    *credp = cred;

    ngx_memzero(&args, sizeof(ngx_http_timpush_credential_args_t));

    cred->id = (ngx_uint_t) id;

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_timpush_credential_cleanup;
    cln->data = cred;

    rv = ngx_http_timpush_credential_parse(cf, cred, &args);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (args.certificate.len) {
        cred->auth = NGX_HTTP_TIMPUSH_AUTH_CERTIFICATE;
        cred->file = args.certificate;
        rv = ngx_http_timpush_credential_p12(cf, cred, &args.password_file);

    } else {
        cred->auth = NGX_HTTP_TIMPUSH_AUTH_TOKEN;
        cred->file = args.key;
        rv = ngx_http_timpush_credential_p8(cf, cred);
    }

    ERR_clear_error();

    if (rv == NGX_CONF_OK) {
        ngx_http_timpush_credential_log(cf, cred);
    }

    return rv;
}


/* what the credential resolved to, and whether it can be used */

static void
ngx_http_timpush_credential_log(ngx_conf_t *cf,
    ngx_http_timpush_credential_t *cred)
{
    const char  *env;

    env = (cred->env == NGX_HTTP_TIMPUSH_ENV_SANDBOX) ? "sandbox"
                                                      : "production";

    if (cred->auth == NGX_HTTP_TIMPUSH_AUTH_TOKEN) {
        ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0,
                           "timpush_credential %ui: token key %V of team "
                           "%V, topic %V, %s", cred->id, &cred->key_id,
                           &cred->team_id, &cred->topic, env);
        return;
    }

    ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0,
                       "timpush_credential %ui: certificate, topic %V, %s, "
                       "expires in %T days", cred->id, &cred->topic, env,
                       (cred->not_after - ngx_time()) / 86400);

    (void) ngx_http_timpush_credential_expiry(cf->log, cred, 1);
}


/*
 * A certificate out of its validity dates does not stop nginx: nginx may
 * serve much else, and one app's forgotten renewal must not block every
 * configuration change.  Its devices get 403 CertificateExpired instead,
 * and the error log says so at [alert] (now, and every hour: expiry.c).
 * NGX_OK: valid for more than 30 days; NGX_AGAIN: valid, expiring within
 * 30 days ([warn] if asked); NGX_DECLINED: expired or not valid yet.
 */

ngx_int_t
ngx_http_timpush_credential_expiry(ngx_log_t *log,
    ngx_http_timpush_credential_t *cred, ngx_uint_t warn)
{
    time_t  now;

    if (cred->auth != NGX_HTTP_TIMPUSH_AUTH_CERTIFICATE) {
        return NGX_OK;
    }

    now = ngx_time();

    if (now >= cred->not_after) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "timpush_credential %ui: the certificate in \"%V\" "
                      "expired %T days ago: nothing is sent for this app "
                      "(its devices get 403 CertificateExpired) until it is "
                      "renewed in the Apple developer account and nginx "
                      "reloaded", cred->id, &cred->file,
                      (now - cred->not_after) / 86400);
        return NGX_DECLINED;
    }

    if (now < cred->not_before) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "timpush_credential %ui: the certificate in \"%V\" "
                      "is not valid yet (is the clock right?): nothing is "
                      "sent for this app (its devices get 403 "
                      "CertificateExpired)", cred->id, &cred->file);
        return NGX_DECLINED;
    }

    if (cred->not_after - now >= 30 * 86400) {
        return NGX_OK;
    }

    if (warn) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "timpush_credential %ui: the certificate in \"%V\" "
                      "expires in %T days: renew it in the Apple developer "
                      "account", cred->id, &cred->file,
                      (cred->not_after - now) / 86400);
    }

    return NGX_AGAIN;
}


/* whether a certificate is outside its validity dates now */

ngx_uint_t
ngx_http_timpush_credential_expired(ngx_http_timpush_credential_t *cred)
{
    return cred->auth == NGX_HTTP_TIMPUSH_AUTH_CERTIFICATE
           && (ngx_time() >= cred->not_after
               || ngx_time() < cred->not_before);
}


/* the certificate's dates as they are written (UTC), not against a clock */

static ngx_int_t
ngx_http_timpush_credential_validity(ngx_http_timpush_credential_t *cred)
{
    struct tm  tm;

    if (!ASN1_TIME_to_tm(X509_get0_notBefore(cred->cert), &tm)) {
        return NGX_ERROR;
    }

    cred->not_before = timegm(&tm);

    if (!ASN1_TIME_to_tm(X509_get0_notAfter(cred->cert), &tm)) {
        return NGX_ERROR;
    }

    cred->not_after = timegm(&tm);

    return NGX_OK;
}


static char *
ngx_http_timpush_credential_parse(ngx_conf_t *cf,
    ngx_http_timpush_credential_t *cred,
    ngx_http_timpush_credential_args_t *args)
{
    ngx_str_t   *value, *dst, name;
    ngx_uint_t   i;
    u_char      *eq;

    value = cf->args->elts;

    for (i = 2; i < cf->args->nelts; i++) {

        eq = ngx_strlchr(value[i].data, value[i].data + value[i].len, '=');
        if (eq == NULL) {
            goto invalid;
        }

        name.data = value[i].data;
        name.len = eq - value[i].data;

        if (name.len == 11
            && ngx_strncmp(name.data, "certificate", 11) == 0)
        {
            dst = &args->certificate;

        } else if (name.len == 13
                   && ngx_strncmp(name.data, "password_file", 13) == 0)
        {
            dst = &args->password_file;

        } else if (name.len == 3 && ngx_strncmp(name.data, "key", 3) == 0) {
            dst = &args->key;

        } else if (name.len == 6
                   && ngx_strncmp(name.data, "key_id", 6) == 0)
        {
            dst = &cred->key_id;

        } else if (name.len == 7
                   && ngx_strncmp(name.data, "team_id", 7) == 0)
        {
            dst = &cred->team_id;

        } else if (name.len == 5 && ngx_strncmp(name.data, "topic", 5) == 0) {
            dst = &cred->topic;

        } else if (name.len == 3 && ngx_strncmp(name.data, "env", 3) == 0) {
            dst = &args->env;

        } else {
            goto invalid;
        }

        dst->data = eq + 1;
        dst->len = value[i].data + value[i].len - dst->data;

        if (dst->len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "timpush_credential %ui: empty \"%V=\"",
                               cred->id, &name);
            return NGX_CONF_ERROR;
        }
    }

    if (args->env.len == 7 && ngx_strncmp(args->env.data, "sandbox", 7) == 0)
    {
        cred->env = NGX_HTTP_TIMPUSH_ENV_SANDBOX;

    } else if (args->env.len == 10
               && ngx_strncmp(args->env.data, "production", 10) == 0)
    {
        cred->env = NGX_HTTP_TIMPUSH_ENV_PRODUCTION;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_credential %ui: \"env=sandbox\" or "
                           "\"env=production\" is required", cred->id);
        return NGX_CONF_ERROR;
    }

    if ((args->certificate.len == 0) == (args->key.len == 0)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_credential %ui: either \"certificate=\" "
                           "(.p12) "
                           "or \"key=\" (.p8) is required", cred->id);
        return NGX_CONF_ERROR;
    }

    if (args->certificate.len) {
        if (args->password_file.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "timpush_credential %ui: \"password_file=\" is "
                               "required with \"certificate=\"", cred->id);
            return NGX_CONF_ERROR;
        }

        if (cred->key_id.len || cred->team_id.len) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "timpush_credential %ui: \"key_id=\" and "
                               "\"team_id=\" go with \"key=\"", cred->id);
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    if (args->password_file.len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_credential %ui: \"password_file=\" goes "
                           "with "
                           "\"certificate=\"", cred->id);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "timpush_credential %ui: invalid parameter \"%V\"",
                       cred->id, &value[i]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_timpush_credential_p12(ngx_conf_t *cf,
    ngx_http_timpush_credential_t *cred, ngx_str_t *password_file)
{
    u_char                        what[64];
    ngx_fd_t                      fd;
    ngx_int_t                     rc;
    ngx_str_t                     password;
    ngx_http_timpush_keys_t       keys;
    ngx_http_timpush_p12_read_t   p12;

    if (ngx_conf_full_name(cf->cycle, &cred->file, 1) != NGX_OK
        || ngx_conf_full_name(cf->cycle, password_file, 1) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    *ngx_sprintf(what, "timpush_credential %ui", cred->id) = '\0';

    if (ngx_http_timpush_secret_password(cf, what, "password_file",
                                         password_file, cf->temp_pool,
                                         &password)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* said here, with errno: the child only says whether it could */

    fd = ngx_open_file(cred->file.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "timpush_credential %ui: cannot read certificate "
                           "\"%V\"", cred->id, &cred->file);
        ngx_explicit_memzero(password.data, password.len);
        return NGX_CONF_ERROR;
    }

    ngx_close_file(fd);

    ngx_http_timpush_secret_mode(cf, what, "certificate", &cred->file);

    p12.file = &cred->file;
    p12.password = &password;

    rc = ngx_http_timpush_keys_isolated(cf,
                                        ngx_http_timpush_credential_read_p12,
                                        &p12, &keys);

    /* the password is wiped on every path, once the file is read */

    ngx_explicit_memzero(password.data, password.len);

    switch (rc) {

    case NGX_OK:
        break;

    case NGX_HTTP_TIMPUSH_KEY_NOT_P12:
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_credential %ui: \"%V\" is not a PKCS#12 "
                           "(.p12) file", cred->id, &cred->file);
        return NGX_CONF_ERROR;

    case NGX_HTTP_TIMPUSH_KEY_WRONG_PASSWORD:
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_credential %ui: wrong password for \"%V\" "
                           "(from \"%V\")", cred->id, &cred->file,
                           password_file);
        return NGX_CONF_ERROR;

    case NGX_HTTP_TIMPUSH_KEY_UNDECRYPTABLE:
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_credential %ui: cannot decrypt \"%V\" "
                           "with the password from \"%V\" (a damaged file, "
                           "or an algorithm OpenSSL does not know%s)",
                           cred->id, &cred->file, password_file,
                           (keys.flags & NGX_HTTP_TIMPUSH_KEY_NO_LEGACY)
                           ? "; its legacy provider is missing" : "");
        return NGX_CONF_ERROR;

    case NGX_HTTP_TIMPUSH_KEY_INCOMPLETE:
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_credential %ui: \"%V\" must hold a "
                           "certificate and its private key", cred->id,
                           &cred->file);
        return NGX_CONF_ERROR;

    default:
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_credential %ui: cannot load \"%V\"",
                           cred->id, &cred->file);
        return NGX_CONF_ERROR;
    }

    cred->pkey = keys.pkey;
    cred->cert = keys.cert;
    cred->chain = keys.chain;

    if (keys.flags & NGX_HTTP_TIMPUSH_KEY_LEGACY) {
        ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0,
                           "timpush_credential %ui: \"%V\" uses legacy "
                           "encryption (RC2, 3DES), read with OpenSSL's "
                           "legacy provider", cred->id, &cred->file);
    }

    return ngx_http_timpush_credential_p12_check(cf, cred);
}


/*
 * In the child (isolate.c): the MAC, then the contents.  Older Keychain
 * Access exports encrypt with RC2-40 and 3DES, which OpenSSL 3 keeps in
 * its "legacy" provider: it is loaded for such a file only.
 */

static ngx_int_t
ngx_http_timpush_credential_read_p12(void *data, ngx_http_timpush_keys_t *keys)
{
    ngx_http_timpush_p12_read_t *r = data;

    BIO            *bio;
    PKCS12         *p12;
    ngx_int_t       rc;
    OSSL_PROVIDER  *legacy, *deflt;

    bio = BIO_new_file((char *) r->file->data, "rb");
    if (bio == NULL) {
        return NGX_ERROR;
    }

    p12 = d2i_PKCS12_bio(bio, NULL);
    BIO_free(bio);

    if (p12 == NULL) {
        return NGX_HTTP_TIMPUSH_KEY_NOT_P12;
    }

    if (PKCS12_mac_present(p12)
        && !PKCS12_verify_mac(p12, (char *) r->password->data,
                              r->password->len))
    {
        PKCS12_free(p12);
        return NGX_HTTP_TIMPUSH_KEY_WRONG_PASSWORD;
    }

    rc = NGX_OK;

    if (!PKCS12_parse(p12, (char *) r->password->data, &keys->pkey,
                      &keys->cert, &keys->chain))
    {
        /* loading one provider by name stops the default one loading */

        legacy = OSSL_PROVIDER_load(NULL, "legacy");
        deflt = legacy ? OSSL_PROVIDER_load(NULL, "default") : NULL;

        if (legacy == NULL) {
            keys->flags |= NGX_HTTP_TIMPUSH_KEY_NO_LEGACY;
        }

        if (legacy && deflt
            && PKCS12_parse(p12, (char *) r->password->data, &keys->pkey,
                            &keys->cert, &keys->chain))
        {
            keys->flags |= NGX_HTTP_TIMPUSH_KEY_LEGACY;

        } else {
            rc = NGX_HTTP_TIMPUSH_KEY_UNDECRYPTABLE;
        }
    }

    PKCS12_free(p12);

    if (rc == NGX_OK && (keys->cert == NULL || keys->pkey == NULL)) {
        rc = NGX_HTTP_TIMPUSH_KEY_INCOMPLETE;
    }

    return rc;
}


static char *
ngx_http_timpush_credential_p12_check(ngx_conf_t *cf,
    ngx_http_timpush_credential_t *cred)
{
    ngx_str_t  uid;

    if (!X509_check_private_key(cred->cert, cred->pkey)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_credential %ui: the private key in \"%V\" "
                           "does "
                           "not match its certificate", cred->id,
                           &cred->file);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_timpush_credential_validity(cred) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_credential %ui: the certificate in \"%V\" "
                           "has unreadable validity dates", cred->id,
                           &cred->file);
        return NGX_CONF_ERROR;
    }

    if (cred->topic.len) {
        return NGX_CONF_OK;
    }

    if (ngx_http_timpush_cert_uid(cf->pool, cred->cert, &uid) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_credential %ui: the certificate in \"%V\" "
                           "has no "
                           "UID (bundle id) in its subject: set \"topic=\"",
                           cred->id, &cred->file);
        return NGX_CONF_ERROR;
    }

    cred->topic = uid;

    return NGX_CONF_OK;
}


static char *
ngx_http_timpush_credential_p8(ngx_conf_t *cf,
    ngx_http_timpush_credential_t *cred)
{
    u_char                   *p, *last, what[64];
    ngx_int_t                 rc;
    ngx_str_t                 base, pem;
    ngx_http_timpush_keys_t   keys;

    if (ngx_conf_full_name(cf->cycle, &cred->file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (cred->key_id.len == 0) {
        /* AuthKey_<key id>.p8 is how Apple names the download */

        last = cred->file.data + cred->file.len;
        p = last;

        while (p > cred->file.data && p[-1] != '/') {
            p--;
        }

        base.data = p;
        base.len = last - p;

        if (base.len > 11 && ngx_strncmp(base.data, "AuthKey_", 8) == 0
            && ngx_strncmp(last - 3, ".p8", 3) == 0)
        {
            cred->key_id.data = base.data + 8;
            cred->key_id.len = base.len - 11;
        }
    }

    if (ngx_http_timpush_check_id(&cred->key_id) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_credential %ui: \"key_id=\" is required "
                           "(the "
                           "10-character key ID, letters and digits) unless "
                           "the file is named AuthKey_<key id>.p8",
                           cred->id);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_timpush_check_id(&cred->team_id) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_credential %ui: \"team_id=\" is required "
                           "(the "
                           "10-character team ID, letters and digits)",
                           cred->id);
        return NGX_CONF_ERROR;
    }

    if (cred->topic.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_credential %ui: \"topic=\" (the app's "
                           "bundle "
                           "id) is required with \"key=\"", cred->id);
        return NGX_CONF_ERROR;
    }

    /* the key's text never leaves secure memory (secret.c) */

    *ngx_sprintf(what, "timpush_credential %ui", cred->id) = '\0';

    if (ngx_http_timpush_secret_file(cf, what, "key", &cred->file,
                                     cf->temp_pool, &pem)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    rc = ngx_http_timpush_keys_isolated(cf, ngx_http_timpush_credential_read_p8,
                                        &pem, &keys);

    ngx_explicit_memzero(pem.data, pem.len);

    cred->pkey = keys.pkey;

    if (rc == NGX_HTTP_TIMPUSH_KEY_NOT_PEM) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_credential %ui: \"%V\" is not an "
                           "unencrypted PEM private key (.p8)", cred->id,
                           &cred->file);
        return NGX_CONF_ERROR;
    }

    if (rc == NGX_HTTP_TIMPUSH_KEY_NOT_P256) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "timpush_credential %ui: the key in \"%V\" is not "
                           "a P-256 (ES256) key as APNs requires", cred->id,
                           &cred->file);
        return NGX_CONF_ERROR;
    }

    if (rc != NGX_OK) {
        ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                      "timpush_credential %ui: cannot load the key in "
                      "\"%V\"", cred->id, &cred->file);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* in the child (isolate.c): an unencrypted PEM P-256 key */

static ngx_int_t
ngx_http_timpush_credential_read_p8(void *data, ngx_http_timpush_keys_t *keys)
{
    ngx_str_t *pem = data;

    BIO     *bio;
    char     group[64];
    size_t   len;

    bio = BIO_new_mem_buf(pem->data, pem->len);
    if (bio == NULL) {
        return NGX_ERROR;
    }

    keys->pkey = PEM_read_bio_PrivateKey(bio, NULL,
                                         ngx_http_timpush_no_password, NULL);
    BIO_free(bio);

    if (keys->pkey == NULL) {
        return NGX_HTTP_TIMPUSH_KEY_NOT_PEM;
    }

    if (EVP_PKEY_get_base_id(keys->pkey) != EVP_PKEY_EC
        || !EVP_PKEY_get_group_name(keys->pkey, group, sizeof(group), &len)
        || ngx_strcmp(group, "prime256v1") != 0)
    {
        return NGX_HTTP_TIMPUSH_KEY_NOT_P256;
    }

    return NGX_OK;
}


/* an encrypted key must fail, not prompt on the terminal */

static int
ngx_http_timpush_no_password(char *buf, int size, int rwflag, void *u)
{
    return -1;
}


static ngx_int_t
ngx_http_timpush_check_id(ngx_str_t *s)
{
    u_char  c;
    size_t  i;

    if (s->len == 0 || s->len > 32) {
        return NGX_DECLINED;
    }

    for (i = 0; i < s->len; i++) {
        c = s->data[i];

        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z')
              || (c >= 'a' && c <= 'z')))
        {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


static void
ngx_http_timpush_credential_cleanup(void *data)
{
    ngx_http_timpush_credential_t  *cred = data;

    if (cred->pkey) {
        EVP_PKEY_free(cred->pkey);
    }

    if (cred->cert) {
        X509_free(cred->cert);
    }

    if (cred->chain) {
        sk_X509_pop_free(cred->chain, X509_free);
    }
}


ngx_http_timpush_credential_t *
ngx_http_timpush_credential_find(ngx_http_timpush_main_conf_t *tmcf,
    ngx_uint_t id)
{
    ngx_uint_t                       i;
    ngx_http_timpush_credential_t  **cred;

    cred = tmcf->credentials.elts;

    for (i = 0; i < tmcf->credentials.nelts; i++) {
        if (cred[i]->id == id) {
            return cred[i];
        }
    }

    return NULL;
}
