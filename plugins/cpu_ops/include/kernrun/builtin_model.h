/* Built-in handlers: fill kr_model_params with the statically linked
 * architecture handlers (llama, mistral, falcon) and the CPU op table.
 * Dependency: builtin_model_dep (plugins/cpu_ops/meson.build). */
#ifndef KERNRUN_BUILTIN_MODEL_H
#define KERNRUN_BUILTIN_MODEL_H

#include "kernrun/model.h"

/* Sets p->archs / p->n_archs / p->ops; leaves the other fields alone. */
void kr_builtin_model_params(kr_model_params *p);

#endif
