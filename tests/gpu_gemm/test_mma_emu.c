/* Host emulation of the pipelined MMA GEMM kernel (kernels/gemm/gemm_mma.cu),
 * no GPU needed.
 *
 * gemm_mma.cu compiles as plain C with KR_MM_HOST_EMU; this file supplies what
 * the kernel takes from CUDA: threadIdx/blockIdx/gridDim, __syncthreads, and
 * the PTX primitives (cp.async, commit/wait_group, ldmatrix.x4, mma.m16n8k16,
 * the f16x2 conversions and arithmetic, prmt), each written from the PTX ISA.
 * Every thread of a block runs as a coroutine (ucontext); a thread yields at
 * each barrier and warp-collective instruction (ldmatrix, mma), and the
 * scheduler runs all threads to their next such point, checks they all agree
 * on it (convergence), then performs the warp-collective operations from the
 * lanes' inputs. cp.async copies are queued per thread and land at a random
 * later scheduling point, at the latest when the thread's wait_group requires
 * them: reading a stage before its wait, or overwriting a stage another warp
 * still reads, gives wrong data and fails the comparison.
 *
 * Checked: C (odd M, N; several K steps; split-K in 2) against the double
 * reference from fp16 A and the CPU dequantization of the uploaded bytes
 * rounded to fp16 (the values the kernel must produce), NMSE <= 1e-10; outputs
 * poisoned first, all of M x N written, ldc padding untouched. Compiled once per
 * configuration (tests/gpu_gemm/meson.build: -DKR_MM_WT, _BM, _ST, _WN). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include "kernrun/half.h"
#include "kernrun/quant.h"

/* ---- what gemm_mma.cu expects from CUDA ---------------------------------- */
#define KR_MM_HOST_EMU 1
#define __device__
#define __forceinline__ static inline
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__ restrict

typedef struct emu_dim3 {
    int x, y, z;
} emu_dim3;

enum { OP_NONE = 0, OP_SYNC, OP_LDSM, OP_MMA, OP_WGMMA, OP_DONE };

#define MAX_PEND 64
typedef struct emu_copy {
    uint32_t dst;
    const void *src;
    int bytes, group;
} emu_copy;

typedef struct emu_thread {
    ucontext_t ctx;
    emu_dim3 tidx;
    int op;               /* where it stopped */
    uint32_t in[8];       /* ldsm: in[0] = address; mma: a0..a3, b0, b1 */
    float cin[4], cout[4];
    uint32_t out[4];
    float *wg_d;       /* wgmma: the thread's 64 accumulators (updated in place) */
    uint64_t wg_desc;  /* wgmma: B descriptor (emulation encoding, see kr_mm_desc) */
    uint64_t wg_adesc; /* wgmma with A from shared memory: its descriptor; 0: A from registers */
    emu_copy pend[MAX_PEND];
    int npend, group;     /* queued copies; committed groups so far */
} emu_thread;

static emu_dim3 blockIdx, gridDim;
static emu_thread *g_thr, *g_cur;
static int g_nthr;
static ucontext_t g_sched;
static uintptr_t g_shared_hi; /* high bits of the shared array's address */
static bool g_shared_hi_set;
static uint64_t g_rng;
static int g_fail; /* emulation errors (divergence, queue overflow) */

#define threadIdx (g_cur->tidx)
#define min(a, b) ((a) < (b) ? (a) : (b))

