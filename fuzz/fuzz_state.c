
/*
 * fuzz_state: the state file loader of ngx_http_ha_optout_state.c,
 * ngx_http_ha_optout_yaml_load() + ngx_http_ha_optout_state_parse(), the
 * part of ngx_http_ha_optout_state_restore() that reads the file (the
 * rest applies the flags to the zone under its mutex).
 *
 * Checked for every input: a refusal has a message and a line:column
 * inside the file; every flag read keeps SPEC's bounds; and the writer
 * (ngx_http_ha_optout_state_emit(), as state_save() uses it) turns what
 * was read into a file that reads back to the same flags (a state file
 * survives any number of restarts unchanged), spent jtis and the audit
 * chain's last hash included.  A mapping of many keys (jtis) goes through
 * the sorted duplicate check (more than NGX_HA_OPTOUT_YDUP_SORT keys).
 */


#include "ngx_http_ha_optout_state.c"
#include "fuzz_yaml.h"


static ngx_http_ha_optout_rec_t  fuzz_snap[8];


/* the policy (policy.c, not linked here) judges restores, never parsing */

ngx_int_t
ngx_http_ha_optout_policy_check(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_str_t *upstream, ngx_http_ha_optout_flag_t *flag, ngx_uint_t ttl_set,
    time_t ttl, ngx_str_t *message, ngx_pool_t *pool)
{
    fuzz_fail("ngx_http_ha_optout_policy_check() called");
    return NGX_ERROR;
}


static ngx_int_t
fuzz_load(ngx_pool_t *pool, ngx_str_t *file, ngx_http_ha_optout_yaml_t *y,
    ngx_http_ha_optout_state_t *st)
{
    ngx_int_t  rc;

    ngx_memzero(y, sizeof(ngx_http_ha_optout_yaml_t));
    ngx_memzero(st, sizeof(ngx_http_ha_optout_state_t));
    y->pool = pool;

    if (ngx_array_init(&st->flags, pool, 4,
                       sizeof(ngx_http_ha_optout_saved_t))
        != NGX_OK
        || ngx_array_init(&st->approvals, pool, 4,
                          sizeof(ngx_http_ha_optout_approval_t))
           != NGX_OK)
    {
        fuzz_fail("out of memory");
    }

    rc = ngx_http_ha_optout_yaml_load(y, file, NULL);

    if (rc == NGX_OK) {
        rc = ngx_http_ha_optout_state_parse(y, st);
        yaml_document_delete(&y->doc);
    }

    return rc;
}


/* writes the flags read back out, as state_save() does, and rereads */

