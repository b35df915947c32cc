/* PLACEHOLDER: replaced by the work that implements `kernrun inspect`. */
#include <stdio.h>
#include "pipelines.h"

static int run_inspect(kr_app *app, int argc, char **argv)
{
    (void)app; (void)argc; (void)argv;
    fprintf(stderr, "kernrun inspect: not available in this build yet\n");
    return 2;
}

const kr_cli_pipeline kr_pipe_inspect = {
    .name = "inspect",
    .summary = "(not yet available)",
    .usage = "",
    .run = run_inspect,
};