static uint64_t rng_u64(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

static void emu_yield(int op)
{
    g_cur->op = op;
    swapcontext(&g_cur->ctx, &g_sched);
}

static inline void __syncthreads(void) { emu_yield(OP_SYNC); }

static inline uint8_t *emu_sptr(uint32_t a) { return (uint8_t *)(g_shared_hi | a); }

static inline uint32_t kr_mm_saddr(const void *p)
{
    uintptr_t u = (uintptr_t)p;
    if (!g_shared_hi_set) {
        g_shared_hi = u & ~(uintptr_t)0xffffffffu;
        g_shared_hi_set = true;
    }
    if ((u & ~(uintptr_t)0xffffffffu) != g_shared_hi)
        g_fail++;
    return (uint32_t)u;
}

static void emu_land(emu_copy *c)
{
    if (c->bytes == 16)
        memcpy(emu_sptr(c->dst), c->src, 16);
    else
        memset(emu_sptr(c->dst), 0, 16);
}

static inline void kr_mm_cp16(uint32_t dst, const void *src, int src_bytes)
{
    if (g_cur->npend == MAX_PEND) {
        g_fail++;
        return;
    }
    if (dst % 16 != 0 || (src_bytes == 16 && (uintptr_t)src % 16 != 0))
        g_fail++; /* cp.async 16 needs 16-byte aligned addresses */
    emu_copy c = {dst, src, src_bytes, g_cur->group};
    g_cur->pend[g_cur->npend++] = c;
}

static inline void kr_mm_commit(void) { g_cur->group++; }

/* Land the thread's copies for which keep(copy) is false. */
static void emu_land_where(emu_thread *t, int max_group, bool random)
{
    int w = 0;
    for (int i = 0; i < t->npend; i++) {
        emu_copy *c = &t->pend[i];
        bool land = c->group < max_group && (!random || (rng_u64() & 1));
        if (land)
            emu_land(c);
        else
            t->pend[w++] = *c;
    }
    t->npend = w;
}

/* cp.async.wait_group n: all committed groups but the newest n have landed. */
static inline void kr_mm_wait_emu(int n) { emu_land_where(g_cur, g_cur->group - n, false); }

static inline void kr_mm_ldsm4(uint32_t r[4], uint32_t addr)
{
    g_cur->in[0] = addr;
    emu_yield(OP_LDSM);
    memcpy(r, g_cur->out, 16);
}

static inline void kr_mm_mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    memcpy(g_cur->in, a, 16);
    g_cur->in[4] = b0;
    g_cur->in[5] = b1;
    memcpy(g_cur->cin, c, 16);
    emu_yield(OP_MMA);
    memcpy(c, g_cur->cout, 16);
}

static inline float h2f(uint32_t h) { return kr_fp16_to_fp32((uint16_t)(h & 0xffffu)); }
static inline uint32_t f2h(float f) { return kr_fp32_to_fp16(f); }

static inline uint32_t kr_mm_pack(float lo, float hi) { return f2h(lo) | (f2h(hi) << 16); }
static inline float kr_mm_h2f(uint32_t h) { return h2f(h); }
/* fp16 products and differences of fp16 values are exact in fp32: one rounding, as the f16 unit */
static inline uint32_t kr_mm_hsub2(uint32_t a, uint32_t b)
{
    return kr_mm_pack(h2f(a) - h2f(b), h2f(a >> 16) - h2f(b >> 16));
}
static inline uint32_t kr_mm_hmul2(uint32_t a, uint32_t b)
{
    return kr_mm_pack(h2f(a) * h2f(b), h2f(a >> 16) * h2f(b >> 16));
}
static inline uint32_t kr_mm_prmt(uint32_t a, uint32_t b, uint32_t sel)
{
    uint8_t bytes[8];
    for (int i = 0; i < 4; i++) {
        bytes[i] = (uint8_t)(a >> (8 * i));
        bytes[4 + i] = (uint8_t)(b >> (8 * i));
    }
    uint32_t r = 0;
    for (int i = 0; i < 4; i++)
        r |= (uint32_t)bytes[(sel >> (4 * i)) & 7] << (8 * i); /* no sign replication (bit 3 clear here) */
    return r;
}
static inline void atomicAdd(float *p, float v) { *p += v; }

/* wgmma (KR_MM_WG): the descriptor carries the 32-bit shared address here (the device
 * packs address >> 4 into 14 bits); the stride (512 B per 8 rows) and the 64-byte
 * swizzle are what the device descriptor states, applied in do_wgmma. */
