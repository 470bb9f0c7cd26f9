
/*
 * fuzz_body: ngx_http_ha_optout_flag_parse() (ngx_http_ha_optout_json.c),
 * the parser of PUT and PATCH bodies, and the printer after it.
 *
 * Input: byte 0 picks the mode (bit 0: PATCH, bits 1-2: the flag a PATCH
 * starts from), the rest is the body.  Checked for every input:
 *   - a refusal names a code and a message of at most 512 bytes;
 *   - an accepted flag keeps SPEC section 3's bounds (pin < 128,
 *     pin_selector < 256, reason 1..256 bytes, no NUL in them, ttl 0 or
 *     1 s..366 d, pin_selector only with pin, opts out of something);
 *   - a PUT always carries a ttl;
 *   - pin and pin_selector are printable ASCII (they reach a header), a
 *     refusal's message is whole UTF-8 that jansson prints (a 400 JSON,
 *     never a 500);
 *   - ngx_http_ha_optout_escape() of the body leaves no control byte, no
 *     C1, bidi or line separator character and only valid UTF-8;
 *   - the printer (flag_json + json_out) turns an accepted flag into JSON
 *     that parses again, and that JSON fed back as a PUT body gives the
 *     same flag ("one parser and one printer", STYLE.md).
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <jansson.h>

#include "ngx_http_ha_optout_module.h"
#include "fuzz.h"


static ngx_str_t  fuzz_upstream = ngx_string("app");
static ngx_str_t  fuzz_environment = ngx_string("production");


static void
base_flag(ngx_uint_t which, ngx_http_ha_optout_flag_t *flag)
{
    ngx_memzero(flag, sizeof(ngx_http_ha_optout_flag_t));

    if (which == 3) {
        return;                 /* PATCH of nothing: must still be sane */
    }

    flag->present = 1;
    flag->source = NGX_HA_OPTOUT_SRC_API;
    flag->version = 7;
    flag->set_at = FUZZ_NOW - 60;
    flag->expires_at = FUZZ_NOW + 1800;

    flag->reason_len = sizeof("INC-4211 heap dump") - 1;
    ngx_memcpy(flag->reason, "INC-4211 heap dump", flag->reason_len);

    flag->actor_len = 5;
    ngx_memcpy(flag->actor, "alice", 5);

    if (which == 0 || which == 2) {
        flag->no_failover = 1;
    }

    if (which >= 1) {
        flag->pin_len = sizeof("127.0.0.1:9002") - 1;
        ngx_memcpy(flag->pin, "127.0.0.1:9002", flag->pin_len);
        flag->selector_len = sizeof("INC-4211") - 1;
        ngx_memcpy(flag->selector, "INC-4211", flag->selector_len);
    }

    if (which == 2) {
        flag->no_replication = 1;
        flag->sticky = 1;
    }
}


static void
check_flag(ngx_http_ha_optout_flag_t *flag, ngx_uint_t patch, time_t ttl,
    ngx_uint_t ttl_set)
{
    fuzz_assert(flag->pin_len < NGX_HA_OPTOUT_PIN_LEN, "pin_len %u",
                flag->pin_len);
    fuzz_assert(flag->selector_len < NGX_HA_OPTOUT_SELECTOR_LEN,
                "selector_len %u", flag->selector_len);
    fuzz_assert(flag->reason_len >= 1
                && flag->reason_len <= NGX_HA_OPTOUT_REASON_LEN,
                "reason_len %u", flag->reason_len);

    fuzz_assert(memchr(flag->pin, '\0', flag->pin_len) == NULL,
                "NUL in pin");
    fuzz_assert(memchr(flag->selector, '\0', flag->selector_len) == NULL,
                "NUL in pin_selector");
    fuzz_assert(memchr(flag->reason, '\0', flag->reason_len) == NULL,
                "NUL in reason");

    fuzz_assert(ngx_http_ha_optout_header_safe(flag->pin, flag->pin_len)
                == NGX_OK, "a pin that is not printable ASCII");
    fuzz_assert(ngx_http_ha_optout_header_safe(flag->selector,
                                               flag->selector_len)
                == NGX_OK, "a pin_selector that is not printable ASCII");

    fuzz_assert(patch || ttl_set, "a PUT was accepted without a ttl");
    fuzz_assert(!ttl_set || (ttl >= 0 && ttl <= 366 * 86400),
                "ttl %lld out of range", (long long) ttl);

    fuzz_assert(flag->selector_len == 0 || flag->pin_len,
                "pin_selector without pin");
    fuzz_assert(flag->no_failover || flag->no_replication || flag->sticky
                || flag->pin_len, "a flag that opts out of nothing");
}


