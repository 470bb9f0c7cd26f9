
/*
 * ngx_ha_optout_module: the policy file and its windows.
 *
 * The policy file is read at configuration time: per upstream, what the
 * API may set (allow, max_ttl, ttl_none, protected) and how many must
 * approve it (approvers, approval_ttl); and the weekly and one-off windows,
 * which the worker's periodic job opens and closes (windows_tick) and the
 * API may end or skip (window_act).  docs/state-and-policy.md describes
 * the layout.
 *
 * Over a thousand lines because the windows are read, checked and acted
 * on with the types and helpers of the file they come from: in this
 * order, the reader, the checks the API asks for, the windows.
 */


#include "ngx_http_ha_optout_module.h"
#include "ngx_http_ha_optout_yaml.h"


#define NGX_HA_OPTOUT_WEEK           (7 * 86400)

#define NGX_HA_OPTOUT_ALLOW_FAILOVER     0x01
#define NGX_HA_OPTOUT_ALLOW_PIN          0x02
#define NGX_HA_OPTOUT_ALLOW_REPLICATION  0x04
#define NGX_HA_OPTOUT_ALLOW_STICKY       0x08
#define NGX_HA_OPTOUT_ALLOW_ALL          0x0f


/* one entry of the policy's "upstreams:"; -1 means "not given" */
typedef struct {
    ngx_str_t                        name;
    ngx_uint_t                       line;
    ngx_uint_t                       column;
    ngx_int_t                        allow;
    time_t                           max_ttl;
    ngx_int_t                        ttl_none;
    ngx_int_t                        protect;
    ngx_int_t                        approvers;
    time_t                           approval_ttl;
} ngx_http_ha_optout_policy_ups_t;


typedef struct {
    ngx_str_t                        upstream;
    ngx_uint_t                       line;
    ngx_uint_t                       column;
    ngx_uint_t                       pin_line;
    ngx_uint_t                       pin_column;
    ngx_uint_t                       weekly;
    time_t                           start;     /* one-off: RFC 3339 */
    time_t                           end;
    time_t                           offset;    /* weekly: from mon 00:00 */
    time_t                           length;
    ngx_http_ha_optout_flag_t        flag;      /* the opt-outs, reason */
    ngx_http_ha_optout_srv_conf_t   *hscf;
    ngx_uint_t                       index;     /* of hscf in upstreams */
    ngx_str_t                        name;      /* "name:", may be empty */
    ngx_uint_t                       endable;   /* "endable:", default 1 */
    uint32_t                         fp;        /* what identifies it */
} ngx_http_ha_optout_window_t;


typedef struct {
    ngx_str_t                        file;
    ngx_str_t                        conf_file;
    ngx_uint_t                       conf_line;
    ngx_array_t                      upstreams; /* policy_ups_t */
    ngx_array_t                      windows;   /* window_t */
} ngx_http_ha_optout_policy_t;


static ngx_uint_t ngx_http_ha_optout_window_open(
    ngx_http_ha_optout_window_t *w, time_t now, time_t *start, time_t *end);
static ngx_uint_t ngx_http_ha_optout_window_live(
    ngx_http_ha_optout_window_t *w, time_t now, time_t *start, time_t *end);
static ngx_uint_t ngx_http_ha_optout_window_next(
    ngx_http_ha_optout_window_t *w, time_t now, time_t *start, time_t *end);


static const char  *ngx_http_ha_optout_optouts[] = {
    "failover", "pin", "replication", "sticky", NULL
};

static ngx_str_t  ngx_http_ha_optout_policy_actor = ngx_string("policy");


/* ---------------------------------------------------------------- policy */

#define ngx_ha_optout_policy_fail(cf, y)                                      \
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "policy %V:%ui:%ui: %*s",       \
                       (y)->file, (y)->line, (y)->column, (y)->err_len,      \
                       (y)->err)


