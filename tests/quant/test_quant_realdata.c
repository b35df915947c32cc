/* Real data: ../shared/testdata has stories260K both in F32 and in Q8_0
 * (the latter made by another tool, GGUF v2). Quantizing the F32 tensors
 * with kr_quantize_row must give the Q8_0 file's blocks, and the Q8_0
 * file's blocks must dequantize to within a Q8_0 step of the F32 weights.
 * The project's GGUF reader (rightly) rejects the Q8_0 file because its
 * ffn_down rows are 172 long, so this test scans it with a small
 * bounds-checked walker of its own and only uses tensors whose rows are a
 * multiple of 32. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/gguf.h"
#include "kernrun/half.h"
#include "kernrun/quant.h"
#include "kr_test_leaks.h"

typedef struct scan {
    const uint8_t *p;
    size_t n, pos;
    bool bad;
} scan;

static uint64_t rd(scan *s, size_t k)
{
    uint64_t v = 0;
    if (s->bad || s->n - s->pos < k) {
        s->bad = true;
        return 0;
    }
    for (size_t i = 0; i < k; i++)
        v |= (uint64_t)s->p[s->pos + i] << (8 * i);
    s->pos += k;
    return v;
}

static void skip(scan *s, uint64_t k)
{
    if (s->bad || s->n - s->pos < k)
        s->bad = true;
    else
        s->pos += (size_t)k;
}

/* GGUF value sizes by type id (0..12); 0 for string/array */
static const size_t g_vsize[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

static void skip_value(scan *s, uint32_t type, int depth)
{
    if (type == 8) { /* string */
        skip(s, rd(s, 8));
    } else if (type == 9 && depth == 0) { /* array */
        uint32_t et = (uint32_t)rd(s, 4);
        uint64_t cnt = rd(s, 8);
        for (uint64_t i = 0; i < cnt && !s->bad; i++)
            skip_value(s, et, 1);
    } else if (type < 13 && g_vsize[type]) {
        skip(s, g_vsize[type]);
    } else {
        s->bad = true;
    }
}

typedef struct qtensor {
    char name[64];
    uint64_t ne0, ne1;
    uint32_t type;
    uint64_t offset;
} qtensor;

static void *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *b = malloc((size_t)sz);
    cr_assert_not_null(b);
    cr_assert_eq(fread(b, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

/* per-test leak check under ASan (tests/common/kr_test_leaks.h) */
TestSuite(realdata, .fini = kr_test_leak_check);

Test(realdata, q8_0_matches_stories260k)
{
    const char *td = getenv("KR_TESTDATA");
    char pf[512], pq[512];
    snprintf(pf, sizeof pf, "%s/models/stories260K-f32.gguf", td ? td : "../shared/testdata");
    snprintf(pq, sizeof pq, "%s/models/stories260K-q8_0-v2-unaligned-rows.gguf", td ? td : "../shared/testdata");

    size_t n;
    uint8_t *buf = slurp(pq, &n);
    scan s = {.p = buf, .n = n};
    cr_assert_eq(rd(&s, 4), 0x46554747u); /* "GGUF" */
    cr_assert_eq(rd(&s, 4), 2u);          /* version 2: 64-bit counts */
    const uint64_t n_t = rd(&s, 8), n_kv = rd(&s, 8);
    cr_assert(n_t > 0 && n_t < 1000 && n_kv < 1000);
    uint64_t align = 32;
    for (uint64_t i = 0; i < n_kv && !s.bad; i++) {
        uint64_t kl = rd(&s, 8);
        const bool is_align = kl == 17 && s.n - s.pos >= 17 && memcmp(s.p + s.pos, "general.alignment", 17) == 0;
        skip(&s, kl);
        uint32_t type = (uint32_t)rd(&s, 4);
        if (is_align && type == 4)
            align = rd(&s, 4);
        else
            skip_value(&s, type, 0);
    }
    qtensor *ts = calloc((size_t)n_t, sizeof *ts);
    cr_assert_not_null(ts);
    for (uint64_t i = 0; i < n_t && !s.bad; i++) {
        uint64_t nl = rd(&s, 8);
        cr_assert(nl < sizeof ts[i].name);
        if (!s.bad && s.n - s.pos >= nl)
            memcpy(ts[i].name, s.p + s.pos, (size_t)nl);
        skip(&s, nl);
        uint32_t nd = (uint32_t)rd(&s, 4);
        cr_assert(nd >= 1 && nd <= 4);
        ts[i].ne0 = rd(&s, 8);
        ts[i].ne1 = 1;
        for (uint32_t d = 1; d < nd; d++)
            ts[i].ne1 *= rd(&s, 8);
        ts[i].type = (uint32_t)rd(&s, 4);
        ts[i].offset = rd(&s, 8);
    }
    cr_assert_not(s.bad, "q8_0 file truncated while scanning");
    const uint64_t data = (s.pos + align - 1) / align * align;

    kr_gguf *g = NULL;
    kr_err err = {0};
    cr_assert_eq(kr_gguf_open(pf, NULL, &g, &err), KR_OK, "%s", err.msg);
    int checked = 0;
    uint64_t blocks = 0, same = 0;
    for (uint64_t i = 0; i < n_t; i++) {
        const qtensor *q = &ts[i];
        if (q->type != KR_DTYPE_Q8_0 || q->ne0 % 32 != 0)
            continue;
        const kr_gguf_tensor *f = kr_gguf_find_tensor(g, q->name);
        cr_assert_not_null(f, "%s missing in the f32 file", q->name);
        cr_assert(f->type == KR_DTYPE_F32 && f->ne[0] == q->ne0 && f->ne[0] * f->ne[1] == q->ne0 * q->ne1);
        const uint64_t ne = q->ne0 * q->ne1, bytes = ne / 32 * 34;
        cr_assert(data + q->offset + bytes <= n, "%s past end of file", q->name);
        const uint8_t *qd = buf + data + q->offset;
        float *x = malloc(ne * sizeof *x), *y = malloc(ne * sizeof *y);
        uint8_t *mine = malloc(bytes);
        cr_assert(x && y && mine);
        memcpy(x, f->data, ne * sizeof *x);
        cr_assert_eq(kr_quantize_row(KR_DTYPE_Q8_0, x, mine, ne), KR_OK);
        cr_assert_eq(kr_dequantize_row(KR_DTYPE_Q8_0, qd, y, ne), KR_OK);
        for (uint64_t b = 0; b < ne / 32; b++) {
            blocks++;
            same += memcmp(mine + 34 * b, qd + 34 * b, 34) == 0;
            /* their block dequantizes to within half a step (+ fp16 scale rounding) */
            float amax = 0;
            for (int j = 0; j < 32; j++)
                amax = fmaxf(amax, fabsf(x[32 * b + j]));
            const float d = amax / 127, dh = kr_fp16_to_fp32(kr_fp32_to_fp16(d));
            for (int j = 0; j < 32; j++)
                cr_assert(fabsf(x[32 * b + j] - y[32 * b + j]) <= 0.5f * d * 1.0001f + 127 * fabsf(d - dh) + 1e-9f,
                          "%s block %llu elem %d: f32 %g q8_0 %g", q->name, (unsigned long long)b, j, x[32 * b + j],
                          y[32 * b + j]);
        }
        free(x);
        free(y);
        free(mine);
        checked++;
    }
    cr_assert_gt(checked, 10, "only %d q8_0 tensors checked", checked);
    /* ggml's reference quantizer and ours agree bit for bit */
    cr_assert_eq(same, blocks, "%llu of %llu blocks identical to the file's", (unsigned long long)same,
                 (unsigned long long)blocks);
    kr_gguf_close(g);
    free(ts);
    free(buf);
}
