// Token sampling on the GPU (plugins/cuda_sampling, docs/SAMPLING.md "GPU").
//
// Math: the CPU sampler's (models/sampling/sampling.c), stage for stage:
//   cur = sanitize(logits) -> repetition / presence / frequency penalties over
//   the history -> logit bias -> (greedy: argmax, lowest id on ties)
//   -> top-k -> top-p over the top-k survivors (softmax at T = 1) -> min-p
//   -> weights exp((l - max) / T) over the survivors, walked in ascending id:
//   the first whose running sum exceeds u * total, u = cuRAND-compatible
//   Philox4x32-10 uniform of draw number *draws.
//
// One block of KR_GS_THREADS threads does everything (the vocabulary is read
// from L2 a few times; no grid-wide sync, no host round trip). The survivor
// set after top-k/top-p/min-p is always a prefix of the rank order
// (logit desc, id asc), so it is kept either
//   small: the prefix (<= KR_GS_CAP tokens) in shared memory, sorted, or
//   global: a cut (ck_key, ck_id): token i survives iff
//           key_i > ck_key || (key_i == ck_key && i <= ck_id),
// with key = order-preserving uint32 image of the logit. The top-k / top-p
// cut is found by radix selection on the keys (8-bit digits, histograms of
// counts or of fixed-point softmax mass), without sorting the vocabulary; as
// soon as the tokens at or above the current threshold fit KR_GS_CAP they are
// compacted into shared memory and sorted exactly (ties rank by id).
//
// Output: *out_token = id, or -1 when every logit is -inf/NaN. *draws is
// incremented when a random number was used (not for greedy, not on -1).

#define KR_GS_THREADS 1024
#define KR_GS_WARPS (KR_GS_THREADS / 32)
#define KR_GS_CAP 4096         // small-path capacity (power of two)
#define KR_GS_UNROLL 8         // vocabulary loops: loads in flight per thread
#define KR_GS_SORT_MAX 1024    // radix passes go on while more tokens than this are at/above the threshold
#define KR_GS_FULL 0xffffffffu
#define KR_GS_KEY_NEG_INF 0x007fffffu   // key(-inf); every finite logit has a larger key
#define KR_GS_FX_SCALE 17592186044416.0 // 2^44: fixed-point unit of softmax mass
#define KR_GS_INF __int_as_float(0x7f800000)
#define KR_GS_FLT_MAX 3.402823466e38f

typedef unsigned int kr_u32;
typedef unsigned long long kr_u64;

// ---- Philox4x32-10, cuRAND's mapping (see docs/SAMPLING.md) ----

__device__ float kr_gs_uniform(kr_u64 seed, kr_u64 t)
{
    kr_u64 blk = t >> 2;
    kr_u32 c0 = (kr_u32)blk, c1 = (kr_u32)(blk >> 32), c2 = 0, c3 = 0;
    kr_u32 k0 = (kr_u32)seed, k1 = (kr_u32)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        kr_u32 hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        kr_u32 hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        kr_u32 n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
    kr_u32 w = t % 4 == 0 ? c0 : t % 4 == 1 ? c1 : t % 4 == 2 ? c2 : c3;
    const float inv = 2.3283064e-10f; // 2^-32
    // x * 2^-32 + 2^-33 in float, no FMA contraction (as the CPU)
    return __fadd_rn(__fmul_rn(__uint2float_rn(w), inv), inv / 2.0f);
}

// ---- helpers ----

__device__ __forceinline__ kr_u32 kr_gs_key(float l)
{
    if (l == 0.0f)
        l = 0.0f; // -0 ties with +0 as on the CPU
    kr_u32 u = __float_as_uint(l);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// inverse of kr_gs_key
__device__ __forceinline__ float kr_gs_key_float(kr_u32 k)
{
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

__device__ __forceinline__ bool kr_gs_in_cut(kr_u32 k, int i, kr_u32 ck_key, int ck_id)
{
    return k > ck_key || (k == ck_key && i <= ck_id);
}

// a ranks before b: larger logit, then lower id
__device__ __forceinline__ bool kr_gs_before(float la, int ia, float lb, int ib)
{
    return la > lb || (la == lb && ia < ib);
}

struct kr_gs_shared {
    union {
        struct {
            float val[KR_GS_CAP]; // small path: logits (KR_GS_CAP,)
            int id[KR_GS_CAP];    // small path: ids (KR_GS_CAP,)
        };
        kr_u32 cnt[4096];         // radix: count per digit (up to 12-bit digits); dead once val/id fill
    };
    kr_u64 mass[256];            // radix: fixed-point mass per digit (8-bit digits)
    double red_d[KR_GS_WARPS];   // block reduction / scan scratch
    float red_f[KR_GS_WARPS];
    int red_i[KR_GS_WARPS];
    int red_j[KR_GS_WARPS];
    // results broadcast to the block
    int n_small;                 // entries in val/id
    int found;                   // scan: index found (or -1)
    kr_u32 r_digit;              // radix: chosen digit
    kr_u64 r_above_sel;          // radix: count/mass strictly above the chosen digit (this pass)
    kr_u64 r_above_cnt;          // radix: count strictly above the chosen digit (this pass)
    kr_u32 r_cnt_b;              // radix: count at the chosen digit
};

__device__ double kr_gs_block_sum_d(double v, kr_gs_shared *sh)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_down_sync(KR_GS_FULL, v, o);
    if (lane == 0)
        sh->red_d[warp] = v;
    __syncthreads();
    double r = 0.0;
    if (warp == 0) {
        r = sh->red_d[lane];
        for (int o = 16; o > 0; o >>= 1)
            r += __shfl_down_sync(KR_GS_FULL, r, o);
        if (lane == 0)
            sh->red_d[0] = r;
    }
    __syncthreads();
    r = sh->red_d[0];
    __syncthreads();
    return r;
}

// Inclusive scan of v over the block in thread order; *total gets the sum.
__device__ double kr_gs_block_scan_d(double v, double *total, kr_gs_shared *sh)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 1; o < 32; o <<= 1) {
        double n = __shfl_up_sync(KR_GS_FULL, v, o);
        if (lane >= o)
            v += n;
    }
    if (lane == 31)
        sh->red_d[warp] = v;
    __syncthreads();
    if (warp == 0) {
        double w = sh->red_d[lane];
        for (int o = 1; o < 32; o <<= 1) {
            double n = __shfl_up_sync(KR_GS_FULL, w, o);
            if (lane >= o)
                w += n;
        }
        sh->red_d[lane] = w;
    }
    __syncthreads();
    if (warp > 0)
        v += sh->red_d[warp - 1];
    *total = sh->red_d[KR_GS_WARPS - 1];
    __syncthreads();
    return v;
}

