// Shared device helpers for the decode kernels (kernels/decode/*.cu).
// NVRTC-compilable: no headers beyond what NVRTC ships; half conversions go
// through PTX cvt so cuda_fp16.h is not needed.
#ifndef KR_DECODE_COMMON_CUH
#define KR_DECODE_COMMON_CUH

typedef unsigned char kr_u8;
typedef signed char kr_i8;
typedef unsigned short kr_u16;
typedef unsigned int kr_u32;
typedef long long kr_i64;
typedef unsigned long long kr_u64;

// GGML type ids (same values as kr_dtype).
enum {
    KR_T_F32 = 0,
    KR_T_F16 = 1,
    KR_T_Q4_0 = 2,
    KR_T_Q4_1 = 3,
    KR_T_Q8_0 = 8,
    KR_T_Q4_K = 12,
    KR_T_Q6_K = 14,
};

// IEEE binary16 bits -> fp32 (exact).
__device__ __forceinline__ float kr_h2f(kr_u16 h)
{
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// fp32 -> IEEE binary16 bits, round to nearest even.
__device__ __forceinline__ kr_u16 kr_f2h(float f)
{
    kr_u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// ---- programmatic dependent launch (PDL) ----------------------------------
// A kernel that may be launched with the PDL attribute
// (CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION) may start before the
// previous kernel in the stream has finished. Rule: execute KR_PDL_WAIT()
// before the FIRST global memory read or write (it blocks until the previous
// grid has completed and its writes are visible; a no-op when the kernel was
// launched without the attribute). KR_PDL_LAUNCH_DEPENDENTS() lets the NEXT
// kernel's blocks be scheduled early (they still wait in their own
// KR_PDL_WAIT() for this grid to complete, so calling it early is always
// safe). PDL is opt-in per kernel on the host side (docs/KERNELS.md, PDL);
// kernels without KR_PDL_WAIT() must never get the attribute. sm_90+ only;
// empty on older targets.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define KR_PDL_WAIT() asm volatile("griddepcontrol.wait;" ::: "memory")
#define KR_PDL_LAUNCH_DEPENDENTS() asm volatile("griddepcontrol.launch_dependents;" ::: "memory")
#else
#define KR_PDL_WAIT() do { } while (0)
#define KR_PDL_LAUNCH_DEPENDENTS() do { } while (0)
#endif

// ---- L2 prefetch of data a LATER kernel reads ---------------------------------
// kr_l2_prefetch_part(base, bytes, part, nparts): part `part` of `nparts` equal
// shares of [base, base + bytes) is requested into L2 (no registers, no wait,
// nothing returned; a hint the hardware may drop). Meant for latency-bound
// kernels of the decode step, which leave DRAM idle: they can pull the next
// matvec's weights into L2 (50 MB on H100/H200). Call it from ONE thread per
// part. base need not be aligned (the share is narrowed to 16-byte bounds, so
// nothing outside [base, base + bytes) is touched). sm_90: cp.async.bulk.prefetch.L2 in pieces of at most
// 64 KiB; older targets: one prefetch.global.L2 per 128-byte line.
__device__ __forceinline__ void kr_l2_prefetch_part(const void *base, long long bytes, int part, int nparts)
{
    if (!base || bytes <= 0 || nparts <= 0 || part < 0 || part >= nparts)
        return;
    const unsigned long long b0 = (unsigned long long)base, e0 = b0 + (unsigned long long)bytes;
    const unsigned long long share = ((unsigned long long)bytes + nparts - 1) / (unsigned long long)nparts;
    unsigned long long a = b0 + share * (unsigned long long)part;
    if (a >= e0)
        return;
    unsigned long long e = a + share < e0 ? a + share : e0;
    a = (a + 15ull) & ~15ull;
    e &= ~15ull;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    while (a < e) {
        const unsigned long long n = e - a < 65536ull ? e - a : 65536ull;
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(a), "r"((unsigned)n) : "memory");
        a += n;
    }
#else
    for (; a < e; a = (a | 127ull) + 1)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(a));
#endif
}

__device__ __forceinline__ float kr_neg_inf(void) { return __int_as_float(0xff800000); }
__device__ __forceinline__ float kr_qnan(void) { return __int_as_float(0x7fc00000); }

// Little-endian u16 from a 2-byte aligned address.
__device__ __forceinline__ kr_u16 kr_ld_u16(const kr_u8 *p) { return *(const kr_u16 *)p; }

__device__ __forceinline__ float kr_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float kr_warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, <= 1024); every
// thread gets the result. sh: 32 floats of shared scratch. Contains
// __syncthreads: call from all threads.
__device__ __forceinline__ float kr_block_sum(float v, float *sh)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = kr_warp_sum(v);
    __syncthreads(); // sh may still be read by an earlier call
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    return kr_warp_sum(v);
}

