
/*
 * Copyright (C) timpush authors
 *
 * Unit tests of ngx_http_timpush_render.c (DESIGN §4, §6), printing TAP.
 * Most tests are rows of one table: a push body, then the error, or the
 * payload written with badge 1 and the message fields expected.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <stdio.h>
#include <yajl/yajl_tree.h>

#include "ngx_stubs.h"
#include "ngx_http_timpush_render.h"


#define ELLIPSIS  "\xe2\x80\xa6"


typedef struct {
    const char  *name;
    const char  *body;
    const char  *error;      /* "code: message", or NULL */
    const char  *payload;    /* with badge 1; NULL: not built */
    const char  *checks;     /* "key=value|...": see check_fields() */
    ngx_uint_t   max;        /* max_recipients; 0: 10000 */
} test_case_t;


static ngx_uint_t  tests;
static ngx_uint_t  failures;


static void ok(int cond, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));


static const char *
skip_name(ngx_uint_t skip)
{
    static const char  *names[] = {
        "none", "disabled", "online_only", "no_content"
    };

    return skip < 4 ? names[skip] : "?";
}


static void
ok(int cond, const char *name, const char *fmt, ...)
{
    va_list  args;

    tests++;

    if (cond) {
        printf("ok %lu - %s\n", (unsigned long) tests, name);
        return;
    }

    failures++;
    printf("not ok %lu - %s\n", (unsigned long) tests, name);

    if (fmt) {
        printf("# ");
        va_start(args, fmt);
        vprintf(fmt, args);
        va_end(args);
        printf("\n");
    }
}


/* the value of a message field, as the "checks" column spells it */

static void
field(ngx_http_timpush_message_t *msg, ngx_http_timpush_payload_t *pl,
    const char *key, char *buf, size_t size)
{
    size_t      n;
    ngx_str_t  *to;
    ngx_uint_t  i;

    if (strcmp(key, "skip") == 0) {
        snprintf(buf, size, "%s", skip_name(msg->skip));

    } else if (strcmp(key, "type") == 0) {
        snprintf(buf, size, "%.*s", (int) msg->push_type.len,
                 msg->push_type.data);

    } else if (strcmp(key, "topic") == 0) {
        snprintf(buf, size, "%.*s", (int) msg->topic_suffix.len,
                 msg->topic_suffix.data);

    } else if (strcmp(key, "prio") == 0) {
        snprintf(buf, size, "%lu", (unsigned long) msg->priority);

    } else if (strcmp(key, "max") == 0) {
        snprintf(buf, size, "%zu", msg->max_payload);

    } else if (strcmp(key, "exp") == 0) {
        snprintf(buf, size, "%lld", (long long) msg->expiration);

    } else if (strcmp(key, "collapse") == 0) {
        snprintf(buf, size, "%.*s", (int) msg->collapse_id.len,
                 msg->collapse_id.data);

    } else if (strcmp(key, "body") == 0) {
        snprintf(buf, size, "%.*s", (int) msg->body.len, msg->body.data);

    } else if (strcmp(key, "badge") == 0) {
        snprintf(buf, size, "%d", pl ? (int) pl->has_badge : -1);

    } else if (strcmp(key, "to") == 0) {
        to = msg->to.elts;
        buf[0] = '\0';

        for (i = 0; i < msg->to.nelts; i++) {
            n = strlen(buf);
            snprintf(buf + n, size - n, "%s%.*s", i ? "," : "",
                     (int) to[i].len, to[i].data);
        }

    } else {
        snprintf(buf, size, "<unknown key %s>", key);
    }
}


static int
check_fields(ngx_http_timpush_message_t *msg, ngx_http_timpush_payload_t *pl,
    const char *checks, char *why, size_t size)
{
    char         key[32], want[1024], got[2048];
    size_t       n;
    const char  *p, *eq, *end;

    for (p = checks; p && *p; p = *end ? end + 1 : end) {
        end = strchr(p, '|');
        if (end == NULL) {
            end = p + strlen(p);
        }

        eq = memchr(p, '=', end - p);
        n = eq - p;
        snprintf(key, sizeof(key), "%.*s", (int) n, p);
        snprintf(want, sizeof(want), "%.*s", (int) (end - eq - 1), eq + 1);

        field(msg, pl, key, got, sizeof(got));

        if (strcmp(want, got) != 0) {
            snprintf(why, size, "%s: want \"%s\", got \"%s\"", key, want,
                     got);
            return 0;
        }
    }

    return 1;
}


/* the payload must be JSON that yajl reads back, with an "aps" object */

static int
valid_json(u_char *p, size_t len)
{
    char      *text;
    yajl_val   v, aps;

    static const char  *path[] = { "aps", NULL };

    text = strndup((char *) p, len);
    v = yajl_tree_parse(text, NULL, 0);
    free(text);

    if (v == NULL) {
        return 0;
    }

    aps = yajl_tree_get(v, path, yajl_t_object);
    yajl_tree_free(v);

    return aps != NULL;
}


static void
run_case(test_case_t *t)
{
    u_char                          buf[8192], *end;
    char                            why[4096], got[512];
    size_t                          len;
    ngx_int_t                       rc;
    ngx_pool_t                     *pool;
    ngx_http_timpush_payload_t      pl;
    ngx_http_timpush_message_t      msg;
    ngx_http_timpush_render_err_t   err;

    pool = ngx_create_pool(1024, NULL);

    rc = ngx_http_timpush_message_parse(pool, (u_char *) t->body,
                                        strlen(t->body),
                                        t->max ? t->max : 10000, &msg, &err);

    if (t->error) {
        snprintf(got, sizeof(got), "%s: %s", rc == NGX_DECLINED ? err.code
                                             : "(accepted)",
                 rc == NGX_DECLINED ? (char *) err.msg : "");
        ok(strcmp(got, t->error) == 0, t->name, "want \"%s\", got \"%s\"",
           t->error, got);
        goto done;
    }

    if (rc != NGX_OK) {
        ok(0, t->name, "refused: %s: %s", err.code, err.msg);
        goto done;
    }

    if (t->payload == NULL) {
        ok(check_fields(&msg, NULL, t->checks, why, sizeof(why)), t->name,
           "%s", why);
        goto done;
    }

    rc = ngx_http_timpush_payload_build(pool, &msg, &pl, &err);
    if (rc != NGX_OK) {
        ok(0, t->name, "payload refused: %s: %s", err.code, err.msg);
        goto done;
    }

    len = ngx_http_timpush_payload_len(&pl, 1);
    end = ngx_http_timpush_payload_write(buf, &pl, 1);

    if ((size_t) (end - buf) != len
        || strlen(t->payload) != len
        || memcmp(buf, t->payload, len) != 0)
    {
        ok(0, t->name, "want %s\n# got  %.*s", t->payload, (int) len, buf);
        goto done;
    }

    if (!valid_json(buf, len)) {
        ok(0, t->name, "not JSON: %.*s", (int) len, buf);
        goto done;
    }

    ok(check_fields(&msg, &pl, t->checks, why, sizeof(why)), t->name, "%s",
       why);

done:

    ngx_destroy_pool(pool);
}


#define TEXT(s)  "{\"to\":\"u\",\"elems\":[{\"type\":\"text\",\"text\":\"" s \
                 "\"}]"
#define OP(s)    TEXT("hi") ",\"offline_push\":{" s "}}"
#define ALERT(s) "{\"aps\":{\"alert\":" s ",\"badge\":1,\"sound\":\"default\"}}"
#define HI(s)    "{\"aps\":{\"alert\":\"hi\",\"badge\":1" s "}"
#define BAD(s)   "invalid_field: " s

#define TYPE_ERR  "type: must be one of text, audio, file, image, video, " \
                  "location, face, custom"
#define USER_ERR  ": must be UTF-8 without control characters"


