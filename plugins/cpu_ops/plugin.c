/* cpu_ops plugin.
 *
 * 1. Registers the CPU reference ops as registry kernels (backend CPU) under
 *    the op names of kernrun/ops.h, with the operand conventions the CUDA
 *    kernels use (docs/KERNELS.md "Registry ops", docs/MODEL.md): registry
 *    dispatch falls back to these when no device kernel supports a call.
 *    Kernel calls run single-threaded (no pool in a kernel call).
 * 2. Publishes the whole op table under the registry name "ops.cpu" (an
 *    interface record: iface_version = KR_OPS_VERSION, iface = const kr_ops *),
 *    which the model library uses when the caller gives no op table.
 */
#include <stddef.h>
#include <string.h>

#include "kernrun/cpu_ops.h"
#include "kernrun/operand.h"
#include "kernrun/plugin.h"
#include "kernrun/quant.h"

static const kr_exec kr__serial = {.struct_size = sizeof(kr_exec), .n_threads = 1, .pool = NULL,
                                   .parallel_for = NULL};

/* ---- operand checks ---- */

static bool kr__f32(const kr_tensor *t)
{
    return t && t->type == KR_DTYPE_F32 && t->data && kr_tensor_is_contiguous(t) && kr_tensor_nelements(t) > 0;
}

static bool kr__params(const kr_kernel_args *a, size_t size)
{
    return a->params && a->params_size >= size;
}

/* View a kr_tensor weight (ne {cols, rows}, rows nb[1] apart) as kr_weight. */
static bool kr__weight(const kr_tensor *t, kr_weight *w)
{
    uint64_t rb;
    if (!t || !t->data || t->ne[0] <= 0 || t->ne[1] <= 0 || t->ne[2] != 1 || t->ne[3] != 1 ||
        !kr_quant_can_dequantize(t->type) || kr_quant_row_size(t->type, (uint64_t)t->ne[0], &rb, NULL) != KR_OK ||
        t->nb[1] < rb)
        return false;
    *w = (kr_weight){.name = t->name, .type = t->type, .n_dims = 2,
                     .ne = {(uint64_t)t->ne[0], (uint64_t)t->ne[1], 1, 1}, .row_bytes = t->nb[1], .data = t->data};
    return true;
}

/* matmul: src[0] W, src[1] x F32 (ne {cols, n}), dst F32 (ne {rows, n}) */
static bool kr__mm_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    const kr_tensor *x = kr_operand_src(a, 1), *y = a->dst;
    kr_weight w;
    return kr__weight(kr_operand_src(a, 0), &w) && kr__f32(x) && kr__f32(y) && x->ne[0] == (int64_t)w.ne[0] &&
           y->ne[0] == (int64_t)w.ne[1] && y->ne[1] == x->ne[1] && x->ne[2] == 1 && x->ne[3] == 1;
}

static kr_status kr__mm_run(const kr_kernel_call *call, kr_err *err)
{
    const kr_kernel_args *a = call->args;
    kr_weight w;
    kr__weight(a->src[0], &w);
    return kr_cpu_ops_table.matmul(&kr__serial, &w, a->src[1]->data, (size_t)a->src[1]->ne[1], a->dst->data, err);
}

/* get_rows: src[0] table, src[1] ids I32 (n), dst F32 (ne {n_embd, n}) */
static bool kr__gr_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    const kr_tensor *ids = kr_operand_src(a, 1), *y = a->dst;
    kr_weight w;
    return kr__weight(kr_operand_src(a, 0), &w) && ids && ids->data && ids->type == KR_DTYPE_I32 &&
           kr_tensor_is_contiguous(ids) && kr__f32(y) && y->ne[0] == (int64_t)w.ne[0] &&
           y->ne[1] == kr_tensor_nelements(ids);
}

static kr_status kr__gr_run(const kr_kernel_call *call, kr_err *err)
{
    const kr_kernel_args *a = call->args;
    kr_weight w;
    kr__weight(a->src[0], &w);
    return kr_cpu_ops_table.get_rows(&kr__serial, &w, a->src[1]->data, (size_t)a->dst->ne[1], a->dst->data, err);
}

/* rms_norm / layer_norm: src[0] x (ne {dim, rows}), src[1] w (dim) optional,
 * src[2] b (dim) optional (layer_norm); params float eps; dst like x */
static bool kr__norm_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    const kr_tensor *x = kr_operand_src(a, 0);
    if (!kr__f32(x) || !kr__f32(a->dst) || !kr_operand_same_shape(x, a->dst) || !kr__params(a, sizeof(float)))
        return false;
    for (int i = 1; i < a->n_src; i++) {
        const kr_tensor *p = kr_operand_src(a, i);
        if (p && (!kr__f32(p) || kr_tensor_nelements(p) != x->ne[0]))
            return false;
    }
    return true;
}