__device__ __forceinline__ float kr_block_max(float v, float *sh)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = kr_warp_max(v);
    __syncthreads();
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : kr_neg_inf();
    return kr_warp_max(v);
}

// ---- one element of a quantized row (GGML block layouts) ------------------
// row: first byte of the row; i: element index in the row.

__device__ __forceinline__ float kr_deq1_f32(const kr_u8 *row, int i) { return ((const float *)row)[i]; }
__device__ __forceinline__ float kr_deq1_f16(const kr_u8 *row, int i) { return kr_h2f(((const kr_u16 *)row)[i]); }

// Q4_0: {f16 d; u8 qs[16]} 18 B / 32; x[j] = d*((qs[j]&15)-8), x[j+16] = d*((qs[j]>>4)-8)
__device__ __forceinline__ float kr_deq1_q4_0(const kr_u8 *row, int i)
{
    const kr_u8 *b = row + (i >> 5) * 18;
    int j = i & 31;
    int q = j < 16 ? (b[2 + j] & 15) : (b[2 + j - 16] >> 4);
    return kr_h2f(kr_ld_u16(b)) * (float)(q - 8);
}

// Q4_1: {f16 d; f16 m; u8 qs[16]} 20 B / 32; x = d*q + m, nibbles as Q4_0
__device__ __forceinline__ float kr_deq1_q4_1(const kr_u8 *row, int i)
{
    const kr_u8 *b = row + (i >> 5) * 20;
    int j = i & 31;
    int q = j < 16 ? (b[4 + j] & 15) : (b[4 + j - 16] >> 4);
    return kr_h2f(kr_ld_u16(b)) * (float)q + kr_h2f(kr_ld_u16(b + 2));
}

// Q8_0: {f16 d; i8 qs[32]} 34 B / 32; x[j] = d*qs[j]
__device__ __forceinline__ float kr_deq1_q8_0(const kr_u8 *row, int i)
{
    const kr_u8 *b = row + (i >> 5) * 34;
    return kr_h2f(kr_ld_u16(b)) * (float)(kr_i8)b[2 + (i & 31)];
}

// Q4_K scale/min of sub-block is (0..7) from the 12 packed bytes q.
__device__ __forceinline__ void kr_q4k_scale_min(const kr_u8 *q, int is, float *sc, float *mn)
{
    if (is < 4) {
        *sc = (float)(q[is] & 63);
        *mn = (float)(q[is + 4] & 63);
    } else {
        *sc = (float)((q[is + 4] & 15) | ((q[is - 4] >> 6) << 4));
        *mn = (float)((q[is + 4] >> 4) | ((q[is] >> 6) << 4));
    }
}

// Q4_K: {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]} 144 B / 256.
// Element 64*j + c: sub-block is = 2j + (c >= 32), q = nibble (lo if c < 32)
// of qs[32j + c%32]; x = d*sc[is]*q - dmin*m[is].
__device__ __forceinline__ float kr_deq1_q4_k(const kr_u8 *row, int i)
{
    const kr_u8 *b = row + (i >> 8) * 144;
    int e = i & 255, j = e >> 6, c = e & 63;
    int is = 2 * j + (c >= 32);
    kr_u8 byte = b[16 + 32 * j + (c & 31)];
    int q = c < 32 ? (byte & 15) : (byte >> 4);
    float sc, mn;
    kr_q4k_scale_min(b + 4, is, &sc, &mn);
    return kr_h2f(kr_ld_u16(b)) * sc * (float)q - kr_h2f(kr_ld_u16(b + 2)) * mn;
}

// Q6_K: {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d} 210 B / 256.
// Element 128*n + 32*m + l (n<2, m<4, l<32): low 4 bits = nibble (hi if m>=2)
// of ql[64n + l + 32*(m&1)], high 2 bits = (qh[32n + l] >> 2m) & 3;
// x = d * scales[8n + l/16 + 2m] * (q - 32).
__device__ __forceinline__ float kr_deq1_q6_k(const kr_u8 *row, int i)
{
    const kr_u8 *b = row + (i >> 8) * 210;
    int e = i & 255, n = e >> 7, m = (e >> 5) & 3, l = e & 31;
    kr_u8 lo = b[64 * n + l + 32 * (m & 1)];
    int q = (m >= 2 ? (lo >> 4) : (lo & 15)) | (((b[128 + 32 * n + l] >> (2 * m)) & 3) << 4);
    float sc = (float)(kr_i8)b[192 + 8 * n + (l >> 4) + 2 * m];
    return kr_h2f(kr_ld_u16(b + 208)) * sc * (float)(q - 32);
}

#endif
