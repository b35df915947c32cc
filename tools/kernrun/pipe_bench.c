/* PLACEHOLDER: replaced by the work that implements `kernrun bench`. */
#include <stdio.h>
#include "pipelines.h"

static int run_bench(kr_app *app, int argc, char **argv)
{
    (void)app; (void)argc; (void)argv;
    fprintf(stderr, "kernrun bench: not available in this build yet\n");
    return 2;
}

const kr_cli_pipeline kr_pipe_bench = {
    .name = "bench",
    .summary = "(not yet available)",
    .usage = "",
    .run = run_bench,
};
