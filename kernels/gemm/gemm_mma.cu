// Pipelined tensor-core GEMM for prompt processing (prefill), second kernel
// family ("mma" variants of plugins/cuda_gemm):
//   C (M, N) fp32 = A (M, K) fp16 @ W (N, K)^T        (split-K: C += partial sums)
// A: fp16 activations, row m at A + m*lda halves. W: GGUF layout, row n at
// W + n*ldw bytes. C: fp32, row m at C + m*ldc.
//
// Block: 64*WN threads = 2 (m) x WN (n) warps (KR_MM_WN 2 or 4); block tile
// BM x 128 (BM = KR_MM_BM, 64 or 128); warp tile (BM/2) x (128/WN) =
// (BM/32) x (16/WN) mma tiles m16n8k16 (fp16 in, fp32 accumulate). K advances in steps of 32 through a
// KR_MM_ST-stage cp.async ring in shared memory (one barrier per step):
//   A stage: BM rows x 64 bytes (32 halves), 16-byte chunks XOR-swizzled
//            (chunk c of row r at c ^ ((r >> 1) & 3)): ldmatrix conflict-free.
//   W stage, F16: 128 rows x 64 bytes, same swizzle, ldmatrix for B.
//   W stage, Q4_0/Q4_1/Q8_0/Q4_K: the raw bytes of the step's block (or
//            sub-block + super-block header), copied as 16-byte chunks of the
//            16-byte-aligned window around them, 48 bytes per row (conflict-free
//            2-byte reads). Each warp dequantizes its 64 columns straight into
//            B fragments (fp16, same values as gemm.cu: fp16(d*q) etc.).
// Requirements (checked by the launcher): K a multiple of 32 (256 for Q4_K);
// A and lda 16-byte aligned (lda % 8 == 0); W and ldw 16-byte aligned; the
// rows are read up to the next multiple of 16 bytes (within ldw).
// Rows m >= M / n >= N are zero-filled and never written.
// Grid (ceil(N/128), ceil(M/BM), splits); blockIdx.z covers K range
// [z*k_split, min(K, (z+1)*k_split)); with gridDim.z > 1 the block adds into C
// (atomicAdd; the launcher zeroes C first).
//
// One kernel per compile: -DKR_MM_WT=<GGML type id> selects the weight type
// (0: only kr_mm_cvt_a, the fp32 -> fp16 conversion of A).
// NVRTC-compilable without headers (PTX for cp.async, ldmatrix, mma, cvt).
// With KR_MM_HOST_EMU the file is plain C (tests/gpu_gemm/test_mma_emu.c
// supplies the primitives below and runs the kernel's threads as coroutines).

typedef unsigned char kr_mm_u8;
typedef unsigned short kr_mm_u16;
typedef unsigned int kr_mm_u32;
typedef long long kr_mm_i64;

#ifndef KR_MM_WT
#define KR_MM_WT 1
#endif
#ifndef KR_MM_BM
#define KR_MM_BM 128
#endif
#ifndef KR_MM_ST
#define KR_MM_ST 3
#endif
#ifndef KR_MM_WN
#define KR_MM_WN 2 // warps along n: 2 (warp tile (BM/2) x 64) or 4 ((BM/2) x 32)
#endif
#if KR_MM_WN != 2 && KR_MM_WN != 4
#error "KR_MM_WN must be 2 or 4"
#endif
#if KR_MM_BM != 64 && KR_MM_BM != 128
#error "KR_MM_BM must be 64 or 128"
#endif
#if KR_MM_ST < 2 || KR_MM_ST > 6
#error "KR_MM_ST must be 2..6"
#endif

#define KR_MM_T_F16 1
#define KR_MM_T_Q4_0 2
#define KR_MM_T_Q4_1 3
#define KR_MM_T_Q8_0 8
#define KR_MM_T_Q4_K 12
#define KR_MM_T_Q6_K 14
// The decode path's repacked layout (kernels/forward/matvec_repacked.cu): quants of
// row n, block b at W + n*ldw + b*QSZ (QSZ 16 for Q4_0, 32 for Q8_0; ldw = nb*QSZ),
// fp16 scale at S + n*lds + 2*b (lds = 2*nb, a multiple of 16: nb % 8 == 0).
#define KR_MM_T_Q4_0R 102
#define KR_MM_T_Q8_0R 108

