/* `kernrun tokenize`: encode text with a model's tokenizer (GGUF or
 * tokenizer.json) and print ids and/or pieces. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/tokenizer.h"
#include "pipelines.h"

static const char kr__tokenize_usage[] =
    "usage: kernrun tokenize -m MODEL.gguf|tokenizer.json [--ids|--pieces] [--no-bos]\n"
    "                        [--special] (TEXT | -f FILE)\n"
    "  -m PATH      GGUF model/vocab file or Hugging Face tokenizer.json\n"
    "  --ids        print only the ids, space-separated on one line\n"
    "  --pieces     print only the token pieces (vocabulary text), one per line\n"
    "  --no-bos     do not add the BOS token even if the model asks for it\n"
    "  --special    parse control tokens written in the text (\"<s>\", \"<|eot_id|>\")\n"
    "  -f FILE      read the text from FILE (bytes as they are)\n"
    "Default output: one line per token, \"ID\\tPIECE\".\n";

static char *kr__read_all(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n == cap) {
            char *p = cap < ((size_t)1 << 31) ? realloc(buf, cap * 2) : NULL;
            if (!p) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = p;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (f != stdin)
        fclose(f);
    *len = n;
    return buf;
}

static void kr__print_escaped(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
}

static int run_tokenize(kr_app *app, int argc, char **argv)
{
    (void)app;
    const char *model = NULL, *file = NULL, *text = NULL;
    bool ids_only = false, pieces_only = false, no_bos = false, special = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && i + 1 < argc) {
            model = argv[++i];
        } else if (!strcmp(a, "-f") && i + 1 < argc) {
            file = argv[++i];
        } else if (!strcmp(a, "--ids")) {
            ids_only = true;
        } else if (!strcmp(a, "--pieces")) {
            pieces_only = true;
        } else if (!strcmp(a, "--no-bos")) {
            no_bos = true;
        } else if (!strcmp(a, "--special")) {
            special = true;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(kr__tokenize_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--")) {
            if (i + 1 < argc && !text)
                text = argv[++i];
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "kernrun tokenize: unknown or incomplete option '%s'\n%s", a,
                    kr__tokenize_usage);
            return 2;
        } else if (!text) {
            text = a;
        } else {
            fprintf(stderr, "kernrun tokenize: more than one TEXT argument\n");
            return 2;
        }
    }
    if (!model || (!text && !file) || (text && file) || (ids_only && pieces_only)) {
        fputs(kr__tokenize_usage, stderr);
        return 2;
    }
    int rc = 1;
    kr_err err;
    kr_err_clear(&err);
    kr_tokenizer *tok = NULL;
    char *buf = NULL;
    int32_t *ids = NULL;
    size_t len = 0;
    if (file) {
        buf = kr__read_all(file, &len);
        if (!buf) {
            fprintf(stderr, "kernrun tokenize: cannot read '%s'\n", file);
            return 1;
        }
    } else {
        len = strlen(text);
    }
    kr_status st = kr_tokenizer_load_file(model, &tok, &err);
    if (st) {
        fprintf(stderr, "kernrun tokenize: %s\n", kr_err_msg(&err, st));
        goto out_free;
    }
    kr_tok_encode_opts o = kr_tokenizer_encode_defaults(tok);
    if (no_bos)
        o.add_bos = false;
    o.parse_special = special;
    const char *src = file ? buf : text;
    size_t n = 0;
    st = kr_tokenizer_encode(tok, src, len, &o, NULL, 0, &n, &err);
    if (st && st != KR_ERR_RANGE) {
        fprintf(stderr, "kernrun tokenize: %s\n", kr_err_msg(&err, st));
        goto out_free;
    }
    ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) {
        fprintf(stderr, "kernrun tokenize: out of memory\n");
        goto out_free;
    }
    st = kr_tokenizer_encode(tok, src, len, &o, ids, n, &n, &err);
    if (st) {
        fprintf(stderr, "kernrun tokenize: %s\n", kr_err_msg(&err, st));
        goto out_free;
    }
    for (size_t i = 0; i < n; i++) {
        size_t pl = 0;
        const char *p = kr_tokenizer_piece(tok, ids[i], &pl);
        if (ids_only) {
            printf(i ? " %d" : "%d", (int)ids[i]);
        } else if (pieces_only) {
            kr__print_escaped(p, pl);
            putchar('\n');
        } else {
            printf("%d\t", (int)ids[i]);
            kr__print_escaped(p, pl);
            putchar('\n');
        }
    }
    if (ids_only)
        putchar('\n');
    rc = 0;
out_free:
    free(ids);
    free(buf);
    kr_tokenizer_free(tok);
    return rc;
}

const kr_cli_pipeline kr_pipe_tokenize = {
    .name = "tokenize",
    .summary = "encode text with a model's tokenizer and print the ids",
    .usage = kr__tokenize_usage,
    .run = run_tokenize,
};
