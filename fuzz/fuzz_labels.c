
/*
 * fuzz_labels: the escapers of the status endpoint, compiled from the
 * module's files themselves (they are static): ngx_http_ha_optout_status.c
 * and its three views, status_json.c, status_prom.c and status_html.c, as
 * one unit:
 *
 *   ngx_http_ha_optout_prom_sample() with prom_escape(), the one writer of
 *   Prometheus samples, and ngx_http_ha_optout_out_html(), the one way
 *   text reaches the HTML page.
 *
 * Input: label values separated by 0xff bytes (at most 3, for the keys
 * environment, upstream and server); the last 8 bytes, when there are
 * more than 8, are also the sample's value.  Checked:
 *   - the sample is one line that a Prometheus text-format reader
 *     (written here from the exposition format spec) parses back into
 *     the same name, the same label values byte for byte and the value;
 *   - the HTML text holds no raw < > & " and no control byte (a newline
 *     included: a value stays on its line), and unescapes to the input,
 *     control bytes shown as \n, \r, \t or \xHH;
 *   - nothing is written past what out_reserve() handed out (ASan).
 */


#include "ngx_http_ha_optout_status.c"
#include "ngx_http_ha_optout_status_json.c"
#include "ngx_http_ha_optout_status_prom.c"
#include "ngx_http_ha_optout_status_html.c"
#include "fuzz.h"


#define FUZZ_LABELS  3

static const char  *fuzz_keys[FUZZ_LABELS] = {
    "environment", "upstream", "server"
};


/* the body as one buffer */

static size_t
fuzz_collect(ngx_http_ha_optout_out_t *out, u_char **text)
{
    u_char       *p;
    size_t        len;
    ngx_chain_t  *cl;

    len = 0;

    for (cl = out->first; cl; cl = cl->next) {
        len += cl->buf->last - cl->buf->pos;
    }

    fuzz_assert((off_t) len == out->size, "out->size %lld, buffers %zu",
                (long long) out->size, len);

    p = *text = malloc(len + 1);

    for (cl = out->first; cl; cl = cl->next) {
        p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
    }

    return len;
}


static void
fuzz_out_init(ngx_http_ha_optout_out_t *out, ngx_pool_t *pool)
{
    ngx_memzero(out, sizeof(ngx_http_ha_optout_out_t));
    out->pool = pool;
    out->last = &out->first;
}


/* a reader of one sample line: name{k="v",...} value\n */

static void
fuzz_prom_check(u_char *p, size_t len, ngx_keyval_t *labels, ngx_uint_t n,
    uint64_t value)
{
    u_char      *last, *v, *start, c;
    size_t       vlen, k;
    uint64_t     got;
    ngx_uint_t   i;

    last = p + len;

    fuzz_assert(len && last[-1] == '\n', "sample does not end in newline");
    fuzz_assert(memchr(p, '\n', len - 1) == NULL,
                "a raw newline inside the sample");

    fuzz_assert(len > 16 && ngx_strncmp(p, "ha_optout_active", 16) == 0,
                "sample name lost");
    p += 16;

    if (n) {
        fuzz_assert(*p == '{', "no label set");
        p++;

        for (i = 0; i < n; i++) {
            if (i) {
                fuzz_assert(*p == ',', "labels not separated by ','");
                p++;
            }

            fuzz_assert((size_t) (last - p) > labels[i].key.len + 2
                        && ngx_strncmp(p, labels[i].key.data,
                                       labels[i].key.len) == 0
                        && p[labels[i].key.len] == '='
                        && p[labels[i].key.len + 1] == '"',
                        "label %s: key lost", fuzz_keys[i]);
            p += labels[i].key.len + 2;

            /* the value, unescaped as the exposition format says */

            start = v = malloc(labels[i].value.len + 1);

            for ( ;; ) {
                fuzz_assert(p < last, "label value runs off the line");

                if (*p == '"') {
                    p++;
                    break;
                }

                if (*p == '\\') {
                    p++;
                    fuzz_assert(p < last && (*p == '\\' || *p == '"'
                                             || *p == 'n'),
                                "unknown escape in a label value");
                    fuzz_assert((size_t) (v - start) < labels[i].value.len,
                                "label value grew");
                    *v++ = (*p == 'n') ? '\n' : *p;
                    p++;
                    continue;
                }

                fuzz_assert((size_t) (v - start) < labels[i].value.len,
                            "label %s value grew", fuzz_keys[i]);
                fuzz_assert(*p >= 0x20 && *p != 0x7f,
                            "label %s: a raw control byte", fuzz_keys[i]);
                *v++ = *p++;
            }

            /* as written, but a control byte other than \n reads "?" */

            vlen = v - start;
            fuzz_assert(vlen == labels[i].value.len,
                        "label %s does not read back as written",
                        fuzz_keys[i]);

            for (k = 0; k < vlen; k++) {
                c = labels[i].value.data[k];
                fuzz_assert(start[k] == ((c < 0x20 && c != '\n')
                                         || c == 0x7f ? '?' : c),
                            "label %s does not read back as written",
                            fuzz_keys[i]);
            }

            free(start);
        }

        fuzz_assert(*p == '}', "label set not closed");
        p++;
    }

    fuzz_assert(*p == ' ', "no space before the value");
    p++;

    got = 0;

    for ( ; *p != '\n'; p++) {
        fuzz_assert(*p >= '0' && *p <= '9', "value is not a number");
        got = got * 10 + (*p - '0');
    }

    fuzz_assert(got == value, "value %llu read back as %llu",
                (unsigned long long) value, (unsigned long long) got);
}