static test_case_t  cases[] = {

    /* the seed's examples */

    { "seed: Denny to Vinson with ext",
      "{\"to\":\"vinson\",\"from\":{\"user_id\":\"denny\",\"nickname\":"
      "\"Denny\"},\"elems\":[{\"type\":\"text\",\"text\":\"Text message\"}],"
      "\"offline_push\":{\"ext\":\"jump to denny\"}}",
      NULL,
      "{\"aps\":{\"alert\":\"Denny: Text message\",\"badge\":1,"
      "\"sound\":\"default\"},\"ext\":\"jump to denny\"}",
      "to=vinson|type=alert|prio=10|topic=|max=4096|skip=none|badge=1", 0 },

    { "seed: group message from a member with a name card",
      "{\"to\":[\"vinson\"],\"from\":{\"user_id\":\"denny\",\"nickname\":"
      "\"Denny\",\"name_card\":\"Den the Boss\"},\"group\":{\"id\":\"g1\","
      "\"name\":\"Team\"},\"elems\":[{\"type\":\"text\",\"text\":\"lunch?\"}]}",
      NULL, ALERT("\"Den the Boss (Team): lunch?\""), NULL, 0 },

    { "seed: an image",
      "{\"to\":\"vinson\",\"from\":{\"nickname\":\"Denny\"},"
      "\"elems\":[{\"type\":\"image\"}]}",
      NULL, ALERT("\"Denny: [image]\""), NULL, 0 },

    { "seed: a custom message with desc",
      "{\"to\":\"vinson\",\"from\":{\"nickname\":\"Denny\"},\"elems\":"
      "[{\"type\":\"custom\",\"data\":\"{\\\"order\\\":7}\","
      "\"desc\":\"New order\"}]}",
      NULL, ALERT("\"Denny: New order\""), NULL, 0 },

    { "seed: a custom message without desc is not pushed",
      "{\"to\":\"vinson\",\"from\":{\"nickname\":\"Denny\"},\"elems\":"
      "[{\"type\":\"custom\",\"data\":\"{\\\"order\\\":7}\"}]}",
      NULL, NULL, "skip=no_content", 0 },

    { "seed: title Harvy, desc You have a call invitation.",
      "{\"to\":\"vinson\",\"from\":{\"nickname\":\"Denny\"},\"elems\":"
      "[{\"type\":\"custom\",\"data\":\"call\"}],\"offline_push\":"
      "{\"title\":\"Harvy\",\"desc\":\"You have a call invitation.\"}}",
      NULL,
      ALERT("{\"title\":\"Harvy\",\"body\":\"You have a call invitation.\"}"),
      NULL, 0 },

    /* §6.1 element types and joins */

    { "text", TEXT("hello") "}", NULL, ALERT("\"hello\""), NULL, 0 },

#define ELEM(name, elem, shown)                                               \
    { name, "{\"to\":\"u\",\"elems\":[" elem "]}", NULL, ALERT(shown),        \
      NULL, 0 }

    ELEM("audio", "{\"type\":\"audio\",\"url\":\"x\"}", "\"[audio]\""),
    ELEM("file", "{\"type\":\"file\"}", "\"[file]\""),
    ELEM("image", "{\"type\":\"image\"}", "\"[image]\""),
    ELEM("video", "{\"type\":\"video\"}", "\"[video]\""),
    ELEM("location", "{\"type\":\"location\"}", "\"[location]\""),
    ELEM("location with desc shows [location]",
         "{\"type\":\"location\",\"desc\":\"Paris\"}", "\"[location]\""),
    ELEM("face", "{\"type\":\"face\",\"index\":3}", "\"[face]\""),
    ELEM("custom shows desc, not data",
         "{\"type\":\"custom\",\"data\":\"secret\",\"desc\":\"d\"}", "\"d\""),
    ELEM("several elements joined in order, no separator",
         "{\"type\":\"text\",\"text\":\"look \"},{\"type\":\"image\"},"
         "{\"type\":\"text\",\"text\":\" and \"},{\"type\":\"face\"},"
         "{\"type\":\"custom\",\"desc\":\"!\"},{\"type\":\"custom\"}",
         "\"look [image] and [face]!\""),
    ELEM("every placeholder",
         "{\"type\":\"audio\"},{\"type\":\"file\"},{\"type\":\"image\"},"
         "{\"type\":\"video\"},{\"type\":\"location\"},{\"type\":\"face\"}",
         "\"[audio][file][image][video][location][face]\""),

    /* §6.2, §6.3 names */

#define FROM(from, group)                                                     \
    "{\"to\":\"u\",\"from\":" from group ",\"elems\":[{\"type\":\"text\","   \
    "\"text\":\"hi\"}]}"

    { "one-to-one with nickname",
      FROM("{\"nickname\":\"Denny\"}", ""), NULL, ALERT("\"Denny: hi\""),
      "body=Denny: hi", 0 },
    { "one-to-one without nickname",
      FROM("{\"user_id\":\"denny\"}", ""), NULL, ALERT("\"hi\""), NULL, 0 },
    { "one-to-one with empty nickname",
      FROM("{\"nickname\":\"\"}", ""), NULL, ALERT("\"hi\""), NULL, 0 },
    { "one-to-one ignores the name card",
      FROM("{\"nickname\":\"Denny\",\"name_card\":\"Den\"}", ""), NULL,
      ALERT("\"Denny: hi\""), NULL, 0 },
    { "one-to-one: a name card alone shows no name",
      FROM("{\"name_card\":\"Den\"}", ""), NULL, ALERT("\"hi\""), NULL, 0 },
    { "group with name card",
      FROM("{\"nickname\":\"Denny\",\"name_card\":\"Den\"}",
           ",\"group\":{\"id\":\"g\",\"name\":\"Team\"}"), NULL,
      ALERT("\"Den (Team): hi\""), NULL, 0 },
    { "group with nickname only",
      FROM("{\"nickname\":\"Denny\"}", ",\"group\":{\"name\":\"Team\"}"), NULL,
      ALERT("\"Denny (Team): hi\""), NULL, 0 },
    { "group with an empty name card: nickname",
      FROM("{\"nickname\":\"Denny\",\"name_card\":\"\"}",
           ",\"group\":{\"name\":\"Team\"}"), NULL,
      ALERT("\"Denny (Team): hi\""), NULL, 0 },
    { "group with neither name",
      FROM("{\"user_id\":\"denny\"}", ",\"group\":{\"name\":\"Team\"}"), NULL,
      ALERT("\"(Team): hi\""), NULL, 0 },
    { "group without from",
      "{\"to\":\"u\",\"group\":{\"name\":\"Team\"},\"elems\":[{\"type\":"
      "\"text\",\"text\":\"hi\"}]}", NULL, ALERT("\"(Team): hi\""), NULL, 0 },
    { "group without group name",
      FROM("{\"nickname\":\"Denny\",\"name_card\":\"Den\"}",
           ",\"group\":{\"id\":\"g\"}"), NULL, ALERT("\"Den: hi\""), NULL, 0 },
    { "group with an empty group name",
      FROM("{\"nickname\":\"Denny\"}", ",\"group\":{\"name\":\"\"}"), NULL,
      ALERT("\"Denny: hi\""), NULL, 0 },
    { "group without any name",
      FROM("{}", ",\"group\":{}"), NULL, ALERT("\"hi\""), NULL, 0 },
    { "group null is one-to-one",
      FROM("{\"nickname\":\"Denny\",\"name_card\":\"Den\"}",
           ",\"group\":null"), NULL, ALERT("\"Denny: hi\""), NULL, 0 },
    { "desc replaces the whole body",
      "{\"to\":\"u\",\"from\":{\"nickname\":\"Denny\"},\"group\":{\"name\":"
      "\"Team\"},\"elems\":[{\"type\":\"text\",\"text\":\"hi\"}],"
      "\"offline_push\":{\"desc\":\"Custom\"}}",
      NULL, ALERT("\"Custom\""), "body=Custom", 0 },
    { "empty desc does not replace",
      OP("\"desc\":\"\""), NULL, ALERT("\"hi\""), NULL, 0 },
    { "desc pushes a custom element without desc",
      "{\"to\":\"u\",\"elems\":[{\"type\":\"custom\"}],\"offline_push\":"
      "{\"desc\":\"D\"}}", NULL, ALERT("\"D\""), "skip=none", 0 },
    { "desc pushes a message without elems",
      "{\"to\":\"u\",\"offline_push\":{\"desc\":\"D\"}}", NULL,
      ALERT("\"D\""), NULL, 0 },

    /* §6.4 what is not pushed */

    { "custom with empty desc: no_content",
      "{\"to\":\"u\",\"from\":{\"nickname\":\"N\"},\"elems\":[{\"type\":"
      "\"custom\",\"desc\":\"\"}]}", NULL, NULL, "skip=no_content|body=", 0 },
    { "empty text: no_content",
      TEXT("") "}", NULL, NULL, "skip=no_content", 0 },
    { "no elems: no_content",
      "{\"to\":\"u\"}", NULL, NULL, "skip=no_content", 0 },
    { "empty elems: no_content",
      "{\"to\":\"u\",\"elems\":[]}", NULL, NULL, "skip=no_content", 0 },
    { "disable: disabled",
      OP("\"disable\":true"), NULL, NULL, "skip=disabled", 0 },
    { "disable false",
      OP("\"disable\":false"), NULL, NULL, "skip=none", 0 },
    { "online_user_only: online_only",
      TEXT("hi") ",\"online_user_only\":true}", NULL, NULL,
      "skip=online_only", 0 },
    { "online_user_only false",
      TEXT("hi") ",\"online_user_only\":false}", NULL, NULL, "skip=none", 0 },
    { "disable before online_only",
      TEXT("hi") ",\"online_user_only\":true,\"offline_push\":"
      "{\"disable\":true}}", NULL, NULL, "skip=disabled", 0 },
    { "disable before no_content",
      "{\"to\":\"u\",\"elems\":[{\"type\":\"custom\"}],\"offline_push\":"
      "{\"disable\":true}}", NULL, NULL, "skip=disabled", 0 },
    { "online_only before no_content",
      "{\"to\":\"u\",\"elems\":[{\"type\":\"custom\"}],"
      "\"online_user_only\":true}", NULL, NULL, "skip=online_only", 0 },

    /* §6.5 alert */

    { "title", OP("\"title\":\"T\""), NULL,
      ALERT("{\"title\":\"T\",\"body\":\"hi\"}"), NULL, 0 },
    { "subtitle", OP("\"subtitle\":\"S\""), NULL,
      ALERT("{\"subtitle\":\"S\",\"body\":\"hi\"}"), NULL, 0 },
    { "title and subtitle", OP("\"title\":\"T\",\"subtitle\":\"S\""), NULL,
      ALERT("{\"title\":\"T\",\"subtitle\":\"S\",\"body\":\"hi\"}"), NULL,
      0 },
    { "empty title and subtitle", OP("\"title\":\"\",\"subtitle\":\"\""),
      NULL, ALERT("\"hi\""), NULL, 0 },

    /* §6.6 sound */

    { "sound absent: default", OP(""), NULL,
      HI(",\"sound\":\"default\"}"), NULL, 0 },
    { "sound empty: default", OP("\"sound\":\"\""), NULL,
      HI(",\"sound\":\"default\"}"), NULL, 0 },
    { "sound null: default", OP("\"sound\":null"), NULL,
      HI(",\"sound\":\"default\"}"), NULL, 0 },
    { "sound default", OP("\"sound\":\"default\""), NULL,
      HI(",\"sound\":\"default\"}"), NULL, 0 },
    { "sound push.no_sound: no sound key", OP("\"sound\":\"push.no_sound\""),
      NULL, HI("}"), NULL, 0 },
    { "sound file name", OP("\"sound\":\"phone_ringing.mp3\""), NULL,
      HI(",\"sound\":\"phone_ringing.mp3\"}"), NULL, 0 },

    /* §6.7, §6.8 badge and other keys */

    { "badge by default", OP(""), NULL, HI(",\"sound\":\"default\"}"),
      "badge=1", 0 },
    { "ignore_badge: no badge", OP("\"ignore_badge\":true"), NULL,
      "{\"aps\":{\"alert\":\"hi\",\"sound\":\"default\"}}", "badge=0", 0 },
    { "ext top-level, verbatim",
      OP("\"ext\":\"{\\\"jump\\\":\\\"denny\\\"}\""), NULL,
      HI(",\"sound\":\"default\"},\"ext\":\"{\\\"jump\\\":\\\"denny\\\"}\""),
      NULL, 0 },
    { "image top-level and mutable-content",
      OP("\"image\":\"https://x/y.png\""), NULL,
      HI(",\"sound\":\"default\",\"mutable-content\":1},"
         "\"image\":\"https://x/y.png\""), NULL, 0 },
    { "mutable_content", OP("\"mutable_content\":true"), NULL,
      HI(",\"sound\":\"default\",\"mutable-content\":1}"), NULL, 0 },
    { "content_available with an alert",
      OP("\"content_available\":true"), NULL,
      HI(",\"sound\":\"default\",\"content-available\":1}"),
      "type=alert|prio=10|badge=1", 0 },
    { "interruption_level passive", OP("\"interruption_level\":\"passive\""),
      NULL, HI(",\"sound\":\"default\",\"interruption-level\":\"passive\"}"),
      NULL, 0 },
    { "interruption_level active", OP("\"interruption_level\":\"active\""),
      NULL, HI(",\"sound\":\"default\",\"interruption-level\":\"active\"}"),
      NULL, 0 },
    { "interruption_level time-sensitive",
      OP("\"interruption_level\":\"time-sensitive\""), NULL,
      HI(",\"sound\":\"default\",\"interruption-level\":"
         "\"time-sensitive\"}"), NULL, 0 },
    { "interruption_level critical",
      OP("\"interruption_level\":\"critical\""), NULL,
      HI(",\"sound\":\"default\",\"interruption-level\":\"critical\"}"),
      NULL, 0 },
    { "interruption_level empty", OP("\"interruption_level\":\"\""), NULL,
      HI(",\"sound\":\"default\"}"), NULL, 0 },
    { "category", OP("\"category\":\"INVITE\""), NULL,
      HI(",\"sound\":\"default\",\"category\":\"INVITE\"}"), NULL, 0 },
    { "thread_id", OP("\"thread_id\":\"g1\""), NULL,
      HI(",\"sound\":\"default\",\"thread-id\":\"g1\"}"), NULL, 0 },
    { "every key, in the documented order",
      OP("\"thread_id\":\"th\",\"category\":\"c\",\"image\":\"i\","
         "\"interruption_level\":\"active\",\"content_available\":true,"
         "\"ext\":\"e\",\"sound\":\"s.caf\",\"title\":\"T\","
         "\"subtitle\":\"S\",\"mutable_content\":true"), NULL,
      "{\"aps\":{\"alert\":{\"title\":\"T\",\"subtitle\":\"S\",\"body\":"
      "\"hi\"},\"badge\":1,\"sound\":\"s.caf\",\"content-available\":1,"
      "\"mutable-content\":1,\"interruption-level\":\"active\","
      "\"category\":\"c\",\"thread-id\":\"th\"},\"ext\":\"e\","
      "\"image\":\"i\"}", NULL, 0 },

    /* §6.9 push types */

    { "background: content-available alone",
      "{\"to\":\"u\",\"elems\":[{\"type\":\"custom\"}],\"offline_push\":"
      "{\"content_available\":true}}", NULL,
      "{\"aps\":{\"content-available\":1}}",
      "skip=none|type=background|prio=5|badge=0|topic=|max=4096", 0 },
    { "background keeps ext, drops alert keys",
      "{\"to\":\"u\",\"offline_push\":{\"content_available\":true,"
      "\"ext\":\"sync\",\"title\":\"T\",\"sound\":\"s\",\"image\":\"i\","
      "\"category\":\"c\",\"thread_id\":\"t\",\"mutable_content\":true,"
      "\"interruption_level\":\"active\"}}", NULL,
      "{\"aps\":{\"content-available\":1},\"ext\":\"sync\"}",
      "type=background|badge=0", 0 },
    { "background priority low stays low",
      "{\"to\":\"u\",\"priority\":\"low\",\"offline_push\":"
      "{\"content_available\":true}}", NULL,
      "{\"aps\":{\"content-available\":1}}", "type=background|prio=1", 0 },
    { "background priority high becomes 5",
      "{\"to\":\"u\",\"priority\":\"high\",\"offline_push\":"
      "{\"content_available\":true}}", NULL, NULL,
      "type=background|prio=5", 0 },
    { "voip", OP("\"voip\":true"), NULL, HI(",\"sound\":\"default\"}"),
      "type=voip|topic=.voip|max=5120|prio=10", 0 },
    { "voip without content is not pushed",
      "{\"to\":\"u\",\"offline_push\":{\"voip\":true}}", NULL, NULL,
      "skip=no_content", 0 },
    { "voip with content_available and no content",
      "{\"to\":\"u\",\"offline_push\":{\"voip\":true,"
      "\"content_available\":true}}", NULL,
      "{\"aps\":{\"content-available\":1}}",
      "skip=none|type=voip|topic=.voip|max=5120|prio=10", 0 },

    /* priority, expiration, collapse id */

    { "priority absent: 10", OP(""), NULL, NULL, "prio=10", 0 },
    { "priority high: 10", TEXT("x") ",\"priority\":\"high\"}", NULL, NULL,
      "prio=10", 0 },
    { "priority normal: 5", TEXT("x") ",\"priority\":\"normal\"}", NULL,
      NULL, "prio=5", 0 },
    { "priority low: 1", TEXT("x") ",\"priority\":\"low\"}", NULL, NULL,
      "prio=1", 0 },
    { "priority null: 10", TEXT("x") ",\"priority\":null}", NULL, NULL,
      "prio=10", 0 },
    { "priority urgent refused", TEXT("x") ",\"priority\":\"urgent\"}",
      BAD("priority: must be \"high\", \"normal\" or \"low\""), NULL, NULL,
      0 },
    { "priority 10 refused", TEXT("x") ",\"priority\":10}",
      BAD("priority: must be \"high\", \"normal\" or \"low\""), NULL, NULL,
      0 },
    { "priority HIGH refused", TEXT("x") ",\"priority\":\"HIGH\"}",
      BAD("priority: must be \"high\", \"normal\" or \"low\""), NULL, NULL,
      0 },
    { "expiration absent: -1", OP(""), NULL, NULL, "exp=-1", 0 },
    { "expiration 0", TEXT("x") ",\"expiration\":0}", NULL, NULL, "exp=0",
      0 },
    { "expiration unix seconds", TEXT("x") ",\"expiration\":1767225600}",
      NULL, NULL, "exp=1767225600", 0 },

#define EXP_ERR  BAD("expiration: must be an integer >= 0 (unix seconds)")

    { "expiration -1 refused", TEXT("x") ",\"expiration\":-1}", EXP_ERR,
      NULL, NULL, 0 },
    { "expiration 1.5 refused", TEXT("x") ",\"expiration\":1.5}", EXP_ERR,
      NULL, NULL, 0 },
    { "expiration 1e9 refused", TEXT("x") ",\"expiration\":1e9}", EXP_ERR,
      NULL, NULL, 0 },
    { "expiration object refused", TEXT("x") ",\"expiration\":{}}",
      EXP_ERR, NULL, NULL, 0 },
    { "expiration true refused", TEXT("x") ",\"expiration\":true}",
      EXP_ERR, NULL, NULL, 0 },
    { "expiration 01 refused", TEXT("x") ",\"expiration\":01}",
      "invalid_json: parse error: after key and value, inside map, I "
      "expect ',' or '}'", NULL, NULL, 0 },
    { "expiration string refused", TEXT("x") ",\"expiration\":\"1\"}",
      EXP_ERR, NULL, NULL, 0 },
    { "expiration 19 digits refused",
      TEXT("x") ",\"expiration\":1000000000000000000}", EXP_ERR, NULL, NULL,
      0 },
    { "collapse_id 64 bytes",
      OP("\"collapse_id\":\"" "0123456789012345678901234567890123456789"
         "012345678901234567890123\""), NULL, NULL,
      "collapse=0123456789012345678901234567890123456789012345678901234567"
      "890123", 0 },
    { "collapse_id 65 bytes refused",
      OP("\"collapse_id\":\"" "0123456789012345678901234567890123456789"
         "0123456789012345678901234\""),
      BAD("offline_push.collapse_id: must be at most 64 bytes"), NULL, NULL,
      0 },
    { "collapse_id with CR LF refused", OP("\"collapse_id\":\"a\\r\\nb\""),
      BAD("offline_push.collapse_id: must not contain control characters"),
      NULL, NULL, 0 },

    /* "to" */

    { "to: a string", TEXT("x") "}", NULL, NULL, "to=u", 0 },
    { "to: an array, duplicates removed in order",
      "{\"to\":[\"a\",\"b\",\"a\",\"c\",\"b\",\"c\",\"d\"],\"elems\":[]}",
      NULL, NULL, "to=a,b,c,d", 0 },
    { "to: ids differing in case are distinct",
      "{\"to\":[\"a\",\"A\"]}", NULL, NULL, "to=a,A", 0 },
    { "to: UTF-8 ids", "{\"to\":[\"\xe7\x94\xa8\xe6\x88\xb7\",\"\\u00e9\"]}",
      NULL, NULL, "to=\xe7\x94\xa8\xe6\x88\xb7,\xc3\xa9", 0 },
    { "to: 128 bytes",
      "{\"to\":\"" "0123456789012345678901234567890123456789012345678901234"
      "567890123456789012345678901234567890123456789012345678901234567890123"
      "4567\"}", NULL, NULL, "skip=no_content", 0 },
    { "to: 129 bytes refused",
      "{\"to\":\"" "0123456789012345678901234567890123456789012345678901234"
      "567890123456789012345678901234567890123456789012345678901234567890123"
      "45678\"}", BAD("to: must be 1 to 128 bytes"), NULL, NULL, 0 },
    { "to: max recipients", "{\"to\":[\"a\",\"b\",\"a\"]}", NULL, NULL,
      "to=a,b", 3 },
    { "to: over max recipients refused", "{\"to\":[\"a\",\"b\",\"c\"]}",
      BAD("to: at most 2 recipients"), NULL, NULL, 2 },
    { "to: missing", "{\"elems\":[]}", BAD("to: is required"), NULL, NULL,
      0 },
    { "to: null", "{\"to\":null}", BAD("to: is required"), NULL, NULL, 0 },
    { "to: empty array", "{\"to\":[]}", BAD("to: must not be empty"), NULL,
      NULL, 0 },
    { "to: empty string", "{\"to\":\"\"}", BAD("to: must be 1 to 128 bytes"),
      NULL, NULL, 0 },
    { "to: empty string in an array", "{\"to\":[\"a\",\"\"]}",
      BAD("to[1]: must be 1 to 128 bytes"), NULL, NULL, 0 },
    { "to: number", "{\"to\":5}",
      BAD("to: must be a string or an array of strings"), NULL, NULL, 0 },
    { "to: object", "{\"to\":{\"a\":1}}",
      BAD("to: must be a string or an array of strings"), NULL, NULL, 0 },
    { "to: number in an array", "{\"to\":[\"a\",\"b\",7]}",
      BAD("to[2]: must be a string"), NULL, NULL, 0 },
    { "to: null in an array", "{\"to\":[null]}",
      BAD("to[0]: must be a string"), NULL, NULL, 0 },
    { "to: LF refused", "{\"to\":\"a\\nb\"}", BAD("to" USER_ERR), NULL, NULL,
      0 },
    { "to: \\u0000 refused as JSON", "{\"to\":[\"a\",\"a\\u0000b\"]}",
      "invalid_json: \\u0000 in a string", NULL, NULL, 0 },
    { "to: DEL refused", "{\"to\":\"a\\u007f\"}", BAD("to" USER_ERR), NULL,
      NULL, 0 },
    { "to: C1 control refused", "{\"to\":\"a\\u0085\"}", BAD("to" USER_ERR),
      NULL, NULL, 0 },

    /* elems, from, group, offline_push: types */

    { "elems: object refused", "{\"to\":\"u\",\"elems\":{}}",
      BAD("elems: must be an array of objects"), NULL, NULL, 0 },
    { "elems: string element refused",
      "{\"to\":\"u\",\"elems\":[{\"type\":\"face\"},\"text\"]}",
      BAD("elems[1]: must be an object"), NULL, NULL, 0 },
    { "elems: unknown type",
      "{\"to\":\"u\",\"elems\":[{\"type\":\"text\",\"text\":\"a\"},"
      "{\"type\":\"face\"},{\"type\":\"sticker\"}]}",
      BAD("elems[2]." TYPE_ERR), NULL, NULL, 0 },
    { "elems: missing type", "{\"to\":\"u\",\"elems\":[{\"text\":\"a\"}]}",
      BAD("elems[0]." TYPE_ERR), NULL, NULL, 0 },
    { "elems: type number", "{\"to\":\"u\",\"elems\":[{\"type\":1}]}",
      BAD("elems[0]." TYPE_ERR), NULL, NULL, 0 },
    { "elems: type in capitals", "{\"to\":\"u\",\"elems\":[{\"type\":"
      "\"TEXT\",\"text\":\"a\"}]}", BAD("elems[0]." TYPE_ERR), NULL, NULL,
      0 },
    { "elems: text without text", "{\"to\":\"u\",\"elems\":[{\"type\":"
      "\"text\"}]}", BAD("elems[0].text: must be a string"), NULL, NULL, 0 },
    { "elems: text number", "{\"to\":\"u\",\"elems\":[{\"type\":\"text\","
      "\"text\":3}]}", BAD("elems[0].text: must be a string"), NULL, NULL,
      0 },
    { "elems: text object", "{\"to\":\"u\",\"elems\":[{\"type\":\"text\","
      "\"text\":{\"a\":[1]}}]}", BAD("elems[0].text: must be a string"),
      NULL, NULL, 0 },
    { "elems: custom desc number", "{\"to\":\"u\",\"elems\":[{\"type\":"
      "\"image\"},{\"type\":\"custom\",\"desc\":[]}]}",
      BAD("elems[1].desc: must be a string"), NULL, NULL, 0 },
    { "elems: location desc number", "{\"to\":\"u\",\"elems\":[{\"type\":"
      "\"location\",\"desc\":1}]}", BAD("elems[0].desc: must be a string"),
      NULL, NULL, 0 },
    { "elems: custom data of any type",
      "{\"to\":\"u\",\"elems\":[{\"type\":\"custom\",\"desc\":\"d\","
      "\"data\":{\"n\":123456789012345678901234567890,\"x\":[[[[1e999]]]]}}"
      "]}", NULL, ALERT("\"d\""), NULL, 0 },
    { "from: string refused", FROM("\"denny\"", ""),
      BAD("from: must be an object"), NULL, NULL, 0 },
    { "from.user_id: number refused", FROM("{\"user_id\":1}", ""),
      BAD("from.user_id: must be a string"), NULL, NULL, 0 },
    { "from.nickname: number refused", FROM("{\"nickname\":1}", ""),
      BAD("from.nickname: must be a string"), NULL, NULL, 0 },
    { "from.name_card: bool refused", FROM("{\"name_card\":true}", ""),
      BAD("from.name_card: must be a string"), NULL, NULL, 0 },
    { "group: array refused", FROM("{}", ",\"group\":[]"),
      BAD("group: must be an object"), NULL, NULL, 0 },
    { "group.id: number refused", FROM("{}", ",\"group\":{\"id\":1}"),
      BAD("group.id: must be a string"), NULL, NULL, 0 },
    { "group.name: number refused", FROM("{}", ",\"group\":{\"name\":1}"),
      BAD("group.name: must be a string"), NULL, NULL, 0 },
    { "offline_push: string refused", TEXT("hi") ",\"offline_push\":\"x\"}",
      BAD("offline_push: must be an object"), NULL, NULL, 0 },
    { "offline_push.title: number refused", OP("\"title\":1"),
      BAD("offline_push.title: must be a string"), NULL, NULL, 0 },
    { "offline_push.ext: object refused", OP("\"ext\":{}"),
      BAD("offline_push.ext: must be a string"), NULL, NULL, 0 },
    { "offline_push.sound: number refused", OP("\"sound\":0"),
      BAD("offline_push.sound: must be a string"), NULL, NULL, 0 },
    { "offline_push.disable: string refused", OP("\"disable\":\"yes\""),
      BAD("offline_push.disable: must be true or false"), NULL, NULL, 0 },
    { "offline_push.ignore_badge: 1 refused", OP("\"ignore_badge\":1"),
      BAD("offline_push.ignore_badge: must be true or false"), NULL, NULL,
      0 },
    { "offline_push.voip: string refused", OP("\"voip\":\"true\""),
      BAD("offline_push.voip: must be true or false"), NULL, NULL, 0 },
    { "offline_push.interruption_level: urgent refused",
      OP("\"interruption_level\":\"urgent\""),
      BAD("offline_push.interruption_level: must be passive, active, "
          "time-sensitive or critical"), NULL, NULL, 0 },
    { "online_user_only: 1 refused", TEXT("x") ",\"online_user_only\":1}",
      BAD("online_user_only: must be true or false"), NULL, NULL, 0 },
    { "the first error in document order is reported",
      "{\"to\":[],\"elems\":5,\"priority\":\"x\"}",
      BAD("to: must not be empty"), NULL, NULL, 0 },
    { "a disabled message is validated all the same",
      TEXT("x") ",\"offline_push\":{\"disable\":true},\"priority\":\"x\"}",
      BAD("priority: must be \"high\", \"normal\" or \"low\""), NULL, NULL,
      0 },
    { "unknown fields ignored",
      "{\"to\":\"u\",\"cloud_custom_data\":7,\"extra\":{\"a\":[1,{\"b\":null}]},"
      "\"elems\":[{\"type\":\"text\",\"text\":\"hi\",\"font\":\"x\"}],"
      "\"offline_push\":{\"android\":{\"sound\":1}}}", NULL, ALERT("\"hi\""),
      NULL, 0 },
    { "msg_id: a string", TEXT("x") ",\"msg_id\":7}",
      BAD("msg_id: must be a string"), NULL, NULL, 0 },
    { "msg_id: not empty", TEXT("x") ",\"msg_id\":\"\"}",
      BAD("msg_id: must be 1 to 128 bytes"), NULL, NULL, 0 },
    { "msg_id: at most 128 bytes",
      TEXT("x") ",\"msg_id\":\"" "0123456789abcdef0123456789abcdef"
      "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
      "0123456789abcdef0123456789abcdef" "x\"}",
      BAD("msg_id: must be 1 to 128 bytes"), NULL, NULL, 0 },
    { "msg_id: no control characters", TEXT("x") ",\"msg_id\":\"a\\tb\"}",
      BAD("msg_id: must be UTF-8 without control characters"), NULL, NULL,
      0 },
    { "msg_id: 128 bytes and null are fine",
      TEXT("x") ",\"msg_id\":\"" "0123456789abcdef0123456789abcdef"
      "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
      "0123456789abcdef0123456789abcdef" "\",\"priority\":null}",
      NULL, ALERT("\"x\""), NULL, 0 },
    { "null fields are absent",
      "{\"to\":\"u\",\"from\":null,\"group\":null,\"elems\":[{\"type\":"
      "\"text\",\"text\":\"hi\"}],\"offline_push\":{\"title\":null,"
      "\"disable\":null},\"priority\":null,\"expiration\":null,"
      "\"online_user_only\":null,\"msg_id\":null}", NULL, ALERT("\"hi\""), "exp=-1|prio=10",
      0 },
    { "a repeated key: the first counts",
      "{\"to\":\"a\",\"to\":\"b\"}", NULL, NULL, "to=a", 0 },
    { "a repeated offline_push key: the first counts",
      OP("\"title\":\"A\",\"title\":7,\"title\":\"B\""), NULL,
      ALERT("{\"title\":\"A\",\"body\":\"hi\"}"), NULL, 0 },
    { "a repeated element key: the first counts",
      "{\"to\":\"u\",\"elems\":[{\"type\":\"text\",\"text\":\"a\","
      "\"type\":\"image\",\"text\":\"b\"}]}", NULL, ALERT("\"a\""), NULL,
      0 },
    { "unknown fields are still checked for UTF-8",
      "{\"to\":\"u\",\"x\":{\"y\":[[\"\xc0\xaf\"]]}}",
      "invalid_json: invalid UTF-8 in a string", NULL, NULL, 0 },
    { "unknown fields of from, group and elements ignored",
      "{\"to\":\"u\",\"from\":{\"avatar\":[1],\"nickname\":\"N\"},"
      "\"group\":{\"owner\":{\"id\":1},\"name\":\"G\"},\"elems\":"
      "[{\"type\":\"text\",\"style\":{\"text\":1},\"text\":\"hi\"}]}",
      NULL, ALERT("\"N (G): hi\""), NULL, 0 },
    { "a field nested where a string is expected",
      "{\"to\":\"u\",\"from\":{\"nickname\":{\"nickname\":\"N\"}},"
      "\"elems\":[{\"type\":\"face\"}]}",
      BAD("from.nickname: must be a string"), NULL, NULL, 0 },
    { "an array of user ids nested in to",
      "{\"to\":[[\"a\"]]}", BAD("to[0]: must be a string"), NULL, NULL, 0 },

    /* invalid JSON */

    { "empty body", "", "invalid_json: empty body", NULL, NULL, 0 },
    { "an array body", "[{\"to\":\"u\"}]",
      "invalid_json: the body must be an object", NULL, NULL, 0 },
    { "a string body", "\"u\"", "invalid_json: the body must be an object",
      NULL, NULL, 0 },
    { "truncated", "{\"to\":\"u\"",
      "invalid_json: parse error: premature EOF", NULL, NULL, 0 },
    { "trailing garbage", "{\"to\":\"u\"} x",
      "invalid_json: parse error: trailing garbage", NULL, NULL, 0 },
    { "comments refused", "{\"to\":\"u\" /* c */}",
      "invalid_json: lexical error: probable comment found in input text, "
      "comments are not enabled.", NULL, NULL, 0 },
    { "trailing comma", "{\"to\":\"u\",}",
      "invalid_json: parse error: invalid object key (must be a string)",
      NULL, NULL, 0 },
    { "invalid UTF-8 byte", "{\"to\":\"u\xff\"}",
      "invalid_json: lexical error: invalid bytes in UTF8 string.", NULL,
      NULL, 0 },
    { "overlong UTF-8", "{\"to\":\"u\",\"x\":\"\xc0\x80\"}",
      "invalid_json: invalid UTF-8 in a string", NULL, NULL, 0 },
    { "UTF-8 surrogate", TEXT("\xed\xa0\x80") "}",
      "invalid_json: invalid UTF-8 in a string", NULL, NULL, 0 },
    { "a lone low surrogate escape", TEXT("\\udc00") "}",
      "invalid_json: a low surrogate escape without a high one", NULL,
      NULL, 0 },
    { "above U+10FFFF", TEXT("\xf4\x90\x80\x80") "}",
      "invalid_json: invalid UTF-8 in a string", NULL, NULL, 0 },
    { "invalid UTF-8 in a key", "{\"to\":\"u\",\"\xc1\xbf\":1}",
      "invalid_json: invalid UTF-8 in a key", NULL, NULL, 0 },

    /* JSON escaping */

    { "escaping: quotes and backslash", TEXT("say \\\"hi\\\" \\\\o/") "}",
      NULL, ALERT("\"say \\\"hi\\\" \\\\o/\""), "body=say \"hi\" \\o/", 0 },
    { "escaping: short control escapes",
      TEXT("a\\nb\\tc\\rd\\be\\ff") "}", NULL,
      ALERT("\"a\\nb\\tc\\rd\\be\\ff\""), NULL, 0 },
    { "escaping: other control characters as \\u00XX",
      TEXT("\\u0001\\u001f\\u007f") "}", NULL,
      ALERT("\"\\u0001\\u001f\x7f\""), NULL, 0 },
    { "\\u0000 in a text refused", TEXT("a\\u0000b") "}",
      "invalid_json: \\u0000 in a string", NULL, NULL, 0 },
    { "\\u0000 in an unknown field refused",
      "{\"to\":\"u\",\"x\":\"\\u0000\"}",
      "invalid_json: \\u0000 in a string", NULL, NULL, 0 },
    { "\\u0000 in a key refused", "{\"to\":\"u\",\"a\\u0000\":1}",
      "invalid_json: \\u0000 in a key", NULL, NULL, 0 },
    { "an unterminated string after the document refused",
      "{\"to\":\"u\"} \"xx", "invalid_json: a string left open", NULL, NULL,
      0 },
    { "a high surrogate escape alone refused", TEXT("a\\ud800b") "}",
      "invalid_json: a high surrogate escape without a low one", NULL, NULL,
      0 },
    { "a high surrogate escape hiding \\u0000 refused",
      TEXT("a\\ud800\\u0000") "}",
      "invalid_json: a high surrogate escape without a low one", NULL, NULL,
      0 },
    { "\\v between tokens refused", "{\"to\":\"u\"}\v",
      "invalid_json: \\v or \\f outside a string", NULL, NULL, 0 },
    { "a surrogate pair escaped is taken",
      TEXT("\\ud83d\\ude00") "}", NULL,
      ALERT("\"\xf0\x9f\x98\x80\""), NULL, 0 },
    { "a comment refused", "{\"to\":\"u\" /* c */}",
      "invalid_json: lexical error: probable comment found in input text, comments are not enabled.", NULL, NULL, 0 },
    { "a comment hiding quotes refused",
      "{\"to\":\"u\",\"x\": /*\"*/ [[1]] /*\"*/ }",
      "invalid_json: lexical error: probable comment found in input text, comments are not enabled.", NULL, NULL, 0 },
    { "escaping: non-ASCII passes through as UTF-8",
      TEXT("\\u00e9\xe4\xb8\xad\\ud83d\\ude00\xe2\x80\xa8/") "}", NULL,
      ALERT("\"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\xe2\x80\xa8/\""), NULL,
      0 },
    { "escaping: every string field",
      "{\"to\":\"u\",\"from\":{\"nickname\":\"N\\\"\"},\"group\":{\"name\":"
      "\"G\\\\\"},\"elems\":[{\"type\":\"text\",\"text\":\"t\\n\"}],"
      "\"offline_push\":{\"title\":\"T\\\"\",\"subtitle\":\"S\\t\","
      "\"sound\":\"s\\\"\",\"ext\":\"e\\u0002\",\"image\":\"i\\\\\","
      "\"category\":\"c\\\"\",\"thread_id\":\"th\\n\","
      "\"interruption_level\":\"active\"}}", NULL,
      "{\"aps\":{\"alert\":{\"title\":\"T\\\"\",\"subtitle\":\"S\\t\","
      "\"body\":\"N\\\" (G\\\\): t\\n\"},\"badge\":1,\"sound\":\"s\\\"\","
      "\"mutable-content\":1,\"interruption-level\":\"active\","
      "\"category\":\"c\\\"\",\"thread-id\":\"th\\n\"},"
      "\"ext\":\"e\\u0002\",\"image\":\"i\\\\\"}", NULL, 0 },

    { NULL, NULL, NULL, NULL, NULL, 0 }
};