#ifndef KR_MM_BN
#define KR_MM_BN 128
#endif
#ifndef KR_MM_BK
#define KR_MM_BK 32 // K step (halves): 32, or 16 (F16 only)
#endif
#if KR_MM_BN != 128 && KR_MM_BN != 256
#error "KR_MM_BN must be 128 or 256"
#endif
#if KR_MM_BK != 32 && !(KR_MM_BK == 16 && KR_MM_WT == KR_MM_T_F16)
#error "KR_MM_BK must be 32 (16 only for F16)"
#endif
#define KR_MM_CH (KR_MM_BK / 8)  // 16-byte chunks per shared row (A, F16 W)
#define KR_MM_RB (KR_MM_BK * 2)  // bytes per shared row (A, F16 W)
#define KR_MM_NH (KR_MM_BK / 16) // k16 halves per step
// XOR swizzle of chunk c in row r: the 8 rows of an ldmatrix phase hit 8 distinct 16-byte bank groups
#if KR_MM_BK == 32
#define KR_MM_SWZ(r, c) ((c) ^ (((r) >> 1) & 3))
#else
#define KR_MM_SWZ(r, c) ((c) ^ (((r) >> 2) & 1))
#endif
#ifndef KR_MM_WG
#define KR_MM_WG 0 // 1: Hopper wgmma kernel (needs --gpu-architecture=sm_90a), see kr_mm_gemm
#endif
#if KR_MM_WG == 1
// 2 warpgroups; warp w owns W rows 16w..16w+15 of the 128-row tile (the wgmma A
// operand, from registers) and all BM = 128 tokens (the B operand, from shared memory)
#if KR_MM_BM != 128 || KR_MM_BN != 128 || KR_MM_BK != 32
#error "the wgmma kernel needs BM = BN = 128, BK = 32"
#endif
#elif KR_MM_WG == 4
// F16 only: as WG 1 (K steps of 32, 64-byte swizzle, wait_group 0 per step) with the W
// tile as the A operand from shared memory too (no ldmatrix, no A registers)
#if KR_MM_BM != 128 || KR_MM_BN != 128 || KR_MM_BK != 32 || KR_MM_WT != KR_MM_T_F16
#error "the wgmma SS-32 kernel needs F16, BM = BN = 128, BK = 32"
#endif
#elif KR_MM_WG == 2
// F16 only: both operands from shared memory (W rows of warpgroup q = rows 64q.. of
// the stage), K steps of 16 (rows of 32 bytes, 32-byte swizzle), one wgmma group kept
// in flight while the next step is waited for and issued
#if KR_MM_BM != 128 || KR_MM_BN != 128 || KR_MM_BK != 16 || KR_MM_WT != KR_MM_T_F16 || KR_MM_ST < 4
#error "the wgmma SS kernel needs F16, BM = BN = 128, BK = 16, ST >= 4"
#endif
#endif
#if KR_MM_WG
#define KR_MM_THREADS 256
#define KR_MM_NT 2
#else
#define KR_MM_THREADS (64 * KR_MM_WN) // 2 x WN warps
#define KR_MM_WM (KR_MM_BM / 2)       // warp tile rows
#define KR_MM_WNC (KR_MM_BN / KR_MM_WN) // warp tile columns
#define KR_MM_MT (KR_MM_BM / 32)      // m16 tiles per warp
#define KR_MM_NT (KR_MM_WNC / 8)      // n8 tiles per warp
#endif
// raw bytes per W row per stage (quantized types); Q6_K: 8 chunks (ql, qh and scales+d
// windows of 3 + 3 + 2), chunk c of row r stored at c ^ (r & 7) (conflict-free reads)
// KR_MM_RAW32: 32-byte raw rows for the types whose window is at most 2 chunks (Q4_0,
// Q4_1, repacked Q4_0), so 4 stages fit in 48 KiB (2-way bank conflicts on the reads)
#ifndef KR_MM_RAW32
#define KR_MM_RAW32 0
#endif
#if KR_MM_RAW32 && KR_MM_WT != KR_MM_T_Q4_0 && KR_MM_WT != KR_MM_T_Q4_1 && KR_MM_WT != KR_MM_T_Q4_0R
#error "KR_MM_RAW32 is for Q4_0, Q4_1 and repacked Q4_0"
#endif
#define KR_MM_RAW (KR_MM_WT == KR_MM_T_Q6_K ? 128 : KR_MM_RAW32 ? 32 : 48)
#define KR_MM_CHR (KR_MM_RAW / 16)
#define KR_MM_A_BYTES (KR_MM_BM * KR_MM_RB)
#define KR_MM_W_BYTES (KR_MM_WT == KR_MM_T_F16 ? KR_MM_BN * KR_MM_RB : KR_MM_BN * KR_MM_RAW)
#define KR_MM_STAGE (KR_MM_A_BYTES + KR_MM_W_BYTES)

#ifdef KR_MM_HOST_EMU
#define KR_MM_UNROLL
#define KR_MM_WAIT(n) kr_mm_wait_emu(n)
#define KR_MM_KERNEL(threads) static void
#else
#define KR_MM_UNROLL _Pragma("unroll")
#define KR_MM_WAIT(n) asm volatile("cp.async.wait_group %0;" ::"n"(n) : "memory")
#define KR_MM_KERNEL(threads) extern "C" __global__ void __launch_bounds__(threads)

__device__ __forceinline__ kr_mm_u32 kr_mm_saddr(const void *p)
{
    kr_mm_u32 r;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
    return r;
}

// 16 bytes global -> shared; bytes past src_bytes (0 or 16) are zero-filled.
__device__ __forceinline__ void kr_mm_cp16(kr_mm_u32 dst, const void *src, int src_bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}

__device__ __forceinline__ void kr_mm_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }


__device__ __forceinline__ void kr_mm_ldsm4(kr_mm_u32 r[4], kr_mm_u32 addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// c (16x8 fp32) += a (16x16 fp16, row) * b (16x8 fp16, col).
__device__ __forceinline__ void kr_mm_mma(float c[4], const kr_mm_u32 a[4], kr_mm_u32 b0, kr_mm_u32 b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats -> fp16x2 (RNE), lo in the low half.
__device__ __forceinline__ kr_mm_u32 kr_mm_pack(float lo, float hi)
{
    kr_mm_u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ kr_mm_u32 kr_mm_hsub2(kr_mm_u32 a, kr_mm_u32 b)
{
    kr_mm_u32 r;
    asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

__device__ __forceinline__ kr_mm_u32 kr_mm_hmul2(kr_mm_u32 a, kr_mm_u32 b)
{
    kr_mm_u32 r;
    asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

__device__ __forceinline__ float kr_mm_h2f(kr_mm_u32 h)
{
    float f;
    kr_mm_u16 x = (kr_mm_u16)h;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
    return f;
}

__device__ __forceinline__ kr_mm_u32 kr_mm_prmt(kr_mm_u32 a, kr_mm_u32 b, kr_mm_u32 sel)
{
    kr_mm_u32 r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
    return r;
}

#if KR_MM_WG
// wgmma shared-memory descriptor of a K-major tile with rows of 64 bytes in the
// 64-byte swizzle (chunk c of row r at c ^ ((r >> 1) & 3), 8-row groups 512 B
// apart): start address >> 4 (bits 0-13), leading offset 1 (unused when swizzled),
// stride offset 512 >> 4 (bits 32-45), swizzle mode 2 = 64 B (bits 62-63).
__device__ __forceinline__ unsigned long long kr_mm_desc(kr_mm_u32 saddr)
{
    return (unsigned long long)((saddr & 0x3ffffu) >> 4) | (1ull << 16) | ((unsigned long long)(512 >> 4) << 32) |
           (2ull << 62);
}

__device__ __forceinline__ void kr_mm_wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void kr_mm_wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void kr_mm_wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }
__device__ __forceinline__ void kr_mm_wg_wait1() { asm volatile("wgmma.wait_group.sync.aligned 1;" ::: "memory"); }

// As kr_mm_desc for rows of 32 bytes in the 32-byte swizzle (chunk c of row r at
// c ^ ((r >> 2) & 1), 8-row groups 256 B apart): swizzle mode 3.
__device__ __forceinline__ unsigned long long kr_mm_desc32(kr_mm_u32 saddr)
{
    return (unsigned long long)((saddr & 0x3ffffu) >> 4) | (1ull << 16) | ((unsigned long long)(256 >> 4) << 32) |
           (3ull << 62);
}
__device__ __forceinline__ void kr_mm_proxy_fence() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

// d (64 x 128 fp32, this warpgroup) += a (64 x 16 fp16, registers: the warp's 16 rows
// as an mma.m16n8k16 A fragment) * B (16 x 128 fp16 from the descriptor, K-major).
__device__ __forceinline__ void kr_mm_wgmma(float *d, const kr_mm_u32 a[4], unsigned long long desc)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
                 "{%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]),
                   "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]),
                   "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]),
                   "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),
                   "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]),
                   "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]),
                   "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),
                   "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc)
                 : "memory");
}

// As kr_mm_wgmma with A (64 x 16, K-major) from shared memory too.
__device__ __forceinline__ void kr_mm_wgmma_ss(float *d, unsigned long long da, unsigned long long db)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
                 "%64, %65, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]),
                   "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]),
                   "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]),
                   "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),
                   "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]),
                   "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]),
                   "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),
                   "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "l"(da), "l"(db)
                 : "memory");
}
#endif
#endif // KR_MM_HOST_EMU

__device__ __forceinline__ kr_mm_u32 kr_mm_ld_u16(const kr_mm_u8 *p) { return *(const kr_mm_u16 *)p; }

#if KR_MM_WT == 0
// A (M, K) fp32 (row stride lda floats) -> Ah (M, K) fp16 (row stride ldh halves).
// K % 4 == 0, lda % 4 == 0, ldh % 4 == 0, both 16/8-byte aligned.
// Grid-stride over the M*K/4 groups of 4.
KR_MM_KERNEL(256)
    kr_mm_cvt_a(const float *__restrict__ A, kr_mm_i64 lda, kr_mm_u16 *__restrict__ Ah, kr_mm_i64 ldh, int M, int K)
{
    const kr_mm_i64 groups = (kr_mm_i64)M * (K / 4);
    for (kr_mm_i64 i = (kr_mm_i64)blockIdx.x * blockDim.x + threadIdx.x; i < groups;
         i += (kr_mm_i64)gridDim.x * blockDim.x) {
        kr_mm_i64 r = i / (K / 4), c = (i % (K / 4)) * 4;
        float4 v = *(const float4 *)(A + r * lda + c);
        uint2 o = make_uint2(kr_mm_pack(v.x, v.y), kr_mm_pack(v.z, v.w));
        *(uint2 *)(Ah + r * ldh + c) = o;
    }
}
#else

