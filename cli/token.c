
/*
 * ha-optoutctl token and whoami: a minted token printed, and what nginx
 * makes of the credentials (v1/whoami).  The minting itself is jwt.c.
 */

#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

#include "verb.h"


int
hoctl_verb_token(const hoctl_verb_t *v, hoctl_args_t *a)
{
    char  *jwt, err[HOCTL_ERRLEN];

    if (a->nargs != 0) {
        return hoctl_usage(v, "unexpected argument \"%s\"", a->args[0]);
    }

    if (a->conn.key == NULL) {
        return hoctl_usage(v, "--key FILE (or HA_OPTOUT_KEY) is required");
    }

    if (a->ttl != NULL) {
        a->conn.token_ttl = hoctl_parse_duration(a->ttl);
        if (a->conn.token_ttl <= 0) {
            return hoctl_usage(v, "--ttl must be Ns, Nm or Nh: e.g. 90s, "
                               "30m, 24h");
        }
    }

    jwt = hoctl_jwt_mint(&a->conn, err, sizeof(err));
    if (jwt == NULL) {
        hoctl_warn("%s", err);
        return HOCTL_USAGE;
    }

    printf("%s\n", jwt);
    OPENSSL_cleanse(jwt, strlen(jwt));
    free(jwt);

    return HOCTL_OK;
}


static void
hoctl_print_scalar(const char *name, json_t *val)
{
    size_t   i;
    json_t  *e;

    printf("%-10s ", hoctl_safe(name));

    if (json_is_string(val)) {
        printf("%s\n", hoctl_safe(json_string_value(val)));

    } else if (json_is_array(val)) {
        json_array_foreach(val, i, e) {
            printf("%s%s", i ? " " : "",
                   json_is_string(e) ? hoctl_safe(json_string_value(e))
                                     : "?");
        }
        printf("\n");

    } else {
        char  *s = json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
        char  *t = hoctl_escape(s, 1);

        printf("%s\n", t ? t : "?");
        free(t);
        free(s);
    }
}


int
hoctl_verb_whoami(const hoctl_verb_t *v, hoctl_args_t *a)
{
    int            rc;
    json_t        *j, *val;
    const char    *name;

    if (a->nargs != 0) {
        return hoctl_usage(v, "unexpected argument \"%s\"", a->args[0]);
    }

    rc = hoctl_get_json(&a->conn, "v1/whoami", a->json, &j);
    if (j == NULL) {
        return rc;
    }

    json_object_foreach(j, name, val) {
        hoctl_print_scalar(name, val);
    }

    json_decref(j);
    return HOCTL_OK;
}