/*
 * §6.10: bodies of n characters of one kind, n around the limit, against
 * payloads written with the largest badge.
 */

static const char *
build_body(char *dst, const char *unit, size_t n, ngx_uint_t voip)
{
    char    *p;
    size_t   i, len;

    len = strlen(unit);
    p = dst;

    p += sprintf(p, "{\"to\":\"u\",\"offline_push\":{\"title\":\"T\"%s},"
                 "\"elems\":[{\"type\":\"text\",\"text\":\"",
                 voip ? ",\"voip\":true" : "");

    for (i = 0; i < n; i++) {
        memcpy(p, unit, len);
        p += len;
    }

    strcpy(p, "\"}]}");

    return dst;
}


/* the alert body read back from a payload */

static int
alert_body(u_char *payload, size_t len, char *body, size_t size)
{
    char      *text;
    yajl_val   v, b;

    static const char  *path[] = { "aps", "alert", "body", NULL };

    text = strndup((char *) payload, len);
    v = yajl_tree_parse(text, NULL, 0);
    free(text);

    if (v == NULL) {
        return 0;
    }

    b = yajl_tree_get(v, path, yajl_t_string);
    if (b) {
        snprintf(body, size, "%s", YAJL_GET_STRING(b));
    }

    yajl_tree_free(v);

    return b != NULL;
}


