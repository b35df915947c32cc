// Flash-style causal attention for a batch of n query tokens at positions
// pos0 .. pos0+n-1 over an fp16 KV cache (the batch's own K/V already stored):
//   out[t, h, :] = sum_j softmax_j(scale * q[t, h, :] . K[j, g, :]) V[j, g, :]
//   j in [lo(p), p], p = pos0 + t, lo(p) = window > 0 ? max(0, p - window + 1) : 0,
//   g = h / G, G = n_head / n_head_kv; K/V of position j at cache row j % rows.
// Tensor cores: mma.sync m16n8k16, fp16 inputs, fp32 accumulation; online
// softmax in fp32 (exp2 with scale*log2(e) folded in); the score matrix never
// leaves registers.
//
// Rows: a block serves one KV head g and KR_FA_BM = 64 "query rows"
// r = t*G + (h - g*G) (GQA/MQA: all query heads of a KV head share the block's
// K/V tiles; falcon-7B's 71 heads per KV head simply make a tile span ~1
// token). Each of the 4 warps owns 16 rows. Keys advance in tiles of KR_FA_BN
// through shared memory (K and V rows of the tile; Q is staged there once at
// the start and kept in registers as mma A fragments).
//
// Layouts:
//   q   (n, q_stride) fp32: head h of token t at q + t*q_stride + h*D
//   out (n, o_stride) fp32: same indexing; written for every (t, h) (or out16, fp16, when not NULL)
//   k, v: slot bases; row r at base + r*row_bytes (bytes); head g at +g*D halves.
//   KR_FA_Q8=1 (-D option): Q8_0 cache rows instead (interfaces): kv_dim int8
//   quants, then kv_dim/32 fp16 scales; element i = q[i] * d[i/32], turned
//   into fp16 as the tile is copied to shared memory.
// Requirements (checked by the launcher): D = KR_FA_D in {16, 32, 64, 80, 96, 128, 256}
// (-D option), row_bytes and the bases 16-byte aligned (Q8_0: kv_dim % 32 == 0), every visible
// position already written and not overwritten (pos0 + n - 1 - lo(pos0) < rows).
// Launch: block (128), grid (ceil(n*G / 64), n_head_kv).
// NVRTC-compilable without headers: halves go through PTX cvt.

typedef unsigned short kr_fa_u16;
typedef unsigned int kr_fa_u32;
typedef long long kr_fa_i64;

#ifndef KR_FA_D
#define KR_FA_D 128
#endif
#if KR_FA_D != 16 && KR_FA_D != 32 && KR_FA_D != 64 && KR_FA_D != 80 && KR_FA_D != 96 && KR_FA_D != 128 && \
    KR_FA_D != 256
#error "KR_FA_D must be 16, 32, 64, 80, 96, 128 or 256"
#endif
#ifndef KR_FA_Q8
#define KR_FA_Q8 0
#endif
// KR_FA_PIPE=1 (F16 only): K/V tiles through a 2-stage cp.async ring (the next
// tile's copies in flight during the current tile's math), smaller tiles.
#ifndef KR_FA_PIPE
#define KR_FA_PIPE 0
#endif
#if KR_FA_PIPE && KR_FA_Q8
#error "KR_FA_PIPE needs an F16 cache"
#endif
#define KR_FA_BM 64
#if KR_FA_PIPE
#define KR_FA_BN (KR_FA_D <= 64 ? 64 : KR_FA_D <= 128 ? 32 : 16)
#define KR_FA_STAGES 2
#else
#define KR_FA_BN (KR_FA_D > 128 ? 32 : 64)
#define KR_FA_STAGES 1
#endif
#define KR_FA_WARPS 4
#define KR_FA_THREADS (32 * KR_FA_WARPS)
#define KR_FA_LDS (KR_FA_D + 8)      // halves per shared row (16-byte multiple, conflict-free fragments)
#define KR_FA_KC (KR_FA_D / 16)      // 16-wide k chunks of Q.K
#define KR_FA_NT (KR_FA_BN / 8)      // 8-key n tiles of S
#define KR_FA_OT (KR_FA_D / 8)       // 8-dim n tiles of O
// Shared: per stage a K tile + V tile (BN rows each); Q (BM rows) is staged in the same space first.
#define KR_FA_STG (2 * KR_FA_BN * KR_FA_LDS)
#define KR_FA_SMEM_KV (KR_FA_STAGES * KR_FA_STG)
#define KR_FA_SMEM_Q (KR_FA_BM * KR_FA_LDS)
#define KR_FA_SMEM (KR_FA_SMEM_KV > KR_FA_SMEM_Q ? KR_FA_SMEM_KV : KR_FA_SMEM_Q)

