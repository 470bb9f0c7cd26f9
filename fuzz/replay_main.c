
/*
 * Replay driver: runs a fuzz target once over each file named on the
 * command line (directories: each file below them, in name order),
 * without libFuzzer.  Exit status 0 when every input ran; a broken
 * invariant or a sanitizer report aborts with the input's name printed
 * first.
 */


#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"


int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));


static int
replay_file(const char *path)
{
    FILE           *f;
    long            len;
    unsigned char  *buf;

    f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }

    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);

    /* exactly len bytes, so that an overread is caught */
    buf = malloc(len ? len : 1);
    if (buf == NULL || (len && fread(buf, 1, len, f) != (size_t) len)) {
        perror(path);
        fclose(f);
        free(buf);
        return -1;
    }

    fclose(f);

    fprintf(stderr, "replay: %s (%ld bytes)\n", path, len);
    LLVMFuzzerTestOneInput(buf, len);

    free(buf);

    return 1;
}


static int
name_cmp(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}


static int
replay_path(const char *path)
{
    int              n, i, count, rc;
    char             sub[4096];
    struct stat      st;
    struct dirent  **list;

    if (stat(path, &st) != 0) {
        perror(path);
        return -1;
    }

    if (!S_ISDIR(st.st_mode)) {
        return replay_file(path);
    }

    n = scandir(path, &list, NULL, name_cmp);
    if (n < 0) {
        perror(path);
        return -1;
    }

    count = 0;

    for (i = 0; i < n; i++) {
        if (list[i]->d_name[0] != '.') {
            snprintf(sub, sizeof(sub), "%s/%s", path, list[i]->d_name);

            if (stat(sub, &st) == 0
                && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)))
            {
                rc = replay_path(sub);
                if (rc < 0) {
                    return rc;
                }

                count += rc;
            }
        }

        free(list[i]);
    }

    free(list);

    return count;
}


int
main(int argc, char **argv)
{
    int  i, n, total;

    if (LLVMFuzzerInitialize) {
        LLVMFuzzerInitialize(&argc, &argv);
    }

    total = 0;

    for (i = 1; i < argc; i++) {
        n = replay_path(argv[i]);
        if (n < 0) {
            return 2;
        }

        total += n;
    }

    printf("replayed %d inputs\n", total);

    return 0;
}
