// y (n,) = a * x (n,) + y (n,), fp32, any n (including 0 and odd sizes).
//
// Example kernel owned by plugins/example. Compiled at run time by NVRTC
// (no host code here; no system headers needed). extern "C" keeps the entry
// symbol unmangled so the plugin can look it up by name.
//
// Launch: 1-D grid of 1-D blocks, any sizes; a grid-stride loop covers n, and
// 64-bit indices keep n >= 2^31 correct.
extern "C" __global__ void kr_vec_scale_add_f32(float *__restrict__ y,
                                                const float *__restrict__ x,
                                                float a,
                                                unsigned long long n)
{
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (; i < n; i += stride)
        y[i] = fmaf(a, x[i], y[i]);
}
