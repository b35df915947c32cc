/* Throughput of the CPU quant kernels (not a test): kr_vec_dot_row over a
 * 4096 x 4096 matrix per type, and kr_quantize_row over 16M values.
 * Usage: bench-quant [seconds-per-type]. Single thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernrun/quant.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static const struct {
    kr_dtype t;
    const char *name;
} g_types[] = {
    {KR_DTYPE_F32, "f32"},   {KR_DTYPE_F16, "f16"},   {KR_DTYPE_BF16, "bf16"}, {KR_DTYPE_Q8_0, "q8_0"},
    {KR_DTYPE_Q4_0, "q4_0"}, {KR_DTYPE_Q4_1, "q4_1"}, {KR_DTYPE_Q5_0, "q5_0"}, {KR_DTYPE_Q5_1, "q5_1"},
    {KR_DTYPE_Q2_K, "q2_k"}, {KR_DTYPE_Q3_K, "q3_k"}, {KR_DTYPE_Q4_K, "q4_k"}, {KR_DTYPE_Q5_K, "q5_k"},
    {KR_DTYPE_Q6_K, "q6_k"},
};

int main(int argc, char **argv)
{
    const double secs = argc > 1 ? atof(argv[1]) : 0.5;
    const size_t n = 4096, rows = 4096;
    float *x = malloc(n * sizeof *x), *row = malloc(n * sizeof *row);
    const size_t nq = (size_t)1 << 24;
    float *src = malloc(nq * sizeof *src);
    uint8_t *dst = malloc(nq * sizeof(float));
    if (!x || !row || !src || !dst)
        return 1;
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(i % 17) * 0.01f - 0.08f;
    for (size_t i = 0; i < nq; i++)
        src[i] = (float)((i * 2654435761u) % 1000) * 1e-4f - 0.05f;
    memset(dst, 0, nq * sizeof(float));
    printf("%-5s %12s %12s %14s\n", "type", "dot GB/s", "dot Gelem/s", "quant ns/elem");
    for (size_t k = 0; k < sizeof g_types / sizeof g_types[0]; k++) {
        const kr_dtype t = g_types[k].t;
        uint64_t rb;
        if (kr_quant_row_size(t, n, &rb, NULL) != KR_OK)
            return 1;
        uint8_t *w = malloc(rb * rows);
        if (!w)
            return 1;
        /* random bytes, then valid rows where we can quantize */
        for (size_t i = 0; i < rb * rows; i++)
            w[i] = (uint8_t)((i * 2654435761u) >> 13);
        if (kr_quant_can_quantize(t))
            for (size_t r = 0; r < rows; r++) {
                for (size_t i = 0; i < n; i++)
                    row[i] = (float)((r * n + i) % 101) * 0.001f - 0.05f;
                kr_quantize_row(t, row, w + r * rb, n);
            }
        float sink = 0;
        double best = 1e30;
        const double t_end = now_s() + secs;
        do {
            const double t0 = now_s();
            for (size_t r = 0; r < rows; r++) {
                float o;
                kr_vec_dot_row(t, w + r * rb, x, n, &o);
                sink += o;
            }
            const double dt = now_s() - t0;
            best = dt < best ? dt : best;
        } while (now_s() < t_end);
        double qns = 0;
        if (kr_quant_can_quantize(t)) {
            double qb = 1e30;
            for (int rep = 0; rep < 3; rep++) {
                const double t0 = now_s();
                kr_quantize_row(t, src, dst, nq);
                const double dt = now_s() - t0;
                qb = dt < qb ? dt : qb;
            }
            qns = qb / (double)nq * 1e9;
        }
        printf("%-5s %12.2f %12.2f %14.2f%s\n", g_types[k].name, (double)(rb * rows) / best / 1e9,
               (double)(n * rows) / best / 1e9, qns, sink == 12345.678f ? " " : "");
        free(w);
    }
    free(x);
    free(row);
    free(src);
    free(dst);
    return 0;
}