static inline uint64_t kr_mm_desc(uint32_t saddr) { return (uint64_t)saddr | (2ull << 62); }
static inline uint64_t kr_mm_desc32(uint32_t saddr) { return (uint64_t)saddr | (3ull << 62); }
static inline void kr_mm_wg_fence(void) {}
static inline void kr_mm_wg_commit(void) {}
static inline void kr_mm_wg_wait0(void) {}
static inline void kr_mm_wg_wait1(void) {}
static inline void kr_mm_proxy_fence(void) {}
static inline void kr_mm_wgmma(float *d, const uint32_t a[4], uint64_t desc)
{
    memcpy(g_cur->in, a, 16);
    g_cur->wg_d = d;
    g_cur->wg_desc = desc;
    g_cur->wg_adesc = 0;
    emu_yield(OP_WGMMA);
}
static inline void kr_mm_wgmma_ss(float *d, uint64_t da, uint64_t db)
{
    g_cur->wg_d = d;
    g_cur->wg_desc = db;
    g_cur->wg_adesc = da;
    emu_yield(OP_WGMMA);
}

#include "gemm_mma.cu"

/* ---- the scheduler ---------------------------------------------------------- */

static struct {
    const uint16_t *A;
    long long lda;
    const uint8_t *W;
    long long ldw;
    const uint8_t *S;
    long long lds;
    float *C;
    long long ldc;
    int M, N, K, ks;
} g_args;

static void thread_main(void)
{
    kr_mm_gemm(g_args.A, g_args.lda, g_args.W, g_args.ldw, g_args.S, g_args.lds, g_args.C, g_args.ldc, g_args.M,
               g_args.N, g_args.K, g_args.ks);
    emu_land_where(g_cur, 1 << 30, false);
    g_cur->op = OP_DONE;
    swapcontext(&g_cur->ctx, &g_sched);
}

/* Warp w's ldmatrix.x4: lane 8q + r gives the address of row r of matrix q;
 * lane L receives, of each matrix q, the 32 bits at row L/4, bytes 4*(L%4). */
static void do_ldsm(emu_thread *w)
{
    for (int L = 0; L < 32; L++)
        for (int q = 0; q < 4; q++)
            memcpy(&w[L].out[q], emu_sptr(w[8 * q + L / 4].in[0] + 4 * (L % 4)), 4);
}

/* mma.m16n8k16 row.col f32.f16.f16.f32 (g = lane/4, t = lane%4):
 * a0 (g, 2t..+1) a1 (g+8, 2t..) a2 (g, 2t+8..) a3 (g+8, 2t+8..); b0 (k 2t..+1, n g), b1 (k 2t+8.., n g);
 * c0,c1 (g, 2t..+1), c2,c3 (g+8, 2t..). */
static void do_mma(emu_thread *w)
{
    float a[16][16], b[16][8], c[16][8];
    for (int L = 0; L < 32; L++) {
        int g = L / 4, t = L % 4;
        for (int h = 0; h < 2; h++) {
            a[g][2 * t + h] = h2f(w[L].in[0] >> (16 * h));
            a[g + 8][2 * t + h] = h2f(w[L].in[1] >> (16 * h));
            a[g][2 * t + 8 + h] = h2f(w[L].in[2] >> (16 * h));
            a[g + 8][2 * t + 8 + h] = h2f(w[L].in[3] >> (16 * h));
            b[2 * t + h][g] = h2f(w[L].in[4] >> (16 * h));
            b[2 * t + 8 + h][g] = h2f(w[L].in[5] >> (16 * h));
            c[g][2 * t + h] = w[L].cin[h];
            c[g + 8][2 * t + h] = w[L].cin[2 + h];
        }
    }
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 8; j++) {
            float s = c[i][j];
            for (int k = 0; k < 16; k++)
                s += a[i][k] * b[k][j];
            c[i][j] = s;
        }
    for (int L = 0; L < 32; L++) {
        int g = L / 4, t = L % 4;
        for (int h = 0; h < 2; h++) {
            w[L].cout[h] = c[g][2 * t + h];
            w[L].cout[2 + h] = c[g + 8][2 * t + h];
        }
    }
}

/* wgmma.m64n128k16 f32 += f16 x f16 for one warpgroup (128 threads): A (64 x 16) from
 * the lanes' registers as four m16n8k16 A fragments (warp w: rows 16w..), B (16 x 128)
 * K-major from shared memory: element (k, n) at start + (n / 8) * 512 + (n % 8) * 64 + 2k,
 * then the 64-byte swizzle (address bits 4-5 ^= bits 7-8); D: thread (w, g, t) holds
 * d[4j + e] = D[16w + g + 8 (e / 2)][8j + 2t + e % 2]. */