// Bitonic sort of val/id[0..n) (n <= KR_GS_CAP); by rank, or by id when by_id.
__device__ void kr_gs_sort(kr_gs_shared *sh, int n, bool by_id)
{
    int p = 2;
    while (p < n)
        p <<= 1;
    for (int i = n + threadIdx.x; i < p; i += KR_GS_THREADS) {
        sh->val[i] = -KR_GS_INF;
        sh->id[i] = 0x7fffffff;
    }
    __syncthreads();
    for (int k = 2; k <= p; k <<= 1) {
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int t = threadIdx.x; t < p; t += KR_GS_THREADS) {
                int u = t ^ j;
                if (u > t) {
                    float lt = sh->val[t], lu = sh->val[u];
                    int it = sh->id[t], iu = sh->id[u];
                    bool u_first = by_id ? iu < it : kr_gs_before(lu, iu, lt, it);
                    bool t_first = by_id ? it < iu : kr_gs_before(lt, it, lu, iu);
                    bool swap = (t & k) == 0 ? u_first : t_first;
                    if (swap) {
                        sh->val[t] = lu;
                        sh->val[u] = lt;
                        sh->id[t] = iu;
                        sh->id[u] = it;
                    }
                }
            }
            __syncthreads();
        }
    }
}

// Warp 0 walks val[0..n) in order with weights exp((l - maxl) * inv_t):
// returns (to all threads) the first index whose running sum is >= need
// (strict: > need), or -1; *total_out (optional) gets the full sum.
__device__ int kr_gs_walk(kr_gs_shared *sh, int n, float maxl, double inv_t, double need, bool strict,
                          double *total_out)
{
    if (threadIdx.x < 32) {
        int lane = threadIdx.x;
        double base = 0.0;
        int hit_at = -1;
        for (int c = 0; c < n; c += 32) {
            int i = c + lane;
            double w = i < n ? exp(((double)sh->val[i] - (double)maxl) * inv_t) : 0.0;
            for (int o = 1; o < 32; o <<= 1) {
                double m = __shfl_up_sync(KR_GS_FULL, w, o);
                if (lane >= o)
                    w += m;
            }
            double cum = base + w;
            bool hit = i < n && (strict ? cum > need : cum >= need);
            kr_u32 b = __ballot_sync(KR_GS_FULL, hit);
            if (b && hit_at < 0 && !total_out) {
                hit_at = c + __ffs(b) - 1;
                break;
            }
            if (b && hit_at < 0)
                hit_at = c + __ffs(b) - 1;
            base = __shfl_sync(KR_GS_FULL, cum, 31);
        }
        if (lane == 0) {
            sh->found = hit_at;
            sh->red_d[0] = base;
        }
    }
    __syncthreads();
    int r = sh->found;
    if (total_out)
        *total_out = sh->red_d[0];
    __syncthreads();
    return r;
}

// Compact every token of cur in the cut with key >= thr into val/id.
__device__ void kr_gs_compact(kr_gs_shared *sh, const float *cur, int n_vocab, kr_u32 thr, kr_u32 ck_key,
                              int ck_id)
{
    if (threadIdx.x == 0)
        sh->n_small = 0;
    __syncthreads();
    for (int base = 0; base < n_vocab; base += KR_GS_THREADS * KR_GS_UNROLL) {
        float v[KR_GS_UNROLL];
#pragma unroll
        for (int u = 0; u < KR_GS_UNROLL; u++) {
            int i = base + u * KR_GS_THREADS + (int)threadIdx.x;
            v[u] = i < n_vocab ? cur[i] : -KR_GS_INF;
        }
#pragma unroll
        for (int u = 0; u < KR_GS_UNROLL; u++) {
            int i = base + u * KR_GS_THREADS + (int)threadIdx.x;
            kr_u32 k = kr_gs_key(v[u]);
            if (i < n_vocab && k >= thr && kr_gs_in_cut(k, i, ck_key, ck_id)) {
                int slot = atomicAdd(&sh->n_small, 1);
                if (slot < KR_GS_CAP) {
                    sh->val[slot] = v[u];
                    sh->id[slot] = i;
                }
            }
        }
    }
    __syncthreads();
}

// Count one token into the digit histogram (all lanes of the warp call it;
// dig = 0xffffffff: not counted). Lanes with the same digit add once.
__device__ __forceinline__ void kr_gs_hist_add(kr_gs_shared *sh, kr_u32 dig)
{
    kr_u32 peers = __match_any_sync(KR_GS_FULL, dig);
    if (dig != 0xffffffffu && (threadIdx.x & 31) == __ffs(peers) - 1)
        atomicAdd(&sh->cnt[dig], (kr_u32)__popc(peers));
}

// Add the fixed-point weight w (<= 2^44 + 1) of each lane to mass[dig] and,
// when cnt is not NULL, count it in cnt[dig] (all lanes of the warp call it;
// dig = 0xffffffff: not added): one atomic per digit and warp instead of one
// per token (the top digits of bell-shaped logits fall into a handful of bins,
// where per-token 64-bit atomics serialise). Exact: integer sums, 22-bit limbs
// so 32 lanes cannot overflow 32 bits.
__device__ __forceinline__ void kr_gs_warp_add_mass(kr_u32 *cnt, kr_u64 *mass, kr_u32 dig, kr_u64 w)
{
    kr_u32 peers = __match_any_sync(KR_GS_FULL, dig);
    kr_u32 lo = __reduce_add_sync(peers, (kr_u32)(w & 0x3fffffu));
    kr_u32 hi = __reduce_add_sync(peers, (kr_u32)(w >> 22));
    if (dig != 0xffffffffu && (threadIdx.x & 31) == __ffs(peers) - 1) {
        if (cnt)
            atomicAdd(&cnt[dig], (kr_u32)__popc(peers));
        atomicAdd(&mass[dig], ((kr_u64)hi << 22) + (kr_u64)lo);
    }
}

// Digit schedule: counts use a 12-bit first digit (sign, exponent, 3 mantissa
// bits: usually enough to isolate a top-k), mass histograms 8-bit digits
// (their 64-bit bins must fit next to the union).
#define KR_GS_CNT_FIRST_SHIFT 20

