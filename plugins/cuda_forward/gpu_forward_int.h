/* Private to plugins/cuda_forward: the kr_gpu_forward object, shared by
 * gpu_forward.c (owner: the decode step), gpu_kvcache.c and gpu_prefill.c.
 * Not installed, not part of the plugin API. */
#ifndef KR_GPU_FORWARD_INT_H
#define KR_GPU_FORWARD_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kr_decode.h"
#include "kr_gpu_forward.h"

/* A matrix on the device: y (rows) = W (rows, cols) @ x (cols). */
typedef struct kr__gf_mat {
    kr_dtype type;        /* GGML block type */
    const void *w;        /* device address, rows of row_stride bytes */
    size_t row_stride;    /* bytes per row */
    int64_t rows;         /* output dim (ne[1]) */
    int64_t cols;         /* input dim (ne[0]) */
    bool q8;              /* use 8-bit activations */
    bool repacked;        /* Q4_0/Q8_0 rewritten as [quants | fp16 scales] (kernels/forward/matvec_repacked.cu) */
} kr__gf_mat;

typedef struct kr__gf_layer {
    const float *attn_norm;        /* (E) device */
    const float *ffn_norm;         /* (E) device (llama) */
    const float *attn_norm_b;      /* (E) device (falcon) */
    const float *attn_norm2;       /* (E) device (falcon 40B: attention input norm) or NULL */
    const float *attn_norm2_b;     /* (E) device or NULL */
    kr__gf_mat q, k, v, o;         /* (QD,E) (KVD,E) (KVD,E) (E,QD) */
    kr__gf_mat gate, up, down;     /* (F,E) (F,E) (E,F) */
    bool fuse_qkv;                 /* q,k,v of one type, adjacent on the device: one matvec (falcon: always) */
    kr__gf_mat qkv;                /* (QD+2*KVD, E) view over q,k,v when fuse_qkv */
    bool fuse_gu;                  /* gate,up of one type, adjacent: one matvec */
    kr__gf_mat gu;                 /* (2F, E) view over gate,up when fuse_gu */
    uint16_t *k_cache;             /* device: the current slot's K rows (gpu_kvcache.h layout) */
    uint16_t *v_cache;             /* device: the current slot's V rows */
} kr__gf_layer;

/* Variants of the decode step (kr_gpu_forward_set_tuning, env KERNRUN_GF_TUNING;
 * docs/GPU-FORWARD.md). */
enum { KR__SKIP_ATTN = 1u, KR__SKIP_NORM = 2u, KR__SKIP_MV = 4u, KR__SKIP_SWIGLU = 8u };
typedef struct kr__gf_tuning {
    bool pdl;                      /* PDL-capable kernels of the step launched with KR_LAUNCH_PDL */
    int mv4, mv8;                  /* repacked Q4_0 / Q8_0 matvec: 0 = kr_gf_mv_* (v1), else 1 + v2 variant */
    bool resid;                    /* attn_output / ffn_down (repacked, v2) add into x directly */
    bool norm_mb;                  /* multi-block rmsnorm + q8 (kr_gf_rmsnorm_q8_mb) when no add is pending */
    bool norm_wide;                /* ... with up to 32 warps per CTA (norm=mbw) instead of 4 */
    bool nf;                       /* ffn_norm / next attn_norm folded into attn_output / ffn_down (producer)
                                      and gate_up / qkv (consumer): kr_gf_mv2nf{p,c}_* */
    int nfp_w;                     /* nf producer warps per CTA: 16 (kr_gf_mv2nfp_*), 8 or 4 (kr_gf_mv2nfp<W>_*) */
    bool oq;                       /* nf: attn_output quantizes the attention output itself (kr_gf_mv2nfpf_*) */
    bool sw;                       /* nf: ffn_down computes SwiGLU + q8 of gate|up itself (kr_gf_mv2nfps_*) */
    bool gus;                      /* fused gate/up matvec does SwiGLU + q8 in its last CTAs (kr_gf_mv2gus_*) */
    unsigned skip;                 /* KR__SKIP_*: leave parts of the layers out (timing experiments only) */
    int l2pf_mb;                   /* > 0: during the attention, prefetch up to this many MiB of the layer's
                                      attn_output + ffn gate/up weights into L2 from a side stream */
    int pfa_mb;                    /* l2pf helper: the qkv matvec's tail prefetches MiB of attn_output (+ gate/up) */
    int pft_mb;                    /* matvec tails prefetch MiB of the next matvec (o->gu, gu->down, down->qkv) */
    int pfn_mb;                    /* the multi-block norms prefetch MiB of the next matvec before their PDL wait */
    int pfs_mb;                    /* swiglu_q8 prefetches MiB of ffn_down before its PDL wait */
    int pfc;                       /* matvec tails: the last pfc x SMs CTAs issue the prefetch (0: 4) */
    bool pfe;                      /* matvec tails issue before their PDL wait instead of after their rows */
    int pfw;                       /* matvecs: CTA c requests the rows of CTA c + pfw x SMs before its wait (0: no) */
    int pfo_mb;                    /* the output matvec's tail prefetches MiB of layer 0's qkv (+ o) for the next step */
    int mv4e, mv8e;                /* 0: as mv4 / mv8; else 1 + v2 variant for the n_embd-row matrices (o, down) */
    int mvp;                       /* persistent v2 matvecs ("pr..."): CTAs per SM of their grid (0: 4) */
    bool fa;                       /* fused attention block (kr_dec_fattn: rope + store + attention + q8, one launch) */
    int fa_split;                  /* its split count (0: default) */
    bool fa_pf;                    /* its blocks prefetch attn_output's weights into L2 before their wait */
    int fa_st;                     /* its most K/V stages per block (0: default) */
    int fa_var;                    /* its kernel variant (kr_dec_fattn_variant_name; 0: default) */
} kr__gf_tuning;

