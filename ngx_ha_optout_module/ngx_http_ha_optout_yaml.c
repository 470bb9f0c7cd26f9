
/*
 * ngx_ha_optout_module: policy and state files (libyaml).
 *
 * The state file is the API layer of every upstream in the zone, written
 * after each change (temp file, fsync, rename) and read once per fresh
 * zone.  The policy file is read at configuration time; it limits what the
 * API may set and schedules windows, which the worker-0 timer opens and
 * closes.  Both are read with yaml_parser_load(), so every error can name
 * its line and column; the state file is written with yaml_emitter.
 * docs/state-and-policy.md describes both layouts.
 */


#include "ngx_http_ha_optout_module.h"

#include <yaml.h>
#include <openssl/rand.h>


#define NGX_HA_OPTOUT_STATE_VERSION  1
#define NGX_HA_OPTOUT_FILE_MAX       (4 * 1024 * 1024)
#define NGX_HA_OPTOUT_STATE_JTIS     4096   /* spent jtis kept, at most */
#define NGX_HA_OPTOUT_YAML_DEPTH     64     /* nesting, at most */
#define NGX_HA_OPTOUT_WEEK           (7 * 86400)

#define NGX_HA_OPTOUT_ALLOW_FAILOVER     0x01
#define NGX_HA_OPTOUT_ALLOW_PIN          0x02
#define NGX_HA_OPTOUT_ALLOW_REPLICATION  0x04
#define NGX_HA_OPTOUT_ALLOW_STICKY       0x08
#define NGX_HA_OPTOUT_ALLOW_ALL          0x0f


/* a loaded YAML document and where its first error is */
typedef struct {
    yaml_document_t                  doc;
    ngx_str_t                       *file;
    ngx_pool_t                      *pool;
    ngx_uint_t                       line;      /* 1-based */
    ngx_uint_t                       column;
    ngx_uint_t                       nofollow;  /* the state directory */
    u_char                           err[NGX_MAX_ERROR_STR];
    size_t                           err_len;
} ngx_http_ha_optout_yaml_t;


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


/* a flag read from the state file */
typedef struct {
    ngx_str_t                        upstream;
    ngx_http_ha_optout_flag_t        flag;
    ngx_uint_t                       action;
    const char                      *why;
} ngx_http_ha_optout_saved_t;


/* a spent jti read from, or written to, the state file */
typedef struct {
    ngx_str_t                        jti;
    time_t                           exp;
} ngx_http_ha_optout_jti_t;


typedef struct {
    uint64_t                         version_seq;
    ngx_array_t                      flags;     /* saved_t */
    ngx_array_t                      jtis;      /* jti_t */
    ngx_array_t                      approvals; /* approval_t */
    u_char                           audit_hash[65];    /* "": none */
    ngx_uint_t                       nwskips;
    ngx_http_ha_optout_wskip_t       wskips[NGX_HA_OPTOUT_WSKIPS];
} ngx_http_ha_optout_state_t;


static ngx_uint_t ngx_http_ha_optout_window_open(
    ngx_http_ha_optout_window_t *w, time_t now, time_t *start, time_t *end);
static ngx_uint_t ngx_http_ha_optout_window_live(
    ngx_http_ha_optout_window_t *w, time_t now, time_t *start, time_t *end);
static ngx_uint_t ngx_http_ha_optout_window_next(
    ngx_http_ha_optout_window_t *w, time_t now, time_t *start, time_t *end);


static u_char  ngx_http_ha_optout_zero_hash[] =
    "0000000000000000000000000000000000000000000000000000000000000000";


static const char  *ngx_http_ha_optout_optouts[] = {
    "failover", "pin", "replication", "sticky", NULL
};

static ngx_str_t  ngx_http_ha_optout_policy_actor = ngx_string("policy");


/* ------------------------------------------------------------ YAML nodes */

static ngx_int_t ngx_cdecl
ngx_http_ha_optout_yfail(ngx_http_ha_optout_yaml_t *y, yaml_node_t *node,
    const char *fmt, ...)
{
    va_list  args;

    if (node) {
        y->line = node->start_mark.line + 1;
        y->column = node->start_mark.column + 1;
    }

    va_start(args, fmt);
    y->err_len = ngx_vslprintf(y->err, y->err + sizeof(y->err), fmt, args)
                 - y->err;
    va_end(args);

    return NGX_ERROR;
}


/*
 * Opens a file to read it as a careful daemon does: never blocking in
 * open() (O_NONBLOCK: a FIFO planted there opens at once), never through a
 * symbolic link or a second hard link when "nofollow" (a directory the
 * workers may write), and only a regular file (never a FIFO, device or
 * directory).  On failure
 * *why says what is wrong, or is NULL when the file does not exist.
 */

ngx_fd_t
ngx_http_ha_optout_open_regular(u_char *name, ngx_uint_t nofollow,
    ngx_file_info_t *fi, const char **why)
{
    int        flags;
    ngx_fd_t   fd;
    ngx_err_t  err;

    static u_char  buf[NGX_MAX_ERROR_STR];

    *why = NULL;
    flags = O_RDONLY|O_NONBLOCK|O_NOCTTY|O_CLOEXEC;

    if (nofollow) {
        flags |= O_NOFOLLOW;
    }

    fd = open((char *) name, flags);

    if (fd == NGX_INVALID_FILE) {
        err = ngx_errno;

        if (err == NGX_ENOENT) {
            return NGX_INVALID_FILE;
        }

        if (err == NGX_ELOOP && nofollow) {
            *why = "cannot open: it is a symbolic link (refused: a file "
                   "in a directory the workers may write is read only as "
                   "a regular file)";
            return NGX_INVALID_FILE;
        }

        ngx_snprintf(buf, sizeof(buf), "cannot open: %s%Z", strerror(err));
        *why = (const char *) buf;
        return NGX_INVALID_FILE;
    }

    if (ngx_fd_info(fd, fi) == NGX_FILE_ERROR) {
        ngx_snprintf(buf, sizeof(buf), "cannot stat: %s%Z",
                     strerror(ngx_errno));
        *why = (const char *) buf;
        ngx_close_file(fd);
        return NGX_INVALID_FILE;
    }

    if (!S_ISREG(fi->st_mode)) {
        *why = S_ISFIFO(fi->st_mode) ? "not a regular file: it is a FIFO"
               : S_ISDIR(fi->st_mode) ? "not a regular file: it is a "
                                        "directory"
               : S_ISSOCK(fi->st_mode) ? "not a regular file: it is a "
                                         "socket"
               : "not a regular file: it is a device";
        ngx_close_file(fd);
        return NGX_INVALID_FILE;
    }

    if (nofollow && fi->st_nlink > 1) {
        /* a hard link planted there would be read as our own file */
        *why = "cannot open: it has other hard links (refused: a file in "
               "a directory the workers may write is read only as a file "
               "of its own)";
        ngx_close_file(fd);
        return NGX_INVALID_FILE;
    }

    return fd;
}


/*
 * Reads the file and loads its one YAML document.  NGX_DECLINED: the file
 * does not exist; NGX_ABORT: it is not valid YAML (y->err says where);
 * NGX_ERROR: it could not be read (y->err says why).
 */

/*
 * yaml_parser_load() is quadratic in the nesting depth (a policy
 * "windows: [[[[...]]]]" 40,000 deep took 10 s under nginx -t): a cheap
 * linear pass over the events first refuses a document nested deeper than
 * NGX_HA_OPTOUT_YAML_DEPTH, naming where.  A syntax error is left for the
 * loader, which names it the same way.
 */

static ngx_int_t
ngx_http_ha_optout_yaml_depth(ngx_http_ha_optout_yaml_t *y, u_char *buf,
    size_t size)
{
    ngx_int_t      rc;
    ngx_uint_t     depth, done;
    yaml_event_t   ev;
    yaml_parser_t  parser;

    if (!yaml_parser_initialize(&parser)) {
        return NGX_ERROR;
    }

    yaml_parser_set_input_string(&parser, buf, size);

    rc = NGX_OK;
    depth = 0;

    for ( ;; ) {
        if (!yaml_parser_parse(&parser, &ev)) {
            break;
        }

        done = (ev.type == YAML_STREAM_END_EVENT);

        switch (ev.type) {

        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            if (++depth > NGX_HA_OPTOUT_YAML_DEPTH) {
                y->line = ev.start_mark.line + 1;
                y->column = ev.start_mark.column + 1;
                ngx_http_ha_optout_yfail(y, NULL, "nested deeper than %d",
                                         NGX_HA_OPTOUT_YAML_DEPTH);
                rc = NGX_ABORT;
                done = 1;
            }
            break;

        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            if (depth) {
                depth--;
            }
            break;

        default:
            break;
        }

        yaml_event_delete(&ev);

        if (done) {
            break;
        }
    }

    yaml_parser_delete(&parser);

    return rc;
}


static ngx_int_t
ngx_http_ha_optout_yaml_load(ngx_http_ha_optout_yaml_t *y, ngx_str_t *file,
    ngx_log_t *log)
{
    u_char           *buf;
    size_t            size;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_err_t         err;
    ngx_int_t         rc;
    const char       *why;
    ngx_file_info_t   fi;
    yaml_parser_t     parser;
    yaml_document_t   extra;

    y->file = file;
    y->line = 0;
    y->column = 0;
    y->err_len = 0;

    fd = ngx_http_ha_optout_open_regular(file->data, y->nofollow, &fi, &why);

    if (fd == NGX_INVALID_FILE) {
        if (why == NULL) {
            return NGX_DECLINED;
        }

        ngx_http_ha_optout_yfail(y, NULL, "%s", why);
        return NGX_ERROR;
    }

    size = (size_t) ngx_file_size(&fi);

    if (size > NGX_HA_OPTOUT_FILE_MAX) {
        ngx_http_ha_optout_yfail(y, NULL, "file is larger than %uz bytes",
                                 (size_t) NGX_HA_OPTOUT_FILE_MAX);
        ngx_close_file(fd);
        return NGX_ABORT;
    }

    buf = ngx_pnalloc(y->pool, size + 1);
    if (buf == NULL) {
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    n = ngx_read_fd(fd, buf, size);
    err = ngx_errno;
    ngx_close_file(fd);

    if (n != (ssize_t) size) {
        ngx_http_ha_optout_yfail(y, NULL, "cannot read: %s",
                                 n == -1 ? strerror(err) : "short read");
        return NGX_ERROR;
    }

    rc = ngx_http_ha_optout_yaml_depth(y, buf, size);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!yaml_parser_initialize(&parser)) {
        return NGX_ERROR;
    }

    yaml_parser_set_input_string(&parser, buf, size);

    if (!yaml_parser_load(&parser, &y->doc)) {
        y->line = parser.problem_mark.line + 1;
        y->column = parser.problem_mark.column + 1;

        if (parser.context) {
            ngx_http_ha_optout_yfail(y, NULL, "%s %s (which started at "
                                     "%uz:%uz)",
                                     parser.problem ? parser.problem
                                                    : "invalid YAML",
                                     parser.context,
                                     parser.context_mark.line + 1,
                                     parser.context_mark.column + 1);
        } else {
            ngx_http_ha_optout_yfail(y, NULL, "%s",
                                     parser.problem ? parser.problem
                                                    : "invalid YAML");
        }

        yaml_parser_delete(&parser);
        return NGX_ABORT;
    }

    rc = NGX_OK;

    if (yaml_document_get_root_node(&y->doc) != NULL) {
        /* a second document would be silently ignored: refuse it */

        if (!yaml_parser_load(&parser, &extra)) {
            y->line = parser.problem_mark.line + 1;
            y->column = parser.problem_mark.column + 1;
            ngx_http_ha_optout_yfail(y, NULL, "%s",
                                     parser.problem ? parser.problem
                                                    : "invalid YAML");
            yaml_document_delete(&y->doc);
            rc = NGX_ABORT;

        } else {
            if (yaml_document_get_root_node(&extra) != NULL) {
                y->line = extra.start_mark.line + 1;
                y->column = extra.start_mark.column + 1;
                ngx_http_ha_optout_yfail(y, NULL, "only one YAML document "
                                         "is allowed");
                yaml_document_delete(&y->doc);
                rc = NGX_ABORT;
            }

            yaml_document_delete(&extra);
        }
    }

    yaml_parser_delete(&parser);

    return rc;
}


static yaml_node_t *
ngx_http_ha_optout_ynode(ngx_http_ha_optout_yaml_t *y, int id)
{
    return yaml_document_get_node(&y->doc, id);
}