static void
test_cut_kind(const char *what, const char *unit, const char *decoded,
    size_t escaped, ngx_uint_t voip)
{
    char                           *in, *body, name[128], why[512];
    u_char                         *buf, *end;
    size_t                          n, dlen, max, len, blen, lo, hi;
    ngx_uint_t                      cuts, fits, bad;
    ngx_pool_t                     *pool;
    ngx_http_timpush_payload_t      pl;
    ngx_http_timpush_message_t      msg;
    ngx_http_timpush_render_err_t   err;

    dlen = strlen(decoded);
    max = voip ? 5120 : 4096;

    in = malloc(16384 * 8);
    body = malloc(16384);
    buf = malloc(8192);

    cuts = 0;
    fits = 0;
    bad = 0;
    why[0] = '\0';

    /* payload overhead with title "T": about 70 bytes */
    lo = (max - 120) / escaped;
    hi = (max - 40) / escaped + 8;

    for (n = lo; n <= hi && !bad; n++) {
        pool = ngx_create_pool(1024, NULL);

        build_body(in, unit, n, voip);

        if (ngx_http_timpush_message_parse(pool, (u_char *) in, strlen(in),
                                           10, &msg, &err)
            != NGX_OK
            || ngx_http_timpush_payload_build(pool, &msg, &pl, &err)
               != NGX_OK)
        {
            snprintf(why, sizeof(why), "n=%zu: %s", n, err.msg);
            bad = 1;
            goto next;
        }

        len = ngx_http_timpush_payload_len(&pl, 9999999999ULL);
        end = ngx_http_timpush_payload_write(buf, &pl, 9999999999ULL);

        if ((size_t) (end - buf) != len || len > max || msg.max_payload != max
            || !alert_body(buf, len, body, 16384))
        {
            snprintf(why, sizeof(why), "n=%zu: len %zu, max %zu", n, len,
                     max);
            bad = 1;
            goto next;
        }

        blen = strlen(body);

        if (!pl.cut) {
            fits++;

            if (blen != n * dlen) {
                snprintf(why, sizeof(why), "n=%zu: body changed", n);
                bad = 1;
            }

            goto next;
        }

        cuts++;

        /*
         * cut: whole characters then the ellipsis, as many as fit: one
         * more character would not
         */

        if (blen < 3 || strcmp(body + blen - 3, ELLIPSIS) != 0
            || (blen - 3) % dlen != 0
            || strncmp(body, decoded, dlen) != 0
            || len + escaped <= max)
        {
            snprintf(why, sizeof(why), "n=%zu: cut to %zu bytes, payload "
                     "%zu", n, blen, len);
            bad = 1;
        }

    next:

        ngx_destroy_pool(pool);
    }

    snprintf(name, sizeof(name), "cut at %s boundaries%s (%lu fit, %lu cut)",
             what, voip ? ", voip" : "", (unsigned long) fits,
             (unsigned long) cuts);
    ok(!bad && cuts > 0 && fits > 0, name, "%s", why);

    free(in);
    free(body);
    free(buf);
}