// Radix selection inside the cut (ck_key, ck_id): the largest key v such that
// sel(keys >= v) >= target, where sel counts tokens (mass = false) or sums
// their fixed-point weights round(exp(l - maxl) * 2^44) (mass = true).
// first_done (count mode): cnt[] already holds the first pass's histogram.
// Returns true when it compacted (tokens in the cut with key >= threshold,
// at most KR_GS_CAP, now in val/id unsorted); else *v, *above_sel (sel of
// keys > v), *cnt_eq (tokens with key == v).
__device__ bool kr_gs_radix(kr_gs_shared *sh, const float *cur, int n_vocab, kr_u32 ck_key, int ck_id,
                            bool mass, bool first_done, kr_u64 target, float maxl, kr_u32 *v, kr_u64 *above_sel,
                            kr_u32 *cnt_eq)
{
    int lane = threadIdx.x & 31;
    kr_u32 prefix = 0;
    kr_u64 above_s = 0, above_c = 0;
    kr_u32 cnt_b = 0;
    for (int pass = 0; pass < 4; pass++) {
        // digits: mass 8/8/8/8 bits; counts 12/8/8/4 (first = KR_GS_CNT_FIRST_SHIFT)
        const int bits = mass ? 8 : pass == 0 ? 12 : pass == 3 ? 4 : 8;
        const int shift = mass ? 24 - 8 * pass : pass == 0 ? KR_GS_CNT_FIRST_SHIFT : pass == 1 ? 12 : pass == 2 ? 4 : 0;
        const int nb = 1 << bits;
        const kr_u32 dmask = (kr_u32)nb - 1u;
        const kr_u32 hi_mask = pass == 0 ? 0u : (0xffffffffu << (shift + bits));
        if (!(pass == 0 && first_done)) {
            for (int b = threadIdx.x; b < nb; b += KR_GS_THREADS) {
                sh->cnt[b] = 0;
                if (mass)
                    sh->mass[b] = 0;
            }
            __syncthreads();
            for (int base = 0; base < n_vocab; base += KR_GS_THREADS * KR_GS_UNROLL) {
                float x[KR_GS_UNROLL];
#pragma unroll
                for (int u = 0; u < KR_GS_UNROLL; u++) {
                    int i = base + u * KR_GS_THREADS + (int)threadIdx.x;
                    x[u] = i < n_vocab ? cur[i] : -KR_GS_INF;
                }
#pragma unroll
                for (int u = 0; u < KR_GS_UNROLL; u++) {
                    int i = base + u * KR_GS_THREADS + (int)threadIdx.x;
                    kr_u32 dig = 0xffffffffu;
                    kr_u64 w = 0;
                    kr_u32 k = kr_gs_key(x[u]);
                    if (i < n_vocab && kr_gs_in_cut(k, i, ck_key, ck_id) && (k & hi_mask) == (prefix & hi_mask)) {
                        dig = (k >> shift) & dmask;
                        if (mass)
                            w = (kr_u64)(exp((double)x[u] - (double)maxl) * KR_GS_FX_SCALE + 0.5);
                    }
                    if (mass)
                        kr_gs_warp_add_mass(sh->cnt, sh->mass, dig, w);
                    else
                        kr_gs_hist_add(sh, dig);
                }
            }
        }
        __syncthreads();
        if (threadIdx.x < 32) {
            // lane covers digits nb-1 - (per*lane + j), j = 0..per-1 (descending)
            const int per = (nb + 31) / 32;
            kr_u64 ls = 0, lc = 0;
            for (int j = 0; j < per; j++) {
                int b = nb - 1 - (per * lane + j);
                if (b >= 0) {
                    ls += mass ? sh->mass[b] : (kr_u64)sh->cnt[b];
                    lc += sh->cnt[b];
                }
            }
            kr_u64 ss = ls, sc = lc;
            for (int o = 1; o < 32; o <<= 1) {
                kr_u64 a = __shfl_up_sync(KR_GS_FULL, ss, o), c = __shfl_up_sync(KR_GS_FULL, sc, o);
                if (lane >= o) {
                    ss += a;
                    sc += c;
                }
            }
            kr_u32 hit = __ballot_sync(KR_GS_FULL, lc > 0 && above_s + ss >= target);
            kr_u32 nonempty = __ballot_sync(KR_GS_FULL, lc > 0);
            // no lane reaches the target (mass rounding): take everything, i.e.
            // the lowest non-empty digit
            int L = hit ? __ffs(hit) - 1 : nonempty ? 31 - __clz(nonempty) : 0;
            if (lane == L) {
                kr_u64 rs = above_s + ss - ls, rc = above_c + sc - lc;
                int pick = -1, last = -1;
                for (int j = 0; j < per; j++) {
                    int b = nb - 1 - (per * lane + j);
                    if (b < 0)
                        break;
                    kr_u64 sb = mass ? sh->mass[b] : (kr_u64)sh->cnt[b];
                    if (sh->cnt[b] > 0)
                        last = b;
                    if (hit && sh->cnt[b] > 0 && rs + sb >= target) {
                        pick = b;
                        break;
                    }
                    rs += sb;
                    rc += sh->cnt[b];
                }
                if (pick < 0) { // fallback: lowest non-empty digit; recompute what is above it
                    pick = last < 0 ? 0 : last;
                    rs = above_s + ss - ls;
                    rc = above_c + sc - lc;
                    for (int b = nb - 1 - per * lane; b > pick; b--) {
                        rs += mass ? sh->mass[b] : (kr_u64)sh->cnt[b];
                        rc += sh->cnt[b];
                    }
                }
                sh->r_digit = (kr_u32)pick;
                sh->r_above_sel = rs;
                sh->r_above_cnt = rc;
                sh->r_cnt_b = sh->cnt[pick];
            }
        }
        __syncthreads();
        prefix |= sh->r_digit << shift;
        above_s = sh->r_above_sel;
        above_c = sh->r_above_cnt;
        cnt_b = sh->r_cnt_b;
        __syncthreads();
        // compact once the tokens at or above the threshold fit; prefer another
        // pass over sorting more than KR_GS_SORT_MAX of them
        if (above_c + cnt_b <= KR_GS_CAP && (above_c + cnt_b <= KR_GS_SORT_MAX || shift == 0)) {
            kr_gs_compact(sh, cur, n_vocab, prefix, ck_key, ck_id);
            return true;
        }
    }
    *v = prefix;
    *above_sel = above_s;
    *cnt_eq = cnt_b;
    return false;
}

// Id of the j-th (1-based) token in ascending id order with key == v inside the cut.
__device__ int kr_gs_nth_tied(kr_gs_shared *sh, const float *cur, int n_vocab, kr_u32 v, kr_u64 j,
                              kr_u32 ck_key, int ck_id)
{
    double basec = 0.0;
    int res = -1;
    for (int base = 0; base < n_vocab; base += KR_GS_THREADS) {
        int i = base + threadIdx.x;
        bool f = false;
        if (i < n_vocab) {
            kr_u32 k = kr_gs_key(cur[i]);
            f = k == v && kr_gs_in_cut(k, i, ck_key, ck_id);
        }
        if (threadIdx.x == 0)
            sh->found = -1;
        double tot;
        double inc = kr_gs_block_scan_d(f ? 1.0 : 0.0, &tot, sh);
        if (f && basec + inc == (double)j)
            sh->found = i;
        __syncthreads();
        res = sh->found;
        __syncthreads();
        if (res >= 0)
            break;
        basec += tot;
    }
    return res;
}