// tests/gpu_prefill/test_flash_emu.c compiles this file as C with
// KR_FA_HOST_EMU defined and supplies the device pieces (threads, barriers,
// shuffles, the mma, fp16 conversions, vector types), to check the kernel's
// fragment bookkeeping, masks and online softmax on the CPU.
#ifndef KR_FA_HOST_EMU
#define KR_FA_KERNEL extern "C" __global__ void __launch_bounds__(KR_FA_THREADS)
#define KR_FA_SHARED __shared__ __align__(16)
#define KR_FA_UNROLL _Pragma("unroll")
#define KR_FA_INL __device__ __forceinline__

KR_FA_INL float kr_fa_neg_inf() { return __int_as_float(0xff800000); }

KR_FA_INL kr_fa_u16 kr_fa_f2h(float f)
{
    kr_fa_u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

KR_FA_INL float kr_fa_h2f(kr_fa_u16 h)
{
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

KR_FA_INL void kr_fa_mma(float c[4], const kr_fa_u32 a[4], kr_fa_u32 b0, kr_fa_u32 b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16 bytes global -> shared, asynchronously; src_bytes 0 zero-fills (src not read).
KR_FA_INL void kr_fa_cp16(void *dst, const void *src, int src_bytes)
{
    unsigned d;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(d) : "l"(dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(src_bytes) : "memory");
}
KR_FA_INL void kr_fa_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }

// ldmatrix x4: lane l gives the row address (16-byte aligned) of row l%8 of matrix l/8;
// r[j] = matrix j's (row lane/4, cols 2(lane%4), +1), or with .trans (rows 2(lane%4), +1, col lane/4).
KR_FA_INL void kr_fa_ldsm4(kr_fa_u32 r[4], const kr_fa_u16 *p)
{
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
KR_FA_INL void kr_fa_ldsm4t(kr_fa_u32 r[4], const kr_fa_u16 *p)
{
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
KR_FA_INL void kr_fa_wait1() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }
#endif

#if KR_FA_PIPE
// Issue the copies of keys j0 .. j0+BN-1 (those <= kv_hi; the rest zero-filled) into stage st.
KR_FA_INL void kr_fa_issue(kr_fa_u16 *st, const unsigned char *kg, const unsigned char *vg, int j0, int kv_hi,
                           int rows, long long row_bytes, int tid)
{
    for (int i = tid; i < KR_FA_BN * (KR_FA_D / 8); i += KR_FA_THREADS) {
        const int kk = i / (KR_FA_D / 8), c = (i % (KR_FA_D / 8)) * 8, j = j0 + kk;
        const bool in = j <= kv_hi;
        const kr_fa_i64 off = in ? (kr_fa_i64)(j % rows) * row_bytes + c * 2 : 0;
        kr_fa_cp16(st + kk * KR_FA_LDS + c, kg + off, in ? 16 : 0);
        kr_fa_cp16(st + (KR_FA_BN + kk) * KR_FA_LDS + c, vg + off, in ? 16 : 0);
    }
}
#endif

KR_FA_INL kr_fa_u32 kr_fa_pack(float lo, float hi)
{
    return (kr_fa_u32)kr_fa_f2h(lo) | ((kr_fa_u32)kr_fa_f2h(hi) << 16);
}

KR_FA_KERNEL
kr_flash_attn_f16(const float *__restrict__ q, long long q_stride, const unsigned char *__restrict__ kc,
                  const unsigned char *__restrict__ vc, long long row_bytes, int rows, float *__restrict__ out,
                  long long o_stride, int n, int pos0, int n_head, int n_head_kv, int window, float scale_log2,
                  int kv_dim, kr_fa_u16 *__restrict__ out16)
{
    KR_FA_SHARED kr_fa_u16 sm[KR_FA_SMEM];
    kr_fa_u16 *sk = sm, *sv = sm + KR_FA_BN * KR_FA_LDS;
    const int G = n_head / n_head_kv;
    (void)kv_dim; // used by the Q8_0 variant
    const int g = blockIdx.y;
    const int n_rows = n * G;
    const int r0 = blockIdx.x * KR_FA_BM;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, lg = lane >> 2, lt = lane & 3;

    // ---- Q tile -> shared (fp16) -> A fragments in registers
    for (int i = tid; i < KR_FA_BM * (KR_FA_D / 4); i += KR_FA_THREADS) {
        const int rr = i / (KR_FA_D / 4), c = (i % (KR_FA_D / 4)) * 4, r = r0 + rr;
        float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
        if (r < n_rows) {
            const int t = r / G, h = g * G + r % G;
            x = *(const float4 *)(q + (kr_fa_i64)t * q_stride + (kr_fa_i64)h * KR_FA_D + c);
        }
        kr_fa_u32 *dst = (kr_fa_u32 *)(sm + rr * KR_FA_LDS + c);
        dst[0] = kr_fa_pack(x.x, x.y);
        dst[1] = kr_fa_pack(x.z, x.w);
    }
    __syncthreads();
    kr_fa_u32 qa[KR_FA_KC][4];
    {
        const kr_fa_u16 *base = sm + (warp * 16) * KR_FA_LDS;
KR_FA_UNROLL
        for (int kq = 0; kq < KR_FA_KC; kq++) {
            const int c = kq * 16 + 2 * lt;
            qa[kq][0] = *(const kr_fa_u32 *)(base + lg * KR_FA_LDS + c);
            qa[kq][1] = *(const kr_fa_u32 *)(base + (lg + 8) * KR_FA_LDS + c);
            qa[kq][2] = *(const kr_fa_u32 *)(base + lg * KR_FA_LDS + c + 8);
            qa[kq][3] = *(const kr_fa_u32 *)(base + (lg + 8) * KR_FA_LDS + c + 8);
        }
    }

    // The two rows of this thread: ra = r0 + warp*16 + lg, rb = ra + 8; their query positions.
    const int ra = r0 + warp * 16 + lg, rb = ra + 8;
    const int pa = pos0 + (ra < n_rows ? ra / G : n - 1);
    const int pb = pos0 + (rb < n_rows ? rb / G : n - 1);
    const int loa = window > 0 ? max(0, pa - window + 1) : 0;
    const int lob = window > 0 ? max(0, pb - window + 1) : 0;

    // Keys of the whole block.
    const int t_lo = r0 / G, t_hi = min(n_rows - 1, r0 + KR_FA_BM - 1) / G;
    const int kv_hi = pos0 + t_hi;
    const int kv_lo = window > 0 ? max(0, pos0 + t_lo - window + 1) : 0;
    // Keys of this warp (its rows' union) - tiles outside it skip the math.
    const int w_t_lo = min(r0 + warp * 16, n_rows - 1) / G, w_t_hi = min(r0 + warp * 16 + 15, n_rows - 1) / G;
    const int w_hi = pos0 + w_t_hi;
    const int w_lo = window > 0 ? max(0, pos0 + w_t_lo - window + 1) : 0;

    float o[KR_FA_OT][4];
KR_FA_UNROLL
    for (int j = 0; j < KR_FA_OT; j++)
        o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float ma = kr_fa_neg_inf(), mb = kr_fa_neg_inf(), la = 0.f, lb = 0.f; // running max (log2 units) and partial sums

    const unsigned char *kg = kc + (kr_fa_i64)g * KR_FA_D * (KR_FA_Q8 ? 1 : 2);
    const unsigned char *vg = vc + (kr_fa_i64)g * KR_FA_D * (KR_FA_Q8 ? 1 : 2);
#if KR_FA_PIPE
    __syncthreads(); // Q fragments taken: the stages may be filled
    kr_fa_issue(sm, kg, vg, kv_lo, kv_hi, rows, row_bytes, tid);
    kr_fa_commit();
    int stage = 0;
#endif
    for (int j0 = kv_lo; j0 <= kv_hi; j0 += KR_FA_BN) {
#if KR_FA_PIPE
        if (j0 + KR_FA_BN <= kv_hi) // next tile into the other stage (consumed: barrier at the end of the last step)
            kr_fa_issue(sm + (stage ^ 1) * KR_FA_STG, kg, vg, j0 + KR_FA_BN, kv_hi, rows, row_bytes, tid);
        kr_fa_commit(); // (maybe empty) group: wait_group 1 then means "this tile has landed"
        kr_fa_wait1();
        __syncthreads();
        sk = sm + stage * KR_FA_STG;
        sv = sk + KR_FA_BN * KR_FA_LDS;
#else
        __syncthreads(); // previous tile (or Q staging) consumed
        for (int i = tid; i < KR_FA_BN * (KR_FA_D / 8); i += KR_FA_THREADS) {
            const int kk = i / (KR_FA_D / 8), c = (i % (KR_FA_D / 8)) * 8, j = j0 + kk;
            uint4 xk = make_uint4(0, 0, 0, 0), xv = make_uint4(0, 0, 0, 0);
            if (j <= kv_hi) {
#if KR_FA_Q8
                const kr_fa_i64 roff = (kr_fa_i64)(j % rows) * row_bytes;
                const uint2 qk = *(const uint2 *)(kg + roff + c), qv = *(const uint2 *)(vg + roff + c);
                const int sb = kv_dim + ((g * KR_FA_D + c) >> 5) * 2; // scale of these 8 (one 32-block)
                const float dk = kr_fa_h2f(*(const kr_fa_u16 *)(kc + roff + sb));
                const float dv = kr_fa_h2f(*(const kr_fa_u16 *)(vc + roff + sb));
                const unsigned int wk[2] = {qk.x, qk.y}, wv[2] = {qv.x, qv.y};
                kr_fa_u32 hk[4], hv[4];
KR_FA_UNROLL
                for (int e = 0; e < 4; e++) {
                    const unsigned int ak = wk[e >> 1] >> (16 * (e & 1)), av = wv[e >> 1] >> (16 * (e & 1));
                    hk[e] = kr_fa_pack(dk * (float)(signed char)(ak & 0xff), dk * (float)(signed char)((ak >> 8) & 0xff));
                    hv[e] = kr_fa_pack(dv * (float)(signed char)(av & 0xff), dv * (float)(signed char)((av >> 8) & 0xff));
                }
                xk = make_uint4(hk[0], hk[1], hk[2], hk[3]);
                xv = make_uint4(hv[0], hv[1], hv[2], hv[3]);
#else
                const kr_fa_i64 off = (kr_fa_i64)(j % rows) * row_bytes + c * 2;
                xk = *(const uint4 *)(kg + off);
                xv = *(const uint4 *)(vg + off);
#endif
            }
            *(uint4 *)(sk + kk * KR_FA_LDS + c) = xk;
            *(uint4 *)(sv + kk * KR_FA_LDS + c) = xv;
        }
        __syncthreads();
#endif
        if (j0 <= w_hi && j0 + KR_FA_BN - 1 >= w_lo) { // else no key of this tile is visible to this warp's rows

        // S = Q K^T (16 x BN per warp)
        // B fragments of two 8-key tiles per ldmatrix.x4: lane row (lane&7) of matrix lane>>3 =
        // key nt*8 + 8*(m>>1) + (lane&7), dims kq*16 + 8*(m&1)
        float s[KR_FA_NT][4];
KR_FA_UNROLL
        for (int nt = 0; nt < KR_FA_NT; nt++)
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
        const kr_fa_u16 *krow = sk + (((lane >> 4) << 3) + (lane & 7)) * KR_FA_LDS + ((lane >> 3) & 1) * 8;
KR_FA_UNROLL
        for (int nt = 0; nt < KR_FA_NT; nt += 2) {
KR_FA_UNROLL
            for (int kq = 0; kq < KR_FA_KC; kq++) {
                kr_fa_u32 b[4];
                kr_fa_ldsm4(b, krow + nt * 8 * KR_FA_LDS + kq * 16);
                kr_fa_mma(s[nt], qa[kq], b[0], b[1]);
                kr_fa_mma(s[nt + 1], qa[kq], b[2], b[3]);
            }
        }
        // mask + scale; row max
        float mxa = kr_fa_neg_inf(), mxb = kr_fa_neg_inf();
KR_FA_UNROLL
        for (int nt = 0; nt < KR_FA_NT; nt++) {
KR_FA_UNROLL
            for (int e = 0; e < 2; e++) {
                const int j = j0 + nt * 8 + 2 * lt + e;
                float va = s[nt][e] * scale_log2, vb = s[nt][2 + e] * scale_log2;
                va = (j >= loa && j <= pa) ? va : kr_fa_neg_inf();
                vb = (j >= lob && j <= pb) ? vb : kr_fa_neg_inf();
                s[nt][e] = va;
                s[nt][2 + e] = vb;
                mxa = fmaxf(mxa, va);
                mxb = fmaxf(mxb, vb);
            }
        }
        mxa = fmaxf(mxa, __shfl_xor_sync(0xffffffffu, mxa, 1));
        mxa = fmaxf(mxa, __shfl_xor_sync(0xffffffffu, mxa, 2));
        mxb = fmaxf(mxb, __shfl_xor_sync(0xffffffffu, mxb, 1));
        mxb = fmaxf(mxb, __shfl_xor_sync(0xffffffffu, mxb, 2));
        const float mna = fmaxf(ma, mxa), mnb = fmaxf(mb, mxb);
        // base of the exponent: 0 while a row has seen no visible key (all -inf -> exp 0)
        const float ba = mna == kr_fa_neg_inf() ? 0.f : mna, bb = mnb == kr_fa_neg_inf() ? 0.f : mnb;
        const float ca = exp2f(ma - ba), cb = exp2f(mb - bb); // ma = -inf -> 0 (o, l are 0 then anyway)
        ma = mna;
        mb = mnb;
        la *= ca;
        lb *= cb;
KR_FA_UNROLL
        for (int j = 0; j < KR_FA_OT; j++) {
            o[j][0] *= ca;
            o[j][1] *= ca;
            o[j][2] *= cb;
            o[j][3] *= cb;
        }
        // P = exp2(S - m) as A fragments (fp16), then O += P V
KR_FA_UNROLL
        for (int kk = 0; kk < KR_FA_BN / 16; kk++) {
            kr_fa_u32 pa4[4];
            float p[8];
KR_FA_UNROLL
            for (int h2 = 0; h2 < 2; h2++) {
                const int nt = 2 * kk + h2;
                p[4 * h2 + 0] = exp2f(s[nt][0] - ba);
                p[4 * h2 + 1] = exp2f(s[nt][1] - ba);
                p[4 * h2 + 2] = exp2f(s[nt][2] - bb);
                p[4 * h2 + 3] = exp2f(s[nt][3] - bb);
                la += p[4 * h2 + 0] + p[4 * h2 + 1];
                lb += p[4 * h2 + 2] + p[4 * h2 + 3];
            }
            pa4[0] = kr_fa_pack(p[0], p[1]); // row lg, keys 16kk + 2lt
            pa4[1] = kr_fa_pack(p[2], p[3]); // row lg+8
            pa4[2] = kr_fa_pack(p[4], p[5]); // row lg, keys 16kk + 8 + 2lt
            pa4[3] = kr_fa_pack(p[6], p[7]); // row lg+8
            // V B fragments (k = keys, n = dims) of two 8-dim tiles per ldmatrix.x4.trans: lane row
            // (lane&7) of matrix m = lane>>3 = key kk*16 + 8*(m&1) + (lane&7), dims 8*(ot + (m>>1))
            const kr_fa_u16 *vrow = sv + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * KR_FA_LDS + (lane >> 4) * 8;
KR_FA_UNROLL
            for (int ot = 0; ot < KR_FA_OT; ot += 2) {
                kr_fa_u32 b[4];
                kr_fa_ldsm4t(b, vrow + ot * 8);
                kr_fa_mma(o[ot], pa4, b[0], b[1]);
                kr_fa_mma(o[ot + 1], pa4, b[2], b[3]);
            }
        }
        } // visible tile
#if KR_FA_PIPE
        __syncthreads(); // this stage consumed before the next step refills it
        stage ^= 1;
#endif
    }

    // finish the row sums over the 4 lanes of a row, normalise, store
    la += __shfl_xor_sync(0xffffffffu, la, 1);
    la += __shfl_xor_sync(0xffffffffu, la, 2);
    lb += __shfl_xor_sync(0xffffffffu, lb, 1);
    lb += __shfl_xor_sync(0xffffffffu, lb, 2);
    const float ia = 1.f / la, ib = 1.f / lb;
    // out16 != NULL: fp16 (RNE) into out16 (same indexing, o_stride halves per token) instead of out
KR_FA_UNROLL
    for (int h2 = 0; h2 < 2; h2++) {
        const int r = h2 ? rb : ra;
        const float inv = h2 ? ib : ia;
        if (r >= n_rows)
            continue;
        const kr_fa_i64 e0 = (kr_fa_i64)(r / G) * o_stride + (kr_fa_i64)(g * G + r % G) * KR_FA_D + 2 * lt;
        if (out16) {
KR_FA_UNROLL
            for (int ot = 0; ot < KR_FA_OT; ot++)
                *(kr_fa_u32 *)(out16 + e0 + ot * 8) = kr_fa_pack(o[ot][2 * h2] * inv, o[ot][2 * h2 + 1] * inv);
        } else {
KR_FA_UNROLL
            for (int ot = 0; ot < KR_FA_OT; ot++)
                *(float2 *)(out + e0 + ot * 8) = make_float2(o[ot][2 * h2] * inv, o[ot][2 * h2 + 1] * inv);
        }
    }
}