/* Host mirror of kernels/forward/kr_gf_common.cuh struct kr_gf_pf (a kernel parameter by
 * value: same field order and sizes, 80 bytes): L2 prefetch of up to 4 byte ranges of
 * weights, each split into nparts shares. */
typedef struct kr__gf_pf {
    const void *p[4];
    int64_t n[4];
    int32_t first;                 /* matvec tails: first CTA that issues a share */
    int32_t nparts;                /* 0: no prefetch */
    int32_t early;                 /* matvec tails: before the PDL wait */
    int32_t ahead;                 /* matvec: CTA c also requests the rows of CTA c + ahead (0: no) */
} kr__gf_pf;
_Static_assert(sizeof(kr__gf_pf) == 80 && offsetof(kr__gf_pf, first) == 64,
               "kr__gf_pf must match struct kr_gf_pf of kernels/forward/kr_gf_common.cuh");

struct kr_gpu_forward {
    const kr_model *model;
    kr_backend *be;
    kr_dec *dec;
    kr_stream *stream;             /* every step runs here */
    kr_hparams hp;
    uint32_t n_ctx;
    uint32_t n_past;
    bool use_graph;
    bool dead;                     /* a device step failed: refuse further work */
    kr_graph *graph;               /* captured step, or NULL */
    bool graph_failed;

    kr_buffer *wbuf;               /* all weights */
    uint64_t *woffs;               /* (n_w of kr_model_weights) offset of each weight in wbuf (UINT64_MAX: absent) */
    uint8_t *wconv;                /* (n_w) 1: stored as fp16, converted at load (params.weights F16) */
    struct kr__gkv *kv;            /* the KV cache: slots, plan, device buffer (gpu_kvcache.h) */
    kr_buffer *abuf;               /* activations, scratch, step inputs */
    kr_buffer *hstep;              /* pinned host (2 * n_ctx) int32 tok/pos pairs (or NULL: hstep_mem) */
    int32_t *hstep_mem;            /* malloc fallback */
    kr_buffer *hlogits_buf;        /* pinned host (n_vocab) floats (or NULL: hlogits_mem) */
    float *hlogits_mem;

    bool falcon;                   /* falcon layer structure (see the top of this file) */
    kr__gf_layer *layers;          /* (n_layer) */
    kr_dtype embd_type;            /* token_embd type */
    const void *embd;              /* (n_vocab, E) device */
    size_t embd_row_stride;
    const float *out_norm;         /* (E) device */
    const float *out_norm_b;       /* (E) device (falcon) */
    kr__gf_mat out;                /* (V, E): output.weight or token_embd */
    const float *freq_factors;     /* (n_rot/2) device or NULL */

    /* activations (device) */
    float *x;                      /* (E) residual */
    float *h;                      /* (E) normed */
    float *h2;                     /* (E) falcon 40B: attn_norm_2 output */
    float *ffo;                    /* (E) falcon: MLP output */
    float *q;                      /* (QD) followed by k and v (one fused matvec output) */
    float *k;                      /* (KVD) = q + QD */
    float *v;                      /* (KVD) = k + KVD */
    float *att;                    /* (QD) */
    float *tmp;                    /* (E) projection out */
    float *gate;                   /* (F) followed by up */
    float *up;                     /* (F) = gate + F */
    float *logits;                 /* (V) */
    void *xq;                      /* q8 activations (kr_dec_q8_bytes(max cols)) */
    float *nf_part;                /* (E/32) per-block sums of x^2 from the norm-folding producer */
    void *xq2;                     /* second q8 buffer (same size): output of the gate/up + swiglu matvec */
    float *attn_scratch;           /* split-K partials or NULL */
    int32_t *step;                 /* (2) device: token id, position */
    int n_split;

