/* arch_falcon plugin: registers the falcon handler. */
#include "kernrun/arch_falcon.h"
#include "kernrun/plugin.h"

static const kr_arch_entry kr__archs[] = {
    {.name = "falcon", .iface_version = KR_ARCH_IFACE_VERSION, .iface = &kr_arch_falcon_iface},
};

KR_PLUGIN_DEFINE(
    .name = "arch_falcon",
    .version = "1.0.0",
    .description = "falcon model architecture (CPU reference forward)",
    .archs = kr__archs,
    .n_archs = KR_ARRAY_LEN(kr__archs))
