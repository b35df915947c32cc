/* kernrun — the driver: `kernrun <pipeline> [flags]`. */
#include <stdio.h>
#include <string.h>

#include "kernrun/log.h"
#include "pipelines.h"

struct kr_app {
    int unused;
};

static const kr_cli_pipeline *const g_pipelines[] = {
#define KR__PIPE_REF(n) &kr_pipe_##n,
    KR_CLI_PIPELINES(KR__PIPE_REF)
#undef KR__PIPE_REF
};

static int list_run(kr_app *app, int argc, char **argv)
{
    (void)app; (void)argc; (void)argv;
    puts("pipelines:");
    for (size_t i = 0; i < sizeof g_pipelines / sizeof g_pipelines[0]; i++)
        printf("  %-10s %s\n", g_pipelines[i]->name, g_pipelines[i]->summary);
    return 0;
}
const kr_cli_pipeline kr_pipe_list = {.name = "list", .summary = "list pipelines", .run = list_run};

static int version_run(kr_app *app, int argc, char **argv)
{
    (void)app; (void)argc; (void)argv;
    puts("kernrun " KR_VERSION);
    return 0;
}
const kr_cli_pipeline kr_pipe_version = {.name = "version", .summary = "print the version", .run = version_run};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: kernrun <pipeline> [flags]\n");
        return 2;
    }
    kr_app app = {0};
    for (size_t i = 0; i < sizeof g_pipelines / sizeof g_pipelines[0]; i++)
        if (strcmp(argv[1], g_pipelines[i]->name) == 0)
            return g_pipelines[i]->run(&app, argc - 1, argv + 1);
    fprintf(stderr, "kernrun: unknown pipeline '%s'\n", argv[1]);
    return 2;
}
