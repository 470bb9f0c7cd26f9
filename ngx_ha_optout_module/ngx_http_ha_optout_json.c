
/*
 * ngx_ha_optout_module: a flag to and from JSON (jansson): the one parser
 * of request bodies (flag_parse) and the one printer of flags (flag_json).
 * Also the small text helpers every side shares, none of which calls
 * another file: a time as ISO 8601 (time_iso), a ttl "30m" (parse_ttl,
 * also for the policy and state files), the check that a text may stand
 * in a header (header_safe), the escaper of untrusted text for an
 * error_log line or a client's message (escape), and a jansson value
 * into pool memory (json_out).
 */


#include "ngx_http_ha_optout_module.h"

#include <jansson.h>


#define NGX_HA_OPTOUT_TTL_MAX  (366 * 86400)


u_char *
ngx_http_ha_optout_time_iso(u_char *buf, time_t t)
{
    ngx_tm_t  tm;

    ngx_gmtime(t, &tm);

    return ngx_sprintf(buf, "%4d-%02d-%02dT%02d:%02d:%02dZ",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec);
}


/* "Ns", "Nm", "Nh"; "none" gives 0 */

ngx_int_t
ngx_http_ha_optout_parse_ttl(u_char *p, size_t len, time_t *ttl)
{
    time_t      n, unit;
    ngx_uint_t  i;

    if (len == 4 && ngx_strncmp(p, "none", 4) == 0) {
        *ttl = 0;
        return NGX_OK;
    }

    if (len < 2 || len > 10) {
        return NGX_ERROR;
    }

    switch (p[len - 1]) {
    case 's':
        unit = 1;
        break;
    case 'm':
        unit = 60;
        break;
    case 'h':
        unit = 3600;
        break;
    default:
        return NGX_ERROR;
    }

    n = 0;

    for (i = 0; i < len - 1; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return NGX_ERROR;
        }

        n = n * 10 + (p[i] - '0');
    }

    if (n == 0 || n > NGX_HA_OPTOUT_TTL_MAX / unit) {
        return NGX_ERROR;
    }

    *ttl = n * unit;

    return NGX_OK;
}


/*
 * Whether text may reach a response or request header or $ha_optout_*:
 * printable ASCII only (0x20..0x7e).  CR, LF, NUL, any other control byte
 * and any byte of a non-ASCII character are refused (SPEC section 8); so
 * are ';' ',' '=' '"' '\\' (they would forge a field or a list item of
 * X-HA-Optout: "pin_selector": "x; failover=off") and a leading or
 * trailing space.
 * The API, ha_optout_flag, policy windows and the state file restore all
 * ask this one function.
 */

