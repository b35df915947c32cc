// Prints cuRAND Philox4_32_10 raw words and uniforms for (seed, t): the
// reference for tests/sampling philox::matches_curand and docs/SAMPLING.md.
// Build: nvcc -O2 -arch=sm_90 -o curand_check curand_philox_check.cu (not part of
// the meson build; needs a GPU to run). Output: "seed t raw_hex uniform_hexfloat".
#include <cstdio>
#include <curand_kernel.h>
__global__ void k(const unsigned long long *seeds, const unsigned long long *ts, int n, unsigned *raw, float *u) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    curandStatePhilox4_32_10_t st;
    curand_init(seeds[i], 0, ts[i], &st);
    raw[i] = curand(&st);
    curand_init(seeds[i], 0, ts[i], &st);
    u[i] = curand_uniform(&st);
}
int main() {
    const unsigned long long S[] = {0ull, 1234ull, 0x0123456789abcdefull, 0xffffffffffffffffull};
    const unsigned long long T[] = {0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,1000,1ull<<33,(1ull<<34)+5};
    const int ns = 4, nt = sizeof(T)/sizeof(T[0]), n = ns*nt;
    unsigned long long hs[ns*nt], ht[ns*nt];
    for (int a = 0; a < ns; a++) for (int b = 0; b < nt; b++) { hs[a*nt+b] = S[a]; ht[a*nt+b] = T[b]; }
    unsigned long long *ds, *dt; unsigned *dr; float *du;
    cudaMalloc(&ds, sizeof hs); cudaMalloc(&dt, sizeof ht); cudaMalloc(&dr, n*4); cudaMalloc(&du, n*4);
    cudaMemcpy(ds, hs, sizeof hs, cudaMemcpyHostToDevice); cudaMemcpy(dt, ht, sizeof ht, cudaMemcpyHostToDevice);
    k<<<1, 128>>>(ds, dt, n, dr, du);
    unsigned hr[ns*nt]; float hu[ns*nt];
    cudaError_t e = cudaMemcpy(hr, dr, n*4, cudaMemcpyDeviceToHost); cudaMemcpy(hu, du, n*4, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) { printf("cuda error %s\n", cudaGetErrorString(e)); return 1; }
    for (int i = 0; i < n; i++) printf("%llu %llu %08x %a\n", hs[i], ht[i], hr[i], hu[i]);
    return 0;
}
