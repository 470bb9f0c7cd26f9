
/*
 * fuzz_ttl: ngx_http_ha_optout_parse_ttl() (ngx_http_ha_optout_json.c)
 * against an independent reading of SPEC section 3: "Ns|Nm|Nh" with
 * N > 0 and at most 366 days, or "none" (0).
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_ha_optout_module.h"
#include "fuzz.h"


#define TTL_MAX  (366 * 86400)


/* returns -1 when the text must be refused */

static long long
ttl_oracle(const unsigned char *p, size_t len)
{
    size_t     i;
    long long  n, unit;

    if (len == 4 && memcmp(p, "none", 4) == 0) {
        return 0;
    }

    if (len < 2) {
        return -1;
    }

    switch (p[len - 1]) {
    case 's': unit = 1; break;
    case 'm': unit = 60; break;
    case 'h': unit = 3600; break;
    default: return -1;
    }

    n = 0;

    for (i = 0; i < len - 1; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }

        /* leading zeros are digits too: keep the value, bound the work */
        n = n * 10 + (p[i] - '0');

        if (n > TTL_MAX) {
            return -1;
        }
    }

    if (n == 0 || n * unit > TTL_MAX) {
        return -1;
    }

    return n * unit;
}


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    time_t     ttl;
    ngx_int_t  rc;
    long long  want;

    ttl = -12345;

    rc = ngx_http_ha_optout_parse_ttl((u_char *) data, size, &ttl);
    want = ttl_oracle(data, size);

    /*
     * The parser caps the text at 10 bytes (9 digits and a unit), so a
     * longer text with leading zeros ("00000000001s") is refused although
     * its value is fine: a documented limit, not a bug.
     */

    if (size > 10 && want > 0 && rc != NGX_OK) {
        return 0;
    }

    if (want < 0) {
        fuzz_assert(rc != NGX_OK, "ttl \"%.*s\" accepted as %lld",
                    (int) size, data, (long long) ttl);
        fuzz_assert(ttl == -12345, "a refused ttl wrote its result");

    } else {
        fuzz_assert(rc == NGX_OK, "ttl \"%.*s\" refused, wanted %lld",
                    (int) size, data, want);
        fuzz_assert(ttl == want, "ttl \"%.*s\" is %lld, wanted %lld",
                    (int) size, data, (long long) ttl, want);
    }

    return 0;
}
