// Shared device helpers of the decode-step kernels in kernels/forward/ (plugins/cuda_forward).
// The build flattens kernels/decode/kr_decode_common.cuh, this header and one .cu into the
// embedded text (plugins/cuda_forward/meson.build, kr_decode_flatten), so NVRTC needs no
// include path; the #includes below only serve tools that compile the files from disk
// (tests/jit passes -I kernels -I kernels/forward).
#ifndef KR_GF_COMMON_CUH
#define KR_GF_COMMON_CUH

#ifndef KR_DECODE_COMMON_CUH
#include "decode/kr_decode_common.cuh"
#endif

// L2 prefetch request handed to a kernel of the step (by value, as a kernel parameter): up
// to 4 byte ranges [p[i], p[i] + n[i]) of weights the step reads next (n[i] <= 0: unused),
// each split into nparts equal shares. Part j of every range is requested by one thread
// (kr_gf_pf_issue(pf, j)); who issues part j is the kernel's choice: CTA first + j of a
// matvec (its tail), or warp j of a latency-bound kernel (before its PDL wait: weights are
// never written inside the step). A hint: it changes no result.
// Host mirror: kr__gf_pf in plugins/cuda_forward/gpu_forward_int.h (same order and sizes:
// 4 pointers, 4 int64, 4 int32 = 80 bytes, 8-byte aligned).
struct kr_gf_pf {
    const char *p[4];
    long long n[4];
    int first;  // first CTA that issues a part (matvec tails), ignored elsewhere
    int nparts; // shares per range; 0: no prefetch
    int early;  // matvec tails: issue before the PDL wait (right after the CTA's own first
                // weight loads) instead of after the CTA's last row
    int ahead;  // matvec (kr_gf_mv2t_*): CTA c also requests, before its PDL wait, the weights of
                // the rows CTA c + ahead will read (0: no); a later wave's rows stream into L2 while
                // this one waits
};

__device__ __forceinline__ void kr_gf_pf_issue(const kr_gf_pf &pf, int part)
{
    if (part < 0 || part >= pf.nparts)
        return;
#pragma unroll
    for (int i = 0; i < 4; i++)
        kr_l2_prefetch_part(pf.p[i], pf.n[i], part, pf.nparts);
}

#endif
