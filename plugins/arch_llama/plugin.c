/* arch_llama plugin: registers the llama and mistral handlers. */
#include "kernrun/arch_llama.h"
#include "kernrun/plugin.h"

static const kr_arch_entry kr__archs[] = {
    {.name = "llama", .iface_version = KR_ARCH_IFACE_VERSION, .iface = &kr_arch_llama_iface},
    {.name = "mistral", .iface_version = KR_ARCH_IFACE_VERSION, .iface = &kr_arch_mistral_iface},
};

KR_PLUGIN_DEFINE(
    .name = "arch_llama",
    .version = "1.0.0",
    .description = "llama / mistral model architectures (CPU reference forward)",
    .archs = kr__archs,
    .n_archs = KR_ARRAY_LEN(kr__archs))