    kr_function *fn_mv_q4_0;       /* repacked matvecs (kernels/forward/matvec_repacked.cu) */
    kr_function *fn_mv_q8_0;
    kr_function *fn_norm;          /* fused add + rmsnorm + q8 (NULL: separate launches) */
    kr_function *fn_swiglu;        /* fused swiglu + q8 */
    kr__gf_tuning tun;             /* step variant in use */
    kr_function *fn_mv2_q4_0;      /* v2 repacked matvecs of tun.mv4 / tun.mv8 (or NULL) */
    kr_function *fn_mv2_q8_0;
    int mv2_rows4, mv2_rows8;      /* rows per warp of those */
    kr_function *fn_norm_mb;       /* kr_gf_rmsnorm_q8_mb (or NULL) */
    kr_function *fn_prefetch;      /* kr_gf_prefetch_l2 (or NULL) */
    kr_function *fn_gus_q4_0;      /* kr_gf_mv2gus_* of tun.mv4 / tun.mv8 (or NULL) */
    kr_function *fn_gus_q8_0;
    kr_function *fn_nfp_q4_0, *fn_nfp_q8_0; /* norm-folding producer / consumer matvecs (tun.nf) */
    kr_function *fn_nfc_q4_0, *fn_nfc_q8_0;
    kr_function *fn_nfpf_q4_0, *fn_nfpf_q8_0; /* producers quantizing fp32 x / SwiGLU themselves */
    kr_function *fn_nfps_q4_0, *fn_nfps_q8_0;
    kr_function *fn_mv2t_q4_0;     /* kr_gf_mv2t_* (v2 + L2 prefetch request) of tun.mv4 / tun.mv8, or NULL */
    kr_function *fn_mv2t_q8_0;
    kr_function *fn_mv2e_q4_0;     /* v2 matvecs of tun.mv4e / mv8e for the n_embd-row matrices (or NULL) */
    kr_function *fn_mv2e_q8_0;
    kr_function *fn_mv2et_q4_0;    /* ... their kr_gf_mv2t_* (with tun.pfa / pft) */
    kr_function *fn_mv2et_q8_0;
    int mv2e_rows4, mv2e_rows8;    /* rows per warp of those */
    bool mv2_persist4, mv2_persist8;   /* the v2 variants in use are persistent ("pr...": grid by kr__proj) */
    bool mv2e_persist4, mv2e_persist8;
    kr_function *fn_norm_mbp;      /* kr_gf_rmsnorm_q8_mbp (tun.pfn_mb) or NULL */
    kr_function *fn_swiglu_p;      /* kr_gf_swiglu_q8p (tun.pfs_mb) or NULL */
    kr__gf_pf pf_mv;               /* prefetch request for the next kr__proj matvec (ranges only; n[i] 0: none) */
    kr__gf_pf pf_lat;              /* ... for the next kr__norm / kr__swiglu */
    kr_buffer *gus_cnt;            /* (n_ff/32) int32 group counters, zero between launches */
    kr_stream *side;               /* L2 prefetch stream (created on first use) */
    kr_event *ev_fork, *ev_join;   /* main -> side after the qkv matvec; side -> main at the step's end */
    uint32_t launches;             /* counted during the last step */
    kr_gpu_forward_stats stats;

    /* profiling (kr_gpu_forward_profile): an event after every launch of an eager step */
    bool prof_on;
    kr_status prof_st;             /* first event failure of the step */
    kr_err prof_err;
    kr_event **prof_ev;            /* (prof_cap) created on demand; [0] before the first launch */
    char (*prof_label)[64];        /* (prof_cap) label of the launch ending at prof_ev[i] */
    size_t prof_n, prof_cap;
    const char *role;              /* matrix role of the next kr__proj (labels) */

    /* batched prefill (gpu_prefill.c) */
    struct kr__gpf *prefill;       /* created on the first batched prefill, or NULL */
    bool no_batch_prefill;         /* params.no_batch_prefill or KERNRUN_NO_BATCH_PREFILL=1 */
    uint32_t n_batch;              /* params.n_batch (0: default) */
};

#endif