extern "C" __global__ void __launch_bounds__(KR_GS_THREADS)
kr_gs_sample(const float *logits,       // (n_vocab,) device
             float *cur,                // (n_vocab,) scratch: adjusted logits
             int n_vocab,
             const int *hist,           // (hist_cap,) ring of accepted tokens
             const int *hist_meta,      // (2,) valid entries, next write position
             kr_u64 *draws,             // (1,) random draws so far
             const int *bias_tok,       // (n_bias,)
             const float *bias_val,     // (n_bias,)
             int n_bias,
             int greedy,                // greedy flag or temperature <= 0
             int top_k, float top_p, float min_p, float temperature,
             float repeat_penalty, float presence_penalty, float frequency_penalty,
             kr_u64 seed,
             int *out_token,            // (1,) chosen id or -1
             const int *cand_id,        // (n_vocab,) ids of the entries when `logits` holds
                                        // kr_gs_prepass / kr_gs_pp_select candidates (ascending id), else NULL
             const int *n_dev,          // (1,) entries in logits (replaces n_vocab), or NULL
             const double *ext_tot)     // (2,) top-p totals over the whole vocabulary (weight, fixed-point
                                        // mass) when the candidates are kr_gs_pp_select's, else NULL
{
    if (n_dev)
        n_vocab = *n_dev;
    __shared__ kr_gs_shared sh;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

    // 1. sanitize (and, when nothing adjusts the logits, find the max on the way)
    int hist_n = hist_meta[0];
    bool pen = hist_n > 0 && (repeat_penalty != 1.0f || presence_penalty != 0.0f || frequency_penalty != 0.0f);
    bool adj = pen || n_bias > 0;
    float bm = -KR_GS_INF;
    double sum = 0.0; // of the finite logits: their mean scales top-k's prefilter
    int bi = 0x7fffffff, nf = 0;
    for (int base = 0; base < n_vocab; base += KR_GS_THREADS * KR_GS_UNROLL) {
        float v[KR_GS_UNROLL];
#pragma unroll
        for (int u = 0; u < KR_GS_UNROLL; u++) {
            int i = base + u * KR_GS_THREADS + tid;
            v[u] = i < n_vocab ? logits[i] : -KR_GS_INF;
        }
#pragma unroll
        for (int u = 0; u < KR_GS_UNROLL; u++) {
            int i = base + u * KR_GS_THREADS + tid;
            float l = v[u];
            l = l != l ? -KR_GS_INF : l == KR_GS_INF ? KR_GS_FLT_MAX : l;
            if (i < n_vocab) {
                cur[i] = l;
                if (!adj) {
                    if (l > bm || (l == bm && i < bi)) {
                        bm = l;
                        bi = i;
                    }
                    if (l != -KR_GS_INF) {
                        nf++;
                        sum += (double)l;
                    }
                }
            }
        }
    }
    __syncthreads();
    // 2. penalties: one thread per first occurrence of a token in the window
    if (pen) {
        for (int j = tid; j < hist_n; j += KR_GS_THREADS) {
            int t = hist[j];
            bool first = true;
            int c = 0;
            for (int q = 0; q < hist_n; q++) {
                if (hist[q] == t) {
                    c++;
                    if (q < j)
                        first = false;
                }
            }
            if (first && t >= 0 && t < n_vocab) {
                float l = cur[t];
                l = l <= 0.0f ? __fmul_rn(l, repeat_penalty) : __fdiv_rn(l, repeat_penalty);
                l = __fsub_rn(l, __fadd_rn(__fmul_rn((float)c, frequency_penalty), presence_penalty));
                cur[t] = l;
            }
        }
        __syncthreads();
    }
    // 3. logit bias, in entry order (float additions as on the CPU)
    if (tid == 0)
        for (int b = 0; b < n_bias; b++)
            cur[bias_tok[b]] = __fadd_rn(cur[bias_tok[b]], bias_val[b]);
    __syncthreads();
    if (pen)
        for (int j = tid; j < hist_n; j += KR_GS_THREADS)
            if (hist[j] >= 0 && hist[j] < n_vocab && cur[hist[j]] == KR_GS_INF)
                cur[hist[j]] = KR_GS_FLT_MAX;
    if (tid == 0)
        for (int b = 0; b < n_bias; b++)
            if (cur[bias_tok[b]] == KR_GS_INF)
                cur[bias_tok[b]] = KR_GS_FLT_MAX;
    __syncthreads();

    // max (lowest id on ties) and finite count
    for (int i = tid; adj && i < n_vocab; i += KR_GS_THREADS) {
        float l = cur[i];
        if (l > bm || (l == bm && i < bi)) {
            bm = l;
            bi = i;
        }
        if (l != -KR_GS_INF) {
            nf++;
            sum += (double)l;
        }
    }
    sum = kr_gs_block_sum_d(sum, &sh);
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_down_sync(KR_GS_FULL, bm, o);
        int i2 = __shfl_down_sync(KR_GS_FULL, bi, o);
        nf += __shfl_down_sync(KR_GS_FULL, nf, o);
        if (m2 > bm || (m2 == bm && i2 < bi)) {
            bm = m2;
            bi = i2;
        }
    }
    if (lane == 0) {
        sh.red_f[warp] = bm;
        sh.red_i[warp] = bi;
        sh.red_j[warp] = nf;
    }
    __syncthreads();
    if (warp == 0) {
        bm = sh.red_f[lane];
        bi = sh.red_i[lane];
        nf = sh.red_j[lane];
        for (int o = 16; o > 0; o >>= 1) {
            float m2 = __shfl_down_sync(KR_GS_FULL, bm, o);
            int i2 = __shfl_down_sync(KR_GS_FULL, bi, o);
            nf += __shfl_down_sync(KR_GS_FULL, nf, o);
            if (m2 > bm || (m2 == bm && i2 < bi)) {
                bm = m2;
                bi = i2;
            }
        }
        if (lane == 0) {
            sh.red_f[0] = bm;
            sh.red_i[0] = bi;
            sh.red_j[0] = nf;
        }
    }
    __syncthreads();
    const float maxl = sh.red_f[0];
    const int argmax = sh.red_i[0];
    const int n_fin = sh.red_j[0];
    __syncthreads();
    if (maxl == -KR_GS_INF) {
        if (tid == 0)
            *out_token = -1;
        return;
    }
    if (greedy) {
        if (tid == 0)
            *out_token = cand_id ? cand_id[argmax] : argmax;
        return;
    }

    bool small = false;
    int n_s = 0;                          // small: survivors val/id[0..n_s), rank order
    kr_u32 ck_key = KR_GS_KEY_NEG_INF;    // global: the cut
    int ck_id = -1;
    int n_surv = n_fin;

    // 4. top-k
    if (top_k > 0 && top_k < n_fin) {
        kr_u32 v, ceq;
        kr_u64 above;
        // Prefilter: count the tokens at or above 8 thresholds M - d_j,
        // d_j = (M - mean) * 2^(j-6) (registers only, no atomics); the
        // highest threshold with >= K tokens, if it holds <= KR_GS_SORT_MAX,
        // gives the candidates directly. Else the radix selection.
        const double spread = (double)maxl - sum / (double)n_fin;
        bool pre = false;
        if (spread > 0.0) {
            float thr[8];
            int c[8];
#pragma unroll
            for (int j = 0; j < 8; j++) {
                thr[j] = (float)((double)maxl - spread * (double)(1 << j) / 64.0);
                c[j] = 0;
            }
            for (int base = 0; base < n_vocab; base += KR_GS_THREADS * 4) {
                float x[4];
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    int i = base + u * KR_GS_THREADS + tid;
                    x[u] = i < n_vocab ? cur[i] : -KR_GS_INF;
                }
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    if (x[u] >= thr[7] && x[u] != -KR_GS_INF) {
#pragma unroll
                        for (int j = 0; j < 8; j++)
                            c[j] += x[u] >= thr[j];
                    }
                }
            }
            if (tid < 8)
                sh.red_i[tid] = 0;
            __syncthreads();
