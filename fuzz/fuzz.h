
/*
 * Shared bits of the fuzz targets.  Each target defines
 * LLVMFuzzerTestOneInput() (and optionally LLVMFuzzerInitialize()); it is
 * linked either with libFuzzer or with replay_main.c, which feeds it the
 * files named on its command line once each (t/fuzz_corpus.t).
 *
 * A target checks the contract of the function under test, not just that
 * it does not crash: a broken invariant calls fuzz_fail(), which prints
 * the reason and aborts, so libFuzzer saves the input as a crash.
 */

#ifndef _NGX_HA_OPTOUT_FUZZ_H_INCLUDED_
#define _NGX_HA_OPTOUT_FUZZ_H_INCLUDED_


#include <stdio.h>
#include <stdlib.h>


/* "now" for every target, so that an input always does the same thing */
#define FUZZ_NOW  1790000000


#define fuzz_fail(...)                                                        \
    do {                                                                      \
        fprintf(stderr, "fuzz invariant broken: " __VA_ARGS__);               \
        fprintf(stderr, "\n");                                                \
        abort();                                                              \
    } while (0)

#define fuzz_assert(cond, ...)                                                \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fuzz_fail(__VA_ARGS__);                                           \
        }                                                                     \
    } while (0)


/* reads every byte so that AddressSanitizer checks the whole range */
static inline unsigned
fuzz_touch(const void *p, size_t n)
{
    const volatile unsigned char  *c = p;
    unsigned                       sum = 0;

    while (n--) {
        sum += *c++;
    }

    return sum;
}


int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);


#endif /* _NGX_HA_OPTOUT_FUZZ_H_INCLUDED_ */
