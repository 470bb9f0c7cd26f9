
/*
 * ha-optoutctl: one representation of a flag on the client side: the PUT
 * body built from options, and the short text a person reads in a table.
 */

#define _GNU_SOURCE
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

    ttl = hoctl_parse_duration(f->ttl);
    if (ttl < 0 || (ttl == 0 && need_ttl)) {
        snprintf(err, errlen, "--ttl must be Ns, Nm or Nh%s, not \"%s\"",
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
        hoctl_cat(buf, sizeof(buf), "pin=%s", json_string_value(v));
    }

    v = json_object_get(flag, "pin_selector");
    if (json_is_string(v)) {
        hoctl_cat(buf, sizeof(buf), "selector=%s", json_string_value(v));
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
        return strdup(s);
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
    return (s && s[0]) ? s : "-";
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
        if ((int) strlen(name) > w) {
            w = (int) strlen(name);
        }
    }

    now = time(NULL);

    printf("%s%-*s  %-6s  %-32s  %-12s  %-9s  %s\n", prefix, w, "UPSTREAM",
           "STATE", "SUSPENDED", "ACTOR", "LEFT", "REASON");

    json_object_foreach(flags, name, flag) {
        if (!json_is_object(flag)) {
            printf("%s%-*s  %-6s  %-32s  %-12s  %-9s  %s\n", prefix, w, name,
                   "-", "-", "-", "-", "-");
            continue;
        }

        what = hoctl_flag_summary(flag);
        left = hoctl_time_left(flag, now);

        printf("%s%-*s  %-6s  %-32s  %-12s  %-9s  %s\n", prefix, w, name,
               "ACTIVE", what, hoctl_str(flag, "actor"), left,
               hoctl_str(flag, "reason"));

        free(what);
        free(left);
    }
}