ngx_int_t
ngx_http_ha_optout_header_safe(u_char *p, size_t len)
{
    u_char  *last;

    if (len && (p[0] == ' ' || p[len - 1] == ' ')) {
        return NGX_DECLINED;
    }

    for (last = p + len; p < last; p++) {
        if (*p < 0x20 || *p > 0x7e) {
            return NGX_DECLINED;
        }

        switch (*p) {
        case ';':
        case ',':
        case '=':
        case '"':
        case '\\':
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/*
 * One UTF-8 character at p (n bytes left, *p >= 0x80): its length, and its
 * code point in *u; 0 for a byte that does not start a whole, shortest,
 * valid character (no overlong forms, no surrogates, none past U+10FFFF).
 */

static size_t
ngx_http_ha_optout_utf8_char(u_char *p, size_t n, uint32_t *u)
{
    size_t    len, i;
    uint32_t  c, min;

    if (*p >= 0xf0 && *p <= 0xf4) {
        len = 4;
        c = *p & 0x07;
        min = 0x10000;

    } else if (*p >= 0xe0 && *p <= 0xef) {
        len = 3;
        c = *p & 0x0f;
        min = 0x800;

    } else if (*p >= 0xc2 && *p <= 0xdf) {
        len = 2;
        c = *p & 0x1f;
        min = 0x80;

    } else {
        return 0;
    }

    if (n < len) {
        return 0;
    }

    for (i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }

        c = (c << 6) | (p[i] & 0x3f);
    }

    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
        return 0;
    }

    *u = c;

    return len;
}


/*
 * Escapes text for one line of error_log (or a message a client reads):
 * backslash and double quote get a backslash, C0 control bytes and DEL
 * become \n, \r, \t or \xHH, bytes that are not UTF-8 become \xHH, and
 * the C1 controls, the line and paragraph separators and the bidi
 * overrides and isolates (U+202A-202E, U+2066-2069) become \uHHHH.  Other
 * UTF-8 stays as it is.  No field can so forge a line or hide text.  At
 * most size bytes are written, never half an escape or half a character;
 * returns the end of what was written.
 *
 * Longer than a screen: one scanner, one branch per class of byte, each
 * with its own bound on what is left of dst.
 */

u_char *
ngx_http_ha_optout_escape(u_char *dst, size_t size, u_char *src, size_t len)
{
    u_char          *last, *end;
    size_t           n;
    uint32_t         u;
    static u_char    hex[] = "0123456789abcdef";

    last = dst + size;
    end = src + len;

    while (src < end) {

        if (*src >= 0x20 && *src < 0x7f) {

            if (*src == '\\' || *src == '"') {
                if (last - dst < 2) {
                    break;
                }

                *dst++ = '\\';
            }

            if (dst == last) {
                break;
            }

            *dst++ = *src++;
            continue;
        }

        if (*src < 0x80) {

            if (*src == '\n' || *src == '\r' || *src == '\t') {
                if (last - dst < 2) {
                    break;
                }

                *dst++ = '\\';
                *dst++ = (*src == '\n') ? 'n' : (*src == '\r') ? 'r' : 't';
                src++;
                continue;
            }

            goto byte;
        }

        n = ngx_http_ha_optout_utf8_char(src, end - src, &u);

        if (n == 0) {
            goto byte;
        }

        if ((u >= 0x80 && u <= 0x9f)
            || u == 0x2028 || u == 0x2029
            || (u >= 0x202a && u <= 0x202e)
            || (u >= 0x2066 && u <= 0x2069))
        {
            if (last - dst < 6) {
                break;
            }

            *dst++ = '\\';
            *dst++ = 'u';
            *dst++ = hex[(u >> 12) & 0xf];
            *dst++ = hex[(u >> 8) & 0xf];
            *dst++ = hex[(u >> 4) & 0xf];
            *dst++ = hex[u & 0xf];
            src += n;
            continue;
        }

        if ((size_t) (last - dst) < n) {
            break;
        }

        dst = ngx_cpymem(dst, src, n);
        src += n;
        continue;

    byte:

        if (last - dst < 4) {
            break;
        }

        *dst++ = '\\';
        *dst++ = 'x';
        *dst++ = hex[*src >> 4];
        *dst++ = hex[*src & 0xf];
        src++;
    }

    return dst;
}


/* the longest prefix of text that is whole UTF-8 characters */

size_t
ngx_http_ha_optout_utf8_prefix(u_char *p, size_t len)
{
    u_char    *start, *last;
    size_t     n;
    uint32_t   u;

    start = p;
    last = p + len;

    while (p < last) {

        if (*p < 0x80) {
            p++;
            continue;
        }

        n = ngx_http_ha_optout_utf8_char(p, last - p, &u);

        if (n == 0) {
            break;
        }

        p += n;
    }

    return p - start;
}


static ngx_int_t
ngx_http_ha_optout_json_str(json_t *v, u_char *dst, uint16_t *len,
    size_t min, size_t max)
{
    size_t  n;

    /* null clears: no pin in a PUT, an unpin in a PATCH (as printed) */

    if (json_is_null(v)) {
        *len = 0;
        return NGX_OK;
    }

    if (!json_is_string(v)) {
        return NGX_ERROR;
    }

    n = json_string_length(v);

    if (n < min || n > max || ngx_strlchr((u_char *) json_string_value(v),
                                          (u_char *) json_string_value(v) + n,
                                          '\0'))
    {
        return NGX_ERROR;
    }

    ngx_memcpy(dst, json_string_value(v), n);
    *len = (uint16_t) n;

    return NGX_OK;
}


#define ngx_ha_optout_fail(c, ...)                                            \
    do {                                                                      \
        ngx_str_set(code, c);                                                 \
        message->data = ngx_pnalloc(pool, 512);                               \
        if (message->data == NULL) {                                          \
            goto failed;                                                      \
        }                                                                     \
        message->len = ngx_snprintf(message->data, 512, __VA_ARGS__)          \
                       - message->data;                                       \
        message->len = ngx_http_ha_optout_utf8_prefix(message->data,          \
                                                      message->len);          \
        goto failed;                                                          \
    } while (0)


/*
 * Parses a PUT (patch == 0, flag zeroed by the caller) or PATCH body
 * (patch == 1, flag holds the current flag) into flag.  Unknown fields,
 * wrong types and duplicate keys are rejected.  On NGX_DECLINED, code and
 * message say why (400).
 *
 * Longer than a screen and a half: one branch per field of a flag, in one
 * walk of one object, so that duplicates and unknown fields are caught
 * where they are met; split, each step would only pass the walk around.
 */

ngx_int_t
ngx_http_ha_optout_flag_parse(ngx_pool_t *pool, u_char *body, size_t len,
    ngx_uint_t patch, ngx_http_ha_optout_flag_t *flag, time_t *ttl,
    ngx_uint_t *ttl_set, ngx_str_t *code, ngx_str_t *message)
{
    u_char        *p, name[64 * 6];
    size_t         n;
    json_t        *root, *v;
    const char    *key;
    json_error_t   err;

    *ttl_set = 0;

    root = json_loadb((const char *) body, len, JSON_REJECT_DUPLICATES, &err);

    if (root == NULL) {
        ngx_ha_optout_fail("InvalidJSON", "body is not valid JSON: %s "
                           "(line %d, column %d)", err.text, err.line,
                           err.column);
    }

    if (!json_is_object(root)) {
        ngx_ha_optout_fail("InvalidJSON", "body must be a JSON object");
    }

    json_object_foreach(root, key, v) {

        if (ngx_strcmp(key, "failover") == 0) {
            if (!json_is_boolean(v)) {
                ngx_ha_optout_fail("InvalidField",
                                   "failover must be true or false");
            }

            flag->no_failover = json_is_false(v);

        } else if (ngx_strcmp(key, "replication") == 0) {
            if (!json_is_boolean(v)) {
                ngx_ha_optout_fail("InvalidField",
                                   "replication must be true or false");
            }

            flag->no_replication = json_is_false(v);

        } else if (ngx_strcmp(key, "sticky") == 0) {
            if (!json_is_boolean(v)) {
                ngx_ha_optout_fail("InvalidField",
                                   "sticky must be true or false");
            }

            flag->sticky = json_is_true(v);

        } else if (ngx_strcmp(key, "pin") == 0) {
            if (ngx_http_ha_optout_json_str(v, flag->pin, &flag->pin_len, 1,
                                            NGX_HA_OPTOUT_PIN_LEN - 1)
                != NGX_OK)
            {
                ngx_ha_optout_fail("InvalidField", "pin must be a server "
                                   "address such as \"127.0.0.1:9002\" "
                                   "(or null)");
            }

            if (ngx_http_ha_optout_header_safe(flag->pin, flag->pin_len)
                != NGX_OK)
            {
                ngx_ha_optout_fail("InvalidField", "pin must be printable "
                                   "ASCII without ; , = quote, backslash or "
                                   "a leading or trailing space: it reaches "
                                   "the X-HA-Optout header");
            }

        } else if (ngx_strcmp(key, "pin_selector") == 0) {
            if (ngx_http_ha_optout_json_str(v, flag->selector,
                                            &flag->selector_len, 1,
                                            NGX_HA_OPTOUT_SELECTOR_LEN - 1)
                != NGX_OK)
            {
                ngx_ha_optout_fail("InvalidField", "pin_selector must be a "
                                   "string of 1..255 bytes (or null)");
            }

            if (ngx_http_ha_optout_header_safe(flag->selector,
                                               flag->selector_len)
                != NGX_OK)
            {
                ngx_ha_optout_fail("InvalidField", "pin_selector must be "
                                   "printable ASCII without ; , = quote, "
                                   "backslash or a leading or trailing "
                                   "space: it reaches the X-HA-Optout "
                                   "header and $ha_optout_*");
            }

        } else if (ngx_strcmp(key, "reason") == 0) {
            if (ngx_http_ha_optout_json_str(v, flag->reason,
                                            &flag->reason_len, 1,
                                            NGX_HA_OPTOUT_REASON_LEN)
                != NGX_OK)
            {
                ngx_ha_optout_fail("InvalidReason",
                                   "reason must be a string of 1..256 bytes");
            }

        } else if (ngx_strcmp(key, "ttl") == 0) {
            if (!json_is_string(v)
                || ngx_http_ha_optout_parse_ttl((u_char *) json_string_value(v),
                                                json_string_length(v), ttl)
                   != NGX_OK)
            {
                ngx_ha_optout_fail("InvalidTTL", "ttl must be a string "
                                   "\"Ns\", \"Nm\" or \"Nh\" (N > 0, at "
                                   "most 366 days), or \"none\" where "
                                   "policy allows it: e.g. \"90s\", "
                                   "\"30m\", \"24h\" (2 days: \"48h\")");
            }

            *ttl_set = 1;

        } else {
            /* a name of any length and bytes: shown escaped, cut */

            n = ngx_strlen(key);
            p = ngx_http_ha_optout_escape(name, sizeof(name), (u_char *) key,
                    ngx_http_ha_optout_utf8_prefix((u_char *) key,
                                                   ngx_min(n, 64)));

            ngx_ha_optout_fail("UnknownField", "unknown field \"%*s%s\"",
                               (size_t) (p - name), name,
                               (n > 64) ? "..." : "");
        }
    }

    if (!patch && !*ttl_set) {
        ngx_ha_optout_fail("InvalidTTL", "ttl is required, e.g. \"30m\"");
    }

    if (flag->reason_len == 0) {
        ngx_ha_optout_fail("InvalidReason", "reason is required "
                           "(1..256 bytes)");
    }

    if (flag->selector_len && flag->pin_len == 0) {
        ngx_ha_optout_fail("InvalidField", "pin_selector requires pin");
    }

    if (!(flag->no_failover || flag->no_replication || flag->sticky
          || flag->pin_len))
    {
        ngx_ha_optout_fail("EmptyFlag", "a flag must opt out of something: "
                           "failover false, pin, replication false or "
                           "sticky true");
    }

    json_decref(root);

    return NGX_OK;

failed:

    if (root) {
        json_decref(root);
    }

    return NGX_DECLINED;
}


static json_t *
ngx_http_ha_optout_json_strn(u_char *p, size_t len)
{
    return len ? json_stringn((const char *) p, len) : json_null();
}


/*
 * reason and actor as a JSON string: an nginx.conf reason may be Latin-1
 * (an old config; nginx -t accepts it), which jansson refuses, and then
 * the whole answer would fail.  Each byte that is not UTF-8 is printed as
 * U+FFFD instead.
 */

static json_t *
ngx_http_ha_optout_json_text(u_char *p, size_t len)
{
    u_char  *d, *last, buf[NGX_HA_OPTOUT_REASON_LEN * 3];
    size_t   n;

    n = ngx_http_ha_optout_utf8_prefix(p, len);

    if (n == len) {
        return json_stringn((const char *) p, len);
    }

    d = buf;
    last = p + len;

    while (p < last && (size_t) (buf + sizeof(buf) - d) >= n + 3) {
        d = ngx_cpymem(d, p, n);
        p += n;

        if (p == last) {
            break;
        }

        *d++ = 0xef; *d++ = 0xbf; *d++ = 0xbd;
        p++;

        n = ngx_http_ha_optout_utf8_prefix(p, last - p);
    }

    return json_stringn((const char *) buf, d - buf);
}


static json_t *
ngx_http_ha_optout_json_time(time_t t)
{
    u_char  buf[sizeof("2026-11-27T10:00:00Z")];

    if (t == 0) {
        return json_null();
    }

    return json_stringn((const char *) buf,
                        ngx_http_ha_optout_time_iso(buf, t) - buf);
}


/* the stored flag as SPEC section 3 prints it; json null for no flag */

void *
ngx_http_ha_optout_flag_json(ngx_http_ha_optout_flag_t *flag,
    ngx_str_t *upstream, ngx_str_t *environment)
{
    json_t             *j, *by;
    ngx_uint_t          i;
    static const char  *sources[] = { "config", "window", "fleet", "api" };

    if (flag == NULL || !flag->present) {
        return json_null();
    }

    by = json_array();

    for (i = 0; by && i < flag->approvers && i < NGX_HA_OPTOUT_APPROVERS_MAX;
         i++)
    {
        json_array_append_new(by, ngx_http_ha_optout_json_text(
                                      flag->approver[i],
                                      flag->approver_len[i]));
    }

    j = json_pack("{s:s%,s:s%,s:b,s:o,s:o,s:b,s:b,s:o,s:o,s:s,s:I,"
                     "s:o,s:o,s:o}",
                     "upstream", upstream->data, upstream->len,
                     "environment", environment->data, environment->len,
                     "failover", !flag->no_failover,
                     "pin", ngx_http_ha_optout_json_strn(flag->pin,
                                                         flag->pin_len),
                     "pin_selector",
                     ngx_http_ha_optout_json_strn(flag->selector,
                                                  flag->selector_len),
                     "replication", !flag->no_replication,
                     "sticky", (int) flag->sticky,
                     "reason", ngx_http_ha_optout_json_text(flag->reason,
                                                            flag->reason_len),
                     "actor", ngx_http_ha_optout_json_text(flag->actor,
                                                           flag->actor_len),
                     "source", sources[flag->source],
                     "version", (json_int_t) flag->version,
                     "set_at", ngx_http_ha_optout_json_time(flag->set_at),
                     "expires_at",
                     ngx_http_ha_optout_json_time(flag->expires_at),
                     "approved_by", by);

    /* a fleet flag: the etcd revision applied, and the agent that did */
    if (j != NULL && flag->source == NGX_HA_OPTOUT_SRC_FLEET) {
        json_object_set_new(j, "revision", json_integer(flag->revision));
        json_object_set_new(j, "via",
                            ngx_http_ha_optout_json_text(flag->via,
                                                         flag->via_len));
    }

    return j;
}


/* serialises and frees a jansson value into pool memory */

ngx_int_t
ngx_http_ha_optout_json_out(ngx_pool_t *pool, void *json, ngx_str_t *out)
{
    char    *s;
    size_t   len;

    if (json == NULL) {
        return NGX_ERROR;
    }

    s = json_dumps(json, JSON_ENCODE_ANY|JSON_COMPACT);
    json_decref(json);

    if (s == NULL) {
        return NGX_ERROR;
    }

    len = ngx_strlen(s);

    out->data = ngx_pnalloc(pool, len + 1);
    if (out->data == NULL) {
        free(s);
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, s, len);
    out->data[len] = '\n';
    out->len = len + 1;

    free(s);

    return NGX_OK;
}
