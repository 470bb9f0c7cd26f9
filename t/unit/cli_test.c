
/*
 * Unit test of ha-optoutctl's helpers (cli/record.c, cli/etcd.c), linked
 * with every CLI source but main.c, with OPENSSL_cleanse() and free()
 * wrapped (-Wl,--wrap) to see what is wiped and what is freed:
 *
 *   - hoctl_trust_load() on an error (a file it cannot read, a secret too
 *     short, a PEM OpenSSL cannot read, too many files) wipes and frees
 *     the keys it had read, and wipes the buffer the failing file was read
 *     into; the leak of the set itself is LeakSanitizer's to see;
 *   - hoctl_range_end() of an empty or NULL prefix, or of 0xff bytes only,
 *     is etcd's "\0" (every key from there on), sent as base64 "AA==".
 *
 *   make -f t/unit/cli.mk check [BUILD=/tmp/x] [SANITIZE=]
 */

#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "verb.h"
#include "tap.h"


#define T_SECRET  "0123456789abcdef0123456789abcdef-one"
#define T_SHORT   "short-secret-two"
#define T_PEM     "-----BEGIN PUBLIC KEY-----\nnot base64 at all\n" \
                  "-----END PUBLIC KEY-----\n"
#define T_WATCH   8


static char   t_dir[] = "/tmp/ha_optout_cli_unit.XXXXXX";
static char  *t_paths[3];

/* what OPENSSL_cleanse() was handed while it still held a watched text */
static struct {
    const char  *text;
    void        *wiped[T_WATCH];
    int          nwiped;
    int          freed;         /* a wiped pointer was then freed */
} t_watch[2];


/* the CLI's main.c, which is not linked */

const char  *hoctl_progname = "ha-optoutctl";

void
hoctl_warn(const char *fmt, ...)
{
    (void) fmt;
}

int
hoctl_usage(const hoctl_verb_t *v, const char *fmt, ...)
{
    (void) v;
    (void) fmt;
    return HOCTL_USAGE;
}


void __real_OPENSSL_cleanse(void *p, size_t len);
void __real_free(void *p);

void
__wrap_OPENSSL_cleanse(void *p, size_t len)
{
    int     i;
    size_t  n;

    for (i = 0; i < 2; i++) {
        if (t_watch[i].text == NULL) {
            continue;
        }

        n = strlen(t_watch[i].text);

        if (len >= n && memcmp(p, t_watch[i].text, n) == 0
            && t_watch[i].nwiped < T_WATCH)
        {
            t_watch[i].wiped[t_watch[i].nwiped++] = p;
        }
    }

    __real_OPENSSL_cleanse(p, len);
}


void
__wrap_free(void *p)
{
    int  i, j;

    for (i = 0; p != NULL && i < 2; i++) {
        for (j = 0; j < t_watch[i].nwiped; j++) {
            if (t_watch[i].wiped[j] == p) {
                t_watch[i].freed = 1;
            }
        }
    }

    __real_free(p);
}


static void
t_watch_start(const char *a, const char *b)
{
    memset(t_watch, 0, sizeof(t_watch));
    t_watch[0].text = a;
    t_watch[1].text = b;
}


/* file I of the test dir (0600), with TEXT */
static char *
t_file(int i, const char *name, const char *text)
{
    char  *path;
    FILE  *f;

    if (t_paths[i] == NULL
        && asprintf(&t_paths[i], "%s/%s", t_dir, name) < 0)
    {
        exit(2);
    }

    path = t_paths[i];

    f = fopen(path, "w");
    if (f == NULL) {
        perror(path);
        exit(2);
    }

    fputs(text, f);
    fclose(f);
    chmod(path, 0600);

    return path;
}


