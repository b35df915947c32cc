/* Driver state shared with the built-in pipelines. */
#ifndef KERNRUN_TOOLS_APP_H
#define KERNRUN_TOOLS_APP_H

#include <stddef.h>

#include "kernrun/config.h"
#include "kernrun/runtime.h"
#include "pipelines.h"

/* The configuration: defaults < global --config FILE < KERNRUN_* env <
 * global flags (--backend, --log-level). Built on first call, with the
 * config keys of every built-in pipeline registered. On error prints
 * "kernrun: <reason>" to stderr and returns NULL (later calls too). */
kr_config *kr_app_config(kr_app *app);

/* The runtime (backends + plugins), opened on first call from
 * kr_app_config(). On error prints the reason and returns NULL. Closed by
 * the driver after the pipeline returns. */
kr_runtime *kr_app_runtime(kr_app *app);

/* The global --config FILE, or NULL. */
const char *kr_app_config_path(const kr_app *app);

#endif