static void
fuzz_html_check(u_char *p, size_t len, const u_char *data, size_t size)
{
    size_t       i, j, k;
    ngx_uint_t   e;

    static const struct {
        const char  *entity;
        u_char       ch;
    } ents[] = {
        { "&lt;", '<' }, { "&gt;", '>' }, { "&amp;", '&' }, { "&quot;", '"' }
    };

    u_char       esc[4];
    size_t       n;

    for (i = 0, j = 0; i < len; ) {
        fuzz_assert(p[i] != '<' && p[i] != '>' && p[i] != '"',
                    "a raw %c on the HTML page", p[i]);
        fuzz_assert(p[i] >= 0x20 && p[i] != 0x7f,
                    "a raw control byte 0x%02x on the HTML page", p[i]);

        if (j < size && (data[j] < 0x20 || data[j] == 0x7f)) {
            if (data[j] == '\n' || data[j] == '\r' || data[j] == '\t') {
                esc[0] = '\\';
                esc[1] = data[j] == '\n' ? 'n' : data[j] == '\r' ? 'r' : 't';
                n = 2;

            } else {
                esc[0] = '\\';
                esc[1] = 'x';
                esc[2] = "0123456789abcdef"[data[j] >> 4];
                esc[3] = "0123456789abcdef"[data[j] & 0xf];
                n = 4;
            }

            fuzz_assert(len - i >= n && memcmp(p + i, esc, n) == 0,
                        "control byte 0x%02x not shown escaped", data[j]);
            i += n;
            j++;
            continue;
        }

        if (p[i] == '&') {
            for (e = 0; e < 4; e++) {
                k = strlen(ents[e].entity);
                if (len - i >= k && memcmp(p + i, ents[e].entity, k) == 0) {
                    break;
                }
            }

            fuzz_assert(e < 4, "a raw & on the HTML page");
            fuzz_assert(j < size && data[j] == ents[e].ch,
                        "HTML text does not unescape to the input");
            i += strlen(ents[e].entity);
            j++;
            continue;
        }

        fuzz_assert(j < size && data[j] == p[i],
                    "HTML text does not unescape to the input");
        i++;
        j++;
    }

    fuzz_assert(j == size, "HTML text lost %zu bytes", size - j);
}


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    u_char                    *text, *p, *end;
    size_t                     len, vsize;
    uint64_t                   value;
    ngx_uint_t                 n, i;
    ngx_pool_t                *pool;
    ngx_keyval_t               labels[FUZZ_LABELS];
    ngx_http_ha_optout_out_t   out;

    if (size > 16384) {
        return 0;
    }

    value = 0;
    vsize = size;

    if (size > 8) {
        vsize = size - 8;
        for (i = 0; i < 8; i++) {
            value = value << 8 | data[vsize + i];
        }
    }

    /* label values: the bytes between 0xff separators */

    n = 0;
    p = (u_char *) data;
    end = (u_char *) data + vsize;

    while (n < FUZZ_LABELS) {
        labels[n].key.data = (u_char *) fuzz_keys[n];
        labels[n].key.len = strlen(fuzz_keys[n]);
        labels[n].value.data = p;

        text = memchr(p, 0xff, end - p);
        labels[n].value.len = (text ? text : end) - p;
        n++;

        if (text == NULL) {
            break;
        }

        p = text + 1;
    }

    pool = ngx_create_pool(4096, NULL);

    /* Prometheus */

    fuzz_out_init(&out, pool);
    ngx_http_ha_optout_prom_sample(&out, "ha_optout_active", labels, n,
                                   value);
    fuzz_assert(!out.error, "prom_sample() failed");

    len = fuzz_collect(&out, &text);
    fuzz_prom_check(text, len, labels, n, value);
    free(text);

    /* HTML */

    fuzz_out_init(&out, pool);
    ngx_http_ha_optout_out_html(&out, (u_char *) data, vsize);
    fuzz_assert(!out.error, "out_html() failed");

    len = fuzz_collect(&out, &text);
    fuzz_html_check(text, len, data, vsize);
    free(text);

    ngx_destroy_pool(pool);

    return 0;
}