static void
fuzz_round_trip(ngx_pool_t *pool, ngx_http_ha_optout_state_t *st)
{
    int                          fd;
    ngx_str_t                   *file;
    ngx_int_t                    rc;
    ngx_uint_t                   i, n;
    yaml_emitter_t               emitter;
    ngx_http_ha_optout_out_t     out;
    ngx_http_ha_optout_yaml_t    y2;
    ngx_http_ha_optout_state_t   st2;
    ngx_http_ha_optout_saved_t  *s, *s2;
    ngx_http_ha_optout_flag_t   *a, *b;
    ngx_http_ha_optout_jti_t    *j, *j2;

    s = st->flags.elts;
    n = ngx_min(st->flags.nelts, 8);

    for (i = 0; i < n; i++) {
        ngx_memcpy(fuzz_snap[i].name, s[i].upstream.data, s[i].upstream.len);
        fuzz_snap[i].name_len = s[i].upstream.len;
        fuzz_snap[i].api = s[i].flag;
    }

    file = fuzz_file((u_char *) "", 0);

    fd = open((char *) file->data, O_WRONLY|O_TRUNC);
    if (fd == -1) {
        fuzz_fail("cannot open %s", file->data);
    }

    out.fd = fd;
    out.err = 0;

    if (!yaml_emitter_initialize(&emitter)) {
        fuzz_fail("yaml_emitter_initialize() failed");
    }

    /* as ngx_http_ha_optout_state_save() sets it up */
    yaml_emitter_set_output(&emitter, ngx_http_ha_optout_emit_write, &out);
    yaml_emitter_set_unicode(&emitter, 1);
    yaml_emitter_set_width(&emitter, 1000);

    rc = ngx_http_ha_optout_state_emit(&emitter, st->version_seq, fuzz_snap,
                                       n, st->audit_hash, st->jtis.elts,
                                       st->jtis.nelts, st->approvals.elts,
                                       st->approvals.nelts);
    fuzz_assert(rc == NGX_OK, "flags read from a state file cannot be "
                "written back: %s",
                emitter.problem ? emitter.problem : "?");

    yaml_emitter_delete(&emitter);
    close(fd);

    rc = fuzz_load(pool, file, &y2, &st2);
    fuzz_assert(rc == NGX_OK, "a state file the module wrote is refused "
                "at %lu:%lu: %.*s", (unsigned long) y2.line,
                (unsigned long) y2.column, (int) y2.err_len, y2.err);

    fuzz_assert(st2.flags.nelts == n, "%u flags written, %u read back",
                (unsigned) n, (unsigned) st2.flags.nelts);
    fuzz_assert(st2.version_seq == st->version_seq, "version_seq changed");
    fuzz_assert(ngx_strcmp(st2.audit_hash, st->audit_hash) == 0,
                "audit_hash changed");
    fuzz_assert(st2.approvals.nelts == st->approvals.nelts, "%u approvals "
                "written, %u read back", (unsigned) st->approvals.nelts,
                (unsigned) st2.approvals.nelts);
    fuzz_assert(st2.jtis.nelts == st->jtis.nelts, "%u jtis written, %u read "
                "back", (unsigned) st->jtis.nelts, (unsigned) st2.jtis.nelts);

    j = st->jtis.elts;
    j2 = st2.jtis.elts;

    for (i = 0; i < st->jtis.nelts; i++) {
        fuzz_assert(j[i].jti.len == j2[i].jti.len
                    && memcmp(j[i].jti.data, j2[i].jti.data, j[i].jti.len)
                       == 0, "jti changed in the round trip");
        fuzz_assert(j[i].exp == j2[i].exp, "a jti's exp changed");
    }

    s2 = st2.flags.elts;

    for (i = 0; i < n; i++) {
        a = &s[i].flag;
        b = &s2[i].flag;

        fuzz_assert(s2[i].upstream.len == s[i].upstream.len
                    && memcmp(s2[i].upstream.data, s[i].upstream.data,
                              s[i].upstream.len) == 0,
                    "upstream name changed in the round trip");
        fuzz_assert(a->no_failover == b->no_failover
                    && a->no_replication == b->no_replication
                    && a->sticky == b->sticky, "booleans changed");
        fuzz_assert(a->pin_len == b->pin_len
                    && memcmp(a->pin, b->pin, a->pin_len) == 0,
                    "pin changed");
        fuzz_assert(a->selector_len == b->selector_len
                    && memcmp(a->selector, b->selector, a->selector_len) == 0,
                    "pin_selector changed");
        fuzz_assert(a->reason_len == b->reason_len
                    && memcmp(a->reason, b->reason, a->reason_len) == 0,
                    "reason changed");
        fuzz_assert(a->actor_len == b->actor_len
                    && memcmp(a->actor, b->actor, a->actor_len) == 0,
                    "actor changed");
        fuzz_assert(a->version == b->version, "version changed");
        fuzz_assert(a->set_at == b->set_at, "set_at %lld became %lld",
                    (long long) a->set_at, (long long) b->set_at);
        fuzz_assert(a->expires_at == b->expires_at,
                    "expires_at %lld became %lld",
                    (long long) a->expires_at, (long long) b->expires_at);
    }
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    atexit(fuzz_file_cleanup);
    return 0;
}


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    ngx_str_t                   *file;
    ngx_int_t                    rc;
    ngx_uint_t                   i;
    ngx_pool_t                  *pool;
    ngx_http_ha_optout_yaml_t    y;
    ngx_http_ha_optout_state_t   st;
    ngx_http_ha_optout_saved_t  *s;

    if (size > 64 * 1024) {
        return 0;
    }

    pool = ngx_create_pool(4096, NULL);
    file = fuzz_file(data, size);

    rc = fuzz_load(pool, file, &y, &st);

    if (rc != NGX_OK) {
        fuzz_assert(rc == NGX_ERROR || rc == NGX_ABORT,
                    "state file loader returned %ld", (long) rc);
        fuzz_assert(y.err_len > 0 && y.err_len < sizeof(y.err),
                    "a refused state file without a message");

        ngx_destroy_pool(pool);
        return 0;
    }

    s = st.flags.elts;

    fuzz_assert(st.audit_hash[0] == '\0'
                || ngx_http_ha_optout_is_hash(st.audit_hash, 64),
                "audit_hash is not 64 hex digits");

    for (i = 0; i < st.jtis.nelts; i++) {
        fuzz_assert(((ngx_http_ha_optout_jti_t *) st.jtis.elts)[i].jti.len
                    >= 1
                    && ((ngx_http_ha_optout_jti_t *) st.jtis.elts)[i].jti.len
                       <= 255, "a jti of a bad length");
    }

    for (i = 0; i < st.flags.nelts; i++) {
        fuzz_assert(s[i].upstream.len > 0
                    && s[i].upstream.len < NGX_HA_OPTOUT_NAME_LEN,
                    "upstream name of %u bytes", (unsigned) s[i].upstream.len);
        fuzz_check_flag(&s[i].flag);
    }

    fuzz_round_trip(pool, &st);

    ngx_destroy_pool(pool);

    return 0;
}
