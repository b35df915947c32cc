#include "kernrun/builtin_model.h"

#include "kernrun/arch_falcon.h"
#include "kernrun/arch_llama.h"
#include "kernrun/cpu_ops.h"

static const kr_arch_iface *const kr__builtin_archs[] = {
    &kr_arch_llama_iface,
    &kr_arch_mistral_iface,
    &kr_arch_falcon_iface,
};

void kr_builtin_model_params(kr_model_params *p)
{
    p->archs = kr__builtin_archs;
    p->n_archs = sizeof kr__builtin_archs / sizeof kr__builtin_archs[0];
    p->ops = kr_cpu_ops();
}
