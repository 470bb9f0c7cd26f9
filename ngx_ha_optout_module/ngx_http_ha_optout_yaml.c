
/*
 * ngx_ha_optout_module: the libyaml helpers the state file and the policy
 * share.  A file is opened as a careful daemon does and loaded as one
 * document, nested no deeper than NGX_HA_OPTOUT_YAML_DEPTH; its nodes are
 * read with an error that names line and column (yfail); the flag fields
 * both files hold are read once (yflag_field); and the emitter helpers
 * write scalars the way the state file needs (user text quoted).
 *
 * Just over a thousand lines: the careful open and the loader with its
 * depth check are most of it; the node readers each stay a few lines.
 */


#include "ngx_http_ha_optout_module.h"
#include "ngx_http_ha_optout_yaml.h"


#define NGX_HA_OPTOUT_FILE_MAX       (4 * 1024 * 1024)
#define NGX_HA_OPTOUT_YAML_DEPTH     64     /* nesting, at most */


/* ------------------------------------------------------------ YAML nodes */

ngx_int_t ngx_cdecl
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


/* the file's bytes, refused past NGX_HA_OPTOUT_FILE_MAX (see yaml_load) */

static ngx_int_t
ngx_http_ha_optout_yaml_read(ngx_http_ha_optout_yaml_t *y, ngx_str_t *file,
    u_char **bufp, size_t *sizep)
{
    u_char           *buf;
    size_t            size;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_err_t         err;
    const char       *why;
    ngx_file_info_t   fi;

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

    *bufp = buf;
    *sizep = size;

    return NGX_OK;
}


/* where the parser stopped, and why */

static void
ngx_http_ha_optout_yaml_problem(ngx_http_ha_optout_yaml_t *y,
    yaml_parser_t *parser, ngx_uint_t context)
{
    y->line = parser->problem_mark.line + 1;
    y->column = parser->problem_mark.column + 1;

    if (context && parser->context) {
        ngx_http_ha_optout_yfail(y, NULL, "%s %s (which started at %uz:%uz)",
                                 parser->problem ? parser->problem
                                                 : "invalid YAML",
                                 parser->context,
                                 parser->context_mark.line + 1,
                                 parser->context_mark.column + 1);
        return;
    }

    ngx_http_ha_optout_yfail(y, NULL, "%s",
                             parser->problem ? parser->problem
                                             : "invalid YAML");
}


/* the one document in buf into y->doc: a second one is refused */