// Issue the cp.async copies of K step ks (32 values) into stage st.
__device__ __forceinline__ void kr_mm_load(kr_mm_u8 *st, const kr_mm_u16 *__restrict__ A, kr_mm_i64 lda,
                                           const kr_mm_u8 *__restrict__ W, kr_mm_i64 ldw,
                                           const kr_mm_u8 *__restrict__ S, kr_mm_i64 lds, int M, int N, int m0,
                                           int n0, int ks, int tid)
{
    const kr_mm_u32 sa = kr_mm_saddr(st);
KR_MM_UNROLL
    for (int i = 0; i < KR_MM_BM * KR_MM_CH / KR_MM_THREADS; i++) {
        const int idx = tid + i * KR_MM_THREADS, r = idx / KR_MM_CH, c = idx % KR_MM_CH;
        const bool ok = m0 + r < M;
        const kr_mm_u16 *src = ok ? A + (kr_mm_i64)(m0 + r) * lda + ks * KR_MM_BK + c * 8 : A;
        kr_mm_cp16(sa + r * KR_MM_RB + (KR_MM_SWZ(r, c) << 4), src, ok ? 16 : 0);
    }
    const kr_mm_u32 sw = sa + KR_MM_A_BYTES;
#if KR_MM_WT == KR_MM_T_F16
KR_MM_UNROLL
    for (int i = 0; i < KR_MM_BN * KR_MM_CH / KR_MM_THREADS; i++) {
        const int idx = tid + i * KR_MM_THREADS, r = idx / KR_MM_CH, c = idx % KR_MM_CH;
        const bool ok = n0 + r < N;
        const kr_mm_u8 *src = ok ? W + (kr_mm_i64)(n0 + r) * ldw + (kr_mm_i64)ks * KR_MM_RB + c * 16 : W;
        kr_mm_cp16(sw + r * KR_MM_RB + (KR_MM_SWZ(r, c) << 4), src, ok ? 16 : 0);
    }
#else
    // CHR chunk slots per row
KR_MM_UNROLL
    for (int i = 0; i < (KR_MM_BN * KR_MM_CHR + KR_MM_THREADS - 1) / KR_MM_THREADS; i++) {
        const int idx = tid + i * KR_MM_THREADS, r = idx / KR_MM_CHR, c = idx - KR_MM_CHR * (idx / KR_MM_CHR);
        if (idx >= KR_MM_BN * KR_MM_CHR)
            break;
        const bool ok = n0 + r < N;
#if KR_MM_WT == KR_MM_T_Q6_K
        // super-block (210 B: ql[128], qh[64], scales[16], d) of step ks, half hf, quarter qq:
        // ql bytes 64hf + 32(qq&1) .. +32, qh bytes 128 + 32hf .. +32, bytes 192..209
        const kr_mm_i64 base = (kr_mm_i64)(ks / 8) * 210, a16 = base & ~(kr_mm_i64)15;
        const int hf = (ks & 7) >> 2, qq = ks & 3;
        const kr_mm_i64 off = c < 3   ? a16 + 64 * hf + 32 * (qq & 1) + 16 * c
                              : c < 6 ? a16 + 128 + 32 * hf + 16 * (c - 3)
                                      : a16 + 192 + 16 * (c - 6);
        const kr_mm_u8 *row = W + (kr_mm_i64)(ok ? n0 + r : 0) * ldw;
        kr_mm_cp16(sw + r * KR_MM_RAW + ((c ^ (r & 7)) << 4), ok ? row + off : W, ok ? 16 : 0);
#elif KR_MM_WT == KR_MM_T_Q4_0R || KR_MM_WT == KR_MM_T_Q8_0R
        // quants (1 or 2 chunks), then the 16-byte chunk holding the block's scale
        const int nq = KR_MM_WT == KR_MM_T_Q4_0R ? 1 : 2;
        const kr_mm_u8 *src = c < nq ? W + (kr_mm_i64)(n0 + r) * ldw + (kr_mm_i64)ks * (16 * nq) + 16 * c
                                     : S + (kr_mm_i64)(n0 + r) * lds + (((kr_mm_i64)ks * 2) & ~(kr_mm_i64)15);
        if (c <= nq)
            kr_mm_cp16(sw + r * KR_MM_RAW + 16 * c, ok ? src : W, ok ? 16 : 0);
#else
        const kr_mm_u8 *row = W + (kr_mm_i64)(n0 < N ? n0 + (ok ? r : 0) : 0) * ldw;
        kr_mm_i64 off;
        bool used = true;
#if KR_MM_WT == KR_MM_T_Q4_0
        off = ((kr_mm_i64)ks * 18 & ~(kr_mm_i64)15) + 16 * c;
        used = c < 2;
#elif KR_MM_WT == KR_MM_T_Q4_1
        off = ((kr_mm_i64)ks * 20 & ~(kr_mm_i64)15) + 16 * c;
        used = c < 2;
#elif KR_MM_WT == KR_MM_T_Q8_0
        off = ((kr_mm_i64)ks * 34 & ~(kr_mm_i64)15) + 16 * c;
#elif KR_MM_WT == KR_MM_T_Q4_K // header (d, dmin, scales) + the 32 qs bytes of sub-block pair (ks % 8) / 2
        off = (kr_mm_i64)(ks / 8) * 144 + (c == 0 ? 0 : 16 + 32 * ((ks & 7) >> 1) + 16 * (c - 1));
#endif
        if (used)
            kr_mm_cp16(sw + r * KR_MM_RAW + 16 * c, ok ? row + off : W, ok ? 16 : 0);
#endif
    }
#endif
}

