/* cpu_ops plugin: publishes the CPU op table under the registry name
 * "ops.cpu" (an interface record: iface_version = KR_OPS_VERSION,
 * iface = const kr_ops *). The model library looks it up when the caller
 * gives no op table. */
#include "kernrun/cpu_ops.h"
#include "kernrun/plugin.h"

static const kr_arch_entry kr__ifaces[] = {
    {.name = "ops.cpu", .iface_version = KR_OPS_VERSION, .iface = &kr_cpu_ops_table},
};

KR_PLUGIN_DEFINE(
    .name = "cpu_ops",
    .version = "1.0.0",
    .description = "CPU reference ops for the model forward pass",
    .archs = kr__ifaces,
    .n_archs = KR_ARRAY_LEN(kr__ifaces))