static ngx_int_t
ngx_http_ha_optout_yaml_parse(ngx_http_ha_optout_yaml_t *y, u_char *buf,
    size_t size)
{
    ngx_int_t        rc;
    yaml_parser_t    parser;
    yaml_document_t  extra;

    if (!yaml_parser_initialize(&parser)) {
        return NGX_ERROR;
    }

    yaml_parser_set_input_string(&parser, buf, size);

    if (!yaml_parser_load(&parser, &y->doc)) {
        ngx_http_ha_optout_yaml_problem(y, &parser, 1);
        yaml_parser_delete(&parser);
        return NGX_ABORT;
    }

    rc = NGX_OK;

    if (yaml_document_get_root_node(&y->doc) != NULL) {
        /* a second document would be silently ignored: refuse it */

        if (!yaml_parser_load(&parser, &extra)) {
            ngx_http_ha_optout_yaml_problem(y, &parser, 0);
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


/*
 * Reads the file and loads its one YAML document.  NGX_DECLINED: the file
 * does not exist; NGX_ABORT: it is not valid YAML (y->err says where);
 * NGX_ERROR: it could not be read (y->err says why).
 */

ngx_int_t
ngx_http_ha_optout_yaml_load(ngx_http_ha_optout_yaml_t *y, ngx_str_t *file,
    ngx_log_t *log)
{
    u_char     *buf;
    size_t      size;
    ngx_int_t   rc;

    y->file = file;
    y->line = 0;
    y->column = 0;
    y->err_len = 0;

    rc = ngx_http_ha_optout_yaml_read(y, file, &buf, &size);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_ha_optout_yaml_depth(y, buf, size);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_ha_optout_yaml_parse(y, buf, size);
}


yaml_node_t *
ngx_http_ha_optout_ynode(ngx_http_ha_optout_yaml_t *y, int id)
{
    return yaml_document_get_node(&y->doc, id);
}


ngx_uint_t
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


ngx_int_t
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


/* a scalar's text copied into the pool: the document is deleted after */

ngx_int_t
ngx_http_ha_optout_ycopy(ngx_http_ha_optout_yaml_t *y, ngx_str_t *s)
{
    s->data = ngx_pstrdup(y->pool, s);
    if (s->data == NULL) {
        return ngx_http_ha_optout_yfail(y, NULL, "out of memory");
    }

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


ngx_int_t
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


ngx_uint_t
ngx_http_ha_optout_ykey_is(yaml_node_t *key, const char *name)
{
    size_t  len;

    len = ngx_strlen(name);

    return key->data.scalar.length == len
           && ngx_strncmp(key->data.scalar.value, name, len) == 0;
}


ngx_int_t
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

ngx_int_t
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


ngx_int_t
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


ngx_int_t
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


/*
 * RFC 3339: 2026-12-01T02:00:00Z, fractions ignored, offsets honoured
 *
 * Longer than a screen: one scanner of one format, field after field,
 * then the civil date to days; split, it would only pass p around.
 */

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


ngx_int_t
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


ngx_int_t
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


/* ------------------------------------------------------------ emitter */

int
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


ngx_int_t
ngx_http_ha_optout_emit(yaml_emitter_t *e, yaml_event_t *ev, int ok)
{
    if (!ok) {
        return NGX_ERROR;
    }

    return yaml_emitter_emit(e, ev) ? NGX_OK : NGX_ERROR;
}


ngx_int_t
ngx_http_ha_optout_emit_scalar(yaml_emitter_t *e, u_char *value, size_t len,
    yaml_scalar_style_t style)
{
    yaml_event_t  ev;

    return ngx_http_ha_optout_emit(e, &ev,
               yaml_scalar_event_initialize(&ev, NULL, NULL, value,
                                            (int) len, 1, 1, style));
}


ngx_int_t
ngx_http_ha_optout_emit_key(yaml_emitter_t *e, const char *key)
{
    return ngx_http_ha_optout_emit_scalar(e, (u_char *) key,
                                          ngx_strlen(key),
                                          YAML_PLAIN_SCALAR_STYLE);
}


/* "key:" (none if NULL) and the start of the block mapping it holds */

ngx_int_t
ngx_http_ha_optout_emit_mapping(yaml_emitter_t *e, const char *key)
{
    yaml_event_t  ev;

    if (key && ngx_http_ha_optout_emit_key(e, key) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_ha_optout_emit(e, &ev,
               yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                                   YAML_BLOCK_MAPPING_STYLE));
}


ngx_int_t
ngx_http_ha_optout_emit_end(yaml_emitter_t *e)
{
    yaml_event_t  ev;

    return ngx_http_ha_optout_emit(e, &ev,
                                   yaml_mapping_end_event_initialize(&ev));
}


/* user text is always quoted, so "null" or "yes" stays a string */

ngx_int_t
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


ngx_int_t
ngx_http_ha_optout_emit_plain(yaml_emitter_t *e, const char *key,
    u_char *v, size_t len)
{
    if (ngx_http_ha_optout_emit_key(e, key) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_ha_optout_emit_scalar(e, v, len,
                                          YAML_PLAIN_SCALAR_STYLE);
}


ngx_int_t
ngx_http_ha_optout_emit_bool(yaml_emitter_t *e, const char *key,
    ngx_uint_t v)
{
    return ngx_http_ha_optout_emit_plain(e, key,
                                         (u_char *) (v ? "true" : "false"),
                                         v ? 4 : 5);
}


ngx_int_t
ngx_http_ha_optout_emit_uint(yaml_emitter_t *e, const char *key, uint64_t v)
{
    u_char  buf[NGX_INT64_LEN];

    return ngx_http_ha_optout_emit_plain(e, key, buf,
                                         ngx_sprintf(buf, "%uL", v) - buf);
}


ngx_int_t
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


/*
 * The flag fields that a state file entry and a policy window share: the
 * one YAML reading of a flag.  NGX_OK: k was one of them; NGX_DECLINED:
 * another key, for the caller.
 */

ngx_int_t
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