#pragma unroll
            for (int j = 0; j < 8; j++) {
                int w = c[j];
                for (int o = 16; o > 0; o >>= 1)
                    w += __shfl_down_sync(KR_GS_FULL, w, o);
                if (lane == 0)
                    atomicAdd(&sh.red_i[j], w);
            }
            __syncthreads();
            int jp = -1, cp = 0;
            for (int j = 0; j < 8; j++) {
                if (sh.red_i[j] >= top_k) {
                    jp = j;
                    cp = sh.red_i[j];
                    break;
                }
            }
            __syncthreads();
            if (jp >= 0 && cp <= KR_GS_SORT_MAX) {
                kr_gs_compact(&sh, cur, n_vocab, kr_gs_key(thr[jp]), ck_key, ck_id);
                pre = true;
            }
        }
        if (pre || kr_gs_radix(&sh, cur, n_vocab, ck_key, ck_id, false, false, (kr_u64)top_k, maxl, &v, &above, &ceq)) {
            kr_gs_sort(&sh, sh.n_small, false);
            small = true;
            n_s = top_k;
        } else {
            int id = kr_gs_nth_tied(&sh, cur, n_vocab, v, (kr_u64)top_k - above, ck_key, ck_id);
            ck_key = v;
            ck_id = id;
        }
        n_surv = top_k;
    }
    // 5. top-p over the survivors at temperature 1
    if (top_p < 1.0f && n_surv > 1) {
        if (small) {
            double total;
            kr_gs_walk(&sh, n_s, maxl, 1.0, 0.0, true, &total);
            int m = kr_gs_walk(&sh, n_s, maxl, 1.0, (double)top_p * total, false, NULL);
            n_s = m >= 0 ? m + 1 : n_s;
        } else {
            double td = 0.0, tf = 0.0;
            for (int i = tid; !ext_tot && i < n_vocab; i += KR_GS_THREADS) {
                float l = cur[i];
                if (kr_gs_in_cut(kr_gs_key(l), i, ck_key, ck_id)) {
                    double w = exp((double)l - (double)maxl);
                    td += w;
                    tf += (double)(kr_u64)(w * KR_GS_FX_SCALE + 0.5);
                }
            }
            td = kr_gs_block_sum_d(td, &sh);
            tf = kr_gs_block_sum_d(tf, &sh); // exact: integers < 2^53 per partial sum
            if (ext_tot) { // the candidates hold the survivors, not all the mass
                td = ext_tot[0];
                tf = ext_tot[1];
            }
            double need = (double)top_p * td;
            kr_u64 target = (kr_u64)ceil((double)top_p * tf);
            if (target == 0)
                target = 1;
            kr_u32 v, ceq;
            kr_u64 above;
            if (kr_gs_radix(&sh, cur, n_vocab, ck_key, ck_id, true, false, target, maxl, &v, &above, &ceq)) {
                int n = sh.n_small;
                kr_gs_sort(&sh, n, false);
                int m = kr_gs_walk(&sh, n, maxl, 1.0, need, false, NULL);
                n_s = m >= 0 ? m + 1 : n;
                small = true;
            } else {
                // tokens with key v weigh the same; take as many (lowest ids first) as reach the target
                float lv = kr_gs_key_float(v);
                kr_u64 w = (kr_u64)(exp((double)lv - (double)maxl) * KR_GS_FX_SCALE + 0.5);
                kr_u64 rem = target > above ? target - above : 1;
                kr_u64 j = w ? (rem + w - 1) / w : (kr_u64)ceq;
                if (j < 1)
                    j = 1;
                if (j > ceq)
                    j = ceq;
                int id = kr_gs_nth_tied(&sh, cur, n_vocab, v, j, ck_key, ck_id);
                ck_key = v;
                ck_id = id;
            }
        }
    }
    // 6. min-p: l >= max + ln(min_p)
    double thr = min_p > 0.0f ? (double)maxl + log((double)min_p) : -KR_GS_INF;
    // 7-8. temperature and the draw, ascending id
    double inv_t = 1.0 / (double)temperature;
    float u = kr_gs_uniform(seed, *draws);
    int pick;
    if (small) {
        if (min_p > 0.0f) {
            if (tid == 0) {
                int w = 0;
                for (int i = 0; i < n_s; i++) {
                    if ((double)sh.val[i] >= thr) {
                        sh.val[w] = sh.val[i];
                        sh.id[w] = sh.id[i];
                        w++;
                    }
                }
                sh.n_small = w;
            }
            __syncthreads();
            n_s = sh.n_small;
            __syncthreads();
        }
        kr_gs_sort(&sh, n_s, true);
        double total;
        kr_gs_walk(&sh, n_s, maxl, inv_t, 0.0, true, &total);
        int m = kr_gs_walk(&sh, n_s, maxl, inv_t, (double)u * total, true, NULL);
        pick = sh.id[m >= 0 ? m : n_s - 1];
    } else {
        double tot = 0.0;
        int last = -1;
        for (int i = tid; i < n_vocab; i += KR_GS_THREADS) {
            float l = cur[i];
            if (kr_gs_in_cut(kr_gs_key(l), i, ck_key, ck_id) && (double)l >= thr) {
                tot += exp(((double)l - (double)maxl) * inv_t);
                last = i;
            }
        }
        tot = kr_gs_block_sum_d(tot, &sh);
        for (int o = 16; o > 0; o >>= 1)
            last = max(last, __shfl_down_sync(KR_GS_FULL, last, o));
        if (lane == 0)
            sh.red_i[warp] = last;
        __syncthreads();
        if (tid == 0) {
            int m = -1;
            for (int w = 0; w < KR_GS_WARPS; w++)
                m = max(m, sh.red_i[w]);
            sh.red_i[0] = m;
        }
        __syncthreads();
        last = sh.red_i[0];
        __syncthreads();
        // first running sum above the target, in id order: each thread takes
        // KR_GS_UNROLL consecutive ids per step, a block scan over the threads
        double target = (double)u * tot, basec = 0.0;
        pick = -1;
        for (int base = 0; base < n_vocab; base += KR_GS_THREADS * KR_GS_UNROLL) {
            double w[KR_GS_UNROLL], tsum = 0.0;
#pragma unroll
            for (int q = 0; q < KR_GS_UNROLL; q++) {
                int i = base + tid * KR_GS_UNROLL + q;
                w[q] = -1.0; // not a survivor
                if (i < n_vocab) {
                    float l = cur[i];
                    if (kr_gs_in_cut(kr_gs_key(l), i, ck_key, ck_id) && (double)l >= thr) {
                        w[q] = exp(((double)l - (double)maxl) * inv_t);
                        tsum += w[q];
                    }
                }
            }
            if (tid == 0)
                sh.found = 0x7fffffff;
            double chunk;
            double run = basec + kr_gs_block_scan_d(tsum, &chunk, &sh) - tsum;
            if (run + tsum > target) {
#pragma unroll
                for (int q = 0; q < KR_GS_UNROLL; q++) {
                    if (w[q] >= 0.0) {
                        run += w[q];
                        if (run > target) {
                            atomicMin(&sh.found, base + tid * KR_GS_UNROLL + q);
                            break;
                        }
                    }
                }
            }
            __syncthreads();
            int f = sh.found;
            __syncthreads();
            if (f != 0x7fffffff) {
                pick = f;
                break;
            }
            basec += chunk;
        }
        if (pick < 0)
            pick = last;
    }
    if (tid == 0) {
        *out_token = cand_id ? cand_id[pick] : pick;
        *draws += 1;
    }
}