static kr_status kr__rms_run(const kr_kernel_call *call, kr_err *err)
{
    const kr_kernel_args *a = call->args;
    const kr_tensor *x = a->src[0], *w = kr_operand_src(a, 1);
    kr_cpu_ops_table.rms_norm(&kr__serial, x->data, w ? w->data : NULL, (size_t)kr_tensor_nrows(x), (size_t)x->ne[0],
                              *(const float *)a->params, a->dst->data);
    return KR_OK;
}

static kr_status kr__ln_run(const kr_kernel_call *call, kr_err *err)
{
    const kr_kernel_args *a = call->args;
    const kr_tensor *x = a->src[0], *w = kr_operand_src(a, 1), *b = kr_operand_src(a, 2);
    kr_cpu_ops_table.layer_norm(&kr__serial, x->data, w ? w->data : NULL, b ? b->data : NULL,
                                (size_t)kr_tensor_nrows(x), (size_t)x->ne[0], *(const float *)a->params,
                                a->dst->data);
    return KR_OK;
}

/* rope: params kr_rope_args (host x, pos) */
static bool kr__rope_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    if (!kr__params(a, offsetof(kr_rope_args, freq_factors) + sizeof(const float *)))
        return false;
    const kr_rope_args *r = a->params;
    return r->x && r->pos && r->n_head > 0 && r->head_dim > 0 && r->n_rot % 2 == 0 && r->n_rot <= r->head_dim &&
           (r->mode == KR_ROPE_NORMAL || r->mode == KR_ROPE_NEOX);
}

static kr_status kr__rope_run(const kr_kernel_call *call, kr_err *err)
{
    kr_cpu_ops_table.rope(&kr__serial, call->args->params);
    return KR_OK;
}

/* attention: params kr_attn_args (host q/k/v/out, F32 or F16 cache) */
static bool kr__attn_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    if (!kr__params(a, sizeof(kr_attn_args)))
        return false;
    const kr_attn_args *t = a->params;
    return t->struct_size >= sizeof(kr_attn_args) && t->q && t->k && t->v && t->out &&
           (t->kv_type == KR_DTYPE_F32 || t->kv_type == KR_DTYPE_F16) && t->n_head > 0 && t->n_head_kv > 0 &&
           t->n_head % t->n_head_kv == 0 && t->head_dim > 0 && t->head_dim <= KR_OPS_MAX_HEAD_DIM &&
           (uint64_t)t->pos0 + t->n_tok <= t->n_ctx;
}

static kr_status kr__attn_run(const kr_kernel_call *call, kr_err *err)
{
    return kr_cpu_ops_table.attention(&kr__serial, call->args->params, err);
}

/* swiglu: src[0] gate, src[1] up, dst; gelu: src[0], dst; add: dst += src[0];
 * softmax: rows of src[0] (ne {dim, rows}) into dst (may be src[0]);
 * add_bias: dst (ne {dim, rows}) += src[0] b (dim) per row;
 * store_kv: src[0] F32 -> dst F32 or F16, same element count */
static bool kr__ew_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    return kr_operand_elementwise(a, kr__f32);
}

static bool kr__swiglu_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    return a->n_src == 2 && kr__ew_supports(a, dev);
}

static bool kr__softmax_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    return kr__ew_supports(a, dev) && kr_operand_same_shape(a->src[0], a->dst);
}

static bool kr__add_bias_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    const kr_tensor *b = kr_operand_src(a, 0);
    return kr__f32(b) && kr__f32(a->dst) && kr_tensor_nelements(b) == a->dst->ne[0];
}

static bool kr__store_kv_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    const kr_tensor *x = kr_operand_src(a, 0), *y = a->dst;
    return kr__f32(x) && y && y->data && (y->type == KR_DTYPE_F32 || y->type == KR_DTYPE_F16) &&
           kr_tensor_is_contiguous(y) && kr_tensor_nelements(y) == kr_tensor_nelements(x);
}

static kr_status kr__swiglu_run(const kr_kernel_call *call, kr_err *err)
{
    const kr_kernel_args *a = call->args;
    kr_cpu_ops_table.swiglu(&kr__serial, a->src[0]->data, a->src[1]->data, (size_t)kr_tensor_nelements(a->dst),
                            a->dst->data);
    return KR_OK;
}

static kr_status kr__gelu_run(const kr_kernel_call *call, kr_err *err)
{
    const kr_kernel_args *a = call->args;
    kr_cpu_ops_table.gelu(&kr__serial, a->src[0]->data, (size_t)kr_tensor_nelements(a->dst), a->dst->data);
    return KR_OK;
}