// B fragments of K step ks for the warp's 8 n8 tiles, both k16 halves:
// bf[h][j][0..1] = (b0, b1) of half h (k 16h..16h+15), tile j (rows wn + 8j ..).
// Lane (g = lane/4, t = lane%4) holds W[n = g][k = 2t, 2t+1] (b0) and
// [2t+8, 2t+9] (b1), the lower k in the low half.
__device__ __forceinline__ void kr_mm_frag_b(const kr_mm_u8 *Ws, int ks, int wn, int lane, kr_mm_u32 bf[2][KR_MM_NT][2])
{
#if KR_MM_WT == KR_MM_T_F16
    (void)ks;
    const kr_mm_u32 sw = kr_mm_saddr(Ws);
KR_MM_UNROLL
    for (int h = 0; h < KR_MM_NH; h++) {
KR_MM_UNROLL
        for (int jp = 0; jp < KR_MM_NT / 2; jp++) {
            const int n = wn + 16 * jp + (lane & 7) + ((lane >> 4) << 3);
            const int c = 2 * h + ((lane >> 3) & 1);
            kr_mm_u32 r[4];
            kr_mm_ldsm4(r, sw + n * KR_MM_RB + (KR_MM_SWZ(n, c) << 4));
            bf[h][2 * jp][0] = r[0];
            bf[h][2 * jp][1] = r[1];
            bf[h][2 * jp + 1][0] = r[2];
            bf[h][2 * jp + 1][1] = r[3];
        }
    }
#else
    const int g = lane >> 2, t = lane & 3;
#endif
#if KR_MM_WT == KR_MM_T_F16
#elif KR_MM_WT == KR_MM_T_Q4_0 || KR_MM_WT == KR_MM_T_Q4_1 || KR_MM_WT == KR_MM_T_Q4_0R
    // qs byte i: value i (low nibble), value 16 + i (high nibble); d at doff, quants at qoff
#if KR_MM_WT == KR_MM_T_Q4_0
    const int mis = (int)(((kr_mm_i64)ks * 18) & 15), qoff = 2, doff = 0;
#elif KR_MM_WT == KR_MM_T_Q4_1
    const int mis = (int)(((kr_mm_i64)ks * 20) & 15), qoff = 4, doff = 0;
#else
    const int mis = 0, qoff = 0, doff = 16 + 2 * (ks & 7);
#endif
KR_MM_UNROLL
    for (int j = 0; j < KR_MM_NT; j++) {
        const kr_mm_u8 *b = Ws + (wn + 8 * j + g) * KR_MM_RAW + mis;
        const kr_mm_u32 v0 = kr_mm_ld_u16(b + qoff + 2 * t), v1 = kr_mm_ld_u16(b + qoff + 8 + 2 * t);
        const kr_mm_u32 dh = kr_mm_ld_u16(b + doff);
        // nibbles of bytes (lo byte, hi byte) -> (lo half, hi half) as 1024 + q
        const kr_mm_u32 l0 = (v0 & 0xfu) | ((v0 << 8) & 0xf0000u), h0 = ((v0 >> 4) & 0xfu) | ((v0 << 4) & 0xf0000u);
        const kr_mm_u32 l1 = (v1 & 0xfu) | ((v1 << 8) & 0xf0000u), h1 = ((v1 >> 4) & 0xfu) | ((v1 << 4) & 0xf0000u);
#if KR_MM_WT != KR_MM_T_Q4_1
        const kr_mm_u32 d2 = dh | (dh << 16), bias = 0x64086408u; // 1032 = 1024 + 8
        bf[0][j][0] = kr_mm_hmul2(kr_mm_hsub2(l0 | 0x64006400u, bias), d2);
        bf[0][j][1] = kr_mm_hmul2(kr_mm_hsub2(l1 | 0x64006400u, bias), d2);
        bf[1][j][0] = kr_mm_hmul2(kr_mm_hsub2(h0 | 0x64006400u, bias), d2);
        bf[1][j][1] = kr_mm_hmul2(kr_mm_hsub2(h1 | 0x64006400u, bias), d2);
#else
        const float d = kr_mm_h2f(dh), m = kr_mm_h2f(kr_mm_ld_u16(b + 2));
        bf[0][j][0] = kr_mm_pack(fmaf(d, (float)(l0 & 0xf), m), fmaf(d, (float)(l0 >> 16), m));
        bf[0][j][1] = kr_mm_pack(fmaf(d, (float)(l1 & 0xf), m), fmaf(d, (float)(l1 >> 16), m));
        bf[1][j][0] = kr_mm_pack(fmaf(d, (float)(h0 & 0xf), m), fmaf(d, (float)(h0 >> 16), m));
        bf[1][j][1] = kr_mm_pack(fmaf(d, (float)(h1 & 0xf), m), fmaf(d, (float)(h1 >> 16), m));
#endif
    }
#elif KR_MM_WT == KR_MM_T_Q8_0 || KR_MM_WT == KR_MM_T_Q8_0R
#if KR_MM_WT == KR_MM_T_Q8_0
    const int mis = (int)(((kr_mm_i64)ks * 34) & 15), qoff = 2, doff = 0;
#else
    const int mis = 0, qoff = 0, doff = 32 + 2 * (ks & 7);
#endif
KR_MM_UNROLL
    for (int j = 0; j < KR_MM_NT; j++) {
        const kr_mm_u8 *b = Ws + (wn + 8 * j + g) * KR_MM_RAW + mis;
        const kr_mm_u32 dh = kr_mm_ld_u16(b + doff);
        const kr_mm_u32 d2 = dh | (dh << 16), bias = 0x64806480u; // 1152 = 1024 + 128
KR_MM_UNROLL
        for (int h = 0; h < 2; h++) {
KR_MM_UNROLL
            for (int e = 0; e < 2; e++) {
                // int8 pair (biased to unsigned) -> (1024 + q + 128) halves
                const kr_mm_u32 v = kr_mm_ld_u16(b + qoff + 16 * h + 8 * e + 2 * t) ^ 0x8080u;
                bf[h][j][e] = kr_mm_hmul2(kr_mm_hsub2(kr_mm_prmt(v, 0x64u, 0x4140u), bias), d2);
            }
        }
    }
#elif KR_MM_WT == KR_MM_T_Q6_K
    // value l of step (hf, qq): q = (ql[l] >> 4*(qq >> 1)) & 15 | ((qh[l] >> 2qq) & 3) << 4,
    // d * scales[8hf + 2qq + l/16] * (q - 32). Logical byte o of the row's window
    // (chunk o/16) lives at chunk (o/16) ^ (row & 7).
    const int hf = (ks & 7) >> 2, qq = ks & 3, mis = (int)(((kr_mm_i64)(ks / 8) * 210) & 15);
    const int shl = 4 * (qq >> 1), shh = 2 * qq;
KR_MM_UNROLL
    for (int j = 0; j < KR_MM_NT; j++) {
        const int n = wn + 8 * j + g, x = n & 7;
        const kr_mm_u8 *rb = Ws + n * KR_MM_RAW;
#define KR_MM_Q6B(o) (rb + (((((o) >> 4) ^ x) << 4) | ((o) & 15)))
        const float d = kr_mm_h2f(kr_mm_ld_u16(KR_MM_Q6B(96 + mis + 16)));
KR_MM_UNROLL
        for (int h = 0; h < 2; h++) {
            const float ds = d * (float)(int)(signed char)*KR_MM_Q6B(96 + mis + 8 * hf + 2 * qq + h);
KR_MM_UNROLL
            for (int e = 0; e < 2; e++) {
                const int l = 16 * h + 8 * e + 2 * t;
                const kr_mm_u32 lo = kr_mm_ld_u16(KR_MM_Q6B(mis + l)) >> shl, hi = kr_mm_ld_u16(KR_MM_Q6B(48 + mis + l)) >> shh;
                const int q0 = (int)((lo & 15) | ((hi & 3) << 4)), q1 = (int)(((lo >> 8) & 15) | (((hi >> 8) & 3) << 4));
                bf[h][j][e] = kr_mm_pack(ds * (float)(q0 - 32), ds * (float)(q1 - 32));
            }
        }
#undef KR_MM_Q6B
    }
#else // Q4_K: value i of sub-block s = nibble (s & 1) of qs byte i, times d*sc, minus dmin*mn
    const int s = ks & 7, sh = 4 * (s & 1);
KR_MM_UNROLL
    for (int j = 0; j < KR_MM_NT; j++) {
        const kr_mm_u8 *hd = Ws + (wn + 8 * j + g) * KR_MM_RAW, *scb = hd + 4, *q = hd + 16;
        kr_mm_u32 sc, mn;
        if (s < 4) {
            sc = scb[s] & 63;
            mn = scb[s + 4] & 63;
        } else {
            sc = (scb[s + 4] & 0xf) | ((scb[s - 4] >> 6) << 4);
            mn = (scb[s + 4] >> 4) | ((scb[s] >> 6) << 4);
        }
        const float d1 = kr_mm_h2f(kr_mm_ld_u16(hd)) * (float)sc, m1 = kr_mm_h2f(kr_mm_ld_u16(hd + 2)) * (float)mn;
KR_MM_UNROLL
        for (int h = 0; h < 2; h++) {
KR_MM_UNROLL
            for (int e = 0; e < 2; e++) {
                const kr_mm_u32 v = kr_mm_ld_u16(q + 16 * h + 8 * e + 2 * t) >> sh;
                bf[h][j][e] = kr_mm_pack(fmaf(d1, (float)(v & 0xf), -m1), fmaf(d1, (float)((v >> 8) & 0xf), -m1));
            }
        }
    }
#endif
}