// ---- multi-block candidate pre-pass (top-k <= KR_GSP_KMAX, greedy) ----
//
// Block b owns ids [b * KR_GSP_CHUNK, (b + 1) * KR_GSP_CHUNK). It applies the
// sample kernel's steps 1-3 (sanitize, penalties, logit bias and their +inf
// fixups) to its chunk and writes its k best entries in the rank order
// (adjusted logit desc, id asc) to cand_val/cand_id[b*k .. b*k + k), in
// ascending id order. Every member of the global top-k is the top-k of its
// own chunk, so kr_gs_sample over the b*k candidates (penalties and bias off,
// cand_id mapping the result back) picks what it would pick over the whole
// vocabulary: the survivors of top-k, and so of top-p / min-p and the draw,
// are the same tokens in the same id order. Chunks shorter than KR_GSP_CHUNK
// are padded with -inf entries (never finite, so never survivors).

#define KR_GSP_THREADS 256
#define KR_GSP_PER 4                                  // entries per thread, consecutive ids
#define KR_GSP_CHUNK (KR_GSP_THREADS * KR_GSP_PER)    // 1024
#define KR_GSP_KMAX 256

// Exclusive prefix sum of v over the block's threads in thread order (n_warps
// warps; warp_tot: (n_warps,) shared scratch); *total = the block's sum.
__device__ __forceinline__ int kr_gsp_block_excl_scan(int v, int *warp_tot, int n_warps, int *total)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int inc = v;
    for (int o = 1; o < 32; o <<= 1) {
        int y = __shfl_up_sync(KR_GS_FULL, inc, o);
        if (lane >= o)
            inc += y;
    }
    if (lane == 31)
        warp_tot[warp] = inc;
    __syncthreads();
    int before = 0, all = 0;
    for (int w = 0; w < n_warps; w++) {
        int t = warp_tot[w];
        before += w < warp ? t : 0;
        all += t;
    }
    __syncthreads();
    *total = all;
    return before + inc - v;
}

// Steps 1-3 of kr_gs_sample (sanitize, penalties, bias, +inf fixups) for the
// chunk [base, base + len) into v (KR_GSP_CHUNK,), padded with -inf. Ends
// with a barrier.
__device__ void kr_gsp_adjust(float *v, int base, int len, const float *logits, const int *hist,
                              const int *hist_meta, const int *bias_tok, const float *bias_val, int n_bias,
                              float repeat_penalty, float presence_penalty, float frequency_penalty)
{
    const int tid = threadIdx.x;
    // 1. sanitize (as kr_gs_sample)
#pragma unroll
    for (int u = 0; u < KR_GSP_PER; u++) {
        int j = tid * KR_GSP_PER + u;
        float l = j < len ? logits[base + j] : -KR_GS_INF;
        v[j] = l != l ? -KR_GS_INF : l == KR_GS_INF ? KR_GS_FLT_MAX : l;
    }
    __syncthreads();
    // 2. penalties of the history tokens in this chunk (first occurrence applies)
    int hist_n = hist_meta[0];
    bool pen = hist_n > 0 && (repeat_penalty != 1.0f || presence_penalty != 0.0f || frequency_penalty != 0.0f);
    if (pen) {
        for (int j = tid; j < hist_n; j += KR_GSP_THREADS) {
            int t = hist[j];
            if (t < base || t >= base + len)
                continue;
            bool first = true;
            int c = 0;
            for (int q = 0; q < hist_n; q++) {
                if (hist[q] == t) {
                    c++;
                    if (q < j)
                        first = false;
                }
            }
            if (first) {
                float l = v[t - base];
                l = l <= 0.0f ? __fmul_rn(l, repeat_penalty) : __fdiv_rn(l, repeat_penalty);
                l = __fsub_rn(l, __fadd_rn(__fmul_rn((float)c, frequency_penalty), presence_penalty));
                v[t - base] = l;
            }
        }
        __syncthreads();
    }
    // 3. logit bias in entry order, then the +inf fixups
    if (tid == 0)
        for (int b = 0; b < n_bias; b++)
            if (bias_tok[b] >= base && bias_tok[b] < base + len)
                v[bias_tok[b] - base] = __fadd_rn(v[bias_tok[b] - base], bias_val[b]);
    __syncthreads();
    if (pen)
        for (int j = tid; j < hist_n; j += KR_GSP_THREADS)
            if (hist[j] >= base && hist[j] < base + len && v[hist[j] - base] == KR_GS_INF)
                v[hist[j] - base] = KR_GS_FLT_MAX;
    if (tid == 0)
        for (int b = 0; b < n_bias; b++)
            if (bias_tok[b] >= base && bias_tok[b] < base + len && v[bias_tok[b] - base] == KR_GS_INF)
                v[bias_tok[b] - base] = KR_GS_FLT_MAX;
    __syncthreads();
}

