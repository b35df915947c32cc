/* Built-in pipelines of the kernrun driver. Each lives in its own pipe_<name>.c
 * and defines `const kr_cli_pipeline kr_pipe_<name>`. Plugins may add more
 * through the registry. */
#ifndef KERNRUN_TOOLS_PIPELINES_H
#define KERNRUN_TOOLS_PIPELINES_H

#include <stddef.h>

typedef struct kr_app kr_app; /* driver state: config, registry (main.c) */

typedef struct kr_cli_pipeline {
    const char *name;    /* "generate" */
    const char *summary; /* one line for `kernrun help` */
    const char *usage;   /* full help text for `kernrun help NAME` */
    /* argv[0] is the pipeline name; returns a process exit status (0 ok). */
    int (*run)(kr_app *app, int argc, char **argv);
    /* (optional) config keys of this pipeline's section(s) (static const
     * table, see kernrun/config.h). The driver registers the keys of every
     * built-in pipeline before it loads the global --config FILE, so one
     * file can hold every section. */
    const struct kr_config_key *config_keys;
    size_t n_config_keys;
} kr_cli_pipeline;

#define KR_CLI_PIPELINES(X) \
    X(generate)             \
    X(bench)                \
    X(inspect)              \
    X(mkmodel)              \
    X(tokenize)             \
    X(list)                 \
    X(help)                 \
    X(version)

#define KR__PIPE_DECL(n) extern const kr_cli_pipeline kr_pipe_##n;
KR_CLI_PIPELINES(KR__PIPE_DECL)
#undef KR__PIPE_DECL

#endif
