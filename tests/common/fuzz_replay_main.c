/* main() for the fuzz replayers: runs LLVMFuzzerTestOneInput once over each
 * file given, or over each regular file (one level, sorted by name, dot
 * files skipped) in each directory given, without libFuzzer. The normal test
 * suites link it with a harness so saved inputs and crashers keep passing.
 * Exit 0 when every input could be read and at least one ran; a crash or a
 * sanitizer report inside the harness fails on its own. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads the whole file into an exact-size heap block (so ASan sees any
 * over-read by the harness) and runs the harness on it; 0 when it ran. */
static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return 1;
    }
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 4096;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb)
                goto out_of_memory;
            buf = nb;
            cap = ncap;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        if (r == 0)
            break;
        n += r;
    }
    if (ferror(f)) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        free(buf);
        fclose(f);
        return 1;
    }
    fclose(f);
    uint8_t *exact = malloc(n ? n : 1);
    if (!exact) {
        free(buf);
        fprintf(stderr, "replay: out of memory on %s\n", path);
        return 1;
    }
    if (n)
        memcpy(exact, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 0;

out_of_memory:
    free(buf);
    fclose(f);
    fprintf(stderr, "replay: out of memory on %s\n", path);
    return 1;
}

int main(int argc, char **argv)
{
    int fails = 0, count = 0;
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) != 0) {
            fprintf(stderr, "replay: %s: not found\n", argv[i]);
            fails++;
            continue;
        }
        if (!S_ISDIR(sb.st_mode)) {
            fails += replay_file(argv[i]);
            count++;
            continue;
        }
        struct dirent **names;
        int n = scandir(argv[i], &names, NULL, alphasort);
        if (n < 0) {
            fprintf(stderr, "replay: cannot list %s\n", argv[i]);
            fails++;
            continue;
        }
        for (int j = 0; j < n; j++) {
            if (names[j]->d_name[0] != '.') {
                char path[4096];
                int len = snprintf(path, sizeof path, "%s/%s", argv[i], names[j]->d_name);
                if (len < 0 || (size_t)len >= sizeof path) {
                    fprintf(stderr, "replay: path too long in %s\n", argv[i]);
                    fails++;
                } else if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
                    fails += replay_file(path);
                    count++;
                }
            }
            free(names[j]);
        }
        free(names);
    }
    printf("replayed %d files, %d failures\n", count, fails);
    if (count == 0)
        fprintf(stderr, "replay: no inputs\n");
    return fails || count == 0 ? 1 : 0;
}
