// GEMM for prompt processing (prefill):
//   C (M, N) fp32 = A (M, K) fp32 @ W (N, K)^T
// A: activations, row m at A + m*lda floats. W: a weight matrix in GGML/GGUF
// layout, row n (one output feature) at W + n*ldw bytes. C: row m at C + m*ldc.
//
// Tensor-core kernels (kr_gemm_f16, kr_gemm_q4_0, kr_gemm_q4_1, kr_gemm_q8_0):
//   mma.sync m16n8k16, fp16 inputs, fp32 accumulation. A block computes a
//   KR_GM_BM x 128 tile of C with 8 warps (2 along M x 4 along N; a warp owns
//   (KR_GM_BM/2) x 32). K advances in steps of 32: A is rounded to fp16 and W is
//   dequantized to fp16 (value = fp16(d*q) or fp16(d*q + m)) while the step is
//   copied into shared memory, so no fp16 copy of the weights exists anywhere.
//   The next step's global loads are issued before the current step's mma's
//   (kept raw in registers, decoded at the shared-memory store).
// SIMT kernel (kr_gemm_f32_simt, W F32): the fp32 baseline; 128 x 128 tile,
//   K steps of 8 through shared memory, 8 x 8 outputs per thread.
//
// Launch (every entry): block (256, 1, 1), grid (ceil(N/128), ceil(M/BM), 1),
//   BM = KR_GM_BM for the tensor-core kernels (64 or 128, -D option), 128 for SIMT.
// Requirements (checked by the launcher, plugins/cuda_gemm/gemm.c):
//   K a positive multiple of 32; A 16-byte aligned, lda a multiple of 4;
//   W F16/F32: W and ldw 16-byte aligned; Q4_0/Q8_0: 2-byte; Q4_1: 4-byte.
// Rows m >= M and n >= N are read as zero and never written (any M, N >= 1).
// NVRTC-compilable without headers: halves go through PTX cvt.

typedef unsigned char kr_gm_u8;
typedef unsigned short kr_gm_u16;
typedef unsigned int kr_gm_u32;
typedef long long kr_gm_i64;

#ifndef KR_GM_BM
#define KR_GM_BM 128
#endif
#if KR_GM_BM != 64 && KR_GM_BM != 128
#error "KR_GM_BM must be 64 or 128"
#endif
#define KR_GM_BN 128
#define KR_GM_BK 32
#define KR_GM_LDS (KR_GM_BK + 8) // halves per shared row: 80 bytes, fragment loads conflict-free
#define KR_GM_THREADS 256
#define KR_GM_MT (KR_GM_BM / 32) // 16-row mma tiles per warp along M
#define KR_GM_NT 4               // 8-column mma tiles per warp along N
#define KR_GM_AV (KR_GM_BM / 32) // float4 loads of A per thread per K step

#ifdef KR_GM_HOST_EMU
#define KR_GM_UNROLL
#else
#define KR_GM_UNROLL _Pragma("unroll")
#endif

// GGML type ids (same values as kr_dtype).
#define KR_GM_T_F16 1
#define KR_GM_T_Q4_0 2
#define KR_GM_T_Q4_1 3
#define KR_GM_T_Q8_0 8
#define KR_GM_T_Q4_K 12
#define KR_GM_T_Q6_K 14