/* Element (row, k) of a K-major operand in shared memory: mode 2 = rows of 64 bytes,
 * 8-row groups 512 B apart, 64-byte swizzle (bits 4-5 ^= bits 7-8); mode 3 = rows of 32
 * bytes, groups 256 B apart, 32-byte swizzle (bit 4 ^= bit 7). */
static float desc_elem(uint64_t desc, int row, int k)
{
    const uint32_t start = (uint32_t)desc;
    const int mode = (int)(desc >> 62);
    uint32_t ad;
    if (mode == 2) {
        ad = start + (uint32_t)(row / 8) * 512u + (uint32_t)(row % 8) * 64u + 2u * (uint32_t)k;
        ad ^= ((ad >> 7) & 3u) << 4;
    } else {
        ad = start + (uint32_t)(row / 8) * 256u + (uint32_t)(row % 8) * 32u + 2u * (uint32_t)k;
        ad ^= ((ad >> 7) & 1u) << 4;
    }
    uint16_t v;
    memcpy(&v, emu_sptr(ad), 2);
    return h2f(v);
}

static void do_wgmma(emu_thread *w)
{
    static float a[64][16], b[16][128];
    for (int i = 1; i < 128; i++)
        if (w[i].wg_desc != w[0].wg_desc || w[i].wg_adesc != w[0].wg_adesc)
            g_fail++;
    if (w[0].wg_adesc)
        for (int r = 0; r < 64; r++)
            for (int k = 0; k < 16; k++)
                a[r][k] = desc_elem(w[0].wg_adesc, r, k);
    for (int T = 0; T < 128 && !w[0].wg_adesc; T++) {
        int wq = T / 32, g = (T % 32) / 4, t = T % 4;
        for (int h = 0; h < 2; h++) {
            a[16 * wq + g][2 * t + h] = h2f(w[T].in[0] >> (16 * h));
            a[16 * wq + g + 8][2 * t + h] = h2f(w[T].in[1] >> (16 * h));
            a[16 * wq + g][2 * t + 8 + h] = h2f(w[T].in[2] >> (16 * h));
            a[16 * wq + g + 8][2 * t + 8 + h] = h2f(w[T].in[3] >> (16 * h));
        }
    }
    for (int k = 0; k < 16; k++)
        for (int n = 0; n < 128; n++)
            b[k][n] = desc_elem(w[0].wg_desc, n, k);
    for (int T = 0; T < 128; T++) {
        int wq = T / 32, g = (T % 32) / 4, t = T % 4;
        for (int j = 0; j < 16; j++)
            for (int e = 0; e < 4; e++) {
                int r = 16 * wq + g + 8 * (e / 2), c = 8 * j + 2 * t + e % 2;
                float s = w[T].wg_d[4 * j + e];
                for (int k = 0; k < 16; k++)
                    s += a[r][k] * b[k][c];
                w[T].wg_d[4 * j + e] = s;
            }
    }
}

#define STACK_BYTES (256 * 1024)

/* Thread i's coroutine on its stack (a function of its own: nothing of the caller
 * lives across getcontext). */
static __attribute__((noinline)) void init_thread(emu_thread *t, int i, char *stack)
{
    memset(t, 0, sizeof *t);
    t->tidx.x = i;
    getcontext(&t->ctx);
    t->ctx.uc_stack.ss_sp = stack;
    t->ctx.uc_stack.ss_size = STACK_BYTES;
    t->ctx.uc_link = NULL;
    makecontext(&t->ctx, thread_main, 0);
}

