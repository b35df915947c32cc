/* Tokenizer benchmark (not a test): encode throughput on English-like text
 * and the worst cases for merging (one repeated character, one repeated
 * space), for each tokenizer given on the command line.
 *   bench_tokenizer [-s MIB] FILE.gguf|tokenizer.json ... */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernrun/tokenizer.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU time of this process: less disturbed than wall time on a busy machine */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const char english[] =
    "The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst of "
    "times; the year 1859 saw 12,345 readers buy the book for $2.50 each. \"Don't panic,\" she "
    "said, and we'll see what they've done.\nNew paragraph: tokenizers should be fast (>= 10 MB/s).\n";

static void run(const kr_tokenizer *t, const char *label, const char *text, size_t len)
{
    kr_tok_encode_opts o = {0};
    kr_err err;
    kr_err_clear(&err);
    size_t n = 0;
    double t0 = now_s(), c0 = cpu_s();
    kr_status st = kr_tokenizer_encode(t, text, len, &o, NULL, 0, &n, &err);
    double dt = now_s() - t0, ct = cpu_s() - c0;
    if (st && st != KR_ERR_RANGE) {
        printf("  %-16s error: %s\n", label, kr_err_msg(&err, st));
        return;
    }
    printf("  %-16s %7.2f MiB %10zu tokens  wall %7.3f s  cpu %7.3f s  %8.2f MB/s (cpu)\n", label,
           len / 1048576.0, n, dt, ct, len / 1e6 / (ct > 0 ? ct : 1e-9));
}

int main(int argc, char **argv)
{
    size_t mib = 10;
    int i = 1;
    if (argc > 2 && !strcmp(argv[1], "-s")) {
        mib = (size_t)atoi(argv[2]);
        i = 3;
    }
    if (i >= argc) {
        fprintf(stderr, "usage: %s [-s MIB] FILE.gguf|tokenizer.json ...\n", argv[0]);
        return 2;
    }
    size_t len = mib << 20;
    char *buf = malloc(len);
    if (!buf)
        return 1;
    for (; i < argc; i++) {
        kr_tokenizer *t = NULL;
        kr_err err;
        kr_err_clear(&err);
        double t0 = now_s();
        kr_status st = kr_tokenizer_load_file(argv[i], &t, &err);
        if (st) {
            fprintf(stderr, "%s\n", kr_err_msg(&err, st));
            continue;
        }
        printf("%s (load %.3f s)\n", argv[i], now_s() - t0);
        for (size_t k = 0; k < len; k++)
            buf[k] = english[k % (sizeof english - 1)];
        run(t, "english", buf, len);
        memset(buf, 'a', len);
        run(t, "repeated 'a'", buf, len);
        memset(buf, ' ', len);
        run(t, "repeated ' '", buf, len);
        for (size_t k = 0; k + 3 <= len; k += 3)
            memcpy(buf + k, "\xe4\xb8\xad", 3); /* 中 */
        run(t, "repeated U+4E2D", buf, len - len % 3);
        kr_tokenizer_free(t);
    }
    free(buf);
    return 0;
}
