
/*
 * ha-optoutctl: one representation of a flag on the client side: the PUT
 * body built from options, and the short text a person reads in a table.
 */

#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <time.h>

#include "hoctl.h"


/* "30s", "30m", "2h" -> seconds; -1 when malformed; "none" -> 0 */
long
hoctl_parse_duration(const char *s)
{
    char  *end;
    long   n;

    if (s == NULL) {
        return -1;
    }

    if (strcmp(s, "none") == 0) {
        return 0;
    }

    if (!isdigit((unsigned char) s[0])) {
        return -1;
    }

    n = strtol(s, &end, 10);
    if (n <= 0 || n > 100L * 365 * 86400) {
        return -1;
    }

    if (end[0] == '\0' || strcmp(end, "s") == 0) {
        return n;
    }

    if (strcmp(end, "m") == 0) {
        return n * 60;
    }

    if (strcmp(end, "h") == 0) {
        return n * 3600;
    }

    return -1;
}


int
hoctl_flag_check(const hoctl_flag_t *f, int need_ttl, char *err,
    size_t errlen)
{
    long  ttl;

    if (f->upstream == NULL || f->upstream[0] == '\0') {
        snprintf(err, errlen, "--upstream is required");
        return -1;
    }

    if (!f->no_failover && f->pin == NULL && f->pin_selector == NULL
        && !f->no_replication && !f->sticky)
    {
        snprintf(err, errlen, "nothing to opt out of: give --no-failover, "
                 "--pin, --no-replication or --sticky");
        return -1;
    }

    if (f->pin_selector != NULL && f->pin == NULL) {
        snprintf(err, errlen, "--pin-selector needs --pin");
        return -1;
    }

    if (f->ttl == NULL) {
        snprintf(err, errlen, "--ttl is required (e.g. --ttl 30m)");
        return -1;
    }

    /* the API takes Ns, Nm or Nh: a bare number would only be refused */
    if (f->ttl[0] != '\0' && strspn(f->ttl, "0123456789") == strlen(f->ttl)) {
        snprintf(err, errlen, "--ttl %s: give a unit, e.g. %ss or %sm",
                 f->ttl, f->ttl, f->ttl);
        return -1;
    }

    ttl = hoctl_parse_duration(f->ttl);
    if (ttl < 0 || (ttl == 0 && need_ttl)) {
        snprintf(err, errlen, "--ttl must be Ns, Nm or Nh%s, not \"%s\": "
                 "e.g. 90s, 30m, 24h (2 days: 48h)",
                 need_ttl ? "" : " (or none)", f->ttl);
        return -1;
    }

    if (f->reason == NULL || f->reason[0] == '\0') {
        snprintf(err, errlen, "--reason is required");
        return -1;
    }

    if (strlen(f->reason) > 256) {
        snprintf(err, errlen, "--reason is longer than 256 bytes");
        return -1;
    }

    return 0;
}


