/* `kernrun generate` end to end: runs the real binary (meson passes its path
 * in KERNRUN_BIN) on the stories260K test model and checks stdout / stderr /
 * exit status. The golden continuation is llama.cpp's (testdata/README.md). */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "kr_test_leaks.h"

typedef struct run_result {
    int status;   /* exit status, or -1 if it did not exit normally */
    char *out;    /* stdout, NUL-terminated */
    char *err;    /* stderr, NUL-terminated */
} run_result;

static char *slurp_fd(int fd)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    cr_assert_not_null(buf);
    for (;;) {
        if (n + 1 >= cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            cr_assert_not_null(buf);
        }
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return buf;
}

static const char *testdata(void)
{
    const char *d = getenv("KR_TESTDATA");
    return d && *d ? d : "../shared/testdata";
}

static const char *stories(void)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/models/stories260K-f32.gguf", testdata());
    return path;
}

/* Run `kernrun GLOBAL... generate ARGS...` (both NULL-terminated; global may
 * be NULL); env entries "K=V" are set in the child. */
static run_result run_kernrun_g(const char *const *global, const char *const *args, const char *const *env)
{
    const char *bin = getenv("KERNRUN_BIN");
    cr_assert(bin && *bin, "KERNRUN_BIN not set (meson sets it)");
    const char *argv[64];
    int n = 0;
    argv[n++] = bin;
    for (int i = 0; global && global[i]; i++)
        argv[n++] = global[i];
    argv[n++] = "generate";
    for (int i = 0; args[i]; i++) {
        cr_assert(n < 62);
        argv[n++] = args[i];
    }
    argv[n] = NULL;

    int pout[2];
    cr_assert_eq(pipe(pout), 0);
    char errpath[] = "/tmp/kr-gen-err-XXXXXX";
    int errfd = mkstemp(errpath);
    cr_assert(errfd >= 0);
    unlink(errpath);

    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        dup2(pout[1], STDOUT_FILENO);
        dup2(errfd, STDERR_FILENO);
        close(pout[0]);
        close(pout[1]);
        close(errfd);
        for (int i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(pout[1]);
    run_result r;
    r.out = slurp_fd(pout[0]);
    close(pout[0]);
    int ws;
    cr_assert_eq(waitpid(pid, &ws, 0), pid);
    r.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
    lseek(errfd, 0, SEEK_SET);
    r.err = slurp_fd(errfd);
    close(errfd);
    return r;
}

static run_result run_kernrun(const char *const *args, const char *const *env)
{
    return run_kernrun_g(NULL, args, env);
}

static void free_result(run_result *r)
{
    free(r->out);
    free(r->err);
}

static const char GOLDEN[] = ", there was a little girl named Lily. She loved to play outside in the park. "
                             "One day, she saw a big, red ball.";

/* per-test leak check under ASan (tests/common/kr_test_leaks.h) */
TestSuite(generate, .fini = kr_test_leak_check);

Test(generate, stories260k_greedy_matches_llama_cpp)
{
    /* 48 tokens is a little more than the golden text (SPM, 512 pieces). */
    const char *args[] = {"-m", stories(), "-p", "Once upon a time", "-n", "48", "--greedy", "-t", "2",
                          "--backend", "cpu", NULL};
    run_result r = run_kernrun(args, NULL);
    cr_assert_eq(r.status, 0, "exit %d; stderr:\n%s", r.status, r.err);
    cr_expect(strncmp(r.out, GOLDEN, strlen(GOLDEN)) == 0, "stdout:\n[%s]\nwant prefix:\n[%s]", r.out, GOLDEN);
    cr_expect(strstr(r.err, "prompt eval time") != NULL, "timings on stderr:\n%s", r.err);
    cr_expect(strstr(r.out, "eval time") == NULL, "stdout must carry only the text");
    free_result(&r);

    /* temperature 0 is greedy too */
    const char *args0[] = {"-m", stories(), "-p", "Once upon a time", "-n", "48", "--temp", "0", "-s", "7", NULL};
    r = run_kernrun(args0, NULL);
    cr_assert_eq(r.status, 0, "stderr:\n%s", r.err);
    cr_expect(strncmp(r.out, GOLDEN, strlen(GOLDEN)) == 0, "temp 0: [%s]", r.out);
    free_result(&r);
}

Test(generate, n_predict_limits_tokens)
{
    /* The golden text starts ", there was": the first 2 greedy tokens can
     * only cover a prefix of it, and never all of it. */
    const char *args[] = {"-m", stories(), "-p", "Once upon a time", "-n", "2", "--greedy", NULL};
    run_result r = run_kernrun(args, NULL);
    cr_assert_eq(r.status, 0, "stderr:\n%s", r.err);
    size_t n = strlen(r.out);
    cr_expect(n > 0 && n < strlen(GOLDEN), "[%s]", r.out);
    cr_expect(strncmp(r.out, GOLDEN, n) == 0, "[%s]", r.out);
    free_result(&r);
}

Test(generate, same_seed_same_text_other_seed_differs)
{
    const char *a1[] = {"-m", stories(), "-p", "Once upon a time", "-n", "40", "--temp", "1.0", "--top-p", "0.9",
                        "-s", "1234", NULL};
    const char *a2[] = {"-m", stories(), "-p", "Once upon a time", "-n", "40", "--temp", "1.0", "--top-p", "0.9",
                        "-s", "99", NULL};
    run_result r1 = run_kernrun(a1, NULL);
    run_result r1b = run_kernrun(a1, NULL);
    run_result r2 = run_kernrun(a2, NULL);
    cr_assert_eq(r1.status, 0, "stderr:\n%s", r1.err);
    cr_assert_eq(r2.status, 0, "stderr:\n%s", r2.err);
    cr_expect(strlen(r1.out) > 0);
    cr_expect_str_eq(r1.out, r1b.out, "same seed must give the same text");
    cr_expect_str_neq(r1.out, r2.out, "seeds 1234 and 99 gave the same 40 tokens");
    free_result(&r1);
    free_result(&r1b);
    free_result(&r2);
}

Test(generate, invalid_sampling_values_rejected)
{
    static const struct {
        const char *flag, *val, *needle;
    } bad[] = {
        {"--top-p", "1.5", "top_p"},        {"--top-p", "0", "top_p"},
        {"--temp", "-1", "temperature"},    {"--min-p", "2", "min_p"},
        {"--top-k", "-3", "top_k"},         {"--repeat-penalty", "0", "repeat_penalty"},
        {"--repeat-last-n", "-2", "repeat_last_n"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *args[] = {"-m", stories(), "-p", "x", bad[i].flag, bad[i].val, NULL};
        run_result r = run_kernrun(args, NULL);
        cr_expect_eq(r.status, 1, "%s %s: exit %d", bad[i].flag, bad[i].val, r.status);
        cr_expect(strstr(r.err, bad[i].needle) != NULL, "%s %s: stderr:\n%s", bad[i].flag, bad[i].val, r.err);
        cr_expect_str_eq(r.out, "", "nothing on stdout");
        free_result(&r);
    }
    const char *nonnum[] = {"-m", stories(), "-p", "x", "--temp", "warm", NULL};
    run_result r = run_kernrun(nonnum, NULL);
    cr_expect_eq(r.status, 2);
    cr_expect(strstr(r.err, "warm") != NULL, "%s", r.err);
    free_result(&r);
}

Test(generate, errors_are_messages_and_exit_1)
{
    const char *missing[] = {"-m", "/nonexistent/model.gguf", "-p", "x", NULL};
    run_result r = run_kernrun(missing, NULL);
    cr_expect_eq(r.status, 1);
    cr_expect(strstr(r.err, "/nonexistent/model.gguf") != NULL, "%s", r.err);
    free_result(&r);

    /* stories260K has no chat template */
    const char *chat[] = {"-m", stories(), "-p", "x", "--chat", NULL};
    r = run_kernrun(chat, NULL);
    cr_expect_eq(r.status, 1);
    cr_expect(strstr(r.err, "chat_template") != NULL, "%s", r.err);
    free_result(&r);

    const char *noprompt[] = {"-m", stories(), NULL};
    r = run_kernrun(noprompt, NULL);
    cr_expect_eq(r.status, 2);
    free_result(&r);
}

Test(generate, default_model_missing_says_how_to_fetch)
{
    const char *args[] = {"-p", "hello", NULL};
    const char *env[] = {"XDG_CACHE_HOME=/nonexistent-kernrun-cache", NULL};
    run_result r = run_kernrun(args, env);
    cr_expect_eq(r.status, 1);
    cr_expect(strstr(r.err, "fetch-default-model") != NULL, "%s", r.err);
    cr_expect(strstr(r.err, "/nonexistent-kernrun-cache/kernrun/models/SmolLM2-135M-Instruct.Q4_1.gguf") != NULL,
              "%s", r.err);
    free_result(&r);
}

Test(generate, prompt_from_file)
{
    char path[] = "/tmp/kr-gen-prompt-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, "Once upon a time", 16), 16);
    close(fd);
    const char *args[] = {"-m", stories(), "-f", path, "-n", "48", "--greedy", NULL};
    run_result r = run_kernrun(args, NULL);
    unlink(path);
    cr_assert_eq(r.status, 0, "stderr:\n%s", r.err);
    cr_expect(strncmp(r.out, GOLDEN, strlen(GOLDEN)) == 0, "[%s]", r.out);
    free_result(&r);
}

static void write_file(char *path_template, const char *text)
{
    int fd = mkstemp(path_template);
    cr_assert(fd >= 0);
    size_t n = strlen(text);
    cr_assert_eq(write(fd, text, n), (ssize_t)n);
    close(fd);
}

/* defaults < kernrun --config FILE [sampling] < KERNRUN_SAMPLING_* < flags */
Test(generate, sampling_config_section)
{
    char ini[] = "/tmp/kr-gen-ini-XXXXXX";
    write_file(ini, "[sampling]\ntemperature = 0\n");
    const char *g[] = {"--config", ini, NULL};
    const char *a1[] = {"-m", stories(), "-p", "Once upon a time", "-n", "48", NULL};
    run_result r = run_kernrun_g(g, a1, NULL);
    cr_assert_eq(r.status, 0, "stderr:\n%s", r.err);
    cr_expect(strncmp(r.out, GOLDEN, strlen(GOLDEN)) == 0, "config temperature 0 must be greedy: [%s]", r.out);
    free_result(&r);

    /* the environment overrides the file */
    const char *env[] = {"KERNRUN_SAMPLING_TOP_P=1.5", NULL};
    r = run_kernrun_g(g, a1, env);
    cr_expect_eq(r.status, 1);
    cr_expect(strstr(r.err, "top_p = 1.5") != NULL, "%s", r.err);
    free_result(&r);

    /* a flag overrides both */
    const char *a2[] = {"-m", stories(), "-p", "Once upon a time", "-n", "48", "--top-p", "0.9", "--temp", "0", NULL};
    r = run_kernrun_g(g, a2, env);
    cr_expect_eq(r.status, 0, "stderr:\n%s", r.err);
    cr_expect(strncmp(r.out, GOLDEN, strlen(GOLDEN)) == 0, "[%s]", r.out);
    free_result(&r);
    unlink(ini);

    /* unknown keys are named with file and line */
    char bad[] = "/tmp/kr-gen-ini-XXXXXX";
    write_file(bad, "[sampling]\ntemprature = 0\n");
    const char *gb[] = {"--config", bad, NULL};
    const char *a3[] = {"-m", stories(), "-p", "x", NULL};
    r = run_kernrun_g(gb, a3, NULL);
    unlink(bad);
    cr_expect_neq(r.status, 0);
    cr_expect(strstr(r.err, ":2:") && strstr(r.err, "temprature"), "%s", r.err);
    free_result(&r);

    /* backend values are checked */
    const char *a4[] = {"-m", stories(), "-p", "x", "--backend", "tpu", NULL};
    r = run_kernrun(a4, NULL);
    cr_expect_eq(r.status, 2);
    cr_expect(strstr(r.err, "tpu") != NULL, "%s", r.err);
    free_result(&r);
}

/* The default model (fetched by tools/fetch-default-model; skipped when it is
 * not in the cache): greedy chat answer to a simple factual instruction. */
Test(generate, default_model_chat_answers)
{
    char path[4096];
    const char *xdg = getenv("XDG_CACHE_HOME");
    if (xdg && *xdg)
        snprintf(path, sizeof path, "%s/kernrun/models/SmolLM2-135M-Instruct.Q4_1.gguf", xdg);
    else
        snprintf(path, sizeof path, "%s/.cache/kernrun/models/SmolLM2-135M-Instruct.Q4_1.gguf",
                 getenv("HOME") ? getenv("HOME") : "/");
    if (access(path, R_OK) != 0)
        cr_skip_test("default model not cached (%s); run tools/fetch-default-model", path);
    const char *args[] = {"-p", "What is the capital of France?", "--chat", "--greedy", "-n", "12", NULL};
    run_result r = run_kernrun(args, NULL);
    cr_assert_eq(r.status, 0, "stderr:\n%s", r.err);
    cr_expect(strstr(r.out, "Paris") != NULL, "answer: [%s]", r.out);
    free_result(&r);
}

Test(generate, chat_template_override_and_context_limit)
{
    const char *a1[] = {"-m", stories(), "-p", "Once upon a time", "-n", "4", "--chat-template", "llama2", "-s", "1",
                        NULL};
    const char *dbg[] = {"KERNRUN_RUNTIME_LOG_LEVEL=debug", NULL};
    run_result r = run_kernrun(a1, dbg);
    cr_expect_eq(r.status, 0, "stderr:\n%s", r.err);
    cr_expect(strstr(r.err, "[INST] Once upon a time [/INST]") != NULL, "formatted prompt logged:\n%s", r.err);
    free_result(&r);

    const char *a2[] = {"-m", stories(), "-p", "x", "--chat-template", "command-r", NULL};
    r = run_kernrun(a2, NULL);
    cr_expect_eq(r.status, 1);
    cr_expect(strstr(r.err, "'command-r'") != NULL, "%s", r.err);
    free_result(&r);

    /* -n -1 runs until the context is full (or an end-of-generation token) */
    const char *a3[] = {"-m", stories(), "-p", "Once upon a time", "-n", "-1", "-c", "24", "--greedy", NULL};
    const char *info[] = {"KERNRUN_RUNTIME_LOG_LEVEL=info", NULL};
    r = run_kernrun(a3, info);
    cr_expect_eq(r.status, 0, "stderr:\n%s", r.err);
    cr_expect(strstr(r.err, "context full") != NULL, "%s", r.err);
    /* 5 prompt tokens, 24 positions: the output is a proper prefix of the golden text */
    cr_expect(strlen(r.out) > 0 && strncmp(r.out, GOLDEN, strlen(r.out)) == 0, "[%s]", r.out);
    free_result(&r);

    const char *a4[] = {"-m", stories(), "-p", "Once upon a time", "-c", "3", NULL};
    r = run_kernrun(a4, NULL);
    cr_expect_eq(r.status, 1);
    cr_expect(strstr(r.err, "raise -c") != NULL, "%s", r.err);
    free_result(&r);
}

/* F16 weights, a separate output.weight and the full Llama-2 vocabulary
 * (random weights: the text is gibberish by design). */
Test(generate, llama2_tiny_random_f16_generates)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/models/llama2-tiny-random-f16.gguf", testdata());
    const char *args[] = {"-m", path, "-p", "Hello world", "-n", "16", "-s", "3", NULL};
    const char *info[] = {"KERNRUN_RUNTIME_LOG_LEVEL=info", NULL};
    run_result r = run_kernrun(args, info);
    cr_assert_eq(r.status, 0, "stderr:\n%s", r.err);
    cr_expect(strlen(r.out) > 0, "no text");
    cr_expect(strstr(r.err, "/    16 runs") != NULL || strstr(r.err, "end of generation") != NULL,
              "16 tokens sampled unless an end token came first:\n%s", r.err);
    free_result(&r);
}

/* -l / --ignore-eos. testdata README: greedy from BOS alone starts with token 403. */
Test(generate, logit_bias_and_ignore_eos)
{
    const char *plain[] = {"-m", stories(), "-p", "", "-n", "12", "--greedy", NULL};
    const char *zero[] = {"-m", stories(), "-p", "", "-n", "12", "--greedy", "-l", "403+0", NULL};
    const char *ban[] = {"-m", stories(), "-p", "", "-n", "12", "--greedy", "-l", "403-inf", NULL};
    run_result a = run_kernrun(plain, NULL), b = run_kernrun(zero, NULL), c = run_kernrun(ban, NULL);
    cr_assert_eq(a.status, 0, "%s", a.err);
    cr_assert_eq(b.status, 0, "%s", b.err);
    cr_assert_eq(c.status, 0, "%s", c.err);
    cr_expect(strlen(a.out) > 0);
    cr_expect_str_eq(a.out, b.out, "a zero bias changes nothing");
    cr_expect_str_neq(a.out, c.out, "banning the greedy first token must change the text");
    free_result(&a);
    free_result(&b);
    free_result(&c);

    const char *bad[] = {"-m", stories(), "-p", "x", "-l", "600+1", NULL};
    a = run_kernrun(bad, NULL);
    cr_expect_eq(a.status, 1);
    cr_expect(strstr(a.err, "token 600") != NULL, "%s", a.err);
    free_result(&a);

    const char *ign[] = {"-m", stories(), "-p", "Once upon a time", "-n", "100", "--greedy", "--ignore-eos", NULL};
    a = run_kernrun(ign, NULL);
    cr_expect_eq(a.status, 0, "%s", a.err);
    cr_expect(strstr(a.err, "/   100 runs") != NULL, "all 100 tokens sampled:\n%s", a.err);
    free_result(&a);
}

/* --ctx-shift: at a full context the run keeps --keep positions, drops half of
 * the rest and goes on, where the default stops. */
Test(generate, ctx_shift_continues_past_the_context)
{
    const char *info[] = {"KERNRUN_RUNTIME_LOG_LEVEL=info", NULL};
    const char *stop[] = {"-m", stories(), "-p", "Once upon a time", "-n", "60", "-c", "24", "--greedy",
                          "--backend", "cpu", NULL};
    run_result r0 = run_kernrun(stop, info);
    cr_assert_eq(r0.status, 0, "stderr:\n%s", r0.err);
    cr_expect(strstr(r0.err, "context full") != NULL, "%s", r0.err);

    /* default backend (auto): CUDA when a GPU is usable (it shifts on the device), else the CPU */
    const char *shift[] = {"-m", stories(), "-p", "Once upon a time", "-n", "60", "-c", "24", "--greedy",
                           "--ctx-shift", "--keep", "4", NULL};
    run_result r1 = run_kernrun(shift, info);
    cr_assert_eq(r1.status, 0, "stderr:\n%s", r1.err);
    cr_expect(strstr(r1.err, "shifted") != NULL, "shift logged:\n%s", r1.err);
    /* identical until the first shift, then it keeps going */
    cr_expect(strlen(r1.out) > strlen(r0.out), "shift [%s] vs stop [%s]", r1.out, r0.out);
    cr_expect(strncmp(r1.out, r0.out, strlen(r0.out)) == 0, "shift [%s] vs stop [%s]", r1.out, r0.out);
    free_result(&r0);
    free_result(&r1);

    const char *bad[] = {"-m", stories(), "-p", "x", "--kv-type", "q4_0", NULL};
    run_result r2 = run_kernrun(bad, NULL);
    cr_expect_eq(r2.status, 1);
    cr_expect(strstr(r2.err, "--kv-type") != NULL && strstr(r2.err, "q4_0") != NULL, "%s", r2.err);
    free_result(&r2);
}

/* Smaller KV caches keep stories260K's greedy text (the llama.cpp golden). */
Test(generate, kv_type_f16_and_q8_0_keep_the_golden_text)
{
    const char *types[] = {"f16", "q8_0"};
    for (size_t i = 0; i < 2; i++) {
        const char *args[] = {"-m", stories(), "-p", "Once upon a time", "-n", "48", "--greedy", "--backend", "cpu",
                              "--kv-type", types[i], NULL};
        run_result r = run_kernrun(args, NULL);
        cr_assert_eq(r.status, 0, "%s: stderr:\n%s", types[i], r.err);
        cr_expect(strncmp(r.out, GOLDEN, strlen(GOLDEN)) == 0, "%s: [%s]", types[i], r.out);
        free_result(&r);
    }
}

/* -b / --batch-size: range-checked; the text does not depend on it. */
Test(generate, batch_size_flag)
{
    const char *args[] = {"-m", stories(), "-p", "Once upon a time", "-n", "48", "--greedy", "--backend", "cpu",
                          "-b", "3", NULL};
    run_result r = run_kernrun(args, NULL);
    cr_assert_eq(r.status, 0, "stderr:\n%s", r.err);
    cr_expect(strncmp(r.out, GOLDEN, strlen(GOLDEN)) == 0, "[%s]", r.out);
    free_result(&r);
    const char *bad[] = {"-m", stories(), "-p", "x", "--batch-size", "0", NULL};
    run_result r2 = run_kernrun(bad, NULL);
    cr_expect_eq(r2.status, 2, "stderr:\n%s", r2.err);
    cr_expect(strstr(r2.err, "out of range") != NULL, "%s", r2.err);
    free_result(&r2);
}