static ngx_uint_t
ngx_http_ha_optout_yis_null(yaml_node_t *node)
{
    u_char  *v;
    size_t   len;

    if (node->type != YAML_SCALAR_NODE
        || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
    {
        return 0;
    }

    v = node->data.scalar.value;
    len = node->data.scalar.length;

    return len == 0
           || (len == 1 && v[0] == '~')
           || (len == 4 && (ngx_strncmp(v, "null", 4) == 0
                            || ngx_strncmp(v, "Null", 4) == 0
                            || ngx_strncmp(v, "NULL", 4) == 0));
}


static ngx_int_t
ngx_http_ha_optout_yscalar(ngx_http_ha_optout_yaml_t *y, yaml_node_t *node,
    const char *what, ngx_str_t *value)
{
    if (node->type != YAML_SCALAR_NODE) {
        ngx_str_null(value);
        return ngx_http_ha_optout_yfail(y, node, "%s must be a scalar", what);
    }

    value->data = node->data.scalar.value;
    value->len = node->data.scalar.length;

    return NGX_OK;
}


/*
 * Keys are compared as text, so a key is always a scalar.  Duplicates are
 * found in O(n log n): a small mapping is compared pair by pair, a large
 * one is sorted (a copy of its keys, by text then position), so that even
 * a file of many thousand keys loads at once; the duplicate named is the
 * first in file order.
 */

#define NGX_HA_OPTOUT_YDUP_SORT  16

typedef struct {
    yaml_node_t                     *key;
    ngx_uint_t                       pos;
} ngx_http_ha_optout_ykey_t;


static int ngx_libc_cdecl
ngx_http_ha_optout_ykey_cmp(const void *one, const void *two)
{
    const ngx_http_ha_optout_ykey_t  *a = one, *b = two;

    size_t  la, lb;
    int     rc;

    la = a->key->data.scalar.length;
    lb = b->key->data.scalar.length;

    rc = ngx_memcmp(a->key->data.scalar.value, b->key->data.scalar.value,
                    ngx_min(la, lb));

    if (rc == 0 && la != lb) {
        rc = (la < lb) ? -1 : 1;
    }

    if (rc == 0) {
        rc = (a->pos < b->pos) ? -1 : (a->pos > b->pos);
    }

    return rc;
}


static ngx_uint_t
ngx_http_ha_optout_ykey_eq(yaml_node_t *k1, yaml_node_t *k2)
{
    return k1->data.scalar.length == k2->data.scalar.length
           && ngx_memcmp(k1->data.scalar.value, k2->data.scalar.value,
                         k1->data.scalar.length) == 0;
}


/* the first key, in file order, that repeats one before it, or NULL */

static yaml_node_t *
ngx_http_ha_optout_ydup(ngx_http_ha_optout_yaml_t *y, yaml_node_t *node,
    ngx_uint_t *nomem)
{
    ngx_uint_t                  i, n, first;
    yaml_node_t                *k1, *dup;
    yaml_node_pair_t           *p, *q;
    ngx_http_ha_optout_ykey_t  *keys;

    p = node->data.mapping.pairs.start;
    n = node->data.mapping.pairs.top - p;

    if (n <= NGX_HA_OPTOUT_YDUP_SORT) {
        for ( /* void */ ; p < node->data.mapping.pairs.top; p++) {
            k1 = ngx_http_ha_optout_ynode(y, p->key);

            for (q = node->data.mapping.pairs.start; q < p; q++) {
                if (ngx_http_ha_optout_ykey_eq(
                        ngx_http_ha_optout_ynode(y, q->key), k1))
                {
                    return k1;
                }
            }
        }

        return NULL;
    }

    keys = ngx_alloc(n * sizeof(ngx_http_ha_optout_ykey_t),
                     y->pool ? y->pool->log : NULL);
    if (keys == NULL) {
        *nomem = 1;
        return NULL;
    }

    for (i = 0; i < n; i++) {
        keys[i].key = ngx_http_ha_optout_ynode(y, p[i].key);
        keys[i].pos = i;
    }

    qsort(keys, n, sizeof(ngx_http_ha_optout_ykey_t),
          ngx_http_ha_optout_ykey_cmp);

    /* in each run of equal keys, the second is that key's first repeat */

    dup = NULL;
    first = n;

    for (i = 1; i < n; i++) {
        if (ngx_http_ha_optout_ykey_eq(keys[i - 1].key, keys[i].key)
            && (i == 1
                || !ngx_http_ha_optout_ykey_eq(keys[i - 2].key, keys[i].key))
            && keys[i].pos < first)
        {
            first = keys[i].pos;
            dup = keys[i].key;
        }
    }

    ngx_free(keys);

    return dup;
}


static ngx_int_t
ngx_http_ha_optout_ymapping(ngx_http_ha_optout_yaml_t *y, yaml_node_t *node,
    const char *what)
{
    ngx_uint_t         nomem;
    yaml_node_t       *k1;
    yaml_node_pair_t  *p;

    if (node->type != YAML_MAPPING_NODE) {
        return ngx_http_ha_optout_yfail(y, node, "%s must be a mapping",
                                        what);
    }

    for (p = node->data.mapping.pairs.start;
         p < node->data.mapping.pairs.top;
         p++)
    {
        k1 = ngx_http_ha_optout_ynode(y, p->key);

        if (k1 == NULL || k1->type != YAML_SCALAR_NODE) {
            return ngx_http_ha_optout_yfail(y, k1 ? k1 : node,
                                            "keys in %s must be scalars",
                                            what);
        }
    }

    nomem = 0;
    k1 = ngx_http_ha_optout_ydup(y, node, &nomem);

    if (nomem) {
        return ngx_http_ha_optout_yfail(y, NULL, "out of memory");
    }

    if (k1) {
        return ngx_http_ha_optout_yfail(y, k1, "duplicate key \"%*s\" in %s",
                                        k1->data.scalar.length,
                                        k1->data.scalar.value, what);
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_http_ha_optout_ykey_is(yaml_node_t *key, const char *name)
{
    size_t  len;

    len = ngx_strlen(name);

    return key->data.scalar.length == len
           && ngx_strncmp(key->data.scalar.value, name, len) == 0;
}


static ngx_int_t
ngx_http_ha_optout_ybool(ngx_http_ha_optout_yaml_t *y, yaml_node_t *node,
    const char *what, ngx_uint_t *value)
{
    size_t   len;
    u_char  *v;

    if (node->type != YAML_SCALAR_NODE
        || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
    {
        goto invalid;
    }

    v = node->data.scalar.value;
    len = node->data.scalar.length;

    if ((len == 4 && ngx_strncasecmp(v, (u_char *) "true", 4) == 0)
        || (len == 3 && ngx_strncasecmp(v, (u_char *) "yes", 3) == 0)
        || (len == 2 && ngx_strncasecmp(v, (u_char *) "on", 2) == 0))
    {
        *value = 1;
        return NGX_OK;
    }

    if ((len == 5 && ngx_strncasecmp(v, (u_char *) "false", 5) == 0)
        || (len == 2 && ngx_strncasecmp(v, (u_char *) "no", 2) == 0)
        || (len == 3 && ngx_strncasecmp(v, (u_char *) "off", 3) == 0))
    {
        *value = 0;
        return NGX_OK;
    }

invalid:

    return ngx_http_ha_optout_yfail(y, node, "%s must be true or false",
                                    what);
}


/* a string of min..max bytes into a fixed field; null gives "" if min 0 */

static ngx_int_t
ngx_http_ha_optout_ystr(ngx_http_ha_optout_yaml_t *y, yaml_node_t *node,
    const char *what, u_char *dst, uint16_t *len, size_t min, size_t max)
{
    ngx_str_t  v;

    if (min == 0 && ngx_http_ha_optout_yis_null(node)) {
        *len = 0;
        return NGX_OK;
    }

    if (ngx_http_ha_optout_yscalar(y, node, what, &v) != NGX_OK) {
        return NGX_ERROR;
    }

    if (v.len < ngx_max(min, 1) || v.len > max
        || ngx_strlchr(v.data, v.data + v.len, '\0'))
    {
        return ngx_http_ha_optout_yfail(y, node, "%s must be a string of "
                                        "%uz..%uz bytes", what,
                                        ngx_max(min, 1), max);
    }

    ngx_memcpy(dst, v.data, v.len);
    *len = (uint16_t) v.len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ha_optout_yuint(ngx_http_ha_optout_yaml_t *y, yaml_node_t *node,
    const char *what, uint64_t *value)
{
    size_t     i;
    uint64_t   n;
    ngx_str_t  v;

    if (ngx_http_ha_optout_yscalar(y, node, what, &v) != NGX_OK) {
        return NGX_ERROR;
    }

    if (v.len == 0 || v.len > 19) {
        goto invalid;
    }

    n = 0;

    for (i = 0; i < v.len; i++) {
        if (v.data[i] < '0' || v.data[i] > '9') {
            goto invalid;
        }

        n = n * 10 + (v.data[i] - '0');
    }

    *value = n;

    return NGX_OK;

invalid:

    return ngx_http_ha_optout_yfail(y, node, "%s must be a non-negative "
                                    "integer", what);
}


static ngx_int_t
ngx_http_ha_optout_digits(u_char *p, ngx_uint_t n)
{
    ngx_int_t   v;
    ngx_uint_t  i;

    v = 0;

    for (i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }

        v = v * 10 + (p[i] - '0');
    }

    return v;
}


/* RFC 3339: 2026-12-01T02:00:00Z, fractions ignored, offsets honoured */

static time_t
ngx_http_ha_optout_parse_time(u_char *p, size_t len)
{
    u_char     *last;
    time_t      days, t;
    ngx_int_t   y, m, d, hh, mm, ss, oh, om, era, yoe, doy, doe, mdays;

    static const ngx_int_t  mlen[] = { 31, 29, 31, 30, 31, 30,
                                       31, 31, 30, 31, 30, 31 };

    last = p + len;

    if (len < 20 || p[4] != '-' || p[7] != '-'
        || (p[10] != 'T' && p[10] != 't' && p[10] != ' ')
        || p[13] != ':' || p[16] != ':')
    {
        return -1;
    }

    y = ngx_http_ha_optout_digits(p, 4);
    m = ngx_http_ha_optout_digits(p + 5, 2);
    d = ngx_http_ha_optout_digits(p + 8, 2);
    hh = ngx_http_ha_optout_digits(p + 11, 2);
    mm = ngx_http_ha_optout_digits(p + 14, 2);
    ss = ngx_http_ha_optout_digits(p + 17, 2);

    if (y < 1970 || m < 1 || m > 12 || d < 1 || hh < 0 || hh > 23
        || mm < 0 || mm > 59 || ss < 0 || ss > 60)
    {
        return -1;
    }

    mdays = mlen[m - 1];

    if (m == 2 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) {
        mdays = 28;
    }

    if (d > mdays) {
        return -1;
    }

    p += 19;

    if (p < last && *p == '.') {
        for (p++; p < last && *p >= '0' && *p <= '9'; p++) { /* void */ }
    }

    oh = 0;
    om = 0;

    if (last - p == 1 && (*p == 'Z' || *p == 'z')) {
        /* UTC */

    } else if (last - p == 6 && (*p == '+' || *p == '-') && p[3] == ':') {
        oh = ngx_http_ha_optout_digits(p + 1, 2);
        om = ngx_http_ha_optout_digits(p + 4, 2);

        if (oh < 0 || oh > 23 || om < 0 || om > 59) {
            return -1;
        }

        if (*p == '-') {
            oh = -oh;
            om = -om;
        }

    } else {
        return -1;
    }

    /* days from the civil date (H. Hinnant's algorithm) */

    y -= (m <= 2);
    era = y / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    days = (time_t) era * 146097 + doe - 719468;

    t = days * 86400 + hh * 3600 + mm * 60 + ngx_min(ss, 59);

    return t - (oh * 3600 + om * 60);
}


static ngx_int_t
ngx_http_ha_optout_ytime(ngx_http_ha_optout_yaml_t *y, yaml_node_t *node,
    const char *what, ngx_uint_t nullable, time_t *value)
{
    time_t     t;
    ngx_str_t  v;

    if (nullable && ngx_http_ha_optout_yis_null(node)) {
        *value = 0;
        return NGX_OK;
    }

    if (ngx_http_ha_optout_yscalar(y, node, what, &v) != NGX_OK) {
        return NGX_ERROR;
    }

    t = ngx_http_ha_optout_parse_time(v.data, v.len);

    if (t <= 0) {
        return ngx_http_ha_optout_yfail(y, node, "%s must be an RFC 3339 "
                                        "time such as "
                                        "2026-12-01T02:00:00Z", what);
    }

    *value = t;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ha_optout_yttl(ngx_http_ha_optout_yaml_t *y, yaml_node_t *node,
    const char *what, time_t *value)
{
    ngx_str_t  v;

    if (ngx_http_ha_optout_yscalar(y, node, what, &v) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_ha_optout_parse_ttl(v.data, v.len, value) != NGX_OK
        || *value == 0)
    {
        return ngx_http_ha_optout_yfail(y, node, "%s must be a duration "
                                        "\"Ns\", \"Nm\" or \"Nh\" (N > 0)",
                                        what);
    }

    return NGX_OK;
}


/* ------------------------------------------------------------ state file */

typedef struct {
    ngx_fd_t     fd;
    ngx_err_t    err;
} ngx_http_ha_optout_out_t;


static int
ngx_http_ha_optout_emit_write(void *data, unsigned char *buffer, size_t size)
{
    ngx_http_ha_optout_out_t *out = data;

    ssize_t  n;

    while (size) {
        n = ngx_write_fd(out->fd, buffer, size);

        if (n == -1) {
            if (ngx_errno == NGX_EINTR) {
                continue;
            }

            out->err = ngx_errno;
            return 0;
        }

        buffer += n;
        size -= n;
    }

    return 1;
}


static ngx_int_t
ngx_http_ha_optout_emit(yaml_emitter_t *e, yaml_event_t *ev, int ok)
{
    if (!ok) {
        return NGX_ERROR;
    }

    return yaml_emitter_emit(e, ev) ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_http_ha_optout_emit_scalar(yaml_emitter_t *e, u_char *value, size_t len,
    yaml_scalar_style_t style)
{
    yaml_event_t  ev;

    return ngx_http_ha_optout_emit(e, &ev,
               yaml_scalar_event_initialize(&ev, NULL, NULL, value,
                                            (int) len, 1, 1, style));
}


static ngx_int_t
ngx_http_ha_optout_emit_key(yaml_emitter_t *e, const char *key)
{
    return ngx_http_ha_optout_emit_scalar(e, (u_char *) key,
                                          ngx_strlen(key),
                                          YAML_PLAIN_SCALAR_STYLE);
}


/* user text is always quoted, so "null" or "yes" stays a string */

static ngx_int_t
ngx_http_ha_optout_emit_str(yaml_emitter_t *e, const char *key, u_char *v,
    size_t len)
{
    if (ngx_http_ha_optout_emit_key(e, key) != NGX_OK) {
        return NGX_ERROR;
    }

    if (len == 0) {
        return ngx_http_ha_optout_emit_scalar(e, (u_char *) "null", 4,
                                              YAML_PLAIN_SCALAR_STYLE);
    }

    return ngx_http_ha_optout_emit_scalar(e, v, len,
                                          YAML_DOUBLE_QUOTED_SCALAR_STYLE);
}


static ngx_int_t
ngx_http_ha_optout_emit_plain(yaml_emitter_t *e, const char *key,
    u_char *v, size_t len)
{
    if (ngx_http_ha_optout_emit_key(e, key) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_ha_optout_emit_scalar(e, v, len,
                                          YAML_PLAIN_SCALAR_STYLE);
}


static ngx_int_t
ngx_http_ha_optout_emit_bool(yaml_emitter_t *e, const char *key,
    ngx_uint_t v)
{
    return ngx_http_ha_optout_emit_plain(e, key,
                                         (u_char *) (v ? "true" : "false"),
                                         v ? 4 : 5);
}


static ngx_int_t
ngx_http_ha_optout_emit_uint(yaml_emitter_t *e, const char *key, uint64_t v)
{
    u_char  buf[NGX_INT64_LEN];

    return ngx_http_ha_optout_emit_plain(e, key, buf,
                                         ngx_sprintf(buf, "%uL", v) - buf);
}


static ngx_int_t
ngx_http_ha_optout_emit_time(yaml_emitter_t *e, const char *key, time_t t)
{
    u_char  buf[sizeof("2026-11-27T10:00:00Z")];

    if (t == 0) {
        return ngx_http_ha_optout_emit_plain(e, key, (u_char *) "null", 4);
    }

    return ngx_http_ha_optout_emit_plain(e, key, buf,
                                         ngx_http_ha_optout_time_iso(buf, t)
                                         - buf);
}


/* "approved_by": ["bob", "carol"], the subjects quoted as user text */

static ngx_int_t
ngx_http_ha_optout_emit_approvers(yaml_emitter_t *e,
    ngx_http_ha_optout_flag_t *f)
{
    ngx_uint_t    i;
    yaml_event_t  ev;

    if (ngx_http_ha_optout_emit_key(e, "approved_by") != NGX_OK
        || ngx_http_ha_optout_emit(e, &ev,
               yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                                                    YAML_FLOW_SEQUENCE_STYLE))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < f->approvers && i < NGX_HA_OPTOUT_APPROVERS_MAX; i++) {
        if (ngx_http_ha_optout_emit_scalar(e, f->approver[i],
                                           f->approver_len[i],
                                           YAML_DOUBLE_QUOTED_SCALAR_STYLE)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_ha_optout_emit(e, &ev,
                                   yaml_sequence_end_event_initialize(&ev));
}


/* one flag as a mapping: the same fields as the API's JSON */

static ngx_int_t
ngx_http_ha_optout_emit_flag(yaml_emitter_t *e, ngx_http_ha_optout_flag_t *f)
{
    yaml_event_t  ev;

    if (ngx_http_ha_optout_emit(e, &ev,
            yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                                YAML_BLOCK_MAPPING_STYLE))
        != NGX_OK
        || ngx_http_ha_optout_emit_bool(e, "failover", !f->no_failover)
           != NGX_OK
        || ngx_http_ha_optout_emit_str(e, "pin", f->pin, f->pin_len)
           != NGX_OK
        || ngx_http_ha_optout_emit_str(e, "pin_selector", f->selector,
                                       f->selector_len)
           != NGX_OK
        || ngx_http_ha_optout_emit_bool(e, "replication", !f->no_replication)
           != NGX_OK
        || ngx_http_ha_optout_emit_bool(e, "sticky", f->sticky) != NGX_OK
        || ngx_http_ha_optout_emit_str(e, "reason", f->reason, f->reason_len)
           != NGX_OK
        || ngx_http_ha_optout_emit_str(e, "actor", f->actor, f->actor_len)
           != NGX_OK
        || ngx_http_ha_optout_emit_uint(e, "version", f->version) != NGX_OK
        || ngx_http_ha_optout_emit_time(e, "set_at", f->set_at) != NGX_OK
        || ngx_http_ha_optout_emit_time(e, "expires_at", f->expires_at)
           != NGX_OK
        || (f->approvers
            && ngx_http_ha_optout_emit_approvers(e, f) != NGX_OK))
    {
        return NGX_ERROR;
    }

    if (f->source == NGX_HA_OPTOUT_SRC_FLEET
        && (ngx_http_ha_optout_emit_uint(e, "revision", f->revision)
            != NGX_OK
            || ngx_http_ha_optout_emit_str(e, "via", f->via, f->via_len)
               != NGX_OK))
    {
        return NGX_ERROR;
    }

    return ngx_http_ha_optout_emit(e, &ev,
                                   yaml_mapping_end_event_initialize(&ev));
}


/* "approvals": the pending approvals, by id (approval.c) */

static ngx_int_t
ngx_http_ha_optout_emit_approvals(yaml_emitter_t *e,
    ngx_http_ha_optout_approval_t *a, ngx_uint_t n)
{
    u_char        id[16];
    ngx_uint_t    i;
    yaml_event_t  ev;

    if (ngx_http_ha_optout_emit_key(e, "approvals") != NGX_OK
        || ngx_http_ha_optout_emit(e, &ev,
               yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                                   YAML_BLOCK_MAPPING_STYLE))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (ngx_http_ha_optout_emit_scalar(e, id,
                ngx_sprintf(id, "%016xL", a[i].id) - id,
                YAML_DOUBLE_QUOTED_SCALAR_STYLE)
            != NGX_OK
            || ngx_http_ha_optout_emit(e, &ev,
                   yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                                  YAML_BLOCK_MAPPING_STYLE))
               != NGX_OK
            || ngx_http_ha_optout_emit_str(e, "upstream", a[i].upstream,
                                           a[i].upstream_len)
               != NGX_OK
            || ngx_http_ha_optout_emit_plain(e, "method",
                   (u_char *) (a[i].method == 2 ? "PATCH" : "PUT"),
                   a[i].method == 2 ? 5 : 3)
               != NGX_OK
            || ngx_http_ha_optout_emit_uint(e, "needed", a[i].needed)
               != NGX_OK
            || ngx_http_ha_optout_emit_uint(e, "base", a[i].base) != NGX_OK
            || ngx_http_ha_optout_emit_bool(e, "match", a[i].match)
               != NGX_OK
            || (a[i].ttl_set
                && ngx_http_ha_optout_emit_uint(e, "ttl", a[i].ttl)
                   != NGX_OK)
            || ngx_http_ha_optout_emit_time(e, "requested_at",
                                            a[i].requested_at)
               != NGX_OK
            || ngx_http_ha_optout_emit_time(e, "expires_at",
                                            a[i].expires_at)
               != NGX_OK
            || ngx_http_ha_optout_emit_key(e, "flag") != NGX_OK
            || ngx_http_ha_optout_emit_flag(e, &a[i].flag) != NGX_OK
            || ngx_http_ha_optout_emit(e, &ev,
                   yaml_mapping_end_event_initialize(&ev))
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_ha_optout_emit(e, &ev,
                                   yaml_mapping_end_event_initialize(&ev));
}


/*
 * "jtis": the spent jtis, hex (a jti is any text: hex keeps the file
 * plain), each with its token's exp in Unix seconds
 */

static ngx_int_t
ngx_http_ha_optout_emit_jtis(yaml_emitter_t *e, ngx_http_ha_optout_jti_t *j,
    ngx_uint_t n)
{
    u_char        hex[2 * 255], num[NGX_TIME_T_LEN];
    size_t        len;
    ngx_uint_t    i;
    yaml_event_t  ev;

    if (ngx_http_ha_optout_emit_key(e, "jtis") != NGX_OK
        || ngx_http_ha_optout_emit(e, &ev,
               yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                                   YAML_BLOCK_MAPPING_STYLE))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        len = ngx_hex_dump(hex, j[i].jti.data, ngx_min(j[i].jti.len, 255))
              - hex;

        if (ngx_http_ha_optout_emit_scalar(e, hex, len,
                                           YAML_PLAIN_SCALAR_STYLE)
            != NGX_OK
            || ngx_http_ha_optout_emit_scalar(e, num,
                   ngx_sprintf(num, "%T", j[i].exp) - num,
                   YAML_PLAIN_SCALAR_STYLE)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_ha_optout_emit(e, &ev,
                                   yaml_mapping_end_event_initialize(&ev));
}


/*
 * "windows_ended": the occurrences of policy windows ended or skipped
 * through the API, "FP-START": END (the window's fingerprint in hex, the
 * occurrence's start and end in Unix seconds), so that a restart does not
 * reopen them
 */

static ngx_int_t
ngx_http_ha_optout_emit_wskips(yaml_emitter_t *e,
    ngx_http_ha_optout_wskip_t *k, ngx_uint_t n)
{
    u_char        key[32], num[NGX_TIME_T_LEN];
    ngx_uint_t    i;
    yaml_event_t  ev;

    if (ngx_http_ha_optout_emit_key(e, "windows_ended") != NGX_OK
        || ngx_http_ha_optout_emit(e, &ev,
               yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                                   YAML_BLOCK_MAPPING_STYLE))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (ngx_http_ha_optout_emit_scalar(e, key,
                ngx_sprintf(key, "%08xD-%T", k[i].fp, k[i].start) - key,
                YAML_PLAIN_SCALAR_STYLE)
            != NGX_OK
            || ngx_http_ha_optout_emit_scalar(e, num,
                   ngx_sprintf(num, "%T", k[i].end) - num,
                   YAML_PLAIN_SCALAR_STYLE)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_ha_optout_emit(e, &ev,
                                   yaml_mapping_end_event_initialize(&ev));
}


static ngx_http_ha_optout_wskip_t  ngx_http_ha_optout_save_wskips[
                                       NGX_HA_OPTOUT_WSKIPS];
static ngx_uint_t                  ngx_http_ha_optout_save_nwskips;


static ngx_int_t
ngx_http_ha_optout_state_emit(yaml_emitter_t *e, uint64_t version_seq,
    ngx_http_ha_optout_rec_t *snap, ngx_uint_t n, u_char *audit_hash,
    ngx_http_ha_optout_jti_t *jtis, ngx_uint_t njtis,
    ngx_http_ha_optout_approval_t *approvals, ngx_uint_t napprovals)
{
    ngx_uint_t    i;
    yaml_event_t  ev;

    if (ngx_http_ha_optout_emit(e, &ev,
            yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING))
        != NGX_OK
        || ngx_http_ha_optout_emit(e, &ev,
               yaml_document_start_event_initialize(&ev, NULL, NULL, NULL,
                                                    1))
           != NGX_OK
        || ngx_http_ha_optout_emit(e, &ev,
               yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                                   YAML_BLOCK_MAPPING_STYLE))
           != NGX_OK
        || ngx_http_ha_optout_emit_uint(e, "version",
                                        NGX_HA_OPTOUT_STATE_VERSION)
           != NGX_OK
        || ngx_http_ha_optout_emit_uint(e, "version_seq", version_seq)
           != NGX_OK
        || ngx_http_ha_optout_emit_time(e, "saved_at", ngx_time()) != NGX_OK
        || (audit_hash[0]
            && ngx_http_ha_optout_emit_plain(e, "audit_hash", audit_hash,
                                             ngx_strlen(audit_hash))
               != NGX_OK)
        || ngx_http_ha_optout_emit_key(e, "flags") != NGX_OK
        || ngx_http_ha_optout_emit(e, &ev,
               yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                                   YAML_BLOCK_MAPPING_STYLE))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (!snap[i].api.present) {
            continue;
        }

        if (ngx_http_ha_optout_emit_scalar(e, snap[i].name, snap[i].name_len,
                                           YAML_ANY_SCALAR_STYLE)
            != NGX_OK
            || ngx_http_ha_optout_emit_flag(e, &snap[i].api) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    /* the fleet layer (SPEC section 11): the same, keyed by upstream */

    if (ngx_http_ha_optout_emit(e, &ev,
                                yaml_mapping_end_event_initialize(&ev))
        != NGX_OK
        || ngx_http_ha_optout_emit_key(e, "fleet") != NGX_OK
        || ngx_http_ha_optout_emit(e, &ev,
               yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                                   YAML_BLOCK_MAPPING_STYLE))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (!snap[i].fleet.present) {
            continue;
        }

        if (ngx_http_ha_optout_emit_scalar(e, snap[i].name, snap[i].name_len,
                                           YAML_ANY_SCALAR_STYLE)
            != NGX_OK
            || ngx_http_ha_optout_emit_flag(e, &snap[i].fleet) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (ngx_http_ha_optout_emit(e, &ev,
                                yaml_mapping_end_event_initialize(&ev))
        != NGX_OK
        || (njtis
            && ngx_http_ha_optout_emit_jtis(e, jtis, njtis) != NGX_OK)
        || (ngx_http_ha_optout_save_nwskips
            && ngx_http_ha_optout_emit_wskips(e,
                   ngx_http_ha_optout_save_wskips,
                   ngx_http_ha_optout_save_nwskips)
               != NGX_OK)
        || (napprovals
            && ngx_http_ha_optout_emit_approvals(e, approvals, napprovals)
               != NGX_OK)
        || ngx_http_ha_optout_emit(e, &ev,
                                   yaml_mapping_end_event_initialize(&ev))
           != NGX_OK
        || ngx_http_ha_optout_emit(e, &ev,
                                   yaml_document_end_event_initialize(&ev, 1))
           != NGX_OK
        || ngx_http_ha_optout_emit(e, &ev,
                                   yaml_stream_end_event_initialize(&ev))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return yaml_emitter_flush(e) ? NGX_OK : NGX_ERROR;
}


static void
ngx_http_ha_optout_state_error(ngx_log_t *log, ngx_err_t err,
    const char *what, u_char *name, ngx_str_t *state_file)
{
    char             *user;
    ngx_core_conf_t  *ccf;

    if (err == NGX_EACCES || err == NGX_EPERM || err == EROFS) {
        ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx,
                                               ngx_core_module);
        user = (ccf && ccf->username) ? ccf->username : "of the workers";

        ngx_log_error(NGX_LOG_ERR, log, err,
                      "ha_optout: state file \"%V\" cannot be written: %s "
                      "\"%s\" failed; its directory must be writable by "
                      "the nginx worker user \"%s\"",
                      state_file, what, name, user);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, log, err,
                  "ha_optout: state file \"%V\" cannot be written: %s \"%s\" "
                  "failed", state_file, what, name);
}


/*
 * STATE.tmp.PID.RANDOM: the pid lets the timer sweep what a killed worker
 * left, the random part makes the name unpredictable, and the file is
 * created with O_EXCL|O_NOFOLLOW, so nothing planted in the directory (a
 * symbolic link, a FIFO) is ever opened in its place.
 */

static ngx_fd_t
ngx_http_ha_optout_state_tmp(ngx_str_t *state_file, u_char *tmp)
{
    u_char  rnd[8], *p;

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        ngx_set_errno(NGX_EAGAIN);
        return NGX_INVALID_FILE;
    }

    p = ngx_sprintf(tmp, "%V.tmp.%P.", state_file, ngx_pid);
    p = ngx_hex_dump(p, rnd, sizeof(rnd));
    *p = '\0';

    return open((char *) tmp, O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC,
                0600);
}


/* the jtis exported from the zone, those that expire first first */

static ngx_http_ha_optout_jti_t *
ngx_http_ha_optout_state_jtis(u_char *buf, size_t len, ngx_uint_t *n,
    ngx_log_t *log)
{
    u_char                    *p, *last;
    ngx_uint_t                 i, count;
    ngx_http_ha_optout_jti_t  *j;

    count = 0;
    last = buf + len;

    for (p = buf; p < last; p += sizeof(time_t) + 1 + p[sizeof(time_t)]) {
        count++;
    }

    *n = 0;

    if (count == 0) {
        return NULL;
    }

    j = ngx_alloc(count * sizeof(ngx_http_ha_optout_jti_t), log);
    if (j == NULL) {
        return NULL;
    }

    i = count;

    for (p = buf; p < last; p += sizeof(time_t) + 1 + p[sizeof(time_t)]) {
        i--;
        ngx_memcpy(&j[i].exp, p, sizeof(time_t));
        j[i].jti.len = p[sizeof(time_t)];
        j[i].jti.data = p + sizeof(time_t) + 1;
    }

    *n = count;

    return j;
}


/*
 * Writes the API layer of every record in the zone, the spent jtis (so
 * that a token stays spent across a restart) and the audit chain's last
 * hash (so that "audit verify --state" sees a cut tail).  The snapshot
 * takes a number under the zone's mutex; the rename happens under the
 * mutex too, and only when no later snapshot has been renamed already, so
 * two workers saving at once can never leave the older picture on disk.
 * The write that spent a jti saves after spending it: its own jti is in
 * the snapshot.
 */

static ngx_int_t ngx_http_ha_optout_state_write(
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_log_t *log, ngx_uint_t inplace);


ngx_int_t
ngx_http_ha_optout_state_save(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log)
{
    return ngx_http_ha_optout_state_write(hmcf, log, 0);
}


/*
 * The save of a change that restores HA (a DELETE, an expiry, the undo of
 * a refused suspension).  When the atomic save fails (a directory the
 * workers cannot write: no temporary file, no rename), the existing state
 * file is rewritten in place, if the workers may write it: else the
 * suspension it holds would come back at the next start.  The in-place
 * write is not atomic, but it can only fail towards safety: the file is
 * emptied first, so a torn write leaves an empty file or a cut snapshot
 * that does not parse, which the next start sets aside, and nginx then
 * starts with HA fully on (a cut that parses holds fewer of the flags
 * that act now, never one that was cleared).
 */

ngx_int_t
ngx_http_ha_optout_state_save_restore(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log)
{
    if (ngx_http_ha_optout_state_write(hmcf, log, 0) == NGX_OK) {
        return NGX_OK;
    }

    if (ngx_http_ha_optout_state_write(hmcf, log, 1) == NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "ha_optout: state file \"%V\" rewritten in place "
                      "(its directory cannot be written): the restore is "
                      "saved", &hmcf->state_file);
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_ALERT, log, 0,
                  "ha_optout: a restore of HA cannot be saved in state file "
                  "\"%V\", neither by rename nor in place: it is retried, "
                  "and lost if nginx stops before it is saved",
                  &hmcf->state_file);

    return NGX_ERROR;
}


static ngx_int_t
ngx_http_ha_optout_state_write(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log, ngx_uint_t inplace)
{
    ngx_file_info_t              fi;
    u_char                      *tmp, *jbuf;
    u_char                       audit_hash[65];
    size_t                       jlen, jcap;
    time_t                       now;
    uint64_t                     seq, version_seq;
    ngx_fd_t                     fd;
    ngx_err_t                    err;
    ngx_int_t                    rc;
    ngx_uint_t                   n, cap, njtis, i;
    ngx_queue_t                 *q;
    yaml_emitter_t               emitter;
    ngx_http_ha_optout_out_t     out;
    ngx_http_ha_optout_jti_t    *jtis;
    ngx_http_ha_optout_rec_t    *rec, *snap;
    ngx_http_ha_optout_shctx_t  *sh;
    ngx_uint_t                   napprovals;
    ngx_http_ha_optout_approval_t  *approvals;

    if (hmcf->state_file.len == 0) {
        return NGX_OK;
    }

    approvals = NULL;

    sh = ngx_http_ha_optout_sh;

    if (!sh->restored) {
        /* a write before worker 0's first tick: the file comes first */
        ngx_http_ha_optout_state_restore(hmcf, log);
    }

    tmp = ngx_alloc(hmcf->state_file.len + sizeof(".tmp..") + NGX_INT64_LEN
                    + 16, log);
    if (tmp == NULL) {
        return NGX_ERROR;
    }

    /* records are only added (by the master, under the mutex) */

    snap = NULL;
    cap = 0;
    jbuf = NULL;
    jcap = 0;
    jtis = NULL;
    njtis = 0;
    now = ngx_time();

    for ( ;; ) {
        ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

        n = 0;

        for (q = ngx_queue_head(&sh->upstreams);
             q != ngx_queue_sentinel(&sh->upstreams);
             q = ngx_queue_next(q))
        {
            rec = ngx_queue_data(q, ngx_http_ha_optout_rec_t, queue);

            if (!rec->api.present && !rec->fleet.present) {
                continue;
            }

            if (n < cap) {
                ngx_memcpy(snap[n].name, rec->name, rec->name_len);
                snap[n].name_len = rec->name_len;
                snap[n].api = rec->api;
                snap[n].fleet = rec->fleet;
            }

            n++;
        }

        jlen = ngx_http_ha_optout_replay_export_locked(jbuf, jcap,
                                                NGX_HA_OPTOUT_STATE_JTIS, now);

        if (n <= cap && jlen <= jcap) {
            seq = ++sh->state_seq;
            version_seq = sh->version_seq;

            ngx_http_ha_optout_save_nwskips = 0;

            for (i = 0; i < ngx_min(sh->nwskips, NGX_HA_OPTOUT_WSKIPS); i++) {
                if (sh->wskips[i].end > now) {
                    ngx_http_ha_optout_save_wskips[
                        ngx_http_ha_optout_save_nwskips++] = sh->wskips[i];
                }
            }

            ngx_memcpy(audit_hash, sh->audit_hash, sizeof(audit_hash));
            ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
            break;
        }

        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

        if (n > cap) {
            if (snap) {
                ngx_free(snap);
            }

            cap = n + 4;
            snap = ngx_alloc(cap * sizeof(ngx_http_ha_optout_rec_t), log);
            if (snap == NULL) {
                goto nomem;
            }
        }

        if (jlen > jcap) {
            if (jbuf) {
                ngx_free(jbuf);
            }

            jcap = jlen + 1024;
            jbuf = ngx_alloc(jcap, log);
            if (jbuf == NULL) {
                goto nomem;
            }
        }
    }

    audit_hash[64] = '\0';

    if (ngx_strncmp(audit_hash, ngx_http_ha_optout_zero_hash, 64) == 0) {
        /* no audit line yet: nothing to anchor */
        audit_hash[0] = '\0';
    }

    if (jlen) {
        jtis = ngx_http_ha_optout_state_jtis(jbuf, jlen, &njtis, log);
        if (jtis == NULL) {
            goto nomem;
        }
    }

    /* pending approvals change only under the writer lock, as we run */

    napprovals = 0;
    approvals = ngx_alloc(NGX_HA_OPTOUT_APPROVALS_MAX
                          * sizeof(ngx_http_ha_optout_approval_t), log);
    if (approvals == NULL) {
        goto nomem;
    }

    napprovals = ngx_http_ha_optout_approvals_snapshot(approvals);

    rc = NGX_ERROR;

    if (inplace) {
        /* the existing file only: never created, never a planted FIFO */
        fd = open((char *) hmcf->state_file.data,
                  O_WRONLY|O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC);

        if (fd == NGX_INVALID_FILE && ngx_errno == NGX_ENOENT) {
            /* no file, no suspension that could come back at a start */
            rc = NGX_OK;
            goto done;
        }

        if (fd == NGX_INVALID_FILE) {
            ngx_http_ha_optout_state_error(log, ngx_errno, "open()",
                                           hmcf->state_file.data,
                                           &hmcf->state_file);
            goto done;
        }

        if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR || !ngx_is_file(&fi)) {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "ha_optout: state file \"%V\" is not a regular "
                          "file: not rewritten in place", &hmcf->state_file);
            ngx_close_file(fd);
            goto done;
        }

        /*
         * emptied first: a write torn after this leaves an empty file or
         * a prefix of the new snapshot, never the new one over the tail
         * of the old, which might parse into a flag that was cleared
         */
        if (ftruncate(fd, 0) == -1) {
            ngx_http_ha_optout_state_error(log, ngx_errno, "ftruncate()",
                                           hmcf->state_file.data,
                                           &hmcf->state_file);
            ngx_close_file(fd);
            goto done;
        }

    } else {
        fd = ngx_http_ha_optout_state_tmp(&hmcf->state_file, tmp);

        if (fd == NGX_INVALID_FILE) {
            ngx_http_ha_optout_state_error(log, ngx_errno, "open()", tmp,
                                           &hmcf->state_file);
            goto done;
        }
    }

    out.fd = fd;
    out.err = 0;

    if (!yaml_emitter_initialize(&emitter)) {
        ngx_close_file(fd);
        goto failed;
    }

    yaml_emitter_set_output(&emitter, ngx_http_ha_optout_emit_write, &out);
    yaml_emitter_set_unicode(&emitter, 1);
    yaml_emitter_set_width(&emitter, 1000);

    if (ngx_http_ha_optout_state_emit(&emitter, version_seq, snap, n,
                                      audit_hash, jtis, njtis, approvals,
                                      napprovals)
        != NGX_OK)
    {
        yaml_emitter_delete(&emitter);
        ngx_close_file(fd);

        if (out.err) {
            ngx_http_ha_optout_state_error(log, out.err, "write()", tmp,
                                           &hmcf->state_file);
        } else {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "ha_optout: state file \"%V\": YAML emitter "
                          "failed: %s", &hmcf->state_file,
                          emitter.problem ? emitter.problem : "unknown");
        }

        goto failed;
    }

    yaml_emitter_delete(&emitter);

    if (fsync(fd) == -1) {
        ngx_http_ha_optout_state_error(log, ngx_errno, "fsync()", tmp,
                                       &hmcf->state_file);
        ngx_close_file(fd);
        goto failed;
    }

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_http_ha_optout_state_error(log, ngx_errno, "close()", tmp,
                                       &hmcf->state_file);
        goto failed;
    }

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    if (inplace) {
        if (sh->state_saved > seq) {
            /* a later snapshot was overwritten: the timer saves again */
            sh->state_dirty++;

        } else {
            sh->state_saved = seq;
            ngx_memcpy(sh->state_audit_hash,
                       audit_hash[0] ? audit_hash
                                     : ngx_http_ha_optout_zero_hash,
                       sizeof(audit_hash));
        }

        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
        rc = NGX_OK;
        goto done;
    }

    if (sh->state_saved > seq) {
        /* a later snapshot, which includes this one's change, is there */
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
        (void) ngx_delete_file(tmp);
        rc = NGX_OK;
        goto done;
    }

    if (ngx_rename_file(tmp, hmcf->state_file.data) == NGX_FILE_ERROR) {
        err = ngx_errno;
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
        ngx_http_ha_optout_state_error(log, err, "rename() to",
                                       hmcf->state_file.data,
                                       &hmcf->state_file);
        goto failed;
    }

    sh->state_saved = seq;
    ngx_memcpy(sh->state_audit_hash,
               audit_hash[0] ? audit_hash : ngx_http_ha_optout_zero_hash,
               sizeof(audit_hash));

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                   "ha_optout: state file saved, %ui flags, %ui jtis, "
                   "snapshot %uL", n, njtis, seq);

    rc = NGX_OK;
    goto done;

nomem:

    rc = NGX_ERROR;
    goto done;

failed:

    if (!inplace) {
        (void) ngx_delete_file(tmp);
    }

done:

    if (snap) {
        ngx_free(snap);
    }

    if (approvals) {
        ngx_free(approvals);
    }

    if (jtis) {
        ngx_free(jtis);
    }

    if (jbuf) {
        ngx_free(jbuf);
    }

    ngx_free(tmp);

    return rc;
}


/*
 * The flag fields that a state file entry and a policy window share: the
 * one YAML reading of a flag.  NGX_OK: k was one of them; NGX_DECLINED:
 * another key, for the caller.
 */

static ngx_int_t
ngx_http_ha_optout_yflag_field(ngx_http_ha_optout_yaml_t *y, yaml_node_t *k,
    yaml_node_t *val, ngx_http_ha_optout_flag_t *f)
{
    ngx_uint_t  b;

    if (ngx_http_ha_optout_ykey_is(k, "failover")) {
        if (ngx_http_ha_optout_ybool(y, val, "failover", &b) != NGX_OK) {
            return NGX_ERROR;
        }

        f->no_failover = !b;

    } else if (ngx_http_ha_optout_ykey_is(k, "replication")) {
        if (ngx_http_ha_optout_ybool(y, val, "replication", &b)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        f->no_replication = !b;

    } else if (ngx_http_ha_optout_ykey_is(k, "sticky")) {
        if (ngx_http_ha_optout_ybool(y, val, "sticky", &b) != NGX_OK) {
            return NGX_ERROR;
        }

        f->sticky = b;

    } else if (ngx_http_ha_optout_ykey_is(k, "pin")) {
        if (ngx_http_ha_optout_ystr(y, val, "pin", f->pin, &f->pin_len,
                                    0, NGX_HA_OPTOUT_PIN_LEN - 1)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (ngx_http_ha_optout_ykey_is(k, "pin_selector")) {
        if (ngx_http_ha_optout_ystr(y, val, "pin_selector", f->selector,
                                    &f->selector_len, 0,
                                    NGX_HA_OPTOUT_SELECTOR_LEN - 1)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (ngx_http_ha_optout_ykey_is(k, "reason")) {
        if (ngx_http_ha_optout_ystr(y, val, "reason", f->reason,
                                    &f->reason_len, 1,
                                    NGX_HA_OPTOUT_REASON_LEN)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* "approved_by": a list of at most NGX_HA_OPTOUT_APPROVERS_MAX subjects */

static ngx_int_t
ngx_http_ha_optout_state_approvers(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, ngx_http_ha_optout_flag_t *f)
{
    ngx_uint_t         n;
    yaml_node_item_t  *it;

    if (node->type != YAML_SEQUENCE_NODE) {
        return ngx_http_ha_optout_yfail(y, node, "approved_by must be a "
                                        "list");
    }

    n = 0;

    for (it = node->data.sequence.items.start;
         it < node->data.sequence.items.top;
         it++)
    {
        if (n == NGX_HA_OPTOUT_APPROVERS_MAX) {
            return ngx_http_ha_optout_yfail(y, node, "approved_by has more "
                                            "than %d subjects",
                                            NGX_HA_OPTOUT_APPROVERS_MAX);
        }

        if (ngx_http_ha_optout_ystr(y, ngx_http_ha_optout_ynode(y, *it),
                                    "approved_by", f->approver[n],
                                    &f->approver_len[n], 1,
                                    NGX_HA_OPTOUT_ACTOR_LEN)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        n++;
    }

    f->approvers = (uint16_t) n;

    return NGX_OK;
}


static ngx_int_t ngx_http_ha_optout_state_flag(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, ngx_http_ha_optout_flag_t *f);
static ngx_int_t ngx_http_ha_optout_unhex(u_char c);


/* "approvals": { ID: {upstream, method, needed, ..., flag}, ... } */

static ngx_int_t
ngx_http_ha_optout_state_parse_approvals(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, ngx_http_ha_optout_state_t *st)
{
    uint16_t                        len;
    uint64_t                        v;
    ngx_int_t                       hv;
    ngx_uint_t                      i, b;
    ngx_str_t                       m;
    yaml_node_t                    *key, *val, *k, *fv;
    yaml_node_pair_t               *p, *fp;
    ngx_http_ha_optout_approval_t  *a;

    if (ngx_http_ha_optout_yis_null(node)) {
        return NGX_OK;
    }

    if (ngx_http_ha_optout_ymapping(y, node, "approvals") != NGX_OK) {
        return NGX_ERROR;
    }

    for (p = node->data.mapping.pairs.start;
         p < node->data.mapping.pairs.top;
         p++)
    {
        key = ngx_http_ha_optout_ynode(y, p->key);
        val = ngx_http_ha_optout_ynode(y, p->value);

        if (st->approvals.nelts == NGX_HA_OPTOUT_APPROVALS_MAX) {
            return ngx_http_ha_optout_yfail(y, key, "more than %d "
                                            "approvals",
                                            NGX_HA_OPTOUT_APPROVALS_MAX);
        }

        a = ngx_array_push(&st->approvals);
        if (a == NULL) {
            return ngx_http_ha_optout_yfail(y, NULL, "out of memory");
        }

        ngx_memzero(a, sizeof(ngx_http_ha_optout_approval_t));

        if (key->data.scalar.length != 16) {
            goto badid;
        }

        for (i = 0; i < 16; i++) {
            hv = ngx_http_ha_optout_unhex(key->data.scalar.value[i]);
            if (hv < 0) {
                goto badid;
            }

            a->id = (a->id << 4) | (uint64_t) hv;
        }

        if (a->id == 0) {
            goto badid;
        }

        if (ngx_http_ha_optout_ymapping(y, val, "an approval") != NGX_OK) {
            return NGX_ERROR;
        }

        for (fp = val->data.mapping.pairs.start;
             fp < val->data.mapping.pairs.top;
             fp++)
        {
            k = ngx_http_ha_optout_ynode(y, fp->key);
            fv = ngx_http_ha_optout_ynode(y, fp->value);

            if (ngx_http_ha_optout_ykey_is(k, "upstream")) {
                if (ngx_http_ha_optout_ystr(y, fv, "upstream", a->upstream,
                                            &len, 1,
                                            NGX_HA_OPTOUT_NAME_LEN - 1)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

                a->upstream_len = len;

            } else if (ngx_http_ha_optout_ykey_is(k, "method")) {
                if (ngx_http_ha_optout_yscalar(y, fv, "method", &m)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

                if (m.len == 3 && ngx_strncmp(m.data, "PUT", 3) == 0) {
                    a->method = 1;

                } else if (m.len == 5 && ngx_strncmp(m.data, "PATCH", 5) == 0)
                {
                    a->method = 2;

                } else {
                    return ngx_http_ha_optout_yfail(y, fv, "method must be "
                                                    "PUT or PATCH");
                }

            } else if (ngx_http_ha_optout_ykey_is(k, "needed")) {
                if (ngx_http_ha_optout_yuint(y, fv, "needed", &v) != NGX_OK) {
                    return NGX_ERROR;
                }

                if (v == 0 || v > NGX_HA_OPTOUT_APPROVERS_MAX) {
                    return ngx_http_ha_optout_yfail(y, fv,
                                               "needed must be 1..%d",
                                               NGX_HA_OPTOUT_APPROVERS_MAX);
                }

                a->needed = (ngx_uint_t) v;

            } else if (ngx_http_ha_optout_ykey_is(k, "base")) {
                if (ngx_http_ha_optout_yuint(y, fv, "base", &a->base)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

            } else if (ngx_http_ha_optout_ykey_is(k, "match")) {
                if (ngx_http_ha_optout_ybool(y, fv, "match", &b) != NGX_OK) {
                    return NGX_ERROR;
                }

                a->match = b ? 1 : 0;

            } else if (ngx_http_ha_optout_ykey_is(k, "ttl")) {
                if (ngx_http_ha_optout_yuint(y, fv, "ttl", &v) != NGX_OK) {
                    return NGX_ERROR;
                }

                if (v > 366 * 86400) {
                    return ngx_http_ha_optout_yfail(y, fv, "ttl is too "
                                                    "long");
                }

                a->ttl = (time_t) v;
                a->ttl_set = 1;

            } else if (ngx_http_ha_optout_ykey_is(k, "requested_at")) {
                if (ngx_http_ha_optout_ytime(y, fv, "requested_at", 0,
                                             &a->requested_at)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

            } else if (ngx_http_ha_optout_ykey_is(k, "expires_at")) {
                if (ngx_http_ha_optout_ytime(y, fv, "expires_at", 0,
                                             &a->expires_at)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

            } else if (ngx_http_ha_optout_ykey_is(k, "flag")) {
                if (ngx_http_ha_optout_state_flag(y, fv, &a->flag)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

            } else {
                return ngx_http_ha_optout_yfail(y, k, "unknown key \"%*s\" "
                                                "in an approval",
                                                k->data.scalar.length,
                                                k->data.scalar.value);
            }
        }

        if (a->upstream_len == 0 || a->method == 0 || a->needed == 0
            || a->expires_at == 0 || !a->flag.present)
        {
            return ngx_http_ha_optout_yfail(y, val, "an approval needs "
                                            "upstream, method, needed, "
                                            "expires_at and flag");
        }

        if (a->flag.approvers >= a->needed) {
            return ngx_http_ha_optout_yfail(y, val, "an approval with all "
                                            "its approvals is not pending");
        }
    }

    return NGX_OK;

badid:

    return ngx_http_ha_optout_yfail(y, key, "an approval id is 16 hex "
                                    "digits");
}


static ngx_int_t
ngx_http_ha_optout_state_flag(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, ngx_http_ha_optout_flag_t *f)
{
    uint64_t           v;
    ngx_int_t          rc;
    ngx_uint_t         seen;
    yaml_node_t       *k, *val;
    yaml_node_pair_t  *p;

    if (ngx_http_ha_optout_ymapping(y, node, "a flag") != NGX_OK) {
        return NGX_ERROR;
    }

    seen = 0;

    for (p = node->data.mapping.pairs.start;
         p < node->data.mapping.pairs.top;
         p++)
    {
        k = ngx_http_ha_optout_ynode(y, p->key);
        val = ngx_http_ha_optout_ynode(y, p->value);

        rc = ngx_http_ha_optout_yflag_field(y, k, val, f);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_OK) {
            if (f->reason_len) {
                seen |= 1;
            }

        } else if (ngx_http_ha_optout_ykey_is(k, "actor")) {
            if (ngx_http_ha_optout_ystr(y, val, "actor", f->actor,
                                        &f->actor_len, 0,
                                        NGX_HA_OPTOUT_ACTOR_LEN)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else if (ngx_http_ha_optout_ykey_is(k, "version")) {
            if (ngx_http_ha_optout_yuint(y, val, "version", &v) != NGX_OK) {
                return NGX_ERROR;
            }

            f->version = v;

        } else if (ngx_http_ha_optout_ykey_is(k, "revision")) {
            if (ngx_http_ha_optout_yuint(y, val, "revision", &v) != NGX_OK) {
                return NGX_ERROR;
            }

            f->revision = v;

        } else if (ngx_http_ha_optout_ykey_is(k, "via")) {
            if (ngx_http_ha_optout_ystr(y, val, "via", f->via, &f->via_len,
                                        0, NGX_HA_OPTOUT_VIA_LEN)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else if (ngx_http_ha_optout_ykey_is(k, "set_at")) {
            if (ngx_http_ha_optout_ytime(y, val, "set_at", 1, &f->set_at)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else if (ngx_http_ha_optout_ykey_is(k, "expires_at")) {
            if (ngx_http_ha_optout_ytime(y, val, "expires_at", 1,
                                         &f->expires_at)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            seen |= 2;

        } else if (ngx_http_ha_optout_ykey_is(k, "approved_by")) {
            if (ngx_http_ha_optout_state_approvers(y, val, f) != NGX_OK) {
                return NGX_ERROR;
            }

        } else {
            return ngx_http_ha_optout_yfail(y, k, "unknown key \"%*s\" in "
                                            "a flag",
                                            k->data.scalar.length,
                                            k->data.scalar.value);
        }
    }

    if (seen != 3) {
        return ngx_http_ha_optout_yfail(y, node, "a flag needs \"reason\" "
                                        "and \"expires_at\"");
    }

    if (f->selector_len && f->pin_len == 0) {
        return ngx_http_ha_optout_yfail(y, node, "pin_selector requires "
                                        "pin");
    }

    if (!(f->no_failover || f->no_replication || f->sticky || f->pin_len)) {
        return ngx_http_ha_optout_yfail(y, node, "the flag opts out of "
                                        "nothing");
    }

    f->present = 1;
    f->source = NGX_HA_OPTOUT_SRC_API;

    return NGX_OK;
}


static ngx_uint_t
ngx_http_ha_optout_is_hash(u_char *p, size_t len)
{
    size_t  i;

    if (len != 64) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) {
            return 0;
        }
    }

    return 1;
}


static ngx_int_t
ngx_http_ha_optout_unhex(u_char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


/* "windows_ended": { FP-START: END, ... }, see emit_wskips() */

static ngx_int_t
ngx_http_ha_optout_state_parse_wskips(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, ngx_http_ha_optout_state_t *st)
{
    u_char                      *dash, *d;
    size_t                       i, len;
    uint64_t                     end;
    ngx_int_t                    hi;
    int64_t                      fp, start;
    yaml_node_t                 *k;
    yaml_node_pair_t            *p;
    ngx_http_ha_optout_wskip_t  *w;

    if (ngx_http_ha_optout_yis_null(node)) {
        return NGX_OK;
    }

    if (ngx_http_ha_optout_ymapping(y, node, "windows_ended") != NGX_OK) {
        return NGX_ERROR;
    }

    for (p = node->data.mapping.pairs.start;
         p < node->data.mapping.pairs.top;
         p++)
    {
        k = ngx_http_ha_optout_ynode(y, p->key);
        d = k->data.scalar.value;
        len = k->data.scalar.length;
        dash = ngx_strlchr(d, d + len, '-');

        fp = 0;
        start = 0;

        for (i = 0; dash && d + i < dash; i++) {
            hi = ngx_http_ha_optout_unhex(d[i]);
            fp = (hi < 0) ? NGX_ERROR : fp * 16 + hi;
            if (fp < 0) {
                break;
            }
        }

        for (i = dash ? (size_t) (dash + 1 - d) : len; i < len; i++) {
            if (d[i] < '0' || d[i] > '9' || start > 100000000000LL) {
                start = NGX_ERROR;
                break;
            }

            start = start * 10 + (d[i] - '0');
        }

        if (dash == NULL || fp < 0 || dash - d != 8 || start <= 0
            || dash + 1 == d + len)
        {
            return ngx_http_ha_optout_yfail(y, k, "a windows_ended key "
                                            "must be FINGERPRINT-START "
                                            "(8 hex digits, Unix time)");
        }

        if (ngx_http_ha_optout_yuint(y, ngx_http_ha_optout_ynode(y, p->value),
                                     "a window's end", &end)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (end > (uint64_t) NGX_MAX_TIME_T_VALUE
            || (time_t) end <= start)
        {
            return ngx_http_ha_optout_yfail(y,
                                       ngx_http_ha_optout_ynode(y, p->value),
                                       "a window's end is out of range");
        }

        if (st->nwskips == NGX_HA_OPTOUT_WSKIPS) {
            continue;           /* more than the zone keeps */
        }

        w = &st->wskips[st->nwskips++];
        w->fp = (uint32_t) fp;
        w->start = (time_t) start;
        w->end = (time_t) end;
    }

    return NGX_OK;
}


/* "jtis": { HEX: EXP, ... }, the spent jtis of state_save() */

static ngx_int_t
ngx_http_ha_optout_state_parse_jtis(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, ngx_http_ha_optout_state_t *st)
{
    u_char                    *d;
    size_t                     i, len;
    uint64_t                   exp;
    ngx_int_t                  hi, lo;
    ngx_str_t                  v;
    yaml_node_t               *k;
    yaml_node_pair_t          *p;
    ngx_http_ha_optout_jti_t  *j;

    if (ngx_http_ha_optout_yis_null(node)) {
        return NGX_OK;
    }

    if (ngx_http_ha_optout_ymapping(y, node, "jtis") != NGX_OK) {
        return NGX_ERROR;
    }

    if (st->jtis.elts == NULL
        && ngx_array_init(&st->jtis, y->pool, 16,
                          sizeof(ngx_http_ha_optout_jti_t))
           != NGX_OK)
    {
        return ngx_http_ha_optout_yfail(y, NULL, "out of memory");
    }

    for (p = node->data.mapping.pairs.start;
         p < node->data.mapping.pairs.top;
         p++)
    {
        k = ngx_http_ha_optout_ynode(y, p->key);
        v.data = k->data.scalar.value;
        v.len = k->data.scalar.length;
        len = v.len / 2;

        if (v.len == 0 || v.len % 2 || len > 255) {
            return ngx_http_ha_optout_yfail(y, k, "a jti must be 1..255 "
                                            "bytes, hex encoded");
        }

        d = ngx_pnalloc(y->pool, len);
        if (d == NULL) {
            return ngx_http_ha_optout_yfail(y, NULL, "out of memory");
        }

        for (i = 0; i < len; i++) {
            hi = ngx_http_ha_optout_unhex(v.data[2 * i]);
            lo = ngx_http_ha_optout_unhex(v.data[2 * i + 1]);

            if (hi < 0 || lo < 0) {
                return ngx_http_ha_optout_yfail(y, k, "a jti must be 1..255 "
                                                "bytes, hex encoded");
            }

            d[i] = (u_char) (hi * 16 + lo);
        }

        if (ngx_http_ha_optout_yuint(y, ngx_http_ha_optout_ynode(y, p->value),
                                     "a jti's exp", &exp)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (exp == 0 || exp > (uint64_t) NGX_MAX_TIME_T_VALUE) {
            return ngx_http_ha_optout_yfail(y,
                                       ngx_http_ha_optout_ynode(y, p->value),
                                       "a jti's exp is out of range");
        }

        j = ngx_array_push(&st->jtis);
        if (j == NULL) {
            return ngx_http_ha_optout_yfail(y, NULL, "out of memory");
        }

        j->jti.data = d;
        j->jti.len = len;
        j->exp = (time_t) exp;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ha_optout_state_parse(ngx_http_ha_optout_yaml_t *y,
    ngx_http_ha_optout_state_t *st)
{
    time_t                       t;
    uint64_t                     v;
    ngx_str_t                    hv;
    ngx_uint_t                   version;
    yaml_node_t                 *root, *k, *val, *fk;
    yaml_node_pair_t            *p, *fp;
    ngx_http_ha_optout_saved_t  *s;

    root = yaml_document_get_root_node(&y->doc);

    if (root == NULL) {
        return ngx_http_ha_optout_yfail(y, NULL, "the file is empty");
    }

    if (ngx_http_ha_optout_ymapping(y, root, "the state file") != NGX_OK) {
        return NGX_ERROR;
    }

    version = 0;

    for (p = root->data.mapping.pairs.start;
         p < root->data.mapping.pairs.top;
         p++)
    {
        k = ngx_http_ha_optout_ynode(y, p->key);
        val = ngx_http_ha_optout_ynode(y, p->value);

        if (ngx_http_ha_optout_ykey_is(k, "version")) {
            if (ngx_http_ha_optout_yuint(y, val, "version", &v) != NGX_OK) {
                return NGX_ERROR;
            }

            if (v != NGX_HA_OPTOUT_STATE_VERSION) {
                return ngx_http_ha_optout_yfail(y, val, "unsupported state "
                                                "file version %uL", v);
            }

            version = 1;

        } else if (ngx_http_ha_optout_ykey_is(k, "version_seq")) {
            if (ngx_http_ha_optout_yuint(y, val, "version_seq",
                                         &st->version_seq)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else if (ngx_http_ha_optout_ykey_is(k, "saved_at")) {
            if (ngx_http_ha_optout_ytime(y, val, "saved_at", 1, &t)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else if (ngx_http_ha_optout_ykey_is(k, "audit_hash")) {
            if (ngx_http_ha_optout_yscalar(y, val, "audit_hash", &hv)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            if (!ngx_http_ha_optout_is_hash(hv.data, hv.len)) {
                return ngx_http_ha_optout_yfail(y, val, "audit_hash must be "
                                                "64 lowercase hex digits");
            }

            ngx_memcpy(st->audit_hash, hv.data, 64);
            st->audit_hash[64] = '\0';

        } else if (ngx_http_ha_optout_ykey_is(k, "windows_ended")) {
            if (ngx_http_ha_optout_state_parse_wskips(y, val, st)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else if (ngx_http_ha_optout_ykey_is(k, "jtis")) {
            if (ngx_http_ha_optout_state_parse_jtis(y, val, st) != NGX_OK) {
                return NGX_ERROR;
            }

        } else if (ngx_http_ha_optout_ykey_is(k, "approvals")) {
            if (ngx_http_ha_optout_state_parse_approvals(y, val, st)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else if (ngx_http_ha_optout_ykey_is(k, "flags")
                   || ngx_http_ha_optout_ykey_is(k, "fleet"))
        {
            if (ngx_http_ha_optout_yis_null(val)) {
                continue;
            }

            if (ngx_http_ha_optout_ymapping(y, val, "flags") != NGX_OK) {
                return NGX_ERROR;
            }

            for (fp = val->data.mapping.pairs.start;
                 fp < val->data.mapping.pairs.top;
                 fp++)
            {
                fk = ngx_http_ha_optout_ynode(y, fp->key);

                if (fk->data.scalar.length == 0
                    || fk->data.scalar.length >= NGX_HA_OPTOUT_NAME_LEN)
                {
                    return ngx_http_ha_optout_yfail(y, fk, "invalid "
                                                    "upstream name");
                }

                s = ngx_array_push(&st->flags);
                if (s == NULL) {
                    return ngx_http_ha_optout_yfail(y, NULL, "out of "
                                                    "memory");
                }

                ngx_memzero(s, sizeof(ngx_http_ha_optout_saved_t));

                s->upstream.len = fk->data.scalar.length;
                s->upstream.data = fk->data.scalar.value;
                s->upstream.data = ngx_pstrdup(y->pool, &s->upstream);
                if (s->upstream.data == NULL) {
                    return ngx_http_ha_optout_yfail(y, NULL, "out of "
                                                    "memory");
                }

                if (ngx_http_ha_optout_state_flag(y,
                        ngx_http_ha_optout_ynode(y, fp->value), &s->flag)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

                if (ngx_http_ha_optout_ykey_is(k, "fleet")) {
                    s->flag.source = NGX_HA_OPTOUT_SRC_FLEET;
                }
            }

        } else {
            return ngx_http_ha_optout_yfail(y, k, "unknown key \"%*s\"",
                                            k->data.scalar.length,
                                            k->data.scalar.value);
        }
    }

    if (!version) {
        return ngx_http_ha_optout_yfail(y, root, "\"version\" is missing");
    }

    return NGX_OK;
}


/* decides what becomes of a saved flag; config only, no zone access */

static void
ngx_http_ha_optout_state_judge(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_saved_t *s, time_t now)
{
    ngx_http_ha_optout_srv_conf_t  *hscf;

    hscf = ngx_http_ha_optout_find_upstream(hmcf, &s->upstream);

    if (hscf == NULL || hscf->rec == NULL) {
        s->action = NGX_HA_OPTOUT_ACT_RESTORE_REJECTED;
        s->why = "the upstream has no \"ha_optout\" any more";
        return;
    }

    if (ngx_http_ha_optout_header_safe(s->flag.pin, s->flag.pin_len)
        != NGX_OK
        || ngx_http_ha_optout_header_safe(s->flag.selector,
                                          s->flag.selector_len)
           != NGX_OK)
    {
        s->action = NGX_HA_OPTOUT_ACT_RESTORE_REJECTED;
        s->why = "its pin or pin_selector holds control bytes or non-ASCII";
        return;
    }

    if (s->flag.pin_len
        && ngx_http_ha_optout_upstream_peer(hscf, s->flag.pin,
                                            s->flag.pin_len, NULL, NULL)
           != NGX_OK)
    {
        s->action = NGX_HA_OPTOUT_ACT_RESTORE_REJECTED;
        s->why = "its pin no longer names a usable server of the upstream";
        return;
    }

    if (s->flag.selector_len && hscf->selector == NULL) {
        s->action = NGX_HA_OPTOUT_ACT_RESTORE_REJECTED;
        s->why = "the upstream has no \"ha_optout selector=\" any more";
        return;
    }

    if (s->flag.expires_at && s->flag.expires_at <= now) {
        s->action = NGX_HA_OPTOUT_ACT_EXPIRE;
        s->why = "it expired while nginx was down";
        return;
    }

    s->action = NGX_HA_OPTOUT_ACT_RESTORE;
    s->why = NULL;
}


static int ngx_libc_cdecl
ngx_http_ha_optout_jti_cmp(const void *one, const void *two)
{
    const ngx_http_ha_optout_jti_t  *a = one, *b = two;

    return (a->exp < b->exp) ? -1 : (a->exp > b->exp);
}


/* PATH.corrupt-<unix time>, with a suffix if that name is taken */

static u_char *
ngx_http_ha_optout_aside_name(ngx_pool_t *pool, ngx_str_t *file)
{
    u_char           *name, *p;
    ngx_uint_t        i;
    ngx_file_info_t   fi;

    name = ngx_pnalloc(pool, file->len + sizeof(".corrupt--")
                             + 2 * NGX_INT_T_LEN);
    if (name == NULL) {
        return NULL;
    }

    p = ngx_sprintf(name, "%V.corrupt-%T", file, ngx_time());

    for (i = 1; i < 1000; i++) {
        *p = '\0';

        if (ngx_link_info(name, &fi) == NGX_FILE_ERROR
            && ngx_errno == NGX_ENOENT)
        {
            return name;
        }

        p = ngx_sprintf(name, "%V.corrupt-%T-%ui", file, ngx_time(), i);
    }

    return NULL;
}


/*
 * Worker 0, while the zone is fresh (start, restart, zone resize): puts the
 * saved API flags back.  The file is read outside the zone's mutex; the
 * flags are applied, and a corrupt file is renamed aside, under it with
 * "restored" checked again, so that exactly one process does either.
 */

void
ngx_http_ha_optout_state_restore(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log)
{
    u_char                         *aside;
    u_char                          name[NGX_HA_OPTOUT_NAME_LEN * 4];
    u_char                          cbuf[2048];
    time_t                          now;
    uint64_t                        max;
    ngx_int_t                       rc, arc;
    ngx_err_t                       err;
    ngx_str_t                       actor, reason, cause;
    ngx_uint_t                      i, changed, nj, room, restored_jtis;
    ngx_uint_t                      noroom;
    ngx_pool_t                     *pool;
    ngx_http_ha_optout_jti_t       *j;
    ngx_http_ha_optout_approval_t  *ap;
    ngx_http_ha_optout_rec_t       *rec;
    ngx_http_ha_optout_flag_t      *layer;
    ngx_http_ha_optout_state_t      st;
    ngx_http_ha_optout_saved_t     *s;
    ngx_http_ha_optout_shctx_t     *sh;
    ngx_http_ha_optout_srv_conf_t  *hscf;
    ngx_http_ha_optout_yaml_t      *y;

    sh = ngx_http_ha_optout_sh;

    if (sh->restored) {
        return;
    }

    if (hmcf->state_file.len == 0) {
        ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
        sh->restored = 1;
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
        return;
    }

    pool = ngx_create_pool(16384, log);
    if (pool == NULL) {
        return;
    }

    ngx_memzero(&st, sizeof(ngx_http_ha_optout_state_t));

    y = ngx_pcalloc(pool, sizeof(ngx_http_ha_optout_yaml_t));
    if (y == NULL
        || ngx_array_init(&st.flags, pool, 8,
                          sizeof(ngx_http_ha_optout_saved_t))
           != NGX_OK
        || ngx_array_init(&st.approvals, pool, 4,
                          sizeof(ngx_http_ha_optout_approval_t))
           != NGX_OK)
    {
        ngx_destroy_pool(pool);
        return;
    }

    y->pool = pool;
    y->nofollow = 1;
    now = ngx_time();

    rc = ngx_http_ha_optout_yaml_load(y, &hmcf->state_file, log);

    if (rc == NGX_OK) {
        if (ngx_http_ha_optout_state_parse(y, &st) != NGX_OK) {
            rc = NGX_ABORT;
        }

        yaml_document_delete(&y->doc);
    }

    s = st.flags.elts;
    j = st.jtis.elts;
    nj = (rc == NGX_OK) ? st.jtis.nelts : 0;

    if (rc == NGX_OK) {
        for (i = 0; i < st.flags.nelts; i++) {
            ngx_http_ha_optout_state_judge(hmcf, &s[i], now);
        }

        /* in expiry order, each goes to the end of the replay queue */

        if (nj > 1) {
            qsort(j, nj, sizeof(ngx_http_ha_optout_jti_t),
                  ngx_http_ha_optout_jti_cmp);
        }
    }

    aside = NULL;
    err = 0;

    if (rc == NGX_ABORT) {
        aside = ngx_http_ha_optout_aside_name(pool, &hmcf->state_file);
    }

    changed = 0;
    restored_jtis = 0;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    if (sh->restored) {
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
        ngx_destroy_pool(pool);
        return;
    }

    if (rc == NGX_OK && st.audit_hash[0]) {
        /* the log cut while nginx was stopped: said before any new line */
        ngx_http_ha_optout_audit_gap_locked(hmcf, st.audit_hash, log);
    }

    if (rc == NGX_ABORT) {
        if (aside == NULL
            || ngx_rename_file(hmcf->state_file.data, aside)
               == NGX_FILE_ERROR)
        {
            err = aside ? ngx_errno : 0;
            aside = NULL;
        }
    }

    max = st.version_seq;

    for (i = 0; rc == NGX_OK && i < st.flags.nelts; i++) {
        if (s[i].action != NGX_HA_OPTOUT_ACT_RESTORE) {
            continue;
        }

        hscf = ngx_http_ha_optout_find_upstream(hmcf, &s[i].upstream);
        rec = hscf->rec;
        layer = (s[i].flag.source == NGX_HA_OPTOUT_SRC_FLEET) ? &rec->fleet
                                                             : &rec->api;

        if (layer->present) {
            /* set through the API since this start: that one is newer */
            s[i].action = NGX_HA_OPTOUT_ACT_N;
            continue;
        }

        *layer = s[i].flag;
        (void) ngx_atomic_fetch_add(
            &rec->changes[NGX_HA_OPTOUT_ACT_RESTORE], 1);
        max = ngx_max(max, s[i].flag.version);
        changed = 1;
    }

    if (sh->version_seq < max) {
        sh->version_seq = max;
    }

    /* ended and skipped window occurrences stay so */

    for (i = 0; rc == NGX_OK && i < st.nwskips; i++) {
        if (st.wskips[i].end > now && sh->nwskips < NGX_HA_OPTOUT_WSKIPS) {
            sh->wskips[sh->nwskips++] = st.wskips[i];
        }
    }

    /*
     * spent jtis stay spent (SPEC 8): they come back before any write,
     * those that expire last first, at most NGX_HA_OPTOUT_STATE_JTIS and a
     * quarter of the zone, so that new writes still find room
     */

    room = (ngx_uint_t) (ngx_http_ha_optout_shpool->end
                         - (u_char *) ngx_http_ha_optout_shpool)
           / 4 / 128;
    room = ngx_min(room, NGX_HA_OPTOUT_STATE_JTIS);

    for (i = (nj > room) ? nj - room : 0; i < nj; i++) {
        if (j[i].exp + NGX_HA_OPTOUT_LEEWAY <= now) {
            continue;
        }

        if (ngx_http_ha_optout_replay_check_locked(&j[i].jti, j[i].exp, now)
            == NGX_BUSY)
        {
            break;
        }

        restored_jtis++;
    }

    /*
     * a log that was empty or gone at start (rotated away): the chain
     * continues from the hash the state file saw last
     */

    if (rc == NGX_OK && st.audit_hash[0] && sh->audit_count == 0
        && ngx_strncmp(sh->audit_hash, ngx_http_ha_optout_zero_hash, 64)
           == 0)
    {
        ngx_memcpy(sh->audit_hash, st.audit_hash, 65);
    }

    /*
     * pending approvals (policy "approvers") come back in the same
     * section: a listing that sees "restored" sees them too.  Those
     * expired are audited below; id 0 marks one done here.
     */

    noroom = 0;

    for (i = 0; rc == NGX_OK && i < st.approvals.nelts; i++) {
        ap = &((ngx_http_ha_optout_approval_t *) st.approvals.elts)[i];

        arc = ngx_http_ha_optout_approval_restore(hmcf, ap, now, log, 1);

        if (arc != NGX_ABORT) {
            noroom += (arc == NGX_DECLINED);
            ap->id = 0;
        }
    }

    sh->restored = 1;

    if (changed) {
        ngx_http_ha_optout_bump();
    }

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    if (rc == NGX_ABORT) {
        if (aside) {
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "ha_optout: state file \"%V\" is corrupt "
                          "(%V:%ui:%ui: %*s); it was renamed to \"%s\" and "
                          "nginx starts with HA fully on (no flags)",
                          &hmcf->state_file, &hmcf->state_file, y->line,
                          y->column, y->err_len, y->err, aside);
        } else {
            ngx_log_error(NGX_LOG_ALERT, log, err,
                          "ha_optout: state file \"%V\" is corrupt "
                          "(%V:%ui:%ui: %*s) and could not be renamed "
                          "aside; nginx starts with HA fully on (no flags)",
                          &hmcf->state_file, &hmcf->state_file, y->line,
                          y->column, y->err_len, y->err);
            ngx_destroy_pool(pool);
            return;
        }

    } else if (rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "ha_optout: state file \"%V\" cannot be read (%*s); "
                      "nginx starts with HA fully on (no flags)",
                      &hmcf->state_file, y->err_len, y->err);
        ngx_destroy_pool(pool);
        return;
    }

    if (restored_jtis) {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "ha_optout: %ui spent jtis restored from \"%V\"",
                      restored_jtis, &hmcf->state_file);
    }

    for (i = 0; rc == NGX_OK && i < st.flags.nelts; i++) {
        actor.data = s[i].flag.actor;
        actor.len = s[i].flag.actor_len;
        reason.data = s[i].flag.reason;
        reason.len = s[i].flag.reason_len;

        switch (s[i].action) {

        case NGX_HA_OPTOUT_ACT_RESTORE:
            ngx_http_ha_optout_audit(hmcf, log, NGX_HA_OPTOUT_ACT_RESTORE,
                                     &s[i].upstream, &actor, NULL, &reason,
                                     NULL, &s[i].flag, NULL);
            break;

        case NGX_HA_OPTOUT_ACT_EXPIRE:
        case NGX_HA_OPTOUT_ACT_RESTORE_REJECTED:
            /* the name is the file's text: escaped, one line */
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "ha_optout: saved flag of \"%*s\" dropped: %s",
                          (size_t) (ngx_http_ha_optout_escape(name,
                                        sizeof(name), s[i].upstream.data,
                                        s[i].upstream.len) - name),
                          name, s[i].why);

            hscf = ngx_http_ha_optout_find_upstream(hmcf, &s[i].upstream);

            if (hscf && hscf->rec) {
                (void) ngx_atomic_fetch_add(&hscf->rec->changes[s[i].action],
                                            1);
            }

            /* the audit line says why, in its "cause" */
            cause.data = cbuf;
            cause.len = ngx_http_ha_optout_drop_cause(cbuf,
                                                      cbuf + sizeof(cbuf),
                                                      hscf, &s[i].upstream,
                                                      &s[i].flag, now)
                        - cbuf;

            ngx_http_ha_optout_audit_cause(hmcf, log, s[i].action,
                                           &s[i].upstream, &actor, NULL,
                                           &reason, &s[i].flag, NULL, NULL,
                                           &cause);
            break;

        default:
            ngx_log_error(NGX_LOG_NOTICE, log, 0,
                          "ha_optout: saved flag of \"%V\" not restored: a "
                          "newer one was set through the API",
                          &s[i].upstream);
        }
    }

    /* pending approvals (policy "approvers"): back, or audited expired */

    for (i = 0; rc == NGX_OK && i < st.approvals.nelts; i++) {
        ap = &((ngx_http_ha_optout_approval_t *) st.approvals.elts)[i];

        if (ap->id) {
            (void) ngx_http_ha_optout_approval_restore(hmcf, ap, now, log,
                                                       0);
        }
    }

    if (noroom) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "ha_optout: no room in the zone for %ui pending "
                      "approvals of \"%V\"", noroom, &hmcf->state_file);
    }

    ngx_destroy_pool(pool);

    /* the file now says what the zone holds: dropped flags disappear */

    (void) ngx_http_ha_optout_state_save(hmcf, log);
}


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


static ngx_int_t
ngx_http_ha_optout_policy_upstream(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *key, yaml_node_t *node, ngx_http_ha_optout_policy_t *pol)
{
    ngx_uint_t                        b;
    yaml_node_t                      *k, *val;
    yaml_node_pair_t                 *p;
    ngx_http_ha_optout_policy_ups_t  *u;

    u = ngx_array_push(&pol->upstreams);
    if (u == NULL) {
        return ngx_http_ha_optout_yfail(y, NULL, "out of memory");
    }

    u->name.len = key->data.scalar.length;
    u->name.data = key->data.scalar.value;
    u->name.data = ngx_pstrdup(y->pool, &u->name);
    if (u->name.data == NULL) {
        return ngx_http_ha_optout_yfail(y, NULL, "out of memory");
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
        k = ngx_http_ha_optout_ynode(y, p->key);
        val = ngx_http_ha_optout_ynode(y, p->value);

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
    }

    return NGX_OK;
}


/* "sun 02:00-04:00": weekly, UTC; the end may pass midnight */

static ngx_int_t
ngx_http_ha_optout_policy_every(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, ngx_http_ha_optout_window_t *w)
{
    u_char      *p, *last;
    size_t       len;
    ngx_int_t    day, h1, m1, h2, m2, from, to;
    ngx_str_t    v;

    static const char  *days[] = { "monday", "tuesday", "wednesday",
                                   "thursday", "friday", "saturday",
                                   "sunday" };

    if (ngx_http_ha_optout_yscalar(y, node, "every", &v) != NGX_OK) {
        return NGX_ERROR;
    }

    p = v.data;
    last = v.data + v.len;

    for (day = 0; day < 7; day++) {
        if (v.len > 3 && ngx_strncasecmp(p, (u_char *) days[day], 3) == 0) {
            break;
        }
    }

    if (day == 7) {
        goto invalid;
    }

    /* "sun" or "sunday" */

    len = ngx_strlen(days[day]);

    if ((size_t) (last - p) > len
        && ngx_strncasecmp(p, (u_char *) days[day], len) == 0
        && p[len] == ' ')
    {
        p += len;

    } else if (p[3] == ' ') {
        p += 3;

    } else {
        goto invalid;
    }

    while (p < last && *p == ' ') {
        p++;
    }

    if (last - p < 11) {
        goto invalid;
    }

    h1 = ngx_http_ha_optout_digits(p, 2);
    m1 = (p[2] == ':') ? ngx_http_ha_optout_digits(p + 3, 2) : -1;
    p += 5;

    while (p < last && *p == ' ') {
        p++;
    }

    if (p == last || *p != '-') {
        goto invalid;
    }

    p++;

    while (p < last && *p == ' ') {
        p++;
    }

    if (last - p != 5 || p[2] != ':') {
        goto invalid;
    }

    h2 = ngx_http_ha_optout_digits(p, 2);
    m2 = ngx_http_ha_optout_digits(p + 3, 2);

    if (h1 < 0 || h1 > 23 || m1 < 0 || m1 > 59 || h2 < 0 || m2 < 0
        || m2 > 59 || h2 > 24 || (h2 == 24 && m2 != 0))
    {
        goto invalid;
    }

    from = h1 * 60 + m1;
    to = h2 * 60 + m2;

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

invalid:

    return ngx_http_ha_optout_yfail(y, node, "every must look like "
                                    "\"sun 02:00-04:00\" (a day mon..sun, "
                                    "then HH:MM-HH:MM in UTC), not \"%V\"",
                                    &v);
}


static void
ngx_http_ha_optout_fnv(uint32_t *h, u_char *p, size_t len)
{
    while (len--) {
        *h = (*h ^ *p++) * 16777619u;
    }
}


static ngx_int_t
ngx_http_ha_optout_policy_window(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, ngx_http_ha_optout_policy_t *pol)
{
    u_char                        c;
    ngx_int_t                     rc;
    ngx_uint_t                    seen, i;
    yaml_node_t                  *k, *val, *upstream;
    yaml_node_pair_t             *p;
    ngx_http_ha_optout_flag_t    *f;
    ngx_http_ha_optout_window_t  *w, *o;

    enum {
        SEEN_EVERY = 1,
        SEEN_START = 2,
        SEEN_END = 4
    };

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
    f = &w->flag;
    upstream = NULL;
    seen = 0;

    for (p = node->data.mapping.pairs.start;
         p < node->data.mapping.pairs.top;
         p++)
    {
        k = ngx_http_ha_optout_ynode(y, p->key);
        val = ngx_http_ha_optout_ynode(y, p->value);

        if (ngx_http_ha_optout_ykey_is(k, "upstream")) {
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

            w->upstream.data = ngx_pstrdup(y->pool, &w->upstream);
            if (w->upstream.data == NULL) {
                return ngx_http_ha_optout_yfail(y, NULL, "out of memory");
            }

            upstream = val;

        } else if (ngx_http_ha_optout_ykey_is(k, "name")) {
            if (ngx_http_ha_optout_yscalar(y, val, "name", &w->name)
                != NGX_OK)
            {
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

            w->name.data = ngx_pstrdup(y->pool, &w->name);
            if (w->name.data == NULL) {
                return ngx_http_ha_optout_yfail(y, NULL, "out of memory");
            }

        } else if (ngx_http_ha_optout_ykey_is(k, "endable")) {
            if (ngx_http_ha_optout_ybool(y, val, "endable", &w->endable)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else if (ngx_http_ha_optout_ykey_is(k, "every")) {
            if (ngx_http_ha_optout_policy_every(y, val, w) != NGX_OK) {
                return NGX_ERROR;
            }

            seen |= SEEN_EVERY;

        } else if (ngx_http_ha_optout_ykey_is(k, "start")) {
            if (ngx_http_ha_optout_ytime(y, val, "start", 0, &w->start)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            seen |= SEEN_START;

        } else if (ngx_http_ha_optout_ykey_is(k, "end")) {
            if (ngx_http_ha_optout_ytime(y, val, "end", 0, &w->end)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            if ((seen & SEEN_START) && w->start >= w->end) {
                return ngx_http_ha_optout_yfail(y, val, "end must be after "
                                                "start");
            }

            seen |= SEEN_END;

        } else if ((rc = ngx_http_ha_optout_yflag_field(y, k, val, f))
                   != NGX_DECLINED)
        {
            if (rc == NGX_ERROR) {
                return NGX_ERROR;
            }

            if (ngx_http_ha_optout_ykey_is(k, "pin")) {
                w->pin_line = val->start_mark.line + 1;
                w->pin_column = val->start_mark.column + 1;
            }

        } else {
            return ngx_http_ha_optout_yfail(y, k, "unknown key \"%*s\" in a "
                                            "window (upstream, name, "
                                            "endable, every, start, "
                                            "end, failover, pin, "
                                            "pin_selector, replication, "
                                            "sticky, reason)",
                                            k->data.scalar.length,
                                            k->data.scalar.value);
        }
    }

    if (upstream == NULL) {
        return ngx_http_ha_optout_yfail(y, node, "a window needs "
                                        "\"upstream\"");
    }

    if (f->reason_len == 0) {
        return ngx_http_ha_optout_yfail(y, node, "a window needs a "
                                        "\"reason\"");
    }

    if (seen == SEEN_EVERY) {
        /* weekly */

    } else if (seen == (SEEN_START|SEEN_END)) {
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

    /*
     * what identifies the window across reloads, for the occurrences the
     * API ended or skipped: its upstream, name and times (not its reason)
     */

    w->fp = 2166136261u;                        /* FNV-1a */
    ngx_http_ha_optout_fnv(&w->fp, w->upstream.data, w->upstream.len);
    ngx_http_ha_optout_fnv(&w->fp, (u_char *) "/", 1);
    ngx_http_ha_optout_fnv(&w->fp, w->name.data, w->name.len);
    ngx_http_ha_optout_fnv(&w->fp, (u_char *) &w->weekly, sizeof(w->weekly));
    ngx_http_ha_optout_fnv(&w->fp, (u_char *) &w->offset, sizeof(w->offset));
    ngx_http_ha_optout_fnv(&w->fp, (u_char *) &w->length, sizeof(w->length));
    ngx_http_ha_optout_fnv(&w->fp, (u_char *) &w->start, sizeof(w->start));
    ngx_http_ha_optout_fnv(&w->fp, (u_char *) &w->end, sizeof(w->end));

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

    f->present = 1;
    f->source = NGX_HA_OPTOUT_SRC_WINDOW;
    f->actor_len = ngx_http_ha_optout_policy_actor.len;
    ngx_memcpy(f->actor, ngx_http_ha_optout_policy_actor.data, f->actor_len);

    return NGX_OK;
}


static ngx_int_t
ngx_http_ha_optout_policy_parse(ngx_http_ha_optout_yaml_t *y,
    ngx_http_ha_optout_policy_t *pol)
{
    yaml_node_t       *root, *k, *val;
    yaml_node_item_t  *it;
    yaml_node_pair_t  *p, *up;

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
            if (ngx_http_ha_optout_yis_null(val)) {
                continue;
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

        } else if (ngx_http_ha_optout_ykey_is(k, "windows")) {
            if (ngx_http_ha_optout_yis_null(val)) {
                continue;
            }

            if (val->type != YAML_SEQUENCE_NODE) {
                return ngx_http_ha_optout_yfail(y, val, "windows must be a "
                                                "list");
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


ngx_int_t
ngx_http_ha_optout_policy_resolve(ngx_conf_t *cf,
    ngx_http_ha_optout_main_conf_t *hmcf)
{
    ngx_uint_t                        i;
    ngx_http_ha_optout_window_t      *w;
    ngx_http_ha_optout_policy_t      *pol;
    ngx_http_ha_optout_srv_conf_t    *hscf;
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
        if (ngx_http_ha_optout_policy_stream(&w[i].upstream)) {

            /* no stream upstream can have one: known without them */

            if (w[i].flag.selector_len) {
                ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                              "ha_optout: policy %V:%ui:%ui: pin_selector "
                              "is http only: stream upstream \"%V\" has "
                              "no request header to select on (\"ha_optout\" "
                              "in stream takes only sticky_key=$var); use "
                              "\"pin\" alone to hold every new connection, "
                              "or \"sticky: true\" in %V:%ui", &pol->file,
                              w[i].line, w[i].column, &w[i].upstream,
                              &pol->conf_file, pol->conf_line);
                return NGX_ERROR;
            }

            continue;
        }

        hscf = ngx_http_ha_optout_find_upstream(hmcf, &w[i].upstream);

        if (hscf == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "ha_optout: policy %V:%ui:%ui: window for unknown "
                          "upstream \"%V\" (it needs \"ha_optout\") "
                          "in %V:%ui", &pol->file, w[i].line, w[i].column,
                          &w[i].upstream, &pol->conf_file, pol->conf_line);
            return NGX_ERROR;
        }

        if (w[i].flag.pin_len
            && ngx_http_ha_optout_upstream_peer(hscf, w[i].flag.pin,
                                                w[i].flag.pin_len, NULL, NULL)
               != NGX_OK)
        {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "ha_optout: policy %V:%ui:%ui: pin \"%*s\" is not "
                          "a usable server of upstream \"%V\" in %V:%ui",
                          &pol->file, w[i].pin_line, w[i].pin_column,
                          (size_t) w[i].flag.pin_len, w[i].flag.pin,
                          &w[i].upstream, &pol->conf_file, pol->conf_line);
            return NGX_ERROR;
        }

        if (w[i].flag.selector_len && hscf->selector == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "ha_optout: policy %V:%ui:%ui: pin_selector needs "
                          "\"ha_optout selector=\" in upstream \"%V\" "
                          "in %V:%ui", &pol->file, w[i].line, w[i].column,
                          &w[i].upstream, &pol->conf_file, pol->conf_line);
            return NGX_ERROR;
        }

        (void) ngx_http_ha_optout_window_upstream(hmcf, &w[i]);
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
 * How many approvers a write that suspends HA on this upstream needs, and
 * how long its request waits for them: the upstream's entry wins over
 * "*", which wins over the defaults (0, 15m).
 */

ngx_uint_t
ngx_http_ha_optout_policy_approvers(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_str_t *upstream, time_t *approval_ttl)
{
    ngx_int_t                         n;
    ngx_uint_t                        i, k;
    ngx_http_ha_optout_policy_t      *pol;
    ngx_http_ha_optout_policy_ups_t  *u, *e[2];

    n = 0;
    *approval_ttl = 15 * 60;
    pol = hmcf->policy;

    if (pol == NULL) {
        return 0;
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

        if (e[k]->approvers != -1) {
            n = e[k]->approvers;
        }

        if (e[k]->approval_ttl != -1) {
            *approval_ttl = e[k]->approval_ttl;
        }
    }

    return (ngx_uint_t) n;
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
    u_char                           *p, *last;
    ngx_int_t                         allow, ttl_none, protect, want;
    ngx_uint_t                        i, k, outside;
    time_t                            max_ttl, now, expiry, wend;
    ngx_http_ha_optout_policy_t      *pol;
    ngx_http_ha_optout_policy_ups_t  *u, *e[2];

    allow = NGX_HA_OPTOUT_ALLOW_ALL;
    max_ttl = 0;
    ttl_none = 0;
    protect = 0;

    pol = hmcf->policy;
    e[0] = NULL;
    e[1] = NULL;

    if (pol) {
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
    }

    for (k = 0; k < 2; k++) {
        if (e[k] == NULL) {
            continue;
        }

        if (e[k]->allow != -1) {
            allow = e[k]->allow;
        }

        if (e[k]->max_ttl != -1) {
            max_ttl = e[k]->max_ttl;
        }

        if (e[k]->ttl_none != -1) {
            ttl_none = e[k]->ttl_none;
        }

        if (e[k]->protect != -1) {
            protect = e[k]->protect;
        }
    }

    now = ngx_time();

    if (ttl_set) {
        expiry = ttl ? now + ttl : 0;

    } else {
        expiry = flag->expires_at;
        ttl = expiry ? expiry - now : 0;
    }

    outside = 0;
    wend = 0;

    if (protect) {
        wend = ngx_http_ha_optout_policy_window_end(pol, hmcf, upstream, now);
        outside = (wend == 0 || expiry == 0 || expiry > wend);
    }

    want = (flag->no_failover ? NGX_HA_OPTOUT_ALLOW_FAILOVER : 0)
           | (flag->pin_len ? NGX_HA_OPTOUT_ALLOW_PIN : 0)
           | (flag->no_replication ? NGX_HA_OPTOUT_ALLOW_REPLICATION : 0)
           | (flag->sticky ? NGX_HA_OPTOUT_ALLOW_STICKY : 0);

    if (!outside && (want & ~allow) == 0 && (ttl != 0 || ttl_none)
        && (max_ttl == 0 || ttl == 0 || ttl <= max_ttl))
    {
        return NGX_OK;
    }

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

    } else if (want & ~allow) {
        for (i = 0; !((want & ~allow) & (1 << i)); i++) { /* void */ }

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
        p = ngx_http_ha_optout_duration(p, max_ttl);
        p = ngx_slprintf(p, last, " for upstream \"%V\"", upstream);
    }

    message->len = p - message->data;

    return NGX_DECLINED;
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
    u_char                       *p, *last;
    time_t                        now, s, e, bs, be;
    ngx_int_t                     pos;
    ngx_uint_t                    i, j, n, found;
    ngx_http_ha_optout_wskip_t   *k;
    ngx_http_ha_optout_window_t  *w, *best;
    ngx_http_ha_optout_policy_t  *pol;
    ngx_http_ha_optout_shctx_t   *sh;

    now = ngx_time();
    pol = hmcf->policy;
    sh = ngx_http_ha_optout_sh;

    message->len = 0;
    message->data = ngx_pnalloc(pool, 1024);
    if (message->data == NULL) {
        return NGX_ERROR;
    }

    p = message->data;
    last = p + 1024;

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
    best = NULL;
    bs = 0;
    be = 0;
    found = 0;

    for (i = 0, j = 0; i < n; i++) {
        if (ngx_http_ha_optout_window_upstream(hmcf, &w[i]) != hscf) {
            continue;
        }

        j++;

        if (window->len) {
            if (!((pos > 0 && (ngx_uint_t) pos == j)
                  || (w[i].name.len == window->len
                      && ngx_strncmp(w[i].name.data, window->data,
                                     window->len) == 0)))
            {
                continue;
            }

            found = 1;
        }

        if (skip) {
            if (ngx_http_ha_optout_window_next(&w[i], now, &s, &e)
                && (best == NULL || s < bs))
            {
                best = &w[i];
                bs = s;
                be = e;
            }

        } else if (ngx_http_ha_optout_window_live(&w[i], now, &s, &e)) {
            /* the first in file order acts, as the timer picks it */
            best = &w[i];
            bs = s;
            be = e;
            break;
        }
    }

    if (j == 0) {
        *status = NGX_HTTP_NOT_FOUND;
        *code = "UnknownWindow";
        p = ngx_slprintf(p, last, "upstream \"%V\" has no window in the "
                         "policy%s%V", &hscf->name,
                         hmcf->policy_file.len ? " " : "",
                         &hmcf->policy_file);
        goto failed;
    }

    if (window->len && !found) {
        *status = NGX_HTTP_NOT_FOUND;
        *code = "UnknownWindow";
        p = ngx_slprintf(p, last, "upstream \"%V\" has no window \"%V\"; "
                         "its windows:", &hscf->name, window);

        for (i = 0, j = 0; i < n; i++) {
            if (w[i].hscf == hscf) {
                j++;
                p = ngx_slprintf(p, last, j > 1 ? ", %ui" : " %ui", j);
                if (w[i].name.len) {
                    p = ngx_slprintf(p, last, " (%V)", &w[i].name);
                }
            }
        }

        goto failed;
    }

    if (best == NULL) {
        *status = NGX_HTTP_CONFLICT;
        *code = skip ? "NoNextWindow" : "NoOpenWindow";
        p = ngx_slprintf(p, last, skip ? "no occurrence of %s%V%son "
                                         "\"%V\" is still to come"
                                       : "no window %s%V%sis open on \"%V\" "
                                         "now; to keep the next one closed, "
                                         "use skip",
                         window->len ? "\"" : "", window,
                         window->len ? "\" " : "", &hscf->name);
        goto failed;
    }

    if (!best->endable) {
        *status = NGX_HTTP_FORBIDDEN;
        *code = "ForbiddenByPolicy";
        p = ngx_slprintf(p, last, "the window of \"%V\" at %V:%ui has "
                         "\"endable: false\": it can be neither ended nor "
                         "skipped through the API", &hscf->name,
                         &pol->file, best->line);
        goto failed;
    }

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
        p = ngx_slprintf(p, last, "%ui window occurrences are ended or "
                         "skipped already; try again when one is over "
                         "(a table of fixed size: a larger "
                         "\"ha_optout_zone\" does not make room)",
                         (ngx_uint_t) NGX_HA_OPTOUT_WSKIPS);
        goto failed;
    }

    k[sh->nwskips].fp = best->fp;
    k[sh->nwskips].start = bs;
    k[sh->nwskips].end = be;
    sh->nwskips++;

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    *occ = best->flag;
    occ->set_at = bs;
    occ->expires_at = be;

    if (best->name.len) {
        *name = best->name;

    } else {
        for (i = 0, j = 0; &w[i] != best; i++) {
            j += (w[i].hscf == hscf);
        }

        name->data = ngx_pnalloc(pool, NGX_INT_T_LEN);
        if (name->data == NULL) {
            return NGX_ERROR;
        }

        name->len = ngx_sprintf(name->data, "%ui", j + 1) - name->data;
    }

    return NGX_OK;

failed:

    message->len = p - message->data;

    return NGX_DECLINED;
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
    ngx_str_t                        actor, reason;
    ngx_uint_t                       i, j, nw, nu, changed, *first;
    ngx_http_ha_optout_rec_t        *rec;
    ngx_http_ha_optout_flag_t        want, before;
    ngx_http_ha_optout_window_t     *w;
    ngx_http_ha_optout_policy_t     *pol;
    ngx_http_ha_optout_srv_conf_t  **hscfp;

    now = ngx_time();
    pol = hmcf->policy;
    hscfp = hmcf->upstreams.elts;
    w = pol ? pol->windows.elts : NULL;
    nw = pol ? pol->windows.nelts : 0;
    nu = hmcf->upstreams.nelts;

    /*
     * the first open window of each upstream, in one walk over the windows
     * (not one per upstream: linear in both)
     */

    if (nw && nu > ngx_http_ha_optout_first_n) {
        if (ngx_http_ha_optout_first) {
            ngx_free(ngx_http_ha_optout_first);
        }

        ngx_http_ha_optout_first = ngx_alloc(nu * sizeof(ngx_uint_t), log);
        ngx_http_ha_optout_first_n = ngx_http_ha_optout_first ? nu : 0;

        if (ngx_http_ha_optout_first == NULL) {
            return;
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

        ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

        before = rec->window;
        changed = !ngx_http_ha_optout_window_same(&before, &want);

        if (changed) {
            if (before.present) {
                (void) ngx_atomic_fetch_add(
                    &rec->changes[NGX_HA_OPTOUT_ACT_WINDOW_END], 1);
            }

            if (want.present) {
                want.version = ++ngx_http_ha_optout_sh->version_seq;
                (void) ngx_atomic_fetch_add(
                    &rec->changes[NGX_HA_OPTOUT_ACT_WINDOW_START], 1);
            }

            rec->window = want;
            ngx_http_ha_optout_bump();
        }

        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

        if (!changed) {
            continue;
        }

        actor = ngx_http_ha_optout_policy_actor;

        if (before.present) {
            reason.data = before.reason;
            reason.len = before.reason_len;

            ngx_http_ha_optout_audit(hmcf, log, NGX_HA_OPTOUT_ACT_WINDOW_END,
                                     &hscfp[i]->name, &actor, NULL, &reason,
                                     &before, NULL, NULL);
        }

        if (want.present) {
            reason.data = want.reason;
            reason.len = want.reason_len;

            ngx_http_ha_optout_audit(hmcf, log,
                                     NGX_HA_OPTOUT_ACT_WINDOW_START,
                                     &hscfp[i]->name, &actor, NULL, &reason,
                                     NULL, &want, NULL);
        }
    }
}