static void
t_trust(void)
{
    int             i;
    char            err[HOCTL_ERRLEN];
    const char     *files[HOCTL_ETCD_MAX_TRUST + 1];
    hoctl_trust_t  *t;

    files[0] = t_file(0, "one.key", T_SECRET "\n");
    files[1] = t_file(1, "two.key", T_SHORT "\n");
    files[2] = t_file(2, "bad.pem", T_PEM);

    /* a good set: freed and wiped by hoctl_trust_free() */
    t_watch_start(T_SECRET, NULL);
    t = hoctl_trust_load(files, 1, err, sizeof(err));
    ok(t != NULL, "trust: one hs256 secret loads");
    hoctl_trust_free(t);
    ok(t_watch[0].freed, "trust: hoctl_trust_free() wipes and frees it");

    /* the second file cannot be read */
    t_watch_start(T_SECRET, NULL);
    files[1] = "/nonexistent/ha-optout.key";
    t = hoctl_trust_load(files, 2, err, sizeof(err));
    ok(t == NULL && strstr(err, "cannot read --trust-key") != NULL,
         "trust: a missing second file is an error");
    ok(t_watch[0].freed, "trust: ... and the first file's secret is wiped "
         "and freed");

    /* the second file is a secret too short */
    files[1] = t_file(1, "two.key", T_SHORT "\n");
    t_watch_start(T_SECRET, T_SHORT);
    t = hoctl_trust_load(files, 2, err, sizeof(err));
    ok(t == NULL && strstr(err, "32 bytes") != NULL,
         "trust: a short second secret is an error");
    ok(t_watch[0].freed, "trust: ... the first secret is wiped and freed");
    ok(t_watch[1].nwiped > 0, "trust: ... the buffer holding the short "
         "one is wiped");

    /* a PEM OpenSSL cannot read, after a good secret */
    files[1] = files[2];
    t_watch_start(T_SECRET, "-----BEGIN PUBLIC KEY-----");
    t = hoctl_trust_load(files, 2, err, sizeof(err));
    ok(t == NULL && strstr(err, "OpenSSL cannot read") != NULL,
         "trust: an unreadable PEM is an error");
    ok(t_watch[0].freed, "trust: ... the secret before it is wiped and "
         "freed");
    ok(t_watch[1].nwiped > 0, "trust: ... and the buffer holding the PEM "
         "is wiped");

    /* more files than a set holds */
    for (i = 0; i <= HOCTL_ETCD_MAX_TRUST; i++) {
        files[i] = files[0];
    }

    t = hoctl_trust_load(files, HOCTL_ETCD_MAX_TRUST + 1, err, sizeof(err));
    ok(t == NULL && strstr(err, "at most 16") != NULL,
         "trust: 17 files are refused, not written past the set");
    hoctl_trust_free(t);
}


static void
t_range_one(const char *prefix, const char *want, const char *want_b64,
    const char *what)
{
    char  *end, *b64;

    end = hoctl_range_end(prefix);
    ok(end != NULL && strcmp(end, want) == 0, what);

    if (end == NULL) {
        ok(0, "... no range_end to encode");
        return;
    }

    b64 = hoctl_range_end_b64(end);
    ok(b64 != NULL && strcmp(b64, want_b64) == 0, "... sent as base64 of it");

    free(b64);
    free(end);
}


static void
t_range(void)
{
    t_range_one("/ha-optout/prod/flags/", "/ha-optout/prod/flags0",
                "L2hhLW9wdG91dC9wcm9kL2ZsYWdzMA==",
                "range_end: the prefix with its last byte plus one");
    t_range_one("a\xff\xff", "b", "Yg==",
                "range_end: trailing 0xff bytes are dropped first");
    t_range_one("", "", "AA==", "range_end of \"\": \"\\0\", every key");
    t_range_one(NULL, "", "AA==", "range_end of NULL: \"\\0\", every key");
    t_range_one("\xff\xff", "", "AA==",
                "range_end of 0xff bytes only: \"\\0\"");
}


int
main(void)
{
    int  i;

    setvbuf(stdout, NULL, _IOLBF, 0);   /* lines out before an ASan abort */

    if (mkdtemp(t_dir) == NULL) {
        perror("mkdtemp");
        return 2;
    }

    t_trust();
    t_range();

    printf("1..%d\n", t_tests);

    for (i = 0; i < 3; i++) {
        if (t_paths[i] != NULL) {
            unlink(t_paths[i]);
            free(t_paths[i]);
        }
    }

    rmdir(t_dir);

    return t_failed != 0;
}
