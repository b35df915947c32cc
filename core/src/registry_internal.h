/* Registry operations used by the plugin loader only. */
#ifndef KERNRUN_REGISTRY_INTERNAL_H
#define KERNRUN_REGISTRY_INTERNAL_H

#include "kernrun/registry.h"

/* Drop every kernel, pipeline and arch registered under `plugin`. */
void kr__registry_remove_plugin(kr_registry *reg, const char *plugin);
/* Set the plugin_state of every entry registered under `plugin`. */
void kr__registry_set_state(kr_registry *reg, const char *plugin, void *state);

#endif
