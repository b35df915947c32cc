/* PLACEHOLDER: replaced by the work that implements `kernrun generate`. */
#include <stdio.h>
#include "pipelines.h"

static int run_generate(kr_app *app, int argc, char **argv)
{
    (void)app; (void)argc; (void)argv;
    fprintf(stderr, "kernrun generate: not available in this build yet\n");
    return 2;
}

const kr_cli_pipeline kr_pipe_generate = {
    .name = "generate",
    .summary = "(not yet available)",
    .usage = "",
    .run = run_generate,
};