static kr_status kr__add_run(const kr_kernel_call *call, kr_err *err)
{
    const kr_kernel_args *a = call->args;
    kr_cpu_ops_table.add(&kr__serial, a->dst->data, a->src[0]->data, (size_t)kr_tensor_nelements(a->dst));
    return KR_OK;
}

static kr_status kr__softmax_run(const kr_kernel_call *call, kr_err *err)
{
    const kr_kernel_args *a = call->args;
    const kr_tensor *x = a->src[0];
    if (x->data != a->dst->data)
        memmove(a->dst->data, x->data, (size_t)kr_tensor_nelements(x) * sizeof(float));
    kr_cpu_ops_table.softmax(&kr__serial, a->dst->data, (size_t)kr_tensor_nrows(x), (size_t)x->ne[0]);
    return KR_OK;
}

static kr_status kr__add_bias_run(const kr_kernel_call *call, kr_err *err)
{
    const kr_kernel_args *a = call->args;
    kr_cpu_ops_table.add_bias(&kr__serial, a->dst->data, a->src[0]->data, (size_t)kr_tensor_nrows(a->dst),
                              (size_t)a->dst->ne[0]);
    return KR_OK;
}

static kr_status kr__store_kv_run(const kr_kernel_call *call, kr_err *err)
{
    const kr_kernel_args *a = call->args;
    return kr_cpu_ops_table.store_kv(&kr__serial, a->src[0]->data, 1, (size_t)kr_tensor_nelements(a->dst),
                                     a->dst->type, a->dst->data, err);
}

#define KR__CPU_KERNEL(nm, opname, sup, fn, desc)                                        \
    {                                                                                     \
        .name = nm,                       /* unique kernel name */                        \
        .op = opname,                     /* op of kernrun/ops.h */                       \
        .backend = KR_BACKEND_CPU,        /* host memory */                               \
        .n_dtypes = 0,                    /* types checked by supports() */               \
        .priority = 0,                    /* the reference; device kernels win */         \
        .cuda = NULL,                     /* no device code */                            \
        .supports = sup,                  /* shapes, types, params */                     \
        .run = fn,                        /* runs synchronously, one thread */            \
        .description = desc,              /* `kernrun list` */                            \
    }

static const kr_kernel kr__cpu_kernels[] = {
    KR__CPU_KERNEL("matmul_cpu", "matmul", kr__mm_supports, kr__mm_run,
                   "y = W x per row of x; every weight type the quant library decodes"),
    KR__CPU_KERNEL("get_rows_cpu", "get_rows", kr__gr_supports, kr__gr_run, "embedding rows, dequantized"),
    KR__CPU_KERNEL("rms_norm_cpu", "rms_norm", kr__norm_supports, kr__rms_run, "RMSNorm (sum of squares in double)"),
    KR__CPU_KERNEL("layer_norm_cpu", "layer_norm", kr__norm_supports, kr__ln_run, "LayerNorm (+bias)"),
    KR__CPU_KERNEL("rope_cpu", "rope", kr__rope_supports, kr__rope_run, "RoPE normal/neox, in place"),
    KR__CPU_KERNEL("attention_cpu", "attention", kr__attn_supports, kr__attn_run,
                   "causal attention over an fp32/fp16 KV cache (GQA/MQA, sliding window)"),
    KR__CPU_KERNEL("swiglu_cpu", "swiglu", kr__swiglu_supports, kr__swiglu_run, "silu(gate) * up"),
    KR__CPU_KERNEL("gelu_cpu", "gelu", kr__ew_supports, kr__gelu_run, "GELU (tanh approximation)"),
    KR__CPU_KERNEL("add_cpu", "add", kr__ew_supports, kr__add_run, "acc += x"),
    KR__CPU_KERNEL("softmax_cpu", "softmax", kr__softmax_supports, kr__softmax_run, "row softmax"),
    KR__CPU_KERNEL("add_bias_cpu", "add_bias", kr__add_bias_supports, kr__add_bias_run, "x += b per row"),
    KR__CPU_KERNEL("store_kv_cpu", "store_kv", kr__store_kv_supports, kr__store_kv_run, "fp32 -> fp32/fp16 rows"),
};

static const kr_arch_entry kr__ifaces[] = {
    {.name = "ops.cpu", .iface_version = KR_OPS_VERSION, .iface = &kr_cpu_ops_table},
};

KR_PLUGIN_DEFINE(
    .name = "cpu_ops",
    .version = "1.0.0",
    .description = "CPU reference ops for the model forward pass",
    .kernels = kr__cpu_kernels,
    .n_kernels = KR_ARRAY_LEN(kr__cpu_kernels),
    .archs = kr__ifaces,
    .n_archs = KR_ARRAY_LEN(kr__ifaces))