KR_MM_KERNEL(KR_MM_THREADS)
    kr_mm_gemm(const kr_mm_u16 *__restrict__ A, kr_mm_i64 lda, const kr_mm_u8 *__restrict__ W, kr_mm_i64 ldw,
               const kr_mm_u8 *__restrict__ S, kr_mm_i64 lds, float *__restrict__ C, kr_mm_i64 ldc, int M, int N,
               int K, int k_split)
{
    __shared__ __align__(1024) kr_mm_u8 sm[KR_MM_ST * KR_MM_STAGE];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int m0 = blockIdx.y * KR_MM_BM, n0 = blockIdx.x * KR_MM_BN;
    const int kbeg = blockIdx.z * k_split, kend = min(K, kbeg + k_split);
    const int ks0 = kbeg / KR_MM_BK, nsteps = kend > kbeg ? (kend - kbeg) / KR_MM_BK : 0;
#if KR_MM_WG == 2
    // C^T tile (128 W rows x 128 tokens) = W tile (A, shared) x X tile^T (B, shared); P = ST-2
    // steps prefetched: the stage refilled at step i was read by wgmma(i-2), complete after
    // the wait_group(1) that ended step i-1 (and the barrier of step i).
    float acc[64]; // acc[4j + e]: W row 16*warp + g + 8*(e >> 1), token 8j + 2t + (e & 1)
KR_MM_UNROLL
    for (int i = 0; i < 64; i++)
        acc[i] = 0.0f;
KR_MM_UNROLL
    for (int s = 0; s < KR_MM_ST - 2; s++) {
        if (s < nsteps)
            kr_mm_load(sm + s * KR_MM_STAGE, A, lda, W, ldw, S, lds, M, N, m0, n0, ks0 + s, tid);
        kr_mm_commit();
    }
    int rd = 0, wr = KR_MM_ST - 2;
    for (int i = 0; i < nsteps; i++) {
        KR_MM_WAIT(KR_MM_ST - 3);
        kr_mm_proxy_fence();
        __syncthreads();
        if (i + KR_MM_ST - 2 < nsteps)
            kr_mm_load(sm + wr * KR_MM_STAGE, A, lda, W, ldw, S, lds, M, N, m0, n0, ks0 + i + KR_MM_ST - 2, tid);
        kr_mm_commit();
        const kr_mm_u32 sa = kr_mm_saddr(sm + rd * KR_MM_STAGE);
        kr_mm_wg_fence();
        kr_mm_wgmma_ss(acc, kr_mm_desc32(sa + KR_MM_A_BYTES + (warp >> 2) * 64 * KR_MM_RB), kr_mm_desc32(sa));
        kr_mm_wg_commit();
        kr_mm_wg_wait1();
        rd = rd == KR_MM_ST - 1 ? 0 : rd + 1;
        wr = wr == KR_MM_ST - 1 ? 0 : wr + 1;
    }
    kr_mm_wg_wait0();
    KR_MM_WAIT(0);
#elif KR_MM_WG == 4
    float acc[64]; // acc[4j + e]: W row 16*warp + g + 8*(e >> 1), token 8j + 2t + (e & 1)
KR_MM_UNROLL
    for (int i = 0; i < 64; i++)
        acc[i] = 0.0f;
KR_MM_UNROLL
    for (int s = 0; s < KR_MM_ST - 1; s++) {
        if (s < nsteps)
            kr_mm_load(sm + s * KR_MM_STAGE, A, lda, W, ldw, S, lds, M, N, m0, n0, ks0 + s, tid);
        kr_mm_commit();
    }
    int rd = 0, wr = KR_MM_ST - 1;
    for (int i = 0; i < nsteps; i++) {
        KR_MM_WAIT(KR_MM_ST - 2);
        kr_mm_proxy_fence();
        __syncthreads();
        if (i + KR_MM_ST - 1 < nsteps)
            kr_mm_load(sm + wr * KR_MM_STAGE, A, lda, W, ldw, S, lds, M, N, m0, n0, ks0 + i + KR_MM_ST - 1, tid);
        kr_mm_commit();
        const kr_mm_u32 sa = kr_mm_saddr(sm + rd * KR_MM_STAGE), sw = sa + KR_MM_A_BYTES + (warp >> 2) * 64 * KR_MM_RB;
        kr_mm_wg_fence();
        kr_mm_wgmma_ss(acc, kr_mm_desc(sw), kr_mm_desc(sa));
        kr_mm_wgmma_ss(acc, kr_mm_desc(sw + 32), kr_mm_desc(sa + 32));
        kr_mm_wg_commit();
        kr_mm_wg_wait0();
        rd = rd == KR_MM_ST - 1 ? 0 : rd + 1;
        wr = wr == KR_MM_ST - 1 ? 0 : wr + 1;
    }
    KR_MM_WAIT(0);
#elif KR_MM_WG == 1
    // C^T tile (128 W rows x 128 tokens) = W tile (A operand, registers) x X tile^T (B, shared)
    float acc[64]; // acc[4j + e]: W row 16*warp + g + 8*(e >> 1), token 8j + 2t + (e & 1)
KR_MM_UNROLL
    for (int i = 0; i < 64; i++)
        acc[i] = 0.0f;
KR_MM_UNROLL
    for (int s = 0; s < KR_MM_ST - 1; s++) {
        if (s < nsteps)
            kr_mm_load(sm + s * KR_MM_STAGE, A, lda, W, ldw, S, lds, M, N, m0, n0, ks0 + s, tid);
        kr_mm_commit();
    }
    int rd = 0, wr = KR_MM_ST - 1;
    for (int i = 0; i < nsteps; i++) {
        KR_MM_WAIT(KR_MM_ST - 2);
        kr_mm_proxy_fence(); // this thread's cp.async data, visible to the async proxy (wgmma)
        __syncthreads();
        if (i + KR_MM_ST - 1 < nsteps)
            kr_mm_load(sm + wr * KR_MM_STAGE, A, lda, W, ldw, S, lds, M, N, m0, n0, ks0 + i + KR_MM_ST - 1, tid);
        kr_mm_commit();
        const kr_mm_u8 *st = sm + rd * KR_MM_STAGE;
        kr_mm_u32 bf[2][KR_MM_NT][2];
        kr_mm_frag_b(st + KR_MM_A_BYTES, ks0 + i, 16 * warp, lane, bf);
        const kr_mm_u32 sa = kr_mm_saddr(st);
        kr_mm_wg_fence();
KR_MM_UNROLL
        for (int h = 0; h < 2; h++) {
            // A fragment of the warp's 16 rows: a0 rows 0-7 k lo, a1 rows 8-15 k lo, a2 / a3 k hi
            const kr_mm_u32 af[4] = {bf[h][0][0], bf[h][1][0], bf[h][0][1], bf[h][1][1]};
            kr_mm_wgmma(acc, af, kr_mm_desc(sa + 32 * h));
        }
        kr_mm_wg_commit();
        kr_mm_wg_wait0(); // before the stage is refilled and af is rewritten
        rd = rd == KR_MM_ST - 1 ? 0 : rd + 1;
        wr = wr == KR_MM_ST - 1 ? 0 : wr + 1;
    }
    KR_MM_WAIT(0);
#endif
#if KR_MM_WG
    const bool add = gridDim.z > 1;
    const int g = lane >> 2, t = lane & 3;
KR_MM_UNROLL
    for (int e2 = 0; e2 < 2; e2++) {
        const int col = n0 + 16 * warp + g + 8 * e2; // W row = C column
        if (col >= N)
            continue;
KR_MM_UNROLL
        for (int j = 0; j < 16; j++) {
KR_MM_UNROLL
            for (int e1 = 0; e1 < 2; e1++) {
                const int row = m0 + 8 * j + 2 * t + e1; // token = C row
                if (row >= M)
                    continue;
                float *cp = C + (kr_mm_i64)row * ldc + col;
                const float v = acc[4 * j + 2 * e2 + e1];
                if (add)
                    atomicAdd(cp, v);
                else
                    *cp = v;
            }
        }
    }
#else
    const int wm = (warp / KR_MM_WN) * KR_MM_WM, wn = (warp % KR_MM_WN) * KR_MM_WNC;

    float acc[KR_MM_MT][KR_MM_NT][4];
KR_MM_UNROLL
    for (int i = 0; i < KR_MM_MT; i++)
KR_MM_UNROLL
        for (int j = 0; j < KR_MM_NT; j++)
KR_MM_UNROLL
            for (int e = 0; e < 4; e++)
                acc[i][j][e] = 0.0f;

KR_MM_UNROLL
    for (int s = 0; s < KR_MM_ST - 1; s++) {
        if (s < nsteps)
            kr_mm_load(sm + s * KR_MM_STAGE, A, lda, W, ldw, S, lds, M, N, m0, n0, ks0 + s, tid);
        kr_mm_commit();
    }
    int rd = 0, wr = KR_MM_ST - 1; // stage read this step, stage written this step
    for (int i = 0; i < nsteps; i++) {
        KR_MM_WAIT(KR_MM_ST - 2);
        __syncthreads(); // step i landed for all threads; stage wr no longer read
        if (i + KR_MM_ST - 1 < nsteps)
            kr_mm_load(sm + wr * KR_MM_STAGE, A, lda, W, ldw, S, lds, M, N, m0, n0, ks0 + i + KR_MM_ST - 1, tid);
        kr_mm_commit();

        const kr_mm_u8 *st = sm + rd * KR_MM_STAGE;
        kr_mm_u32 bf[2][KR_MM_NT][2];
        kr_mm_frag_b(st + KR_MM_A_BYTES, ks0 + i, wn, lane, bf);
        const kr_mm_u32 sa = kr_mm_saddr(st);
KR_MM_UNROLL
        for (int h = 0; h < KR_MM_NH; h++) {
            kr_mm_u32 af[KR_MM_MT][4];
KR_MM_UNROLL
            for (int mi = 0; mi < KR_MM_MT; mi++) {
                const int r = wm + 16 * mi + (lane & 15), c = 2 * h + (lane >> 4);
                kr_mm_ldsm4(af[mi], sa + r * KR_MM_RB + (KR_MM_SWZ(r, c) << 4));
            }
KR_MM_UNROLL
            for (int mi = 0; mi < KR_MM_MT; mi++)
KR_MM_UNROLL
                for (int j = 0; j < KR_MM_NT; j++)
                    kr_mm_mma(acc[mi][j], af[mi], bf[h][j][0], bf[h][j][1]);
        }
        rd = rd == KR_MM_ST - 1 ? 0 : rd + 1;
        wr = wr == KR_MM_ST - 1 ? 0 : wr + 1;
    }
    KR_MM_WAIT(0);

    const bool add = gridDim.z > 1;
    const int g = lane >> 2, t = lane & 3;
KR_MM_UNROLL
    for (int mi = 0; mi < KR_MM_MT; mi++) {
KR_MM_UNROLL
        for (int hr = 0; hr < 2; hr++) {
            const int row = m0 + wm + 16 * mi + g + 8 * hr;
            if (row >= M)
                continue;
            float *cr = C + (kr_mm_i64)row * ldc;
KR_MM_UNROLL
            for (int j = 0; j < KR_MM_NT; j++) {
                const int col = n0 + wn + 8 * j + 2 * t;
                const float v0 = acc[mi][j][2 * hr], v1 = acc[mi][j][2 * hr + 1];
                if (add) {
                    if (col < N)
                        atomicAdd(cr + col, v0);
                    if (col + 1 < N)
                        atomicAdd(cr + col + 1, v1);
                } else {
                    if (col < N)
                        cr[col] = v0;
                    if (col + 1 < N)
                        cr[col + 1] = v1;
                }
            }
        }
    }
#endif // KR_MM_WG
}
#endif // KR_MM_WT
