
/*
 * The TAP lines of the C unit tests (token_test.c, cli_test.c): "ok N -
 * NAME" or "not ok N - NAME"; main() prints the plan "1..t_tests" and
 * fails when t_failed.
 */

#ifndef _HA_OPTOUT_TAP_H_INCLUDED_
#define _HA_OPTOUT_TAP_H_INCLUDED_


#include <stdio.h>


static int  t_tests, t_failed;


static void
ok(int cond, const char *name)
{
    t_tests++;

    if (!cond) {
        t_failed++;
    }

    printf("%sok %d - %s\n", cond ? "" : "not ", t_tests, name);
}


#endif /* _HA_OPTOUT_TAP_H_INCLUDED_ */
