/* PLACEHOLDER: replaced by the work that implements `kernrun mkmodel`. */
#include <stdio.h>
#include "pipelines.h"

static int run_mkmodel(kr_app *app, int argc, char **argv)
{
    (void)app; (void)argc; (void)argv;
    fprintf(stderr, "kernrun mkmodel: not available in this build yet\n");
    return 2;
}

const kr_cli_pipeline kr_pipe_mkmodel = {
    .name = "mkmodel",
    .summary = "(not yet available)",
    .usage = "",
    .run = run_mkmodel,
};