/* a body filling the payload exactly, then one byte more */

static void
test_cut_exact(void)
{
    char                           *in;
    u_char                          buf[8192];
    size_t                          n, len;
    ngx_pool_t                     *pool;
    ngx_http_timpush_payload_t      pl;
    ngx_http_timpush_message_t      msg;
    ngx_http_timpush_render_err_t   err;

    in = malloc(16384);

    for (n = 4000; n < 4096; n++) {
        pool = ngx_create_pool(1024, NULL);
        build_body(in, "a", n, 0);

        if (ngx_http_timpush_message_parse(pool, (u_char *) in, strlen(in),
                                           10, &msg, &err) != NGX_OK
            || ngx_http_timpush_payload_build(pool, &msg, &pl, &err)
               != NGX_OK)
        {
            ngx_destroy_pool(pool);
            break;
        }

        len = ngx_http_timpush_payload_len(&pl, 9999999999ULL);
        ngx_destroy_pool(pool);

        if (pl.cut) {
            break;
        }

        if (len == 4096) {
            /* one byte longer: cut to n - 3 characters and "…" */
            pool = ngx_create_pool(1024, NULL);
            build_body(in, "a", n + 1, 0);
            (void) ngx_http_timpush_message_parse(pool, (u_char *) in,
                                                  strlen(in), 10, &msg, &err);
            (void) ngx_http_timpush_payload_build(pool, &msg, &pl, &err);
            len = ngx_http_timpush_payload_write(buf, &pl, 9999999999ULL)
                  - buf;

            ok(pl.cut && len == 4096 && pl.body.len == n
               && memcmp(pl.body.data + n - 3, ELLIPSIS, 3) == 0,
               "a body that fits exactly is not cut, one byte more is",
               "n=%zu cut=%d len=%zu body=%zu", n, pl.cut, len,
               pl.body.len);

            len = ngx_http_timpush_payload_write(buf, &pl, 1) - buf;
            ok(len == 4096 - 9, "badge 1 is 9 bytes shorter", "%zu", len);

            ngx_destroy_pool(pool);
            free(in);
            return;
        }
    }

    ok(0, "a body that fits exactly is not cut, one byte more is",
       "no n gave 4096 bytes");
    free(in);
}


