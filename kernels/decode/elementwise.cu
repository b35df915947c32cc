// Element-wise and row-wise fp32 decode ops, plus the embedding lookup.
#ifndef KR_DECODE_COMMON_CUH
#include "kr_decode_common.cuh"
#endif

// Softmax over each row: y[r,i] = exp(x[r,i] - max_j x[r,j]) / sum_j exp(x[r,j] - max).
// x, y: (rows, n) fp32 (y may equal x). Launch: block 256..1024 (multiple of 32), grid (rows).
extern "C" __global__ void kr_softmax_f32(const float *x, float *y, int n)
{
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
    __shared__ float sh[32];
    const float *xr = x + (kr_i64)blockIdx.x * n;
    float *yr = y + (kr_i64)blockIdx.x * n;
    float mx = kr_neg_inf();
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        mx = fmaxf(mx, xr[i]);
    mx = kr_block_max(mx, sh);
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        s += expf(xr[i] - mx);
    const float inv = 1.0f / kr_block_sum(s, sh);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        yr[i] = expf(xr[i] - mx) * inv;
}

// SwiGLU: y[i] = silu(g[i]) * u[i], silu(a) = a / (1 + exp(-a)); g, u, y: (n,) fp32.
// Launch: block 256, grid ceil(n / 256).
extern "C" __global__ void kr_swiglu_f32(const float *g, const float *u, float *y, int n)
{
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const float a = g[i];
        y[i] = a / (1.0f + expf(-a)) * u[i];
    }
}

// GELU, tanh approximation: y[i] = 0.5 x (1 + tanh(z)), z = sqrt(2/pi) (x + 0.044715 x^3); (n,) fp32.
// Evaluated as x / (1 + exp(-2z)) (the same function: 0.5 (1 + tanh z) = sigmoid(2z)),
// which keeps full relative precision for negative x where 1 + tanh(z) cancels.
// Launch: block 256, grid ceil(n / 256).
extern "C" __global__ void kr_gelu_f32(const float *x, float *y, int n)
{
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const float v = x[i];
        const float z = 0.7978845608028654f * (v + 0.044715f * v * v * v);
        y[i] = v / (1.0f + expf(-2.0f * z)); // expf overflow -> v / inf = -0, the limit
    }
}

// Residual add: y[i] = a[i] + b[i]; (n,) fp32, y may alias a or b.
// Launch: block 256, grid ceil(n / 256).
extern "C" __global__ void kr_add_f32(const float *a, const float *b, float *y, int n)
{
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = a[i] + b[i];
}

// Embedding lookup: out (n_embd,) fp32 = dequantized row tok = *token of the
// table (n_vocab, n_embd) in GGML block layout, rows row_stride bytes apart (token NULL: tok_imm).
// A token outside [0, n_vocab) yields NaN outputs. Launch: block 256, grid ceil(n_embd / 256).
#define KR_EMBED(NAME, DEQ)                                                                       \
    extern "C" __global__ void NAME(const kr_u8 *table, kr_i64 row_stride, int n_vocab,          \
                                    int n_embd, const int *token, int tok_imm, float *out)                    \
    {                                                                                             \
        KR_PDL_WAIT();                                                                            \
        KR_PDL_LAUNCH_DEPENDENTS();                                                               \
        const int i = blockIdx.x * blockDim.x + threadIdx.x;                                      \
        const int t = token ? *token : tok_imm;                                                                     \
        if (i >= n_embd)                                                                          \
            return;                                                                               \
        out[i] = (t < 0 || t >= n_vocab) ? kr_qnan() : DEQ(table + (kr_i64)t * row_stride, i);   \
    }
KR_EMBED(kr_embed_f32, kr_deq1_f32)
KR_EMBED(kr_embed_f16, kr_deq1_f16)
KR_EMBED(kr_embed_q4_0, kr_deq1_q4_0)
KR_EMBED(kr_embed_q4_1, kr_deq1_q4_1)
KR_EMBED(kr_embed_q8_0, kr_deq1_q8_0)
KR_EMBED(kr_embed_q4_k, kr_deq1_q4_k)
KR_EMBED(kr_embed_q6_k, kr_deq1_q6_k)

// Whole-matrix dequantization to fp16 (load-time conversion, kr_gpu_forward params.weights):
// dst (rows, cols) IEEE half bits, rows dst_stride bytes apart = fp16(DEQ(src row r, c)), the fp32
// value of the element rounded to nearest even; src in GGML block layout, rows src_stride bytes
// apart. Launch: block 256, grid (rows, ceil(cols / (256 * KR_DEQ_PER_THREAD))).
#define KR_DEQ_PER_THREAD 8
#define KR_DEQ_F16(NAME, DEQ)                                                                     \
    extern "C" __global__ void NAME(const kr_u8 *src, kr_i64 src_stride, kr_u8 *dst, kr_i64 dst_stride, \
                                    int cols)                                                     \
    {                                                                                             \
        KR_PDL_WAIT();                                                                            \
        KR_PDL_LAUNCH_DEPENDENTS();                                                               \
        const kr_u8 *row = src + (kr_i64)blockIdx.x * src_stride;                                 \
        kr_u16 *out = (kr_u16 *)(dst + (kr_i64)blockIdx.x * dst_stride);                          \
        const int c0 = blockIdx.y * (256 * KR_DEQ_PER_THREAD) + threadIdx.x;                       \
        _Pragma("unroll")                                                                         \
        for (int k = 0; k < KR_DEQ_PER_THREAD; k++) {                                             \
            const int c = c0 + 256 * k;                                                           \
            if (c < cols)                                                                         \
                out[c] = kr_f2h(DEQ(row, c));                                                     \
        }                                                                                         \
    }
KR_DEQ_F16(kr_deq_f16_f32, kr_deq1_f32)
KR_DEQ_F16(kr_deq_f16_f16, kr_deq1_f16)
KR_DEQ_F16(kr_deq_f16_q4_0, kr_deq1_q4_0)
KR_DEQ_F16(kr_deq_f16_q4_1, kr_deq1_q4_1)
KR_DEQ_F16(kr_deq_f16_q8_0, kr_deq1_q8_0)
KR_DEQ_F16(kr_deq_f16_q4_k, kr_deq1_q4_k)
KR_DEQ_F16(kr_deq_f16_q6_k, kr_deq1_q6_k)