/* Only what was asked for is sent: PUT replaces, the rest stays HA-on. */
char *
hoctl_flag_body(const hoctl_flag_t *f)
{
    char    *s;
    json_t  *b;

    b = json_object();

    if (f->no_failover) {
        json_object_set_new(b, "failover", json_false());
    }

    if (f->pin != NULL) {
        json_object_set_new(b, "pin", json_string(f->pin));
    }

    if (f->pin_selector != NULL) {
        json_object_set_new(b, "pin_selector", json_string(f->pin_selector));
    }

    if (f->no_replication) {
        json_object_set_new(b, "replication", json_false());
    }

    if (f->sticky) {
        json_object_set_new(b, "sticky", json_true());
    }

    json_object_set_new(b, "ttl", json_string(f->ttl));
    json_object_set_new(b, "reason", json_string(f->reason));

    s = json_dumps(b, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(b);

    return s;
}


static void
hoctl_cat(char *buf, size_t size, const char *fmt, const char *arg)
{
    size_t  len;

    len = strlen(buf);
    if (len + 1 < size) {
        if (len > 0) {
            buf[len++] = ' ';
        }
        snprintf(buf + len, size - len, fmt, arg);
    }
}


/* What is suspended, in the words of the X-HA-Optout header. */
char *
hoctl_flag_summary(json_t *flag)
{
    char     buf[512];
    json_t  *v;

    buf[0] = '\0';

    if (json_is_false(json_object_get(flag, "failover"))) {
        hoctl_cat(buf, sizeof(buf), "%s", "failover=off");
    }

    v = json_object_get(flag, "pin");
    if (json_is_string(v)) {
        hoctl_cat(buf, sizeof(buf), "pin=%s",
                  hoctl_safe(json_string_value(v)));
    }

    v = json_object_get(flag, "pin_selector");
    if (json_is_string(v)) {
        hoctl_cat(buf, sizeof(buf), "selector=%s",
                  hoctl_safe(json_string_value(v)));
    }

    if (json_is_false(json_object_get(flag, "replication"))) {
        hoctl_cat(buf, sizeof(buf), "%s", "replication=off");
    }

    if (json_is_true(json_object_get(flag, "sticky"))) {
        hoctl_cat(buf, sizeof(buf), "%s", "sticky=on");
    }

    if (buf[0] == '\0') {
        snprintf(buf, sizeof(buf), "-");
    }

    return strdup(buf);
}


/* "29m12s" until expires_at; "no ttl" when the flag has none. */
char *
hoctl_time_left(json_t *flag, time_t now)
{
    char        buf[64], *end;
    long        left;
    struct tm   tm;
    const char *s;

    s = json_string_value(json_object_get(flag, "expires_at"));
    if (s == NULL) {
        return strdup("no ttl");
    }

    memset(&tm, 0, sizeof(tm));
    end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (end == NULL) {
        return strdup(hoctl_safe(s));
    }

    left = (long) (timegm(&tm) - now);

    if (left <= 0) {
        return strdup("expired");
    }

    if (left >= 86400) {
        snprintf(buf, sizeof(buf), "%ldd%02ldh", left / 86400,
                 left % 86400 / 3600);
    } else if (left >= 3600) {
        snprintf(buf, sizeof(buf), "%ldh%02ldm", left / 3600,
                 left % 3600 / 60);
    } else if (left >= 60) {
        snprintf(buf, sizeof(buf), "%ldm%02lds", left / 60, left % 60);
    } else {
        snprintf(buf, sizeof(buf), "%lds", left);
    }

    return strdup(buf);
}


static const char *
hoctl_str(json_t *flag, const char *name)
{
    const char  *s;

    s = json_string_value(json_object_get(flag, name));
    return (s && s[0]) ? hoctl_safe(s) : "-";
}


/*
 * " [approved by bob, carol]" after the reason of a flag the two-person
 * rule let through, then the end of the line; each subject escaped
 */
static void
hoctl_print_approved_by(json_t *flag)
{
    size_t   i;
    json_t  *by, *v;

    by = json_object_get(flag, "approved_by");

    if (json_is_array(by) && json_array_size(by)) {
        printf(" [approved by");

        json_array_foreach(by, i, v) {
            printf("%s %s", i ? "," : "",
                   json_is_string(v) ? hoctl_safe(json_string_value(v))
                                     : "?");
        }

        printf("]");
    }

    printf("\n");
}


/*
 * GET v1/flags: {"app": {...flag...}, "reporting": null}.  The reason comes
 * last and is never cut: it is what the person on call needs to read.
 */
void
hoctl_print_flags_table(json_t *flags, const char *prefix)
{
    int          w;
    char        *what, *left;
    time_t       now;
    json_t      *flag;
    const char  *name;

    w = (int) sizeof("UPSTREAM") - 1;
    json_object_foreach(flags, name, flag) {
        if ((int) strlen(hoctl_safe(name)) > w) {
            w = (int) strlen(hoctl_safe(name));
        }
    }

    now = time(NULL);

    printf("%s%-*s  %-6s  %-32s  %-12s  %-9s  %s\n", prefix, w, "UPSTREAM",
           "STATE", "SUSPENDED", "ACTOR", "LEFT", "REASON");

    json_object_foreach(flags, name, flag) {
        if (!json_is_object(flag)) {
            printf("%s%-*s  %-6s  %-32s  %-12s  %-9s  %s\n", prefix, w,
                   hoctl_safe(name), "-", "-", "-", "-", "-");
            continue;
        }

        what = hoctl_flag_summary(flag);
        left = hoctl_time_left(flag, now);

        printf("%s%-*s  %-6s  %-32s  %-12s  %-9s  %s", prefix, w,
               hoctl_safe(name), "ACTIVE", what, hoctl_str(flag, "actor"),
               left, hoctl_str(flag, "reason"));

        hoctl_print_approved_by(flag);

        free(what);
        free(left);
    }
}


/*
 * One UTF-8 character at p: its length and code point, or 0 when p does
 * not start a whole, shortest, valid character.
 */
static size_t
hoctl_utf8_char(const unsigned char *p, uint32_t *u)
{
    size_t    len, i;
    uint32_t  c, min;

    if (*p >= 0xf0 && *p <= 0xf4) {
        len = 4; c = *p & 0x07; min = 0x10000;
    } else if (*p >= 0xe0 && *p <= 0xef) {
        len = 3; c = *p & 0x0f; min = 0x800;
    } else if (*p >= 0xc2 && *p <= 0xdf) {
        len = 2; c = *p & 0x1f; min = 0x80;
    } else {
        return 0;
    }

    for (i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;       /* also stops at the terminating NUL */
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
 * Text from a server, made safe for a terminal: C0 control bytes (ESC,
 * CR, BS ...), DEL, bytes that are not UTF-8, the C1 controls, the line
 * and paragraph separators and the bidi overrides and isolates
 * (U+202A-202E, U+2066-2069) are shown escaped; other UTF-8 stays.  In
 * text mode they read \n, \r, \t, \xHH, \uHHHH (a newline too: one record
 * stays on one line).  In JSON mode the input is JSON text and each becomes
 * \u00HH or \uHHHH, the same value, except newlines and tabs, which JSON
 * allows between tokens.  Returns a malloc()ed string.
 */
char *
hoctl_escape(const char *s, int json)
{
    char                 *out, *o;
    size_t                n;
    uint32_t              u;
    const unsigned char  *p;

    if (s == NULL) {
        return strdup("");
    }

    out = malloc(strlen(s) * 6 + 1);
    if (out == NULL) {
        return NULL;
    }

    o = out;

    for (p = (const unsigned char *) s; *p; /* void */) {

        if (*p >= 0x20 && *p < 0x7f) {
            *o++ = (char) *p++;
            continue;
        }

        if (*p < 0x80) {
            if (json && (*p == '\n' || *p == '\t')) {
                *o++ = (char) *p++;
            } else if (json) {
                o += sprintf(o, "\\u%04x", *p++);
            } else if (*p == '\n' || *p == '\r' || *p == '\t') {
                *o++ = '\\';
                *o++ = *p == '\n' ? 'n' : *p == '\r' ? 'r' : 't';
                p++;
            } else {
                o += sprintf(o, "\\x%02x", *p++);
            }
            continue;
        }

        n = hoctl_utf8_char(p, &u);

        if (n == 0) {
            /* not UTF-8: JSON from jansson never holds it */
            if (json) {
                o += sprintf(o, "\\ufffd");
            } else {
                o += sprintf(o, "\\x%02x", *p);
            }
            p++;
            continue;
        }

        if ((u >= 0x80 && u <= 0x9f) || u == 0x2028 || u == 0x2029
            || (u >= 0x202a && u <= 0x202e) || (u >= 0x2066 && u <= 0x2069))
        {
            o += sprintf(o, "\\u%04x", u);
        } else {
            memcpy(o, p, n);
            o += n;
        }

        p += n;
    }

    *o = '\0';
    return out;
}


/*
 * hoctl_escape() in text mode for printf(): the result lives until 16
 * more calls in the same thread (fleet asks from threads).
 */
const char *
hoctl_safe(const char *s)
{
    static __thread char      *ring[16];
    static __thread unsigned   next;
    char                      *e;

    e = hoctl_escape(s, 0);
    free(ring[next % 16]);
    ring[next++ % 16] = e;

    return e ? e : "?";
}


/*
 * After a DELETE: what still acts on the upstream, read from the answer
 * (the flag acting now, or null; {"acting": ..., "persisted": false} when
 * nginx could not save it yet) or from a GET of the flag.  Returns 0 when
 * HA is back, 1 when another layer (a window, an ha_optout_flag line)
 * still suspends it -- 0 then too if only the API layer was to go
 * (api_only) -- and -1 when the answer does not tell.  *line says it.
 */
int
hoctl_clear_outcome(json_t *body, const char *upstream, int api_only,
    char **line)
{
    return hoctl_clear_outcome_ex(body, upstream, api_only, 1, line);
}


/* how long the acting flag lasts, for the line */
static void
hoctl_clear_until(json_t *acting, const char *source, char *until,
    size_t size)
{
    const char  *exp;

    exp = json_string_value(json_object_get(acting, "expires_at"));

    if (exp != NULL) {
        snprintf(until, size, "until %s", hoctl_safe(exp));
    } else if (strcmp(source, "config") == 0) {
        snprintf(until, size, "while its ha_optout_flag line is "
                 "in nginx.conf");
    } else {
        snprintf(until, size, "with no end");
    }
}


/* how the acting flag is ended, when not through the API */
static const char *
hoctl_clear_howto(const char *source, const char *upstream)
{
    static __thread char  howto[512];

    if (strcmp(source, "config") == 0) {
        return "; to end it, remove the ha_optout_flag line and "
               "nginx -s reload";
    } else if (strcmp(source, "window") == 0) {
        snprintf(howto, sizeof(howto),
                 "; to end it now: ha-optoutctl window end --upstream %s "
                 "--reason TEXT (or change its window in the policy file "
                 "and nginx -s reload)", hoctl_safe(upstream));
        return howto;
    }

    return "";
}


/*
 * removed: 0 when the upstream had no API flag before the DELETE (clear
 * looked first): nothing was removed, and the line says so.
 */
int
hoctl_clear_outcome_ex(json_t *body, const char *upstream, int api_only,
    int removed, char **line)
{
    int          rc;
    char        *what, until[128];
    json_t      *acting;
    const char  *note, *source, *head, *howto;

    *line = NULL;
    acting = body;
    note = "";

    if (json_is_object(body) && json_object_get(body, "persisted") != NULL) {
        acting = json_object_get(body, "acting");

        if (json_is_false(json_object_get(body, "persisted"))) {
            note = " (not saved to the state file yet: nginx retries)";
        }
    }

    if (json_is_null(acting)) {
        if (asprintf(line, "%s: HA restored%s", hoctl_safe(upstream), note)
            < 0)
        {
            *line = NULL;
        }

        return 0;
    }

    source = json_string_value(json_object_get(acting, "source"));

    if (!json_is_object(acting) || source == NULL) {
        return -1;
    }

    hoctl_clear_until(acting, source, until, sizeof(until));

    /* a new API flag (someone set one meanwhile) is never "api only" */
    rc = (api_only && strcmp(source, "api") != 0) ? 0 : 1;

    if (removed) {
        head = rc ? "API flag removed, but HA is NOT restored:"
                  : "API flag removed;";
    } else {
        head = rc ? "no API flag; HA is NOT restored:" : "no API flag;";
    }

    howto = hoctl_clear_howto(source, upstream);

    what = hoctl_flag_summary(acting);

    if (asprintf(line, "%s: %s the %s flag still acts: %s, "
                 "%s (set by %s, reason: %s)%s%s",
                 hoctl_safe(upstream), head, hoctl_safe(source),
                 what, until, hoctl_str(acting, "actor"),
                 hoctl_str(acting, "reason"), howto, note)
        < 0)
    {
        *line = NULL;
    }

    free(what);

    return rc;
}