static ngx_int_t
ngx_http_ha_optout_policy_allow(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, ngx_int_t *allow)
{
    ngx_str_t     v;
    ngx_uint_t    i;
    yaml_node_t  *item;
    yaml_node_item_t  *it;

    if (node->type != YAML_SEQUENCE_NODE) {
        return ngx_http_ha_optout_yfail(y, node, "allow must be a list such "
                                        "as [failover, pin, replication, "
                                        "sticky]");
    }

    *allow = 0;

    for (it = node->data.sequence.items.start;
         it < node->data.sequence.items.top;
         it++)
    {
        item = ngx_http_ha_optout_ynode(y, *it);

        if (ngx_http_ha_optout_yscalar(y, item, "an allow entry", &v)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        for (i = 0; ngx_http_ha_optout_optouts[i]; i++) {
            if (v.len == ngx_strlen(ngx_http_ha_optout_optouts[i])
                && ngx_strncmp(v.data, ngx_http_ha_optout_optouts[i], v.len)
                   == 0)
            {
                break;
            }
        }

        if (ngx_http_ha_optout_optouts[i] == NULL) {
            return ngx_http_ha_optout_yfail(y, item, "unknown opt-out \"%V\" "
                                            "(failover, pin, replication or "
                                            "sticky)", &v);
        }

        *allow |= 1 << i;
    }

    return NGX_OK;
}


/* one key of an upstream's policy */

static ngx_int_t
ngx_http_ha_optout_policy_upstream_key(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *k, yaml_node_t *val, ngx_http_ha_optout_policy_ups_t *u)
{
    ngx_uint_t  b;

    if (ngx_http_ha_optout_ykey_is(k, "allow")) {
        if (ngx_http_ha_optout_policy_allow(y, val, &u->allow)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (ngx_http_ha_optout_ykey_is(k, "max_ttl")) {
        if (ngx_http_ha_optout_yttl(y, val, "max_ttl", &u->max_ttl)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (ngx_http_ha_optout_ykey_is(k, "ttl_none")) {
        if (ngx_http_ha_optout_ybool(y, val, "ttl_none", &b) != NGX_OK) {
            return NGX_ERROR;
        }

        u->ttl_none = b;

    } else if (ngx_http_ha_optout_ykey_is(k, "protected")) {
        if (ngx_http_ha_optout_ybool(y, val, "protected", &b)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        u->protect = b;

    } else if (ngx_http_ha_optout_ykey_is(k, "approvers")) {
        uint64_t  n;

        if (ngx_http_ha_optout_yuint(y, val, "approvers", &n) != NGX_OK) {
            return NGX_ERROR;
        }

        if (n > NGX_HA_OPTOUT_APPROVERS_MAX) {
            return ngx_http_ha_optout_yfail(y, val, "approvers must be "
                                            "0..%d",
                                            NGX_HA_OPTOUT_APPROVERS_MAX);
        }

        u->approvers = (ngx_int_t) n;

    } else if (ngx_http_ha_optout_ykey_is(k, "approval_ttl")) {
        if (ngx_http_ha_optout_yttl(y, val, "approval_ttl",
                                    &u->approval_ttl)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (u->approval_ttl > 86400) {
            return ngx_http_ha_optout_yfail(y, val, "approval_ttl must "
                                            "be at most 24h");
        }

    } else {
        return ngx_http_ha_optout_yfail(y, k, "unknown key \"%*s\" in "
                                        "upstream \"%V\" (allow, "
                                        "max_ttl, ttl_none, protected, "
                                        "approvers, approval_ttl)",
                                        k->data.scalar.length,
                                        k->data.scalar.value, &u->name);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ha_optout_policy_upstream(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *key, yaml_node_t *node, ngx_http_ha_optout_policy_t *pol)
{
    yaml_node_pair_t                 *p;
    ngx_http_ha_optout_policy_ups_t  *u;

    u = ngx_array_push(&pol->upstreams);
    if (u == NULL) {
        return ngx_http_ha_optout_yfail(y, NULL, "out of memory");
    }

    u->name.len = key->data.scalar.length;
    u->name.data = key->data.scalar.value;
    if (ngx_http_ha_optout_ycopy(y, &u->name) != NGX_OK) {
        return NGX_ERROR;
    }

    u->line = key->start_mark.line + 1;
    u->column = key->start_mark.column + 1;
    u->allow = -1;
    u->max_ttl = -1;
    u->ttl_none = -1;
    u->protect = -1;
    u->approvers = -1;
    u->approval_ttl = -1;

    if (u->name.len == 0) {
        return ngx_http_ha_optout_yfail(y, key, "empty upstream name");
    }

    if (ngx_http_ha_optout_yis_null(node)) {
        return NGX_OK;
    }

    if (ngx_http_ha_optout_ymapping(y, node, "an upstream's policy")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (p = node->data.mapping.pairs.start;
         p < node->data.mapping.pairs.top;
         p++)
    {
        if (ngx_http_ha_optout_policy_upstream_key(y,
                ngx_http_ha_optout_ynode(y, p->key),
                ngx_http_ha_optout_ynode(y, p->value), u)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static const char  *ngx_http_ha_optout_days[] = {
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
    "sunday"
};


/* "sun " or "sunday ": *day 0 (monday) .. 6, and what follows; NULL */

static u_char *
ngx_http_ha_optout_every_day(ngx_str_t *v, ngx_int_t *day)
{
    u_char       *p, *last;
    size_t        len;
    const char  **days;

    p = v->data;
    last = v->data + v->len;
    days = ngx_http_ha_optout_days;

    for (*day = 0; *day < 7; (*day)++) {
        if (v->len > 3 && ngx_strncasecmp(p, (u_char *) days[*day], 3) == 0) {
            break;
        }
    }

    if (*day == 7) {
        return NULL;
    }

    len = ngx_strlen(days[*day]);

    if ((size_t) (last - p) > len
        && ngx_strncasecmp(p, (u_char *) days[*day], len) == 0
        && p[len] == ' ')
    {
        return p + len;
    }

    if (p[3] == ' ') {
        return p + 3;
    }

    return NULL;
}


/* " HH:MM-HH:MM" to the end: minutes since 00:00 of the day */

static ngx_int_t
ngx_http_ha_optout_every_times(u_char *p, u_char *last, ngx_int_t *from,
    ngx_int_t *to)
{
    ngx_int_t  h1, m1, h2, m2;

    while (p < last && *p == ' ') {
        p++;
    }

    if (last - p < 11) {
        return NGX_ERROR;
    }

    h1 = ngx_http_ha_optout_digits(p, 2);
    m1 = (p[2] == ':') ? ngx_http_ha_optout_digits(p + 3, 2) : -1;
    p += 5;

    while (p < last && *p == ' ') {
        p++;
    }

    if (p == last || *p != '-') {
        return NGX_ERROR;
    }

    p++;

    while (p < last && *p == ' ') {
        p++;
    }

    if (last - p != 5 || p[2] != ':') {
        return NGX_ERROR;
    }

    h2 = ngx_http_ha_optout_digits(p, 2);
    m2 = ngx_http_ha_optout_digits(p + 3, 2);

    if (h1 < 0 || h1 > 23 || m1 < 0 || m1 > 59 || h2 < 0 || m2 < 0
        || m2 > 59 || h2 > 24 || (h2 == 24 && m2 != 0))
    {
        return NGX_ERROR;
    }

    *from = h1 * 60 + m1;
    *to = h2 * 60 + m2;

    return NGX_OK;
}


/* "sun 02:00-04:00": weekly, UTC; the end may pass midnight */

static ngx_int_t
ngx_http_ha_optout_policy_every(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, ngx_http_ha_optout_window_t *w)
{
    u_char     *p;
    ngx_int_t   day, from, to;
    ngx_str_t   v;

    if (ngx_http_ha_optout_yscalar(y, node, "every", &v) != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_http_ha_optout_every_day(&v, &day);

    if (p == NULL
        || ngx_http_ha_optout_every_times(p, v.data + v.len, &from, &to)
           != NGX_OK)
    {
        return ngx_http_ha_optout_yfail(y, node, "every must look like "
                                        "\"sun 02:00-04:00\" (a day "
                                        "mon..sun, then HH:MM-HH:MM in "
                                        "UTC), not \"%V\"", &v);
    }

    if (to == from) {
        return ngx_http_ha_optout_yfail(y, node, "every: the window "
                                        "\"%V\" is empty (start equals end)",
                                        &v);
    }

    if (to < from) {
        to += 24 * 60;
    }

    w->weekly = 1;
    w->offset = (time_t) day * 86400 + from * 60;
    w->length = (time_t) (to - from) * 60;

    return NGX_OK;
}


static void
ngx_http_ha_optout_fnv(uint32_t *h, u_char *p, size_t len)
{
    while (len--) {
        *h = (*h ^ *p++) * 16777619u;
    }
}


/* the keys a window must have one of */
enum {
    NGX_HA_OPTOUT_SEEN_EVERY = 1,
    NGX_HA_OPTOUT_SEEN_START = 2,
    NGX_HA_OPTOUT_SEEN_END = 4
};


/* "upstream:": one upstream, never "*" */

static ngx_int_t
ngx_http_ha_optout_window_upstream_key(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *val, ngx_http_ha_optout_window_t *w)
{
    if (ngx_http_ha_optout_yscalar(y, val, "upstream", &w->upstream)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (w->upstream.len == 0
        || (w->upstream.len == 1 && w->upstream.data[0] == '*'))
    {
        return ngx_http_ha_optout_yfail(y, val, "a window names one "
                                        "upstream");
    }

    return ngx_http_ha_optout_ycopy(y, &w->upstream);
}


/* "name:", what the API calls the window by */

static ngx_int_t
ngx_http_ha_optout_window_name_key(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *val, ngx_http_ha_optout_window_t *w)
{
    u_char      c;
    ngx_uint_t  i;

    if (ngx_http_ha_optout_yscalar(y, val, "name", &w->name) != NGX_OK) {
        return NGX_ERROR;
    }

    for (i = 0; i < w->name.len; i++) {
        c = w->name.data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '-' || c == '_'
              || c == '.'))
        {
            break;
        }
    }

    if (w->name.len == 0 || w->name.len > NGX_HA_OPTOUT_NAME_LEN
        || i < w->name.len
        || (w->name.data[0] >= '0' && w->name.data[0] <= '9'))
    {
        return ngx_http_ha_optout_yfail(y, val, "a window's name is "
                                        "1..64 of A-Z a-z 0-9 - _ . "
                                        "and does not start with a "
                                        "digit (numbers are window "
                                        "positions)");
    }

    return ngx_http_ha_optout_ycopy(y, &w->name);
}


/* one key of a window; *seen gathers the keys of its times */

static ngx_int_t
ngx_http_ha_optout_window_key(ngx_http_ha_optout_yaml_t *y, yaml_node_t *k,
    yaml_node_t *val, ngx_http_ha_optout_window_t *w, ngx_uint_t *seen)
{
    ngx_int_t  rc;

    if (ngx_http_ha_optout_ykey_is(k, "upstream")) {
        return ngx_http_ha_optout_window_upstream_key(y, val, w);
    }

    if (ngx_http_ha_optout_ykey_is(k, "name")) {
        return ngx_http_ha_optout_window_name_key(y, val, w);
    }

    if (ngx_http_ha_optout_ykey_is(k, "endable")) {
        return ngx_http_ha_optout_ybool(y, val, "endable", &w->endable);
    }

    if (ngx_http_ha_optout_ykey_is(k, "every")) {
        *seen |= NGX_HA_OPTOUT_SEEN_EVERY;
        return ngx_http_ha_optout_policy_every(y, val, w);
    }

    if (ngx_http_ha_optout_ykey_is(k, "start")) {
        *seen |= NGX_HA_OPTOUT_SEEN_START;
        return ngx_http_ha_optout_ytime(y, val, "start", 0, &w->start);
    }

    if (ngx_http_ha_optout_ykey_is(k, "end")) {
        if (ngx_http_ha_optout_ytime(y, val, "end", 0, &w->end) != NGX_OK) {
            return NGX_ERROR;
        }

        if ((*seen & NGX_HA_OPTOUT_SEEN_START) && w->start >= w->end) {
            return ngx_http_ha_optout_yfail(y, val, "end must be after "
                                            "start");
        }

        *seen |= NGX_HA_OPTOUT_SEEN_END;
        return NGX_OK;
    }

    rc = ngx_http_ha_optout_yflag_field(y, k, val, &w->flag);

    if (rc == NGX_OK && ngx_http_ha_optout_ykey_is(k, "pin")) {
        w->pin_line = val->start_mark.line + 1;
        w->pin_column = val->start_mark.column + 1;
    }

    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_http_ha_optout_yfail(y, k, "unknown key \"%*s\" in a "
                                    "window (upstream, name, "
                                    "endable, every, start, "
                                    "end, failover, pin, "
                                    "pin_selector, replication, "
                                    "sticky, reason)",
                                    k->data.scalar.length,
                                    k->data.scalar.value);
}


/* a window read whole: what it must have, and what its flag may hold */

static ngx_int_t
ngx_http_ha_optout_window_valid(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, ngx_http_ha_optout_window_t *w, ngx_uint_t seen)
{
    ngx_http_ha_optout_flag_t  *f;

    f = &w->flag;

    if (w->upstream.data == NULL) {
        return ngx_http_ha_optout_yfail(y, node, "a window needs "
                                        "\"upstream\"");
    }

    if (f->reason_len == 0) {
        return ngx_http_ha_optout_yfail(y, node, "a window needs a "
                                        "\"reason\"");
    }

    if (seen == NGX_HA_OPTOUT_SEEN_EVERY) {
        /* weekly */

    } else if (seen == (NGX_HA_OPTOUT_SEEN_START|NGX_HA_OPTOUT_SEEN_END)) {
        if (w->start >= w->end) {
            return ngx_http_ha_optout_yfail(y, node, "end must be after "
                                            "start");
        }

    } else {
        return ngx_http_ha_optout_yfail(y, node, "a window needs either "
                                        "\"every\" (weekly) or both "
                                        "\"start\" and \"end\" (one-off)");
    }

    if (f->selector_len && f->pin_len == 0) {
        return ngx_http_ha_optout_yfail(y, node, "pin_selector requires "
                                        "pin");
    }

    if (ngx_http_ha_optout_header_safe(f->pin, f->pin_len) != NGX_OK
        || ngx_http_ha_optout_header_safe(f->selector, f->selector_len)
           != NGX_OK)
    {
        return ngx_http_ha_optout_yfail(y, node, "pin and pin_selector must "
                                        "be printable ASCII (they reach the "
                                        "X-HA-Optout header): no control "
                                        "bytes, no non-ASCII");
    }

    if (!(f->no_failover || f->no_replication || f->sticky || f->pin_len)) {
        return ngx_http_ha_optout_yfail(y, node, "a window must opt out of "
                                        "something: failover false, pin, "
                                        "replication false or sticky true");
    }

    return NGX_OK;
}


/*
 * what identifies the window across reloads, for the occurrences the
 * API ended or skipped: its upstream, name and times (not its reason)
 */

static void
ngx_http_ha_optout_window_fp(ngx_http_ha_optout_window_t *w)
{
    w->fp = 2166136261u;                        /* FNV-1a */
    ngx_http_ha_optout_fnv(&w->fp, w->upstream.data, w->upstream.len);
    ngx_http_ha_optout_fnv(&w->fp, (u_char *) "/", 1);
    ngx_http_ha_optout_fnv(&w->fp, w->name.data, w->name.len);
    ngx_http_ha_optout_fnv(&w->fp, (u_char *) &w->weekly, sizeof(w->weekly));
    ngx_http_ha_optout_fnv(&w->fp, (u_char *) &w->offset, sizeof(w->offset));
    ngx_http_ha_optout_fnv(&w->fp, (u_char *) &w->length, sizeof(w->length));
    ngx_http_ha_optout_fnv(&w->fp, (u_char *) &w->start, sizeof(w->start));
    ngx_http_ha_optout_fnv(&w->fp, (u_char *) &w->end, sizeof(w->end));
}


/* a window's name is its upstream's only: the API calls it by it */

static ngx_int_t
ngx_http_ha_optout_window_unique(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, ngx_http_ha_optout_policy_t *pol,
    ngx_http_ha_optout_window_t *w)
{
    ngx_uint_t                    i;
    ngx_http_ha_optout_window_t  *o;

    o = pol->windows.elts;

    for (i = 0; w->name.len && &o[i] != w; i++) {
        if (o[i].name.len == w->name.len
            && ngx_strncmp(o[i].name.data, w->name.data, w->name.len) == 0
            && o[i].upstream.len == w->upstream.len
            && ngx_strncmp(o[i].upstream.data, w->upstream.data,
                           w->upstream.len) == 0)
        {
            return ngx_http_ha_optout_yfail(y, node, "a second window "
                                            "named \"%V\" on upstream "
                                            "\"%V\" (line %ui has it)",
                                            &w->name, &w->upstream,
                                            o[i].line);
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ha_optout_policy_window(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, ngx_http_ha_optout_policy_t *pol)
{
    ngx_uint_t                    seen;
    yaml_node_pair_t             *p;
    ngx_http_ha_optout_flag_t    *f;
    ngx_http_ha_optout_window_t  *w;

    if (ngx_http_ha_optout_ymapping(y, node, "a window") != NGX_OK) {
        return NGX_ERROR;
    }

    w = ngx_array_push(&pol->windows);
    if (w == NULL) {
        return ngx_http_ha_optout_yfail(y, NULL, "out of memory");
    }

    ngx_memzero(w, sizeof(ngx_http_ha_optout_window_t));

    w->line = node->start_mark.line + 1;
    w->column = node->start_mark.column + 1;
    w->endable = 1;
    seen = 0;

    for (p = node->data.mapping.pairs.start;
         p < node->data.mapping.pairs.top;
         p++)
    {
        if (ngx_http_ha_optout_window_key(y,
                ngx_http_ha_optout_ynode(y, p->key),
                ngx_http_ha_optout_ynode(y, p->value), w, &seen)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (ngx_http_ha_optout_window_valid(y, node, w, seen) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_ha_optout_window_fp(w);

    if (ngx_http_ha_optout_window_unique(y, node, pol, w) != NGX_OK) {
        return NGX_ERROR;
    }

    f = &w->flag;
    f->present = 1;
    f->source = NGX_HA_OPTOUT_SRC_WINDOW;
    f->actor_len = ngx_http_ha_optout_policy_actor.len;
    ngx_memcpy(f->actor, ngx_http_ha_optout_policy_actor.data, f->actor_len);

    return NGX_OK;
}


/* "upstreams": { NAME: {allow, max_ttl, ...}, ... } */

static ngx_int_t
ngx_http_ha_optout_policy_upstreams(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *val, ngx_http_ha_optout_policy_t *pol)
{
    yaml_node_pair_t  *up;

    if (ngx_http_ha_optout_yis_null(val)) {
        return NGX_OK;
    }

    if (ngx_http_ha_optout_ymapping(y, val, "upstreams") != NGX_OK) {
        return NGX_ERROR;
    }

    for (up = val->data.mapping.pairs.start;
         up < val->data.mapping.pairs.top;
         up++)
    {
        if (ngx_http_ha_optout_policy_upstream(y,
                ngx_http_ha_optout_ynode(y, up->key),
                ngx_http_ha_optout_ynode(y, up->value), pol)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* "windows": [ {upstream, every | start and end, ...}, ... ] */

static ngx_int_t
ngx_http_ha_optout_policy_windows(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *val, ngx_http_ha_optout_policy_t *pol)
{
    yaml_node_item_t  *it;

    if (ngx_http_ha_optout_yis_null(val)) {
        return NGX_OK;
    }

    if (val->type != YAML_SEQUENCE_NODE) {
        return ngx_http_ha_optout_yfail(y, val, "windows must be a list");
    }

    for (it = val->data.sequence.items.start;
         it < val->data.sequence.items.top;
         it++)
    {
        if (ngx_http_ha_optout_policy_window(y,
                ngx_http_ha_optout_ynode(y, *it), pol)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ha_optout_policy_parse(ngx_http_ha_optout_yaml_t *y,
    ngx_http_ha_optout_policy_t *pol)
{
    yaml_node_t       *root, *k, *val;
    yaml_node_pair_t  *p;

    root = yaml_document_get_root_node(&y->doc);

    if (root == NULL || ngx_http_ha_optout_yis_null(root)) {
        return NGX_OK;
    }

    if (ngx_http_ha_optout_ymapping(y, root, "the policy") != NGX_OK) {
        return NGX_ERROR;
    }

    for (p = root->data.mapping.pairs.start;
         p < root->data.mapping.pairs.top;
         p++)
    {
        k = ngx_http_ha_optout_ynode(y, p->key);
        val = ngx_http_ha_optout_ynode(y, p->value);

        if (ngx_http_ha_optout_ykey_is(k, "upstreams")) {
            if (ngx_http_ha_optout_policy_upstreams(y, val, pol) != NGX_OK) {
                return NGX_ERROR;
            }

        } else if (ngx_http_ha_optout_ykey_is(k, "windows")) {
            if (ngx_http_ha_optout_policy_windows(y, val, pol) != NGX_OK) {
                return NGX_ERROR;
            }

        } else {
            return ngx_http_ha_optout_yfail(y, k, "unknown key \"%*s\" "
                                            "(upstreams, windows)",
                                            k->data.scalar.length,
                                            k->data.scalar.value);
        }
    }

    return NGX_OK;
}


char *
ngx_http_ha_optout_policy_load(ngx_conf_t *cf,
    ngx_http_ha_optout_main_conf_t *hmcf)
{
    ngx_int_t                     rc;
    ngx_http_ha_optout_yaml_t    *y;
    ngx_http_ha_optout_policy_t  *pol;

    pol = ngx_pcalloc(cf->pool, sizeof(ngx_http_ha_optout_policy_t));
    y = ngx_pcalloc(cf->pool, sizeof(ngx_http_ha_optout_yaml_t));
    if (pol == NULL || y == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_array_init(&pol->upstreams, cf->pool, 4,
                       sizeof(ngx_http_ha_optout_policy_ups_t))
        != NGX_OK
        || ngx_array_init(&pol->windows, cf->pool, 4,
                          sizeof(ngx_http_ha_optout_window_t))
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    pol->file = hmcf->policy_file;
    pol->conf_file = cf->conf_file->file.name;
    pol->conf_line = cf->conf_file->line;
    y->pool = cf->pool;

    rc = ngx_http_ha_optout_yaml_load(y, &pol->file, cf->log);

    if (rc == NGX_DECLINED || rc == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "policy %V: %*s",
                           &pol->file,
                           rc == NGX_DECLINED ? sizeof("no such file") - 1
                                              : y->err_len,
                           rc == NGX_DECLINED ? (u_char *) "no such file"
                                              : y->err);
        return NGX_CONF_ERROR;
    }

    if (rc == NGX_ABORT) {
        ngx_ha_optout_policy_fail(cf, y);
        return NGX_CONF_ERROR;
    }

    rc = ngx_http_ha_optout_policy_parse(y, pol);

    yaml_document_delete(&y->doc);

    if (rc != NGX_OK) {
        ngx_ha_optout_policy_fail(cf, y);
        return NGX_CONF_ERROR;
    }

    hmcf->policy = pol;

    return NGX_CONF_OK;
}


/* postconfiguration: the names in the policy against the upstreams */

/*
 * stream upstreams ("stream:NAME") register after http's postconfiguration,
 * so the policy can name them but not have them checked at "nginx -t"
 */

/*
 * The upstream of a window: bound by "nginx -t" for http upstreams, on
 * first use for stream ones (they register after http's postconfiguration)
 */

static ngx_http_ha_optout_srv_conf_t *
ngx_http_ha_optout_window_upstream(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_window_t *w)
{
    ngx_uint_t                       i;
    ngx_http_ha_optout_srv_conf_t  **hscfp;

    if (w->hscf == NULL) {
        w->hscf = ngx_http_ha_optout_find_upstream(hmcf, &w->upstream);

        /* its place, so that the timer walks the windows only once */

        hscfp = hmcf->upstreams.elts;

        for (i = 0; w->hscf && i < hmcf->upstreams.nelts; i++) {
            if (hscfp[i] == w->hscf) {
                w->index = i;
                break;
            }
        }

        if (w->hscf && i == hmcf->upstreams.nelts) {
            w->hscf = NULL;
        }
    }

    return w->hscf;
}


static ngx_uint_t
ngx_http_ha_optout_policy_stream(ngx_str_t *name)
{
    return name->len > sizeof("stream:") - 1
           && ngx_strncmp(name->data, "stream:", sizeof("stream:") - 1) == 0;
}


/* a window's upstream, pin and pin_selector against the configuration */

static ngx_int_t
ngx_http_ha_optout_resolve_window(ngx_conf_t *cf,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_ha_optout_policy_t *pol,
    ngx_http_ha_optout_window_t *w)
{
    ngx_http_ha_optout_srv_conf_t  *hscf;

    if (ngx_http_ha_optout_policy_stream(&w->upstream)) {

        /* no stream upstream can have one: known without them */

        if (w->flag.selector_len) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "ha_optout: policy %V:%ui:%ui: pin_selector "
                          "is http only: stream upstream \"%V\" has "
                          "no request header to select on (\"ha_optout\" "
                          "in stream takes only sticky_key=$var); use "
                          "\"pin\" alone to hold every new connection, "
                          "or \"sticky: true\" in %V:%ui", &pol->file,
                          w->line, w->column, &w->upstream,
                          &pol->conf_file, pol->conf_line);
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    hscf = ngx_http_ha_optout_find_upstream(hmcf, &w->upstream);

    if (hscf == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "ha_optout: policy %V:%ui:%ui: window for unknown "
                      "upstream \"%V\" (it needs \"ha_optout\") "
                      "in %V:%ui", &pol->file, w->line, w->column,
                      &w->upstream, &pol->conf_file, pol->conf_line);
        return NGX_ERROR;
    }

    if (w->flag.pin_len
        && ngx_http_ha_optout_upstream_peer(hscf, w->flag.pin,
                                            w->flag.pin_len, NULL, NULL)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "ha_optout: policy %V:%ui:%ui: pin \"%*s\" is not "
                      "a usable server of upstream \"%V\" in %V:%ui",
                      &pol->file, w->pin_line, w->pin_column,
                      (size_t) w->flag.pin_len, w->flag.pin,
                      &w->upstream, &pol->conf_file, pol->conf_line);
        return NGX_ERROR;
    }

    if (w->flag.selector_len && hscf->selector == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "ha_optout: policy %V:%ui:%ui: pin_selector needs "
                      "\"ha_optout selector=\" in upstream \"%V\" "
                      "in %V:%ui", &pol->file, w->line, w->column,
                      &w->upstream, &pol->conf_file, pol->conf_line);
        return NGX_ERROR;
    }

    (void) ngx_http_ha_optout_window_upstream(hmcf, w);

    return NGX_OK;
}


ngx_int_t
ngx_http_ha_optout_policy_resolve(ngx_conf_t *cf,
    ngx_http_ha_optout_main_conf_t *hmcf)
{
    ngx_uint_t                        i;
    ngx_http_ha_optout_window_t      *w;
    ngx_http_ha_optout_policy_t      *pol;
    ngx_http_ha_optout_policy_ups_t  *u;

    pol = hmcf->policy;

    if (pol == NULL) {
        return NGX_OK;
    }

    u = pol->upstreams.elts;

    for (i = 0; i < pol->upstreams.nelts; i++) {
        if ((u[i].name.len == 1 && u[i].name.data[0] == '*')
            || ngx_http_ha_optout_policy_stream(&u[i].name))
        {
            continue;
        }

        if (ngx_http_ha_optout_find_upstream(hmcf, &u[i].name) == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "ha_optout: policy %V:%ui:%ui: no upstream "
                          "\"%V\" with \"ha_optout\" in %V:%ui",
                          &pol->file, u[i].line, u[i].column, &u[i].name,
                          &pol->conf_file, pol->conf_line);
            return NGX_ERROR;
        }
    }

    w = pol->windows.elts;

    for (i = 0; i < pol->windows.nelts; i++) {
        if (ngx_http_ha_optout_resolve_window(cf, hmcf, pol, &w[i])
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static u_char *
ngx_http_ha_optout_duration(u_char *buf, time_t t)
{
    if (t % 3600 == 0) {
        return ngx_sprintf(buf, "%Th", t / 3600);
    }

    if (t % 60 == 0) {
        return ngx_sprintf(buf, "%Tm", t / 60);
    }

    return ngx_sprintf(buf, "%Ts", t);
}


/* the end of the window open now on this upstream, or 0 */

static time_t
ngx_http_ha_optout_policy_window_end(ngx_http_ha_optout_policy_t *pol,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_str_t *upstream, time_t now)
{
    time_t                          start, end;
    ngx_uint_t                      i;
    ngx_http_ha_optout_window_t    *w;
    ngx_http_ha_optout_srv_conf_t  *hscf;

    hscf = ngx_http_ha_optout_find_upstream(hmcf, upstream);

    if (pol == NULL || hscf == NULL) {
        return 0;
    }

    w = pol->windows.elts;

    for (i = 0; i < pol->windows.nelts; i++) {
        if (ngx_http_ha_optout_window_upstream(hmcf, &w[i]) == hscf
            && ngx_http_ha_optout_window_live(&w[i], now, &start, &end))
        {
            return end;
        }
    }

    return 0;
}


/*
 * The rules of an upstream: its own entry wins field by field over "*",
 * which wins over what *r holds (the defaults).
 */

static void
ngx_http_ha_optout_policy_rules(ngx_http_ha_optout_policy_t *pol,
    ngx_str_t *upstream, ngx_http_ha_optout_policy_ups_t *r)
{
    ngx_uint_t                        i, k;
    ngx_http_ha_optout_policy_ups_t  *u, *e[2];

    if (pol == NULL) {
        return;
    }

    e[0] = NULL;
    e[1] = NULL;
    u = pol->upstreams.elts;

    for (i = 0; i < pol->upstreams.nelts; i++) {
        if (u[i].name.len == 1 && u[i].name.data[0] == '*') {
            e[0] = &u[i];

        } else if (u[i].name.len == upstream->len
                   && ngx_strncmp(u[i].name.data, upstream->data,
                                  upstream->len) == 0)
        {
            e[1] = &u[i];
        }
    }

    for (k = 0; k < 2; k++) {
        if (e[k] == NULL) {
            continue;
        }

        if (e[k]->allow != -1) {
            r->allow = e[k]->allow;
        }

        if (e[k]->max_ttl != -1) {
            r->max_ttl = e[k]->max_ttl;
        }

        if (e[k]->ttl_none != -1) {
            r->ttl_none = e[k]->ttl_none;
        }

        if (e[k]->protect != -1) {
            r->protect = e[k]->protect;
        }

        if (e[k]->approvers != -1) {
            r->approvers = e[k]->approvers;
        }

        if (e[k]->approval_ttl != -1) {
            r->approval_ttl = e[k]->approval_ttl;
        }
    }
}


/* all allowed, no max_ttl, no ttl "none", not protected, no approvers */

static void
ngx_http_ha_optout_policy_defaults(ngx_http_ha_optout_policy_ups_t *r)
{
    ngx_memzero(r, sizeof(ngx_http_ha_optout_policy_ups_t));

    r->allow = NGX_HA_OPTOUT_ALLOW_ALL;
    r->approval_ttl = 15 * 60;
}


/*
 * How many approvers a write that suspends HA on this upstream needs, and
 * how long its request waits for them: the upstream's entry wins over
 * "*", which wins over the defaults (0, 15m).
 */

ngx_uint_t
ngx_http_ha_optout_policy_approvers(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_str_t *upstream, time_t *approval_ttl)
{
    ngx_http_ha_optout_policy_ups_t  r;

    ngx_http_ha_optout_policy_defaults(&r);
    ngx_http_ha_optout_policy_rules(hmcf->policy, upstream, &r);

    *approval_ttl = r.approval_ttl;

    return (ngx_uint_t) r.approvers;
}


/* what the policy refuses in a flag, in words, into message */

static ngx_int_t
ngx_http_ha_optout_policy_refusal(ngx_str_t *upstream,
    ngx_http_ha_optout_policy_ups_t *r, ngx_int_t want, time_t ttl,
    ngx_uint_t outside, time_t wend, ngx_str_t *message, ngx_pool_t *pool)
{
    u_char      *p, *last;
    ngx_uint_t   i;

    message->data = ngx_pnalloc(pool, 512);
    if (message->data == NULL) {
        return NGX_ERROR;
    }

    p = message->data;
    last = p + 512;

    if (outside && wend == 0) {
        p = ngx_slprintf(p, last, "upstream \"%V\" is protected by policy: "
                         "HA may be suspended only in its scheduled "
                         "windows", upstream);

    } else if (outside) {
        p = ngx_slprintf(p, last, "upstream \"%V\" is protected by policy: "
                         "a flag must end with its open window, at ",
                         upstream);
        p = ngx_http_ha_optout_time_iso(p, wend);

    } else if (want & ~r->allow) {
        for (i = 0; !((want & ~r->allow) & (1 << i)); i++) { /* void */ }

        p = ngx_slprintf(p, last, "policy does not allow opting out of "
                         "\"%s\" on upstream \"%V\"",
                         ngx_http_ha_optout_optouts[i], upstream);

    } else if (ttl == 0) {
        p = ngx_slprintf(p, last, "ttl \"none\" is not allowed by policy on "
                         "upstream \"%V\"", upstream);

    } else {
        p = ngx_slprintf(p, last, "ttl ");
        p = ngx_http_ha_optout_duration(p, ttl);
        p = ngx_slprintf(p, last, " is over the policy's max_ttl of ");
        p = ngx_http_ha_optout_duration(p, r->max_ttl);
        p = ngx_slprintf(p, last, " for upstream \"%V\"", upstream);
    }

    message->len = p - message->data;

    return NGX_DECLINED;
}


/*
 * May the API set this flag on this upstream?  The upstream's own entry
 * wins field by field over "*", which wins over the defaults: everything
 * allowed, no max_ttl, no ttl "none", not protected.  For a PATCH that
 * leaves the ttl alone, the remaining time of the flag is checked.  On a
 * protected upstream the API may act only inside an open window, and its
 * flag must end with the window at the latest.
 */

ngx_int_t
ngx_http_ha_optout_policy_check(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_str_t *upstream, ngx_http_ha_optout_flag_t *flag, ngx_uint_t ttl_set,
    time_t ttl, ngx_str_t *message, ngx_pool_t *pool)
{
    ngx_int_t                         want;
    ngx_uint_t                        outside;
    time_t                            now, expiry, wend;
    ngx_http_ha_optout_policy_ups_t   r;

    ngx_http_ha_optout_policy_defaults(&r);
    ngx_http_ha_optout_policy_rules(hmcf->policy, upstream, &r);

    now = ngx_time();

    if (ttl_set) {
        expiry = ttl ? now + ttl : 0;

    } else {
        expiry = flag->expires_at;
        ttl = expiry ? expiry - now : 0;
    }

    outside = 0;
    wend = 0;

    if (r.protect) {
        wend = ngx_http_ha_optout_policy_window_end(hmcf->policy, hmcf,
                                                    upstream, now);
        outside = (wend == 0 || expiry == 0 || expiry > wend);
    }

    want = (flag->no_failover ? NGX_HA_OPTOUT_ALLOW_FAILOVER : 0)
           | (flag->pin_len ? NGX_HA_OPTOUT_ALLOW_PIN : 0)
           | (flag->no_replication ? NGX_HA_OPTOUT_ALLOW_REPLICATION : 0)
           | (flag->sticky ? NGX_HA_OPTOUT_ALLOW_STICKY : 0);

    if (!outside && (want & ~r.allow) == 0 && (ttl != 0 || r.ttl_none)
        && (r.max_ttl == 0 || ttl == 0 || ttl <= r.max_ttl))
    {
        return NGX_OK;
    }

    return ngx_http_ha_optout_policy_refusal(upstream, &r, want, ttl,
                                             outside, wend, message, pool);
}


/* --------------------------------------------------------------- windows */

/* the occurrence of the window that holds now, if any */

static ngx_uint_t
ngx_http_ha_optout_window_open(ngx_http_ha_optout_window_t *w, time_t now,
    time_t *start, time_t *end)
{
    time_t  week, since;

    if (!w->weekly) {
        if (now < w->start || now >= w->end) {
            return 0;
        }

        *start = w->start;
        *end = w->end;
        return 1;
    }

    /* 1970-01-01 was a thursday: monday 00:00 is 3 days before it */

    week = (now + 3 * 86400) % NGX_HA_OPTOUT_WEEK;
    since = (week - w->offset + NGX_HA_OPTOUT_WEEK) % NGX_HA_OPTOUT_WEEK;

    if (since >= w->length) {
        return 0;
    }

    *start = now - since;
    *end = *start + w->length;

    return 1;
}


/* has the API ended or skipped this occurrence (read without the lock) */

static ngx_uint_t
ngx_http_ha_optout_window_skipped(ngx_http_ha_optout_window_t *w,
    time_t start)
{
    ngx_uint_t                   i, n;
    ngx_http_ha_optout_wskip_t  *k;

    if (ngx_http_ha_optout_sh == NULL) {
        return 0;
    }

    n = ngx_min(ngx_http_ha_optout_sh->nwskips, NGX_HA_OPTOUT_WSKIPS);
    k = ngx_http_ha_optout_sh->wskips;

    for (i = 0; i < n; i++) {
        if (k[i].fp == w->fp && k[i].start == start) {
            return 1;
        }
    }

    return 0;
}


/* open now, and not ended through the API */

static ngx_uint_t
ngx_http_ha_optout_window_live(ngx_http_ha_optout_window_t *w, time_t now,
    time_t *start, time_t *end)
{
    return ngx_http_ha_optout_window_open(w, now, start, end)
           && !ngx_http_ha_optout_window_skipped(w, *start);
}


/* the next occurrence that starts after now and is not skipped */

static ngx_uint_t
ngx_http_ha_optout_window_next(ngx_http_ha_optout_window_t *w, time_t now,
    time_t *start, time_t *end)
{
    time_t      s, week;
    ngx_uint_t  i;

    if (!w->weekly) {
        if (w->start <= now || ngx_http_ha_optout_window_skipped(w, w->start))
        {
            return 0;
        }

        *start = w->start;
        *end = w->end;
        return 1;
    }

    week = (now + 3 * 86400) % NGX_HA_OPTOUT_WEEK;
    s = now + (w->offset - week + NGX_HA_OPTOUT_WEEK) % NGX_HA_OPTOUT_WEEK;

    if (s <= now) {
        s += NGX_HA_OPTOUT_WEEK;
    }

    for (i = 0; i < NGX_HA_OPTOUT_WSKIPS + 1; i++, s += NGX_HA_OPTOUT_WEEK) {
        if (!ngx_http_ha_optout_window_skipped(w, s)) {
            *start = s;
            *end = s + w->length;
            return 1;
        }
    }

    return 0;
}


/* the occurrence an end or a skip through the API acts on */
typedef struct {
    ngx_http_ha_optout_window_t  *best;
    time_t                        start;
    time_t                        end;
    ngx_uint_t                    windows;  /* of the upstream */
    ngx_uint_t                    found;    /* "window" names one of them */
} ngx_http_ha_optout_wfind_t;


/*
 * The upstream's window that "window" names (its name or its position,
 * 1, 2, ...; empty: any): the one open now for an end, the first in file
 * order as the timer picks it; the one that opens soonest for a skip.
 */

static void
ngx_http_ha_optout_window_find(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_str_t *window, ngx_uint_t skip,
    time_t now, ngx_http_ha_optout_wfind_t *wf)
{
    time_t                        s, e;
    ngx_int_t                     pos;
    ngx_uint_t                    i, n;
    ngx_http_ha_optout_window_t  *w;
    ngx_http_ha_optout_policy_t  *pol;

    pol = hmcf->policy;
    pos = 0;

    for (i = 0; i < window->len && i < 6; i++) {
        if (window->data[i] < '0' || window->data[i] > '9') {
            pos = 0;
            break;
        }

        pos = pos * 10 + (window->data[i] - '0');
    }

    w = pol ? pol->windows.elts : NULL;
    n = pol ? pol->windows.nelts : 0;

    ngx_memzero(wf, sizeof(ngx_http_ha_optout_wfind_t));

    for (i = 0; i < n; i++) {
        if (ngx_http_ha_optout_window_upstream(hmcf, &w[i]) != hscf) {
            continue;
        }

        wf->windows++;

        if (window->len) {
            if (!((pos > 0 && (ngx_uint_t) pos == wf->windows)
                  || (w[i].name.len == window->len
                      && ngx_strncmp(w[i].name.data, window->data,
                                     window->len) == 0)))
            {
                continue;
            }

            wf->found = 1;
        }

        if (skip) {
            if (ngx_http_ha_optout_window_next(&w[i], now, &s, &e)
                && (wf->best == NULL || s < wf->start))
            {
                wf->best = &w[i];
                wf->start = s;
                wf->end = e;
            }

        } else if (ngx_http_ha_optout_window_live(&w[i], now, &s, &e)) {
            /* the first in file order acts, as the timer picks it */
            wf->best = &w[i];
            wf->start = s;
            wf->end = e;
            break;
        }
    }
}


/* why no occurrence can be ended or skipped; NGX_OK: one can */

static ngx_int_t
ngx_http_ha_optout_window_refused(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_str_t *window, ngx_uint_t skip,
    ngx_http_ha_optout_wfind_t *wf, ngx_uint_t *status, char **code,
    ngx_str_t *message)
{
    u_char                       *p, *last;
    ngx_uint_t                    i, j, n;
    ngx_http_ha_optout_window_t  *w;

    p = message->data;
    last = p + 1024;

    if (wf->windows == 0) {
        *status = NGX_HTTP_NOT_FOUND;
        *code = "UnknownWindow";
        p = ngx_slprintf(p, last, "upstream \"%V\" has no window in the "
                         "policy%s%V", &hscf->name,
                         hmcf->policy_file.len ? " " : "",
                         &hmcf->policy_file);

    } else if (window->len && !wf->found) {
        *status = NGX_HTTP_NOT_FOUND;
        *code = "UnknownWindow";
        p = ngx_slprintf(p, last, "upstream \"%V\" has no window \"%V\"; "
                         "its windows:", &hscf->name, window);

        w = ((ngx_http_ha_optout_policy_t *) hmcf->policy)->windows.elts;
        n = ((ngx_http_ha_optout_policy_t *) hmcf->policy)->windows.nelts;

        for (i = 0, j = 0; i < n; i++) {
            if (w[i].hscf == hscf) {
                j++;
                p = ngx_slprintf(p, last, j > 1 ? ", %ui" : " %ui", j);
                if (w[i].name.len) {
                    p = ngx_slprintf(p, last, " (%V)", &w[i].name);
                }
            }
        }

    } else if (wf->best == NULL) {
        *status = NGX_HTTP_CONFLICT;
        *code = skip ? "NoNextWindow" : "NoOpenWindow";
        p = ngx_slprintf(p, last, skip ? "no occurrence of %s%V%son "
                                         "\"%V\" is still to come"
                                       : "no window %s%V%sis open on \"%V\" "
                                         "now; to keep the next one closed, "
                                         "use skip",
                         window->len ? "\"" : "", window,
                         window->len ? "\" " : "", &hscf->name);

    } else if (!wf->best->endable) {
        *status = NGX_HTTP_FORBIDDEN;
        *code = "ForbiddenByPolicy";
        p = ngx_slprintf(p, last, "the window of \"%V\" at %V:%ui has "
                         "\"endable: false\": it can be neither ended nor "
                         "skipped through the API", &hscf->name,
                         &((ngx_http_ha_optout_policy_t *) hmcf->policy)->file,
                         wf->best->line);

    } else {
        return NGX_OK;
    }

    message->len = p - message->data;

    return NGX_DECLINED;
}


/* the occurrence noted in the zone; NGX_DECLINED: the table is full */

static ngx_int_t
ngx_http_ha_optout_window_note(ngx_http_ha_optout_wfind_t *wf, time_t now,
    ngx_uint_t *status, char **code, ngx_str_t *message)
{
    ngx_uint_t                   i, j;
    ngx_http_ha_optout_wskip_t  *k;
    ngx_http_ha_optout_shctx_t  *sh;

    sh = ngx_http_ha_optout_sh;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    /* ended and skipped occurrences are kept until they are over */

    k = sh->wskips;

    for (i = 0, j = 0; i < sh->nwskips; i++) {
        if (k[i].end > now) {
            k[j++] = k[i];
        }
    }

    sh->nwskips = j;

    if (sh->nwskips == NGX_HA_OPTOUT_WSKIPS) {
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

        *status = NGX_HTTP_INSUFFICIENT_STORAGE;
        *code = "ZoneFull";
        message->len = ngx_slprintf(message->data, message->data + 1024,
                                    "%ui window occurrences are ended or "
                                    "skipped already; try again when one "
                                    "is over (a table of fixed size: a "
                                    "larger \"ha_optout_zone\" does not "
                                    "make room)",
                                    (ngx_uint_t) NGX_HA_OPTOUT_WSKIPS)
                       - message->data;
        return NGX_DECLINED;
    }

    k[sh->nwskips].fp = wf->best->fp;
    k[sh->nwskips].start = wf->start;
    k[sh->nwskips].end = wf->end;
    sh->nwskips++;

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    return NGX_OK;
}


/*
 * POST v1/windows/{upstream}/end and .../skip: the occurrence of a window
 * that is open now (end) or that opens next (skip) is noted in the zone
 * (and by the caller in the state file), and the windows timer leaves it
 * closed.  "window" is the window's name or its position among the
 * upstream's windows (1, 2, ...); empty: the one that acts now (end), or
 * the next to open (skip).  On success "occ" is the occurrence as a flag.
 */

ngx_int_t
ngx_http_ha_optout_window_act(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_str_t *window, ngx_uint_t skip,
    ngx_http_ha_optout_flag_t *occ, ngx_str_t *name, ngx_uint_t *status,
    char **code, ngx_str_t *message, ngx_pool_t *pool)
{
    time_t                        now;
    ngx_uint_t                    i, j;
    ngx_http_ha_optout_window_t  *w;
    ngx_http_ha_optout_wfind_t    wf;

    now = ngx_time();

    message->len = 0;
    message->data = ngx_pnalloc(pool, 1024);
    if (message->data == NULL) {
        return NGX_ERROR;
    }

    ngx_http_ha_optout_window_find(hmcf, hscf, window, skip, now, &wf);

    if (ngx_http_ha_optout_window_refused(hmcf, hscf, window, skip, &wf,
                                          status, code, message)
        != NGX_OK
        || ngx_http_ha_optout_window_note(&wf, now, status, code, message)
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    *occ = wf.best->flag;
    occ->set_at = wf.start;
    occ->expires_at = wf.end;

    if (wf.best->name.len) {
        *name = wf.best->name;
        return NGX_OK;
    }

    /* a window without a name is called by its position */

    w = ((ngx_http_ha_optout_policy_t *) hmcf->policy)->windows.elts;

    for (i = 0, j = 0; &w[i] != wf.best; i++) {
        j += (w[i].hscf == hscf);
    }

    name->data = ngx_pnalloc(pool, NGX_INT_T_LEN);
    if (name->data == NULL) {
        return NGX_ERROR;
    }

    name->len = ngx_sprintf(name->data, "%ui", j + 1) - name->data;

    return NGX_OK;
}


/* the occurrence the API noted is forgotten again (the state file failed) */

void
ngx_http_ha_optout_window_unact(ngx_http_ha_optout_flag_t *occ)
{
    ngx_uint_t                   i;
    ngx_http_ha_optout_shctx_t  *sh;

    sh = ngx_http_ha_optout_sh;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    for (i = sh->nwskips; i-- > 0; /* void */) {
        if (sh->wskips[i].start == occ->set_at
            && sh->wskips[i].end == occ->expires_at)
        {
            sh->wskips[i] = sh->wskips[--sh->nwskips];
            break;
        }
    }

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
}


static ngx_uint_t
ngx_http_ha_optout_window_same(ngx_http_ha_optout_flag_t *a,
    ngx_http_ha_optout_flag_t *b)
{
    if (!a->present || !b->present) {
        return a->present == b->present;
    }

    return a->set_at == b->set_at
           && a->expires_at == b->expires_at
           && a->no_failover == b->no_failover
           && a->no_replication == b->no_replication
           && a->sticky == b->sticky
           && a->pin_len == b->pin_len
           && a->selector_len == b->selector_len
           && a->reason_len == b->reason_len
           && ngx_memcmp(a->pin, b->pin, a->pin_len) == 0
           && ngx_memcmp(a->selector, b->selector, a->selector_len) == 0
           && ngx_memcmp(a->reason, b->reason, a->reason_len) == 0;
}


/* for the status page: is this upstream "protected: true" by policy */

ngx_uint_t
ngx_http_ha_optout_policy_protected(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_str_t *upstream)
{
    ngx_int_t                         protect;
    ngx_uint_t                        i;
    ngx_http_ha_optout_policy_t      *pol;
    ngx_http_ha_optout_policy_ups_t  *u;

    pol = hmcf->policy;
    protect = 0;

    if (pol == NULL) {
        return 0;
    }

    u = pol->upstreams.elts;

    for (i = 0; i < pol->upstreams.nelts; i++) {
        if (u[i].protect == -1) {
            continue;
        }

        if (u[i].name.len == upstream->len
            && ngx_strncmp(u[i].name.data, upstream->data, upstream->len)
               == 0)
        {
            return u[i].protect;    /* its own entry wins over "*" */
        }

        if (u[i].name.len == 1 && u[i].name.data[0] == '*') {
            protect = u[i].protect;
        }
    }

    return protect;
}


/*
 * For the status page: the window of this upstream that is open now, or
 * else the one that opens next (the earliest start of all its windows).
 */

ngx_int_t
ngx_http_ha_optout_policy_next_window(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_srv_conf_t *hscf, time_t now, time_t *start,
    time_t *end, ngx_http_ha_optout_flag_t **flag)
{
    time_t                        s, e;
    ngx_uint_t                    i, found;
    ngx_http_ha_optout_window_t  *w;
    ngx_http_ha_optout_policy_t  *pol;

    pol = hmcf->policy;

    if (pol == NULL) {
        return NGX_DECLINED;
    }

    w = pol->windows.elts;
    found = 0;

    for (i = 0; i < pol->windows.nelts; i++) {
        if (ngx_http_ha_optout_window_upstream(hmcf, &w[i]) != hscf) {
            continue;
        }

        if (ngx_http_ha_optout_window_live(&w[i], now, &s, &e)) {
            /* open now */

        } else if (!ngx_http_ha_optout_window_next(&w[i], now, &s, &e)) {
            continue;               /* over for good, or all skipped */
        }

        if (!found || s < *start) {
            *start = s;
            *end = e;
            *flag = &w[i].flag;
            found = 1;
        }
    }

    return found ? NGX_OK : NGX_DECLINED;
}


static ngx_uint_t  *ngx_http_ha_optout_first;
static ngx_uint_t   ngx_http_ha_optout_first_n;


/*
 * the first open window of each upstream (its index in the policy, or nw
 * for none), in one walk over the windows (not one per upstream: linear
 * in both); NULL: out of memory
 */

static ngx_uint_t *
ngx_http_ha_optout_windows_first(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_window_t *w, ngx_uint_t nw, time_t now,
    ngx_log_t *log)
{
    time_t       start, end;
    ngx_uint_t   i, j, nu, *first;

    nu = hmcf->upstreams.nelts;

    if (nw && nu > ngx_http_ha_optout_first_n) {
        if (ngx_http_ha_optout_first) {
            ngx_free(ngx_http_ha_optout_first);
        }

        ngx_http_ha_optout_first = ngx_alloc(nu * sizeof(ngx_uint_t), log);
        ngx_http_ha_optout_first_n = ngx_http_ha_optout_first ? nu : 0;

        if (ngx_http_ha_optout_first == NULL) {
            return NULL;
        }
    }

    first = ngx_http_ha_optout_first;

    for (i = 0; nw && i < nu; i++) {
        first[i] = nw;
    }

    for (j = 0; j < nw; j++) {
        if (ngx_http_ha_optout_window_upstream(hmcf, &w[j]) != NULL
            && first[w[j].index] == nw
            && ngx_http_ha_optout_window_live(&w[j], now, &start, &end))
        {
            first[w[j].index] = j;
        }
    }

    return first;
}


/*
 * An upstream's window layer becomes "want" (compared under the mutex),
 * and the end of the one before and the start of the new one are audited.
 */

static void
ngx_http_ha_optout_window_apply(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_http_ha_optout_flag_t *want,
    ngx_log_t *log)
{
    ngx_str_t                   actor, reason;
    ngx_uint_t                  changed;
    ngx_http_ha_optout_rec_t   *rec;
    ngx_http_ha_optout_flag_t   before;

    rec = hscf->rec;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    before = rec->window;
    changed = !ngx_http_ha_optout_window_same(&before, want);

    if (changed) {
        if (before.present) {
            (void) ngx_atomic_fetch_add(
                &rec->changes[NGX_HA_OPTOUT_ACT_WINDOW_END], 1);
        }

        if (want->present) {
            want->version = ++ngx_http_ha_optout_sh->version_seq;
            (void) ngx_atomic_fetch_add(
                &rec->changes[NGX_HA_OPTOUT_ACT_WINDOW_START], 1);
        }

        rec->window = *want;
        ngx_http_ha_optout_bump();
    }

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    if (!changed) {
        return;
    }

    actor = ngx_http_ha_optout_policy_actor;

    if (before.present) {
        reason.data = before.reason;
        reason.len = before.reason_len;

        ngx_http_ha_optout_audit(hmcf, log, NGX_HA_OPTOUT_ACT_WINDOW_END,
                                 &hscf->name, &actor, NULL, &reason,
                                 &before, NULL, NULL);
    }

    if (want->present) {
        reason.data = want->reason;
        reason.len = want->reason_len;

        ngx_http_ha_optout_audit(hmcf, log, NGX_HA_OPTOUT_ACT_WINDOW_START,
                                 &hscf->name, &actor, NULL, &reason,
                                 NULL, want, NULL);
    }
}


/*
 * Worker 0, every tick: each upstream's window layer becomes the first
 * window in file order that is open now (set_at and expires_at are the
 * occurrence's start and end), or empty.  Idempotent: the zone is compared
 * under the mutex, so an overlapping "worker 0" during a reload finds
 * nothing left to do.
 */

void
ngx_http_ha_optout_windows_tick(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log)
{
    time_t                           now, start, end;
    ngx_uint_t                       i, j, nw, nu, *first;
    ngx_http_ha_optout_rec_t        *rec;
    ngx_http_ha_optout_flag_t        want;
    ngx_http_ha_optout_window_t     *w;
    ngx_http_ha_optout_policy_t     *pol;
    ngx_http_ha_optout_srv_conf_t  **hscfp;

    now = ngx_time();
    pol = hmcf->policy;
    hscfp = hmcf->upstreams.elts;
    w = pol ? pol->windows.elts : NULL;
    nw = pol ? pol->windows.nelts : 0;
    nu = hmcf->upstreams.nelts;

    first = ngx_http_ha_optout_windows_first(hmcf, w, nw, now, log);

    if (nw && first == NULL) {
        return;
    }

    for (i = 0; i < nu; i++) {
        rec = hscfp[i]->rec;

        if (rec == NULL) {
            continue;
        }

        ngx_memzero(&want, sizeof(ngx_http_ha_optout_flag_t));

        j = nw ? first[i] : nw;

        if (j < nw && ngx_http_ha_optout_window_live(&w[j], now, &start, &end))
        {
            want = w[j].flag;
            want.set_at = start;
            want.expires_at = end;
        }

        if (!want.present && !rec->window.present) {
            /* the common case, read without the lock: nothing to do */
            continue;
        }

        ngx_http_ha_optout_window_apply(hmcf, hscfp[i], &want, log);
    }
}