// The tile loaders below (kr_gm_load_w / kr_gm_store_w) are plain C as well:
// tests/gpu_gemm/test_tile_emu.c compiles them on the host with
// KR_GM_HOST_EMU defined (which also hides the kernels) and checks the fp16
// tiles against the CPU dequantization.
#ifndef KR_GM_HOST_EMU
__device__ __forceinline__ float kr_gm_h2f(kr_gm_u16 h)
{
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ kr_gm_u16 kr_gm_f2h(float f)
{
    kr_gm_u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#endif

// Two floats -> packed halves, lo in the low 16 bits (the lower K index).
__device__ __forceinline__ kr_gm_u32 kr_gm_pack(float lo, float hi)
{
    return (kr_gm_u32)kr_gm_f2h(lo) | ((kr_gm_u32)kr_gm_f2h(hi) << 16);
}

// Raw weight data of one thread for one K step of 32, decoded at the store.
// Thread t owns shared row t/2 (n) and the 16 K values 16*(t%2) .. +15 of the
// step, except F16, where it owns two 16-byte pieces (rows (t + 256 i)/4).
typedef struct kr_gm_wraw {
    kr_gm_u32 q[8]; // F16: 2 x 16 bytes; Q8_0, Q4_K: 16 quant bytes (+ Q4_K scales
                    // in q[4..6], sub-block in q[7]); Q4_0/Q4_1: 8 bytes of nibbles;
                    // Q6_K: 16 ql bytes in q[0..3], 16 qh bytes in q[4..7]
    kr_gm_u32 dm;   // fp16 d (low 16 bits); Q4_1/Q4_K: fp16 m/dmin (high 16);
                    // Q6_K: int8 scale in bits 16..23, quarter in 24..25; 0 for rows past N
} kr_gm_wraw;

// nbytes (a multiple of 4) at p (2-byte aligned) into nbytes/4 u32 of dst,
// byte order kept, with 2-byte loads.
__device__ __forceinline__ void kr_gm_ld16(kr_gm_u32 *dst, const kr_gm_u8 *p, int nbytes)
{
    const kr_gm_u16 *h = (const kr_gm_u16 *)p;
    KR_GM_UNROLL
    for (int i = 0; i < nbytes / 4; i++)
        dst[i] = (kr_gm_u32)h[2 * i] | ((kr_gm_u32)h[2 * i + 1] << 16);
}

// Byte i of a little-endian u32 array.
__device__ __forceinline__ kr_gm_u32 kr_gm_byte(const kr_gm_u32 *w, int i) { return (w[i >> 2] >> (8 * (i & 3))) & 0xffu; }

// Load the raw data of K step k0 (k0 % 32 == 0) for tile rows n0.. of W.
__device__ __forceinline__ void kr_gm_load_w(int wt, kr_gm_wraw *r, const kr_gm_u8 *__restrict__ W, kr_gm_i64 ldw,
                                             int N, int n0, int k0, int tid)
{
    if (wt == KR_GM_T_F16) {
        KR_GM_UNROLL
        for (int i = 0; i < 2; i++) {
            int idx = tid + i * KR_GM_THREADS, row = idx >> 2, c = idx & 3;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (n0 + row < N)
                v = *(const uint4 *)(W + (kr_gm_i64)(n0 + row) * ldw + (kr_gm_i64)(k0 + c * 8) * 2);
            r->q[4 * i + 0] = v.x;
            r->q[4 * i + 1] = v.y;
            r->q[4 * i + 2] = v.z;
            r->q[4 * i + 3] = v.w;
        }
        r->dm = 0;
        return;
    }
    const int row = tid >> 1, h = tid & 1;
    KR_GM_UNROLL
    for (int i = 0; i < 8; i++)
        r->q[i] = 0;
    r->dm = 0;
    if (n0 + row >= N)
        return;
    const kr_gm_u8 *row_p = W + (kr_gm_i64)(n0 + row) * ldw;
    if (wt == KR_GM_T_Q8_0) { // 34 bytes: fp16 d, int8 q[32]
        const kr_gm_u8 *b = row_p + (kr_gm_i64)(k0 / 32) * 34;
        r->dm = *(const kr_gm_u16 *)b;
        kr_gm_ld16(r->q, b + 2 + 16 * h, 16);
    } else if (wt == KR_GM_T_Q4_0) { // 18 bytes: fp16 d, u8 qs[16]
        const kr_gm_u8 *b = row_p + (kr_gm_i64)(k0 / 32) * 18;
        r->dm = *(const kr_gm_u16 *)b;
        kr_gm_ld16(r->q, b + 2 + 8 * h, 8);
    } else if (wt == KR_GM_T_Q4_1) { // 20 bytes: fp16 d, fp16 m, u8 qs[16]
        const kr_gm_u8 *b = row_p + (kr_gm_i64)(k0 / 32) * 20;
        const kr_gm_u32 *p = (const kr_gm_u32 *)(b + 4 + 8 * h);
        r->dm = *(const kr_gm_u32 *)b;
        r->q[0] = p[0];
        r->q[1] = p[1];
    } else if (wt == KR_GM_T_Q4_K) { // 144 bytes: fp16 d, fp16 dmin, u8 scales[12], u8 qs[128]
        const kr_gm_u8 *b = row_p + (kr_gm_i64)(k0 / 256) * 144;
        const int s = (k0 & 255) / 32; // sub-block: qs bytes 32*(s/2).., nibble s%2
        const kr_gm_u32 *p = (const kr_gm_u32 *)b;
        r->dm = p[0];
        r->q[4] = p[1];
        r->q[5] = p[2];
        r->q[6] = p[3];
        p = (const kr_gm_u32 *)(b + 16 + 32 * (s / 2) + 16 * h);
        r->q[0] = p[0];
        r->q[1] = p[1];
        r->q[2] = p[2];
        r->q[3] = p[3];
        r->q[7] = (kr_gm_u32)s;
    } else { // Q6_K, 210 bytes: u8 ql[128], u8 qh[64], int8 scales[16], fp16 d
        const kr_gm_u8 *b = row_p + (kr_gm_i64)(k0 / 256) * 210;
        const int s = (k0 & 255) / 32, hf = s / 4, qq = s % 4;
        kr_gm_ld16(r->q, b + 64 * hf + 32 * (qq & 1) + 16 * h, 16);
        kr_gm_ld16(r->q + 4, b + 128 + 32 * hf + 16 * h, 16);
        kr_gm_u32 sc = b[192 + 8 * hf + 2 * qq + h];
        r->dm = (kr_gm_u32)*(const kr_gm_u16 *)(b + 208) | (sc << 16) | ((kr_gm_u32)qq << 24);
    }
}

// Decode r into the shared tile Ws ((BN, BK) fp16, row stride KR_GM_LDS).
__device__ __forceinline__ void kr_gm_store_w(int wt, const kr_gm_wraw *r, kr_gm_u16 *Ws, int tid)
{
    if (wt == KR_GM_T_F16) {
        KR_GM_UNROLL
        for (int i = 0; i < 2; i++) {
            int idx = tid + i * KR_GM_THREADS, row = idx >> 2, c = idx & 3;
            *(uint4 *)(Ws + row * KR_GM_LDS + c * 8) =
                make_uint4(r->q[4 * i + 0], r->q[4 * i + 1], r->q[4 * i + 2], r->q[4 * i + 3]);
        }
        return;
    }
    const int row = tid >> 1, h = tid & 1;
    const float d = kr_gm_h2f((kr_gm_u16)(r->dm & 0xffffu));
    kr_gm_u16 *dst = Ws + row * KR_GM_LDS;
    if (wt == KR_GM_T_Q4_0 || wt == KR_GM_T_Q4_1) {
        // r->q[0..1] hold bytes qs[8h .. 8h+7]; byte j gives value 8h+j (low
        // nibble) and 16+8h+j (high nibble).
        const float m = wt == KR_GM_T_Q4_1 ? kr_gm_h2f((kr_gm_u16)(r->dm >> 16)) : 0.0f;
        const float off = wt == KR_GM_T_Q4_0 ? -8.0f : 0.0f;
        kr_gm_u32 lo[4], hi[4];
        KR_GM_UNROLL
        for (int j = 0; j < 4; j++) {
            kr_gm_u32 w = r->q[j >> 1] >> (16 * (j & 1)); // bytes 2j, 2j+1 in the low 16 bits
            float l0 = (float)(w & 0xfu) + off, l1 = (float)((w >> 8) & 0xfu) + off;
            float h0 = (float)((w >> 4) & 0xfu) + off, h1 = (float)((w >> 12) & 0xfu) + off;
            lo[j] = kr_gm_pack(d * l0 + m, d * l1 + m);
            hi[j] = kr_gm_pack(d * h0 + m, d * h1 + m);
        }
        *(uint4 *)(dst + 8 * h) = make_uint4(lo[0], lo[1], lo[2], lo[3]);
        *(uint4 *)(dst + 16 + 8 * h) = make_uint4(hi[0], hi[1], hi[2], hi[3]);
        return;
    }
    // The rest: 16 values 16h .. 16h+15 of the step, value i = scale * q_i - min.
    float v[16];
    if (wt == KR_GM_T_Q8_0) {
        KR_GM_UNROLL
        for (int i = 0; i < 16; i++)
            v[i] = d * (float)(int)(signed char)kr_gm_byte(r->q, i);
    } else if (wt == KR_GM_T_Q4_K) {
        const int s = (int)r->q[7];
        const kr_gm_u32 *sb = r->q + 4; // scales[12]
        kr_gm_u32 sc, mn;
        if (s < 4) {
            sc = kr_gm_byte(sb, s) & 63;
            mn = kr_gm_byte(sb, s + 4) & 63;
        } else {
            sc = (kr_gm_byte(sb, s + 4) & 0xf) | ((kr_gm_byte(sb, s - 4) >> 6) << 4);
            mn = (kr_gm_byte(sb, s + 4) >> 4) | ((kr_gm_byte(sb, s) >> 6) << 4);
        }
        const float d1 = d * (float)sc, m1 = kr_gm_h2f((kr_gm_u16)(r->dm >> 16)) * (float)mn;
        const int sh = 4 * (s & 1);
        KR_GM_UNROLL
        for (int i = 0; i < 16; i++)
            v[i] = d1 * (float)((kr_gm_byte(r->q, i) >> sh) & 0xf) - m1;
    } else { // Q6_K
        const int qq = (int)((r->dm >> 24) & 3), sh = qq < 2 ? 0 : 4;
        const float ds = d * (float)(int)(signed char)((r->dm >> 16) & 0xffu);
        KR_GM_UNROLL
        for (int i = 0; i < 16; i++) {
            int q = (int)((kr_gm_byte(r->q, i) >> sh) & 0xf) | (int)(((kr_gm_byte(r->q + 4, i) >> (2 * qq)) & 3) << 4);
            v[i] = ds * (float)(q - 32);
        }
    }
    kr_gm_u32 o[8];
    KR_GM_UNROLL
    for (int i = 0; i < 8; i++)
        o[i] = kr_gm_pack(v[2 * i], v[2 * i + 1]);
    *(uint4 *)(dst + 16 * h) = make_uint4(o[0], o[1], o[2], o[3]);
    *(uint4 *)(dst + 16 * h + 8) = make_uint4(o[4], o[5], o[6], o[7]);
}

// ---- tensor-core kernel pieces (plain C too; see kr_gm_tc for the order) ----

// Warp w's first row (*wm) and column (*wn) in the block tile: 2 (m) x 4 (n) warps.
__device__ __forceinline__ void kr_gm_warp_origin(int warp, int *wm, int *wn)
{
    *wm = (warp >> 2) * (KR_GM_BM / 2);
    *wn = (warp & 3) * 32;
}

// Next K step of A into registers: ar[i] = A[m0 + row, k0 + 4c .. +3] with
// row = (tid + 256 i) / 8, c = (tid + 256 i) % 8; zero for rows past M.
__device__ __forceinline__ void kr_gm_load_a(float4 *ar, const float *__restrict__ A, kr_gm_i64 lda, int M, int m0,
                                             int k0, int tid)
{
    KR_GM_UNROLL
    for (int i = 0; i < KR_GM_AV; i++) {
        int idx = tid + i * KR_GM_THREADS, row = idx >> 3, c = idx & 7;
        ar[i] = make_float4(0.f, 0.f, 0.f, 0.f);
        if (m0 + row < M)
            ar[i] = *(const float4 *)(A + (kr_gm_i64)(m0 + row) * lda + k0 + c * 4);
    }
}

// The registers of kr_gm_load_a as fp16 into the shared tile As ((BM, BK), row stride LDS).
__device__ __forceinline__ void kr_gm_store_a(const float4 *ar, kr_gm_u16 *As, int tid)
{
    KR_GM_UNROLL
    for (int i = 0; i < KR_GM_AV; i++) {
        int idx = tid + i * KR_GM_THREADS, row = idx >> 3, c = idx & 7;
        *(uint2 *)(As + row * KR_GM_LDS + c * 4) =
            make_uint2(kr_gm_pack(ar[i].x, ar[i].y), kr_gm_pack(ar[i].z, ar[i].w));
    }
}

// A fragment (PTX mma.m16n8k16 .f16, g = lane/4, t = lane%4) of the 16 x 16
// tile at tile rows r0.., columns kk..: a0 (row g, k 2t..2t+1), a1 (row g+8,
// k 2t..), a2 (row g, k 2t+8..), a3 (row g+8, k 2t+8..); lower k in the low half.
__device__ __forceinline__ void kr_gm_frag_a(const kr_gm_u16 *As, int r0, int kk, int lane, kr_gm_u32 a[4])
{
    const kr_gm_u16 *p = As + (r0 + (lane >> 2)) * KR_GM_LDS + kk + 2 * (lane & 3);
    a[0] = *(const kr_gm_u32 *)p;
    a[1] = *(const kr_gm_u32 *)(p + 8 * KR_GM_LDS);
    a[2] = *(const kr_gm_u32 *)(p + 8);
    a[3] = *(const kr_gm_u32 *)(p + 8 * KR_GM_LDS + 8);
}

// B fragment (16 x 8, "col" = W rows): b0 (k 2t..2t+1, n g), b1 (k 2t+8.., n g)
// of tile rows c0.. of Ws.
__device__ __forceinline__ void kr_gm_frag_b(const kr_gm_u16 *Ws, int c0, int kk, int lane, kr_gm_u32 b[2])
{
    const kr_gm_u16 *p = Ws + (c0 + (lane >> 2)) * KR_GM_LDS + kk + 2 * (lane & 3);
    b[0] = *(const kr_gm_u32 *)p;
    b[1] = *(const kr_gm_u32 *)(p + 8);
}

// C fragment (16 x 8 fp32) with its first element at C[r0][c0]: c0, c1 at
// (row g, cols 2t, 2t+1), c2, c3 at (row g+8, same cols); only inside M x N.
__device__ __forceinline__ void kr_gm_store_c(float *C, kr_gm_i64 ldc, int M, int N, int r0, int c0, int lane,
                                              const float c[4])
{
    const int col = c0 + 2 * (lane & 3);
    KR_GM_UNROLL
    for (int hr = 0; hr < 2; hr++) {
        const int row = r0 + (lane >> 2) + 8 * hr;
        if (row >= M)
            continue;
        float *cp = C + (kr_gm_i64)row * ldc + col;
        if (col < N)
            cp[0] = c[2 * hr];
        if (col + 1 < N)
            cp[1] = c[2 * hr + 1];
    }
}

#ifndef KR_GM_HOST_EMU
// c (16x8 fp32) += a (16x16 fp16, row) * b (16x8 fp16, col).
__device__ __forceinline__ void kr_gm_mma(float c[4], const kr_gm_u32 a[4], const kr_gm_u32 b[2])
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <int WT>
__device__ __forceinline__ void kr_gm_tc(const float *__restrict__ A, kr_gm_i64 lda, const kr_gm_u8 *__restrict__ W,
                                         kr_gm_i64 ldw, float *__restrict__ C, kr_gm_i64 ldc, int M, int N, int K)
{
    __shared__ __align__(16) kr_gm_u16 As[KR_GM_BM * KR_GM_LDS]; // (BM, BK) fp16, row stride LDS
    __shared__ __align__(16) kr_gm_u16 Ws[KR_GM_BN * KR_GM_LDS]; // (BN, BK) fp16, row stride LDS
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int m0 = blockIdx.y * KR_GM_BM, n0 = blockIdx.x * KR_GM_BN;
    int wm, wn; // warp's first row / column in the tile
    kr_gm_warp_origin(warp, &wm, &wn);

    float acc[KR_GM_MT][KR_GM_NT][4];
#pragma unroll
    for (int i = 0; i < KR_GM_MT; i++)
#pragma unroll
        for (int j = 0; j < KR_GM_NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                acc[i][j][e] = 0.0f;

    float4 ar[KR_GM_AV]; // next K step of A (kr_gm_load_a)
    kr_gm_wraw wr;       // next K step of W (kr_gm_load_w)

    kr_gm_load_a(ar, A, lda, M, m0, 0, tid);
    kr_gm_load_w(WT, &wr, W, ldw, N, n0, 0, tid);
    for (int k0 = 0; k0 < K; k0 += KR_GM_BK) {
        kr_gm_store_a(ar, As, tid);
        kr_gm_store_w(WT, &wr, Ws, tid);
        __syncthreads();
        if (k0 + KR_GM_BK < K) { // in flight during the mma's below
            kr_gm_load_a(ar, A, lda, M, m0, k0 + KR_GM_BK, tid);
            kr_gm_load_w(WT, &wr, W, ldw, N, n0, k0 + KR_GM_BK, tid);
        }
#pragma unroll
        for (int kk = 0; kk < KR_GM_BK; kk += 16) {
            kr_gm_u32 af[KR_GM_MT][4], bf[KR_GM_NT][2];
#pragma unroll
            for (int i = 0; i < KR_GM_MT; i++)
                kr_gm_frag_a(As, wm + 16 * i, kk, lane, af[i]);
#pragma unroll
            for (int j = 0; j < KR_GM_NT; j++)
                kr_gm_frag_b(Ws, wn + 8 * j, kk, lane, bf[j]);
#pragma unroll
            for (int i = 0; i < KR_GM_MT; i++)
#pragma unroll
                for (int j = 0; j < KR_GM_NT; j++)
                    kr_gm_mma(acc[i][j], af[i], bf[j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < KR_GM_MT; i++)
#pragma unroll
        for (int j = 0; j < KR_GM_NT; j++)
            kr_gm_store_c(C, ldc, M, N, m0 + wm + 16 * i, n0 + wn + 8 * j, lane, acc[i][j]);
}

#define KR_GM_ENTRY(name, wt)                                                                                  \
    extern "C" __global__ void __launch_bounds__(KR_GM_THREADS, 2)                                             \
        name(const float *__restrict__ A, kr_gm_i64 lda, const kr_gm_u8 *__restrict__ W, kr_gm_i64 ldw,        \
             float *__restrict__ C, kr_gm_i64 ldc, int M, int N, int K)                                        \
    {                                                                                                          \
        kr_gm_tc<wt>(A, lda, W, ldw, C, ldc, M, N, K);                                                         \
    }

KR_GM_ENTRY(kr_gemm_f16, KR_GM_T_F16)
KR_GM_ENTRY(kr_gemm_q4_0, KR_GM_T_Q4_0)
KR_GM_ENTRY(kr_gemm_q4_1, KR_GM_T_Q4_1)
KR_GM_ENTRY(kr_gemm_q8_0, KR_GM_T_Q8_0)
KR_GM_ENTRY(kr_gemm_q4_k, KR_GM_T_Q4_K)
KR_GM_ENTRY(kr_gemm_q6_k, KR_GM_T_Q6_K)

#endif // KR_GM_HOST_EMU

// ---- FP32 SIMT baseline ------------------------------------------------------
// C (M, N) = A (M, K) @ W (N, K)^T, all fp32, fp32 FMA accumulation.
// Tile 128 x 128, K step 8; shared A and W transposed to [k][row] so a thread
// reads its 8 rows and 8 columns as float4 pairs. Thread (tx = tid%16, ty =
// tid/16) owns rows ty*4 + {0..3, 64..67} and columns tx*4 + {0..3, 64..67}.
// The pieces are plain C (host emulation test), as for the tensor-core kernel.
#define KR_GS_BK 8
#define KR_GS_LD (128 + 4) // floats per shared row (16-byte aligned rows)

// Thread tid's part of K step k0: row tid/2 of the A and W tiles, k (tid%2)*4 .. +3.
__device__ __forceinline__ void kr_gs_load(const float *__restrict__ A, kr_gm_i64 lda, const kr_gm_u8 *__restrict__ W,
                                           kr_gm_i64 ldw, int M, int N, int m0, int n0, int k0, int tid, float4 *ra,
                                           float4 *rw)
{
    const int lrow = tid >> 1, lc = (tid & 1) * 4;
    *ra = make_float4(0.f, 0.f, 0.f, 0.f);
    *rw = make_float4(0.f, 0.f, 0.f, 0.f);
    if (m0 + lrow < M)
        *ra = *(const float4 *)(A + (kr_gm_i64)(m0 + lrow) * lda + k0 + lc);
    if (n0 + lrow < N)
        *rw = *(const float4 *)((const float *)(W + (kr_gm_i64)(n0 + lrow) * ldw) + k0 + lc);
}

// Transposed into As[k][m], Bs[k][n] ((BK, LD) each).
__device__ __forceinline__ void kr_gs_store(const float4 *ra, const float4 *rw, float *As, float *Bs, int tid)
{
    const int lrow = tid >> 1, lc = (tid & 1) * 4;
    As[(lc + 0) * KR_GS_LD + lrow] = ra->x;
    As[(lc + 1) * KR_GS_LD + lrow] = ra->y;
    As[(lc + 2) * KR_GS_LD + lrow] = ra->z;
    As[(lc + 3) * KR_GS_LD + lrow] = ra->w;
    Bs[(lc + 0) * KR_GS_LD + lrow] = rw->x;
    Bs[(lc + 1) * KR_GS_LD + lrow] = rw->y;
    Bs[(lc + 2) * KR_GS_LD + lrow] = rw->z;
    Bs[(lc + 3) * KR_GS_LD + lrow] = rw->w;
}

// acc (8, 8) += the thread's rows of As times its columns of Bs over one K step.
__device__ __forceinline__ void kr_gs_step(const float *As, const float *Bs, int tid, float acc[8][8])
{
    const int tx = tid & 15, ty = tid >> 4;
    KR_GM_UNROLL
    for (int k = 0; k < KR_GS_BK; k++) {
        float4 a0 = *(const float4 *)(As + k * KR_GS_LD + ty * 4);
        float4 a1 = *(const float4 *)(As + k * KR_GS_LD + ty * 4 + 64);
        float4 b0 = *(const float4 *)(Bs + k * KR_GS_LD + tx * 4);
        float4 b1 = *(const float4 *)(Bs + k * KR_GS_LD + tx * 4 + 64);
        float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
        float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
        KR_GM_UNROLL
        for (int i = 0; i < 8; i++) {
            KR_GM_UNROLL
            for (int j = 0; j < 8; j++)
                acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
    }
}

// acc[i][j] -> C[m0 + ty*4 + i%4 + 64*(i/4)][n0 + tx*4 + j%4 + 64*(j/4)], inside M x N only.
__device__ __forceinline__ void kr_gs_store_c(float *C, kr_gm_i64 ldc, int M, int N, int m0, int n0, int tid,
                                              float acc[8][8])
{
    const int tx = tid & 15, ty = tid >> 4;
    KR_GM_UNROLL
    for (int i = 0; i < 8; i++) {
        const int row = m0 + ty * 4 + (i & 3) + (i >> 2) * 64;
        if (row >= M)
            continue;
        KR_GM_UNROLL
        for (int j = 0; j < 8; j++) {
            const int col = n0 + tx * 4 + (j & 3) + (j >> 2) * 64;
            if (col < N)
                C[(kr_gm_i64)row * ldc + col] = acc[i][j];
        }
    }
}

#ifndef KR_GM_HOST_EMU
extern "C" __global__ void __launch_bounds__(KR_GM_THREADS)
    kr_gemm_f32_simt(const float *__restrict__ A, kr_gm_i64 lda, const kr_gm_u8 *__restrict__ W, kr_gm_i64 ldw,
                     float *__restrict__ C, kr_gm_i64 ldc, int M, int N, int K)
{
    __shared__ __align__(16) float As[KR_GS_BK * KR_GS_LD]; // (BK, 128): As[k][m]
    __shared__ __align__(16) float Bs[KR_GS_BK * KR_GS_LD]; // (BK, 128): Bs[k][n]
    const int tid = threadIdx.x;
    const int m0 = blockIdx.y * 128, n0 = blockIdx.x * 128;
    float acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; i++)
#pragma unroll
        for (int j = 0; j < 8; j++)
            acc[i][j] = 0.0f;
    float4 ra, rw; // next K step (kr_gs_load)
    kr_gs_load(A, lda, W, ldw, M, N, m0, n0, 0, tid, &ra, &rw);
    for (int k0 = 0; k0 < K; k0 += KR_GS_BK) {
        kr_gs_store(&ra, &rw, As, Bs, tid);
        __syncthreads();
        if (k0 + KR_GS_BK < K)
            kr_gs_load(A, lda, W, ldw, M, N, m0, n0, k0 + KR_GS_BK, tid, &ra, &rw);
        kr_gs_step(As, Bs, tid, acc);
        __syncthreads();
    }
    kr_gs_store_c(C, ldc, M, N, m0, n0, tid, acc);
}
#endif // KR_GM_HOST_EMU