/* the printed flag, minus what the server adds, as a PUT body */

static void
round_trip(ngx_pool_t *pool, ngx_http_ha_optout_flag_t *flag, time_t ttl,
    ngx_uint_t ttl_set)
{
    char                       ttl_text[32], *body;
    json_t                    *json, *root;
    time_t                     ttl2;
    ngx_str_t                  out, code, message;
    ngx_int_t                  rc;
    ngx_uint_t                 ttl_set2;
    json_error_t               err;
    ngx_http_ha_optout_flag_t  flag2;

    flag->present = 1;
    flag->source = NGX_HA_OPTOUT_SRC_API;
    flag->version = 8;
    flag->set_at = FUZZ_NOW;

    if (ttl_set) {
        flag->expires_at = ttl ? FUZZ_NOW + ttl : 0;
    }

    if (flag->actor_len == 0) {
        flag->actor_len = 4;
        ngx_memcpy(flag->actor, "fuzz", 4);
    }

    json = ngx_http_ha_optout_flag_json(flag, &fuzz_upstream,
                                        &fuzz_environment);
    fuzz_assert(json != NULL, "flag_json() failed for an accepted flag "
                "(reason %u bytes, pin %u, selector %u)", flag->reason_len,
                flag->pin_len, flag->selector_len);

    rc = ngx_http_ha_optout_json_out(pool, json, &out);
    fuzz_assert(rc == NGX_OK, "json_out() failed for an accepted flag");
    fuzz_assert(out.len && out.data[out.len - 1] == '\n',
                "printed flag does not end in a newline");

    root = json_loadb((char *) out.data, out.len, 0, &err);
    fuzz_assert(json_is_object(root), "printed flag does not parse: %s",
                err.text);

    json_object_del(root, "upstream");
    json_object_del(root, "environment");
    json_object_del(root, "actor");
    json_object_del(root, "source");
    json_object_del(root, "version");
    json_object_del(root, "set_at");
    json_object_del(root, "approved_by");   /* the server's, as actor */
    json_object_del(root, "expires_at");

    if (ttl_set && ttl) {
        snprintf(ttl_text, sizeof(ttl_text), "%llds", (long long) ttl);
    } else {
        snprintf(ttl_text, sizeof(ttl_text), "1h");
    }

    json_object_set_new(root, "ttl", json_string(ttl_text));

    body = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    fuzz_assert(body != NULL, "cannot print the round-trip body");

    ngx_memzero(&flag2, sizeof(flag2));

    rc = ngx_http_ha_optout_flag_parse(pool, (u_char *) body, strlen(body),
                                       0, &flag2, &ttl2, &ttl_set2, &code,
                                       &message);
    fuzz_assert(rc == NGX_OK, "the printed flag is refused as a PUT body: "
                "%.*s: %.*s (body %s)", (int) code.len, code.data,
                (int) message.len, message.data, body);
    free(body);

    fuzz_assert(flag2.no_failover == flag->no_failover
                && flag2.no_replication == flag->no_replication
                && flag2.sticky == flag->sticky,
                "booleans changed in the round trip");
    fuzz_assert(flag2.pin_len == flag->pin_len
                && memcmp(flag2.pin, flag->pin, flag->pin_len) == 0,
                "pin changed in the round trip");
    fuzz_assert(flag2.selector_len == flag->selector_len
                && memcmp(flag2.selector, flag->selector,
                          flag->selector_len) == 0,
                "pin_selector changed in the round trip");
    fuzz_assert(flag2.reason_len == flag->reason_len
                && memcmp(flag2.reason, flag->reason, flag->reason_len) == 0,
                "reason changed in the round trip");
}


