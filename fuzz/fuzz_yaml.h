
/*
 * fuzz_policy and fuzz_state compile the file of their parser itself
 * (ngx_http_ha_optout_policy.c, ngx_http_ha_optout_state.c: the module's
 * file, not a copy) into the harness, #included before this header, so
 * that its static parsers and types are reachable without changing it;
 * they link the libyaml helpers of ngx_http_ha_optout_yaml.c, and the
 * rest of the module comes from ngx_fuzz_yaml_stubs.c and
 * ngx_http_ha_optout_json.c.
 *
 * Both parsers read a file by name, as nginx does: each input is written
 * to a per-process file in /dev/shm (or /tmp) first.
 */

#ifndef _NGX_HA_OPTOUT_FUZZ_YAML_H_INCLUDED_
#define _NGX_HA_OPTOUT_FUZZ_YAML_H_INCLUDED_


#include "ngx_http_ha_optout_yaml.h"
#include "fuzz.h"


static u_char  fuzz_path[64];


static ngx_str_t *
fuzz_file(const unsigned char *data, size_t size)
{
    int                 fd;
    ssize_t             n;
    static ngx_str_t    name;

    if (fuzz_path[0] == '\0') {
        ngx_sprintf(fuzz_path, "%s/ha_optout_fuzz.%P.yaml%Z",
                    access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp",
                    (ngx_pid_t) getpid());
        name.data = fuzz_path;
        name.len = ngx_strlen(fuzz_path);
    }

    fd = open((char *) fuzz_path, O_WRONLY|O_CREAT|O_TRUNC, 0600);
    if (fd == -1) {
        fuzz_fail("cannot write %s", fuzz_path);
    }

    while (size) {
        n = write(fd, data, size);
        if (n <= 0) {
            fuzz_fail("cannot write %s", fuzz_path);
        }

        data += n;
        size -= n;
    }

    close(fd);

    return &name;
}


static void
fuzz_file_cleanup(void)
{
    if (fuzz_path[0]) {
        unlink((char *) fuzz_path);
    }
}


/* a flag as the file gave it: SPEC bounds, no NUL in its strings */

static void
fuzz_check_flag(ngx_http_ha_optout_flag_t *f)
{
    fuzz_assert(f->present, "flag not marked present");
    fuzz_assert(f->pin_len < NGX_HA_OPTOUT_PIN_LEN, "pin_len %u",
                f->pin_len);
    fuzz_assert(f->selector_len < NGX_HA_OPTOUT_SELECTOR_LEN,
                "selector_len %u", f->selector_len);
    fuzz_assert(f->reason_len >= 1 && f->reason_len <= NGX_HA_OPTOUT_REASON_LEN,
                "reason_len %u", f->reason_len);
    fuzz_assert(f->actor_len <= NGX_HA_OPTOUT_ACTOR_LEN, "actor_len %u",
                f->actor_len);
    fuzz_assert(memchr(f->pin, '\0', f->pin_len) == NULL, "NUL in pin");
    fuzz_assert(memchr(f->selector, '\0', f->selector_len) == NULL,
                "NUL in pin_selector");
    fuzz_assert(memchr(f->reason, '\0', f->reason_len) == NULL,
                "NUL in reason");
    fuzz_assert(f->selector_len == 0 || f->pin_len,
                "pin_selector without pin");
    fuzz_assert(f->no_failover || f->no_replication || f->sticky
                || f->pin_len, "a flag that opts out of nothing");
    fuzz_assert(f->set_at >= 0 && f->expires_at >= 0, "negative time");
}


#endif /* _NGX_HA_OPTOUT_FUZZ_YAML_H_INCLUDED_ */