static void
test_too_large(void)
{
    char                           *in, *p, want[128];
    size_t                          i;
    ngx_int_t                       rc;
    ngx_pool_t                     *pool;
    ngx_http_timpush_payload_t      pl;
    ngx_http_timpush_message_t      msg;
    ngx_http_timpush_render_err_t   err;

    static const struct {
        const char  *name;
        const char  *field;
        size_t       n;
        ngx_uint_t   voip;
        const char  *body;      /* NULL: payload_too_large */
    } t[] = {
        /* 66 bytes and the ext's: {"aps":{"alert":"hello","badge":
         * 9999999999,"sound":"default"},"ext":"x..."} */
        { "ext leaves 5 bytes: the body fits", "ext", 4025, 0, "hello" },
        { "ext leaves 4 bytes: the body is cut", "ext", 4026, 0,
          "h" ELLIPSIS },
        { "ext leaves 3 bytes: the body is the ellipsis alone", "ext", 4027,
          0, ELLIPSIS },
        { "payload_too_large: no room left for the ellipsis", "ext", 4028,
          0, NULL },
        { "payload_too_large: fixed parts exactly at the limit", "ext",
          4030, 0, NULL },
        { "payload_too_large: an ext over the limit", "ext", 4031, 0, NULL },
        { "payload_too_large: a title over 4096", "title", 4100, 0, NULL },
        { "voip: a 4500-byte title fits 5120", "title", 4500, 1, "hello" },
        { "not voip: a 4500-byte title does not fit 4096", "title", 4500, 0,
          NULL },
        { "voip: a 5100-byte title does not fit 5120", "title", 5100, 1,
          NULL },
        { NULL, NULL, 0, 0, NULL }
    };

    in = malloc(16384);

    for (i = 0; t[i].name; i++) {
        pool = ngx_create_pool(1024, NULL);

        p = in + sprintf(in, "{\"to\":\"u\",\"elems\":[{\"type\":\"text\","
                         "\"text\":\"hello\"}],\"offline_push\":{%s\"%s\":\"",
                         t[i].voip ? "\"voip\":true," : "", t[i].field);
        memset(p, 'x', t[i].n);
        strcpy(p + t[i].n, "\"}}");

        rc = ngx_http_timpush_message_parse(pool, (u_char *) in, strlen(in),
                                            10, &msg, &err);
        if (rc == NGX_OK) {
            rc = ngx_http_timpush_payload_build(pool, &msg, &pl, &err);
        }

        if (t[i].body) {
            ok(rc == NGX_OK
               && ngx_http_timpush_payload_len(&pl, 9999999999ULL)
                  <= msg.max_payload
               && pl.body.len == strlen(t[i].body)
               && memcmp(pl.body.data, t[i].body, pl.body.len) == 0,
               t[i].name, "rc=%ld body %.*s", (long) rc,
               rc == NGX_OK ? (int) pl.body.len : 0,
               rc == NGX_OK ? (char *) pl.body.data : "");

        } else {
            snprintf(want, sizeof(want), "payload: over %d bytes even with "
                     "the alert body cut", t[i].voip ? 5120 : 4096);
            ok(rc == NGX_DECLINED
               && strcmp(err.code, "payload_too_large") == 0
               && strcmp((char *) err.msg, want) == 0,
               t[i].name, "rc=%ld %s", (long) rc,
               rc == NGX_DECLINED ? (char *) err.msg : "");
        }

        ngx_destroy_pool(pool);
    }

    free(in);
}