/* the escaper of error_log fields, fed the raw body */

static void
check_escape(ngx_pool_t *pool, u_char *data, size_t len)
{
    u_char  *buf, *p, *end;
    size_t   size;

    size = (len % 97) * 3 + 1;      /* also sizes that cut escapes */
    buf = ngx_pnalloc(pool, size);
    if (buf == NULL) {
        return;
    }

    end = ngx_http_ha_optout_escape(buf, size, data, len);
    fuzz_assert(end >= buf && end <= buf + size, "escape wrote past its end");
    fuzz_assert(ngx_http_ha_optout_utf8_prefix(buf, end - buf)
                == (size_t) (end - buf), "escaped text is not UTF-8");

    for (p = buf; p < end; p++) {
        fuzz_assert(*p >= 0x20 && *p != 0x7f, "escaped text holds 0x%02x",
                    *p);

        /* C1 (U+0080-009F): C2 80..9F; U+2028-202E, U+2066-2069 */
        fuzz_assert(!(p[0] == 0xc2 && p + 1 < end && p[1] < 0xa0),
                    "escaped text holds a C1 control");
        fuzz_assert(!(p[0] == 0xe2 && p + 2 < end && p[1] == 0x80
                      && p[2] >= 0xa8 && p[2] <= 0xae),
                    "escaped text holds a separator or bidi override");
        fuzz_assert(!(p[0] == 0xe2 && p + 2 < end && p[1] == 0x81
                      && p[2] >= 0xa6 && p[2] <= 0xa9),
                    "escaped text holds a bidi isolate");
    }
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    json_object_seed(1);        /* the same key order on every run */
    return 0;
}


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    time_t                     ttl;
    json_t                    *json;
    ngx_int_t                  rc;
    ngx_str_t                  code, message;
    ngx_uint_t                 patch, ttl_set;
    ngx_pool_t                *pool;
    ngx_http_ha_optout_flag_t  flag;

    if (size < 1 || size > NGX_HA_OPTOUT_BODY_MAX + 1) {
        return 0;               /* admin.c refuses larger bodies with 413 */
    }

    patch = data[0] & 1;
    base_flag(patch ? (data[0] >> 1) & 3 : 3, &flag);

    pool = ngx_create_pool(1024, NULL);
    if (pool == NULL) {
        return 0;
    }

    ngx_str_null(&code);
    ngx_str_null(&message);
    ttl = 0;

    rc = ngx_http_ha_optout_flag_parse(pool, (u_char *) data + 1, size - 1,
                                       patch, &flag, &ttl, &ttl_set, &code,
                                       &message);

    if (rc == NGX_OK) {
        check_flag(&flag, patch, ttl, ttl_set);
        round_trip(pool, &flag, ttl, ttl_set);

    } else {
        fuzz_assert(rc == NGX_DECLINED, "flag_parse() returned %ld",
                    (long) rc);
        fuzz_assert(code.len && code.data, "a refusal without a code");
        fuzz_assert(message.data && message.len <= 512,
                    "a refusal without a message");
        fuzz_touch(message.data, message.len);
        fuzz_touch(code.data, code.len);
        fuzz_assert(ngx_http_ha_optout_utf8_prefix(message.data, message.len)
                    == message.len, "a refusal's message is not UTF-8");
        json = json_stringn((char *) message.data, message.len);
        fuzz_assert(json != NULL, "jansson refuses a refusal's message");
        json_decref(json);
    }

    check_escape(pool, (u_char *) data + 1, size - 1);

    ngx_destroy_pool(pool);

    return 0;
}