extern "C" __global__ void __launch_bounds__(KR_GSP_THREADS)
kr_gs_prepass(const float *logits,      // (n_vocab,) device
              int n_vocab,
              const int *hist,          // (hist_cap,) ring of accepted tokens
              const int *hist_meta,     // (2,) valid entries, next write position
              const int *bias_tok,      // (n_bias,)
              const float *bias_val,    // (n_bias,)
              int n_bias,
              float repeat_penalty, float presence_penalty, float frequency_penalty,
              int k,                    // candidates per block, 1 <= k <= KR_GSP_KMAX
              float *cand_val,          // (gridDim.x * k,)
              int *cand_id)             // (gridDim.x * k,)
{
    __shared__ float v[KR_GSP_CHUNK];
    __shared__ kr_u32 hist_cnt[256];
    __shared__ int warp_tot[KR_GSP_THREADS / 32];
    __shared__ kr_u32 s_prefix;
    __shared__ int s_rem;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int base = blockIdx.x * KR_GSP_CHUNK;
    const int len = min(KR_GSP_CHUNK, n_vocab - base);

    kr_gsp_adjust(v, base, len, logits, hist, hist_meta, bias_tok, bias_val, n_bias, repeat_penalty,
                  presence_penalty, frequency_penalty);

    // 4. radix selection of the k-th largest key (8-bit digits, most significant first)
    kr_u32 key[KR_GSP_PER];
#pragma unroll
    for (int u = 0; u < KR_GSP_PER; u++)
        key[u] = kr_gs_key(v[tid * KR_GSP_PER + u]);
    if (tid == 0) {
        s_prefix = 0;
        s_rem = k;
    }
    for (int shift = 24; shift >= 0; shift -= 8) {
        const kr_u32 hi_mask = shift == 24 ? 0u : ~0u << (shift + 8);
        hist_cnt[tid] = 0; // KR_GSP_THREADS == 256 bins
        __syncthreads();
        const kr_u32 prefix = s_prefix;
#pragma unroll
        for (int u = 0; u < KR_GSP_PER; u++)
            if ((key[u] & hi_mask) == prefix)
                atomicAdd(&hist_cnt[(key[u] >> shift) & 255u], 1u);
        __syncthreads();
        if (warp == 0) {
            // lane L holds bins 255-8L .. 248-8L (descending digits)
            int c[8], lsum = 0;
#pragma unroll
            for (int q = 0; q < 8; q++) {
                c[q] = (int)hist_cnt[255 - 8 * lane - q];
                lsum += c[q];
            }
            int inc = lsum;
            for (int o = 1; o < 32; o <<= 1) {
                int y = __shfl_up_sync(KR_GS_FULL, inc, o);
                if (lane >= o)
                    inc += y;
            }
            const int rem = s_rem, excl = inc - lsum;
            if (excl < rem && inc >= rem) { // the k-th entry falls in this lane's bins
                int acc = excl;
                for (int q = 0; q < 8; q++) {
                    if (acc + c[q] >= rem) {
                        s_prefix = prefix | ((kr_u32)(255 - 8 * lane - q) << shift);
                        s_rem = rem - acc;
                        break;
                    }
                    acc += c[q];
                }
            }
        }
        __syncthreads();
    }
    const kr_u32 thr = s_prefix; // key of the k-th entry
    const int take_eq = s_rem;   // entries with key == thr to take, lowest ids first

    // 5. the selection in id order: key > thr, or key == thr among the first take_eq
    int n_eq = 0;
#pragma unroll
    for (int u = 0; u < KR_GSP_PER; u++)
        n_eq += key[u] == thr;
    int tot;
    int eq_before = kr_gsp_block_excl_scan(n_eq, warp_tot, KR_GSP_THREADS / 32, &tot);
    bool sel[KR_GSP_PER];
    int n_sel = 0;
#pragma unroll
    for (int u = 0; u < KR_GSP_PER; u++) {
        sel[u] = key[u] > thr || (key[u] == thr && eq_before < take_eq);
        eq_before += key[u] == thr;
        n_sel += sel[u];
    }
    int pos = kr_gsp_block_excl_scan(n_sel, warp_tot, KR_GSP_THREADS / 32, &tot);
    float *ov = cand_val + (size_t)blockIdx.x * k;
    int *oi = cand_id + (size_t)blockIdx.x * k;
#pragma unroll
    for (int u = 0; u < KR_GSP_PER; u++) {
        if (sel[u] && pos < k) {
            int j = tid * KR_GSP_PER + u;
            ov[pos] = v[j];
            oi[pos] = j < len ? base + j : n_vocab - 1; // padding: -inf, never picked
            pos++;
        }
    }
}

// Append a token to the penalty history ring (one thread).
extern "C" __global__ void kr_gs_accept(int *hist,          // (cap,) ring
                                        int *hist_meta,     // (2,) valid entries, next write position
                                        int cap, int n_vocab,
                                        const int *d_token, // device token or NULL
                                        int tok_imm)        // used when d_token is NULL
{
    if (threadIdx.x != 0 || blockIdx.x != 0 || cap <= 0)
        return;
    int t = d_token ? *d_token : tok_imm;
    if (t < 0 || t >= n_vocab)
        return;
    int pos = hist_meta[1];
    hist[pos] = t;
    hist_meta[1] = (pos + 1) % cap;
    if (hist_meta[0] < cap)
        hist_meta[0]++;
}

// ---- multi-block top-p pre-pass (no top-k) ----
//
// Top-p over the whole vocabulary needs the total softmax mass, and its
// survivors are the rank prefix holding top_p of it. Three launches reduce
// the vocabulary to a superset of that prefix:
//   kr_gs_pp_adjust (one block per 1024 ids): steps 1-3 into cur, each
//       block's max key; zeroes the mass histogram;
//   kr_gs_pp_mass (same grid): fixed-point weights round(exp(l - max) 2^44)
//       into a 4096-bin histogram over the top 12 key bits (global atomics,
//       exact), and each block's double sum of exp(l - max);
//   kr_gs_pp_select (one block): the totals (block sums added in block
//       order: deterministic), the highest 12-bit digit d where the mass from
//       the top reaches ceil(top_p * total), and the tokens with digit >= d
//       compacted in ascending id order into cand_val/cand_id, *n_cand.
// kr_gs_sample then runs on the candidates with ext_tot = the totals, so the
// cut, min-p and the draw are what they would be over the whole vocabulary.

#define KR_GSPP_BINS 4096
#define KR_GSPP_SHIFT 20

extern "C" __global__ void __launch_bounds__(KR_GSP_THREADS)
kr_gs_pp_adjust(const float *logits, int n_vocab, const int *hist, const int *hist_meta, const int *bias_tok,
                const float *bias_val, int n_bias, float repeat_penalty, float presence_penalty,
                float frequency_penalty,
                float *cur,              // (n_vocab,) adjusted logits
                kr_u32 *block_max,       // (gridDim.x,) max key per block
                kr_u64 *g_hist)          // (KR_GSPP_BINS,) zeroed here
{
    __shared__ float v[KR_GSP_CHUNK];
    __shared__ kr_u32 s_max;
    const int tid = threadIdx.x;
    const int base = blockIdx.x * KR_GSP_CHUNK;
    const int len = min(KR_GSP_CHUNK, n_vocab - base);
    for (int t = blockIdx.x * KR_GSP_THREADS + tid; t < KR_GSPP_BINS; t += gridDim.x * KR_GSP_THREADS)
        g_hist[t] = 0;
    if (tid == 0)
        s_max = 0;
    kr_gsp_adjust(v, base, len, logits, hist, hist_meta, bias_tok, bias_val, n_bias, repeat_penalty,
                  presence_penalty, frequency_penalty);
    kr_u32 m = 0;
#pragma unroll
    for (int u = 0; u < KR_GSP_PER; u++) {
        int j = tid * KR_GSP_PER + u;
        if (j < len) {
            cur[base + j] = v[j];
            m = max(m, kr_gs_key(v[j]));
        }
    }
    for (int o = 16; o > 0; o >>= 1)
        m = max(m, __shfl_down_sync(KR_GS_FULL, m, o));
    if ((tid & 31) == 0)
        atomicMax(&s_max, m);
    __syncthreads();
    if (tid == 0)
        block_max[blockIdx.x] = s_max;
}