static void
test_badges(void)
{
    char                            want[128], name[64];
    u_char                          buf[256];
    size_t                          len;
    ngx_uint_t                      i;
    ngx_pool_t                     *pool;
    ngx_http_timpush_payload_t      pl;
    ngx_http_timpush_message_t      msg;
    ngx_http_timpush_render_err_t   err;

    static const char  body[] =
        "{\"to\":\"u\",\"elems\":[{\"type\":\"face\"}]}";

    static const struct {
        uint64_t     badge;
        const char  *shown;
    } t[] = {
        { 0, "0" }, { 9, "9" }, { 10, "10" }, { 99999, "99999" },
        { 9999999999ULL, "9999999999" },
        { 10000000000ULL, "9999999999" },
        { (uint64_t) -1, "9999999999" }
    };

    pool = ngx_create_pool(1024, NULL);

    if (ngx_http_timpush_message_parse(pool, (u_char *) body,
                                       sizeof(body) - 1, 10, &msg, &err)
        != NGX_OK
        || ngx_http_timpush_payload_build(pool, &msg, &pl, &err) != NGX_OK)
    {
        ok(0, "badges", "%s", err.msg);
        ngx_destroy_pool(pool);
        return;
    }

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        snprintf(want, sizeof(want), "{\"aps\":{\"alert\":\"[face]\","
                 "\"badge\":%s,\"sound\":\"default\"}}", t[i].shown);
        len = ngx_http_timpush_payload_write(buf, &pl, t[i].badge) - buf;
        snprintf(name, sizeof(name), "badge %llu written as %s",
                 (unsigned long long) t[i].badge, t[i].shown);

        ok(len == ngx_http_timpush_payload_len(&pl, t[i].badge)
           && len == strlen(want) && memcmp(buf, want, len) == 0, name,
           "got %.*s", (int) len, buf);
    }

    ok(pl.head.len + pl.tail.len + 1 == strlen("{\"aps\":{\"alert\":"
       "\"[face]\",\"badge\":0,\"sound\":\"default\"}}")
       && memcmp(pl.tail.data, ",\"sound\"", 8) == 0,
       "template: head ends at the badge, tail follows it", NULL);

    ngx_destroy_pool(pool);
}


