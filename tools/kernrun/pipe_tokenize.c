/* PLACEHOLDER: replaced by the work that implements `kernrun tokenize`. */
#include <stdio.h>
#include "pipelines.h"

static int run_tokenize(kr_app *app, int argc, char **argv)
{
    (void)app; (void)argc; (void)argv;
    fprintf(stderr, "kernrun tokenize: not available in this build yet\n");
    return 2;
}

const kr_cli_pipeline kr_pipe_tokenize = {
    .name = "tokenize",
    .summary = "(not yet available)",
    .usage = "",
    .run = run_tokenize,
};