extern "C" __global__ void __launch_bounds__(KR_GSP_THREADS)
kr_gs_pp_mass(const float *cur, int n_vocab, const kr_u32 *block_max,
              kr_u64 *g_hist,            // (KR_GSPP_BINS,)
              double *block_sum)         // (gridDim.x,) sum of exp(l - max) per block
{
    __shared__ kr_u64 h[KR_GSPP_BINS];
    __shared__ double red[KR_GSP_THREADS / 32];
    __shared__ kr_u32 s_max;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int base = blockIdx.x * KR_GSP_CHUNK;
    const int len = min(KR_GSP_CHUNK, n_vocab - base);
    for (int b = tid; b < KR_GSPP_BINS; b += KR_GSP_THREADS)
        h[b] = 0;
    if (tid == 0)
        s_max = 0;
    __syncthreads();
    kr_u32 m = 0;
    for (int b = tid; b < (int)gridDim.x; b += KR_GSP_THREADS)
        m = max(m, block_max[b]);
    for (int o = 16; o > 0; o >>= 1)
        m = max(m, __shfl_down_sync(KR_GS_FULL, m, o));
    if (lane == 0)
        atomicMax(&s_max, m);
    __syncthreads();
    const float maxl = kr_gs_key_float(s_max);
    double sum = 0.0;
#pragma unroll
    for (int u = 0; u < KR_GSP_PER; u++) {
        int j = u * KR_GSP_THREADS + tid; // coalesced
        kr_u32 dig = 0xffffffffu;
        kr_u64 w = 0;
        if (j < len) {
            float l = cur[base + j];
            if (l != -KR_GS_INF) {
                double e = exp((double)l - (double)maxl);
                sum += e;
                w = (kr_u64)(e * KR_GS_FX_SCALE + 0.5);
                dig = kr_gs_key(l) >> KR_GSPP_SHIFT;
            }
        }
        kr_gs_warp_add_mass(NULL, h, dig, w);
    }
    for (int o = 16; o > 0; o >>= 1)
        sum += __shfl_down_sync(KR_GS_FULL, sum, o);
    if (lane == 0)
        red[warp] = sum;
    __syncthreads();
    if (tid == 0) {
        double t = 0.0;
        for (int w = 0; w < KR_GSP_THREADS / 32; w++)
            t += red[w];
        block_sum[blockIdx.x] = t;
    }
    for (int b = tid; b < KR_GSPP_BINS; b += KR_GSP_THREADS)
        if (h[b])
            atomicAdd(&g_hist[b], h[b]);
}

extern "C" __global__ void __launch_bounds__(KR_GS_THREADS)
kr_gs_pp_select(const float *cur, int n_vocab, int n_blocks, const kr_u64 *g_hist, const double *block_sum,
                float top_p,
                float *cand_val,         // (n_vocab,)
                int *cand_id,            // (n_vocab,)
                int *n_cand,             // (1,)
                double *ext_tot)         // (2,) weight total, fixed-point mass total
{
    __shared__ kr_u64 part[KR_GS_WARPS];
    __shared__ int s_dig;
    __shared__ int wt[KR_GS_WARPS];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    // totals; the digit: warp w covers bins 4095-128w .. 3968-128w (descending)
    kr_u64 wsum = 0;
    for (int q = 0; q < KR_GSPP_BINS / KR_GS_THREADS; q++)
        wsum += g_hist[KR_GSPP_BINS - 1 - (warp * (KR_GSPP_BINS / KR_GS_WARPS) + lane * (KR_GSPP_BINS / KR_GS_THREADS) + q)];
    for (int o = 16; o > 0; o >>= 1)
        wsum += __shfl_down_sync(KR_GS_FULL, wsum, o);
    if (lane == 0)
        part[warp] = wsum;
    __syncthreads();
    if (tid == 0) {
        kr_u64 tf = 0;
        for (int w = 0; w < KR_GS_WARPS; w++)
            tf += part[w];
        double td = 0.0;
        for (int b = 0; b < n_blocks; b++)
            td += block_sum[b];
        kr_u64 target = (kr_u64)ceil((double)top_p * (double)tf);
        if (target == 0)
            target = 1;
        // the digit holding the target: walk the warps' parts, then that warp's bins
        kr_u64 acc = 0;
        int d = 0;
        for (int w = 0; w < KR_GS_WARPS; w++) {
            if (acc + part[w] >= target) {
                for (int b = KR_GSPP_BINS - 1 - w * (KR_GSPP_BINS / KR_GS_WARPS); b >= 0; b--) {
                    acc += g_hist[b];
                    if (acc >= target) {
                        d = b;
                        break;
                    }
                }
                break;
            }
            acc += part[w];
        }
        s_dig = d; // rounding left the target out of reach: d = 0, everything finite
        ext_tot[0] = td;
        ext_tot[1] = (double)tf;
    }
    __syncthreads();
    const kr_u32 dmin = (kr_u32)s_dig;
    // compaction in ascending id order, KR_GS_UNROLL consecutive ids per thread
    int written = 0;
    for (int base = 0; base < n_vocab; base += KR_GS_THREADS * KR_GS_UNROLL) {
        float x[KR_GS_UNROLL];
        bool sel[KR_GS_UNROLL];
        int c = 0;
#pragma unroll
        for (int q = 0; q < KR_GS_UNROLL; q++) {
            int i = base + tid * KR_GS_UNROLL + q;
            x[q] = i < n_vocab ? cur[i] : -KR_GS_INF;
            sel[q] = x[q] != -KR_GS_INF && (kr_gs_key(x[q]) >> KR_GSPP_SHIFT) >= dmin;
            c += sel[q];
        }
        int all;
        int pos = written + kr_gsp_block_excl_scan(c, wt, KR_GS_WARPS, &all);
#pragma unroll
        for (int q = 0; q < KR_GS_UNROLL; q++) {
            if (sel[q]) {
                cand_val[pos] = x[q];
                cand_id[pos] = base + tid * KR_GS_UNROLL + q;
                pos++;
            }
        }
        written += all;
    }
    if (tid == 0)
        *n_cand = written;
}