static void run_block(int bx, int by, int bz)
{
    blockIdx.x = bx, blockIdx.y = by, blockIdx.z = bz;
    static char *stacks[KR_MM_THREADS];
    for (int i = 0; i < g_nthr; i++) {
        if (!stacks[i])
            stacks[i] = malloc(STACK_BYTES);
        cr_assert_not_null(stacks[i]);
        init_thread(&g_thr[i], i, stacks[i]);
    }
    for (;;) {
        for (int i = 0; i < g_nthr; i++) {
            g_cur = &g_thr[i];
            if (g_cur->op != OP_DONE)
                swapcontext(&g_sched, &g_cur->ctx);
        }
        int op = g_thr[0].op;
        for (int i = 1; i < g_nthr; i++)
            if (g_thr[i].op != op) {
                g_fail++; /* divergence: threads stopped at different points */
                cr_log_error("threads 0 and %d stopped at ops %d and %d", i, op, g_thr[i].op);
                return;
            }
        if (op == OP_DONE)
            break;
        if (op == OP_WGMMA)
            for (int wg = 0; wg < g_nthr / 128; wg++)
                do_wgmma(&g_thr[128 * wg]);
        for (int w = 0; w < g_nthr / 32; w++) {
            if (op == OP_LDSM)
                do_ldsm(&g_thr[32 * w]);
            else if (op == OP_MMA)
                do_mma(&g_thr[32 * w]);
        }
        for (int i = 0; i < g_nthr; i++)
            emu_land_where(&g_thr[i], 1 << 30, true); /* some copies arrive now */
    }
}

/* ---- the test ----------------------------------------------------------------- */

static double fp16r(float x) { return kr_fp16_to_fp32(kr_fp32_to_fp16(x)); }

/* The repacked types (102, 108) are Q4_0 / Q8_0 blocks rewritten as
 * [quants row-major | fp16 scales row-major] (kernels/forward/matvec_repacked.cu). */
#define REPACKED (KR_MM_WT == 102 || KR_MM_WT == 108)