static void
test_misc(void)
{
    char                           *in, *p;
    size_t                          i;
    ngx_int_t                       rc;
    ngx_str_t                      *to;
    ngx_pool_t                     *pool;
    ngx_http_timpush_message_t      msg;
    ngx_http_timpush_render_err_t   err;

    static const u_char  nul[] = "{\"to\":\"u\"}\0";

    ok(strcmp((char *) ngx_http_timpush_skip_reason(1)->data, "disabled") == 0
       && strcmp((char *) ngx_http_timpush_skip_reason(2)->data,
                 "online_only") == 0
       && strcmp((char *) ngx_http_timpush_skip_reason(3)->data,
                 "no_content") == 0
       && ngx_http_timpush_skip_reason(0)->len == 0,
       "skip reasons", NULL);

    pool = ngx_create_pool(1024, NULL);
    rc = ngx_http_timpush_message_parse(pool, (u_char *) nul,
                                        sizeof(nul) - 1, 10, &msg, &err);
    ok(rc == NGX_DECLINED && strcmp(err.code, "invalid_json") == 0,
       "a NUL byte: invalid_json", "rc=%ld", (long) rc);
    ngx_destroy_pool(pool);

    /* nesting deeper than any stack would allow for recursion */

    in = malloc(2 * 200000 + 64);
    p = in + sprintf(in, "{\"to\":\"u\",\"deep\":");
    memset(p, '[', 200000);
    memset(p + 200000, ']', 200000);
    strcpy(p + 400000, "}");

    pool = ngx_create_pool(1024, NULL);
    rc = ngx_http_timpush_message_parse(pool, (u_char *) in, strlen(in), 10,
                                        &msg, &err);
    ok(rc == NGX_DECLINED && strcmp(err.code, "invalid_json") == 0
       && strcmp((char *) err.msg, "nested deeper than 32 levels") == 0,
       "200,000 nested arrays in an unknown field: refused", "rc=%ld %s",
       (long) rc, rc == NGX_DECLINED ? (char *) err.msg : "");
    ngx_destroy_pool(pool);

    /* 32 levels in all are taken, 33 are not, kept or not */

    for (i = 32; i <= 33; i++) {
        p = in + sprintf(in, "{\"to\":\"u\",\"elems\":[{\"type\":"
                         "\"text\",\"text\":\"x\"}],\"deep\":");
        memset(p, '[', i - 1);
        memset(p + i - 1, ']', i - 1);
        strcpy(p + 2 * (i - 1), "}");

        pool = ngx_create_pool(1024, NULL);
        rc = ngx_http_timpush_message_parse(pool, (u_char *) in, strlen(in),
                                            10, &msg, &err);
        ok(i == 32 ? rc == NGX_OK : rc == NGX_DECLINED,
           i == 32 ? "32 levels: taken" : "33 levels: refused", "rc=%ld",
           (long) rc);
        ngx_destroy_pool(pool);
    }

    /* 10,000 recipients, every other one repeated */

    p = in + sprintf(in, "{\"to\":[");
    for (i = 0; i < 10000; i++) {
        p += sprintf(p, "%s\"user%lu\"", i ? "," : "",
                     (unsigned long) (i % 5000));
    }
    strcpy(p, "],\"elems\":[{\"type\":\"text\",\"text\":\"x\"}]}");

    pool = ngx_create_pool(1024, NULL);
    rc = ngx_http_timpush_message_parse(pool, (u_char *) in, strlen(in),
                                        10000, &msg, &err);
    to = msg.to.elts;
    ok(rc == NGX_OK && msg.to.nelts == 5000 && to[4999].len == 8
       && memcmp(to[4999].data, "user4999", 8) == 0,
       "10,000 recipients, duplicates removed", "rc=%ld n=%lu", (long) rc,
       (unsigned long) msg.to.nelts);
    ngx_destroy_pool(pool);

    pool = ngx_create_pool(1024, NULL);
    rc = ngx_http_timpush_message_parse(pool, (u_char *) in, strlen(in),
                                        9999, &msg, &err);
    ok(rc == NGX_DECLINED
       && strcmp((char *) err.msg, "to: at most 9999 recipients") == 0,
       "10,000 recipients over a limit of 9999", "%s", err.msg);
    ngx_destroy_pool(pool);

    free(in);
}


/* every allocation in turn fails: NGX_ERROR, nothing leaked or broken */

static void
test_no_memory(void)
{
    ngx_int_t                       rc;
    ngx_uint_t                      n, bad;
    ngx_pool_t                     *pool;
    ngx_http_timpush_payload_t      pl;
    ngx_http_timpush_message_t      msg;
    ngx_http_timpush_render_err_t   err;

    static const char  body[] =
        "{\"to\":[\"a\",\"b\",\"a\"],\"from\":{\"nickname\":\"N\"},"
        "\"group\":{\"name\":\"G\"},\"elems\":[{\"type\":\"text\","
        "\"text\":\"hi\"},{\"type\":\"custom\",\"desc\":\"d\",\"data\":"
        "{\"x\":[1,2,{\"y\":3}]}}],\"offline_push\":{\"title\":\"T\","
        "\"ext\":\"e\"},\"priority\":\"normal\",\"expiration\":5}";

    bad = 0;

    for (n = 1; n < 1000; n++) {
        pool = ngx_create_pool(1024, NULL);
        ngx_stubs_allocs = 0;
        ngx_stubs_fail_at = n;

        rc = ngx_http_timpush_message_parse(pool, (u_char *) body,
                                            sizeof(body) - 1, 10, &msg, &err);
        if (rc == NGX_OK) {
            rc = ngx_http_timpush_payload_build(pool, &msg, &pl, &err);
        }

        ngx_stubs_fail_at = 0;
        ngx_destroy_pool(pool);

        if (rc == NGX_OK && ngx_stubs_allocs < n) {
            break;
        }

        if (rc != NGX_ERROR) {
            bad = 1;
            break;
        }
    }

    ok(!bad && n > 10 && n < 1000, "each allocation failing gives NGX_ERROR",
       "n=%lu", (unsigned long) n);
}


int
main(void)
{
    test_case_t  *t;

    for (t = cases; t->name; t++) {
        run_case(t);
    }

    test_cut_kind("1-byte", "a", "a", 1, 0);
    test_cut_kind("2-byte", "\xc3\xa9", "\xc3\xa9", 2, 0);
    test_cut_kind("3-byte", "\xe4\xb8\xad", "\xe4\xb8\xad", 3, 0);
    test_cut_kind("4-byte emoji", "\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80", 4,
                  0);
    test_cut_kind("4-byte emoji", "\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80", 4,
                  1);
    test_cut_kind("escaped quote", "\\\"", "\"", 2, 0);
    test_cut_kind("\\u00XX escape", "\\u0001", "\x01", 6, 0);
    test_cut_kind("3-byte", "\xe4\xb8\xad", "\xe4\xb8\xad", 3, 1);
    test_cut_exact();
    test_too_large();
    test_badges();
    test_misc();
    test_no_memory();

    printf("1..%lu\n", (unsigned long) tests);

    return failures ? 1 : 0;
}