static void run_case(int M, int N, int K, int splits, size_t ldc_pad)
{
    const kr_dtype wt = (kr_dtype)(REPACKED ? KR_MM_WT - 100 : KR_MM_WT);
    uint64_t rb = 0;
    cr_assert_eq(kr_quant_row_size(wt, (uint64_t)K, &rb, NULL), KR_OK);
    const size_t ldw = (size_t)(rb + 15) / 16 * 16, lda = (size_t)K + 8, ldc = (size_t)N + ldc_pad;
    uint8_t *W = aligned_alloc(16, (size_t)N * ldw);
    uint16_t *A = aligned_alloc(16, (size_t)M * lda * 2 + 16);
    float *C = malloc((size_t)M * ldc * sizeof *C);
    float *wf = malloc((size_t)K * sizeof *wf), *wd = malloc((size_t)N * K * sizeof *wd);
    double *ref = malloc((size_t)M * N * sizeof *ref);
    cr_assert(W && A && C && wf && wd && ref);
    for (size_t i = 0; i < (size_t)N * ldw; i++)
        W[i] = (uint8_t)rng_u64(); /* row padding: garbage */
    for (int r = 0; r < N; r++) {
        float sc = 0.25f + (float)(rng_u64() % 1000) * 0.00175f;
        for (int i = 0; i < K; i++)
            wf[i] = sc * ((float)(int64_t)(rng_u64() % 2001) - 1000.0f) * 0.001f;
        cr_assert_eq(kr_quantize_row(wt, wf, W + (size_t)r * ldw, (size_t)K), KR_OK);
        cr_assert_eq(kr_dequantize_row(wt, W + (size_t)r * ldw, wd + (size_t)r * K, (size_t)K), KR_OK);
    }
    for (size_t i = 0; i < (size_t)M * lda; i++)
        A[i] = kr_fp32_to_fp16(((float)(int64_t)(rng_u64() % 4001) - 2000.0f) * 0.001f);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++)
                s += (double)kr_fp16_to_fp32(A[(size_t)i * lda + k]) * fp16r(wd[(size_t)j * K + k]);
            ref[(size_t)i * N + j] = s;
        }
    memset(C, 0xff, (size_t)M * ldc * sizeof *C);
    int k_split = K;
    if (splits > 1) {
        int blk = (int)kr_quant_block_size(wt) < 32 ? 32 : (int)kr_quant_block_size(wt); /* whole K steps */
        if (REPACKED)
            blk = 256;
        k_split = ((K / blk + splits - 1) / splits) * blk;
        splits = (K + k_split - 1) / k_split;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
                C[(size_t)i * ldc + j] = 0.0f;
    }
    g_args.A = A, g_args.lda = (long long)lda, g_args.W = W, g_args.ldw = (long long)ldw, g_args.C = C;
    g_args.S = W, g_args.lds = 0;
    uint8_t *Wr = NULL;
    if (REPACKED) { /* qs (N * nb * qsz) then sc (N * nb * 2) */
        const int nb = K / 32, qsz = KR_MM_WT == 102 ? 16 : 32;
        Wr = aligned_alloc(16, (size_t)N * nb * (qsz + 2) + 16);
        cr_assert_not_null(Wr);
        uint8_t *qs = Wr, *sc = Wr + (size_t)N * nb * qsz;
        for (int r = 0; r < N; r++)
            for (int b = 0; b < nb; b++) {
                const uint8_t *blk = W + (size_t)r * ldw + (size_t)b * (qsz + 2);
                memcpy(sc + ((size_t)r * nb + b) * 2, blk, 2);
                memcpy(qs + ((size_t)r * nb + b) * qsz, blk + 2, (size_t)qsz);
            }
        g_args.W = qs, g_args.ldw = (long long)nb * qsz, g_args.S = sc, g_args.lds = 2LL * nb;
    }
    g_args.ldc = (long long)ldc, g_args.M = M, g_args.N = N, g_args.K = K, g_args.ks = k_split;
    gridDim.x = (N + KR_MM_BN - 1) / KR_MM_BN, gridDim.y = (M + KR_MM_BM - 1) / KR_MM_BM, gridDim.z = splits;
    g_nthr = KR_MM_THREADS;
    g_thr = calloc((size_t)g_nthr, sizeof *g_thr);
    cr_assert_not_null(g_thr);
    g_fail = 0;
    for (int bz = 0; bz < gridDim.z; bz++)
        for (int by = 0; by < gridDim.y; by++)
            for (int bx = 0; bx < gridDim.x; bx++)
                run_block(bx, by, bz);
    cr_expect_eq(g_fail, 0, "emulation errors (divergence / alignment / queue): %d", g_fail);
    double num = 0, den = 0;
    size_t bad = 0, oob = 0;
    for (int i = 0; i < M; i++)
        for (size_t j = 0; j < ldc; j++) {
            float v = C[(size_t)i * ldc + j];
            uint32_t u;
            memcpy(&u, &v, 4);
            if (j >= (size_t)N) {
                oob += u != 0xffffffffu;
                continue;
            }
            if (!isfinite(v)) {
                if (bad++ < 3)
                    cr_log_error("C[%d][%zu] = %g", i, j, v);
                continue;
            }
            double e = v - ref[(size_t)i * N + j];
            num += e * e;
            den += ref[(size_t)i * N + j] * ref[(size_t)i * N + j];
        }
    double nmse = den > 0 ? num / den : num;
    cr_expect_eq(bad, 0, "M %d N %d K %d splits %d: %zu outputs not written/finite", M, N, K, splits, bad);
    cr_expect_eq(oob, 0, "M %d N %d K %d: %zu writes into the ldc padding", M, N, K, oob);
    cr_expect_leq(nmse, 1e-10, "M %d N %d K %d splits %d: NMSE %g", M, N, K, splits, nmse);
    free(g_thr);
    free(Wr);
    free(W);
    free(A);
    free(C);
    free(wf);
    free(wd);
    free(ref);
}

Test(gemm_mma_emu, kernel)
{
    g_rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)KR_MM_WT * 7919u ^ (uint64_t)KR_MM_BM * 31u;
    const bool kq = REPACKED || kr_quant_block_size((kr_dtype)KR_MM_WT) == 256; /* repacked: nb % 8 == 0 */
    /* ragged M, N around the tiles; K: several steps (more than the stages) */
    run_case(KR_MM_BM + 3, 133, kq ? 512 : 160, 1, 3);
    run_case(5, 7, kq ? 256 : 32, 1, 0);
    run_case(KR_MM_BM - 1, 200, kq ? 768 : 224, 2, 0);
}
