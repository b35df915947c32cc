/* JIT + cubin cache tests. No GPU needed: NVRTC compiles for an explicit
 * architecture. Tests that need NVRTC skip with the loader's reason when
 * libnvrtc is absent. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernrun/jit.h"
#include "kr_test_leaks.h"

/* ---- helpers --------------------------------------------------------------- */

static void hex_of(const uint8_t *d, size_t n, char *out)
{
    static const char h[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = h[d[i] >> 4];
        out[2 * i + 1] = h[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* A fresh private dir under TMPDIR (mode 0700). */
static void make_tmpdir(char *buf, size_t cap)
{
    const char *t = getenv("TMPDIR");
    snprintf(buf, cap, "%s/kr-jit-test-XXXXXX", t && t[0] ? t : "/tmp");
    cr_assert_not_null(mkdtemp(buf), "mkdtemp: %s", strerror(errno));
}

static void rm_rf(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char p[PATH_MAX];
            snprintf(p, sizeof p, "%s/%s", path, e->d_name);
            struct stat sb;
            if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) {
                chmod(p, 0700);
                rm_rf(p);
            } else {
                unlink(p);
            }
        }
        closedir(d);
    }
    chmod(path, 0700);
    rmdir(path);
}

static size_t count_files(const char *dir)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

/* Create a JIT or skip the test when NVRTC is not installed. */
static kr_jit *jit_or_skip(const kr_jit_config *cfg)
{
    kr_err e;
    kr_err_clear(&e);
    kr_jit *jit = NULL;
    kr_status st = kr_jit_create(cfg, &jit, &e);
    if (st == KR_ERR_NOT_FOUND || st == KR_ERR_UNSUPPORTED)
        cr_skip_test("NVRTC unavailable: %s", kr_err_msg(&e, st));
    cr_assert_eq(st, KR_OK, "kr_jit_create: %s", kr_err_msg(&e, st));
    return jit;
}

static const char k_src_a[] =
    "extern \"C\" __global__ void add1(float *y, int n)\n"
    "{ int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) y[i] += 1.0f; }\n";
static const char k_src_b[] =
    "extern \"C\" __global__ void mul2(float *y, int n)\n"
    "{ int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) y[i] *= 2.0f; }\n";

static kr_jit_source src_of(const char *name, const char *text)
{
    return (kr_jit_source){.name = name, .src = text, .len = strlen(text)};
}

static void compile_ok(kr_jit *jit, const kr_jit_source *s, int arch, kr_jit_target t, kr_jit_image *img)
{
    kr_err e;
    kr_err_clear(&e);
    kr_status st = kr_jit_compile(jit, s, arch, t, img, &e);
    cr_assert_eq(st, KR_OK, "compile %s: %s", s->name, kr_err_msg(&e, st));
    cr_assert_not_null(img->data);
    cr_assert_gt(img->size, 0);
}

static void read_file(const char *path, uint8_t **data, size_t *size)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc(n > 0 ? (size_t)n : 1);
    cr_assert_not_null(*data);
    cr_assert_eq(fread(*data, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
}

static void write_file(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "open %s: %s", path, strerror(errno));
    if (size)
        cr_assert_eq(fwrite(data, 1, size, f), size);
    cr_assert_eq(fclose(f), 0);
}

/* ---- SHA-256 against FIPS 180-2 / NIST example values ------------------------ */

/* per-test leak check under ASan (tests/common/kr_test_leaks.h) */
TestSuite(sha256, .fini = kr_test_leak_check);
TestSuite(jit, .fini = kr_test_leak_check);
TestSuite(jit_cache, .fini = kr_test_leak_check);

Test(sha256, known_answers)
{
    static const struct {
        const char *msg;
        const char *hex;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t d[32];
        char h[65];
        kr_sha256(v[i].msg, strlen(v[i].msg), d);
        hex_of(d, 32, h);
        cr_expect_str_eq(h, v[i].hex, "sha256(\"%s\")", v[i].msg);
    }
}

Test(sha256, million_a_incremental)
{
    /* NIST: SHA-256 of one million 'a'. Fed in odd-sized pieces to exercise
     * the block buffering. */
    kr_sha256_ctx c;
    kr_sha256_init(&c);
    char chunk[997];
    memset(chunk, 'a', sizeof chunk);
    size_t left = 1000000;
    while (left) {
        size_t n = left < sizeof chunk ? left : sizeof chunk;
        kr_sha256_update(&c, chunk, n);
        left -= n;
    }
    uint8_t d[32];
    char h[65];
    kr_sha256_final(&c, d);
    hex_of(d, 32, h);
    cr_expect_str_eq(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* ---- every kernel in kernels/ compiles for sm_90 ------------------------------ */

static size_t n_compiled, n_failed;

static void compile_tree(kr_jit *jit, const char *root, const char *rel)
{
    char dirpath[2 * PATH_MAX + 2];
    snprintf(dirpath, sizeof dirpath, "%s%s%s", root, rel[0] ? "/" : "", rel);
    DIR *d = opendir(dirpath);
    cr_assert_not_null(d, "opendir %s: %s", dirpath, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char relp[PATH_MAX], full[2 * PATH_MAX + 2];
        snprintf(relp, sizeof relp, "%s%s%s", rel, rel[0] ? "/" : "", e->d_name);
        snprintf(full, sizeof full, "%s/%s", root, relp);
        struct stat sb;
        cr_assert_eq(stat(full, &sb), 0);
        if (S_ISDIR(sb.st_mode)) {
            compile_tree(jit, root, relp);
            continue;
        }
        size_t L = strlen(e->d_name);
        if (L < 4 || strcmp(e->d_name + L - 3, ".cu") != 0)
            continue;
        uint8_t *text;
        size_t size;
        read_file(full, &text, &size);
        /* Headers resolve next to the file or from kernels/ (as the
         * embedding plugin passes them). */
        char inc_root[PATH_MAX + 3], inc_dir[2 * PATH_MAX + 8];
        snprintf(inc_root, sizeof inc_root, "-I%s", root);
        snprintf(inc_dir, sizeof inc_dir, "-I%s", dirpath);
        const char *opts[] = {inc_root, inc_dir};
        kr_jit_source s = {.name = relp, .src = (const char *)text, .len = size, .options = opts, .n_options = 2};
        kr_jit_image img;
        kr_err err;
        kr_err_clear(&err);
        kr_status st = kr_jit_compile(jit, &s, 90, KR_JIT_PTX, &img, &err);
        cr_expect_eq(st, KR_OK, "kernels/%s does not compile for sm_90: %s", relp, kr_err_msg(&err, st));
        if (st == KR_OK) {
            cr_expect(img.size > 1 && ((char *)img.data)[img.size - 1] == '\0', "PTX of %s not NUL-terminated", relp);
            cr_expect(strstr(img.data, ".entry") != NULL, "PTX of %s has no kernel entry", relp);
            n_compiled++;
        } else {
            n_failed++;
        }
        kr_jit_image_free(&img);
        free(text);
    }
    closedir(d);
}

Test(jit, every_kernel_compiles_for_sm90, .timeout = 600)
{
    const char *root = getenv("KR_KERNELS_DIR");
    cr_assert(root && root[0], "KR_KERNELS_DIR is not set (tests/jit/meson.build sets it)");
    kr_jit_config cfg = {.no_cache = true, .kernel_dir = ""};
    kr_jit *jit = jit_or_skip(&cfg);
    compile_tree(jit, root, "");
    cr_expect_gt(n_compiled + n_failed, 0, "no .cu files found under %s", root);
    kr_jit_free(jit);
}

Test(jit, compile_error_returns_the_log)
{
    kr_jit_config cfg = {.no_cache = true, .kernel_dir = ""};
    kr_jit *jit = jit_or_skip(&cfg);
    kr_jit_source s = src_of("broken/broken.cu", "extern \"C\" __global__ void k() { this_is_not_declared = 1; }\n");
    kr_jit_image img;
    kr_err e;
    kr_err_clear(&e);
    kr_status st = kr_jit_compile(jit, &s, 90, KR_JIT_CUBIN, &img, &e);
    cr_expect_eq(st, KR_ERR_JIT);
    cr_expect_null(img.data);
    cr_expect(strstr(e.msg, "broken/broken.cu") != NULL, "message lacks the file: %s", e.msg);
    cr_expect(strstr(e.msg, "this_is_not_declared") != NULL, "message lacks the NVRTC log: %s", e.msg);
    kr_jit_free(jit);
}

Test(jit, invalid_names_rejected)
{
    kr_jit_config cfg = {.no_cache = true, .kernel_dir = ""};
    kr_jit *jit = jit_or_skip(&cfg);
    const char *bad[] = {"../x.cu", "/abs.cu", "a/../../b.cu", "", "sp ace.cu", "semi;colon.cu"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kr_jit_source s = src_of(bad[i], k_src_a);
        kr_jit_image img;
        kr_err e;
        kr_err_clear(&e);
        cr_expect_eq(kr_jit_compile(jit, &s, 90, KR_JIT_PTX, &img, &e), KR_ERR_INVALID_ARG, "name '%s'", bad[i]);
    }
    kr_jit_source s = src_of("ok.cu", k_src_a);
    kr_jit_image img;
    cr_expect_eq(kr_jit_compile(jit, &s, 7, KR_JIT_PTX, &img, NULL), KR_ERR_INVALID_ARG, "arch 7");
    cr_expect_eq(kr_jit_compile(jit, &s, 90, (kr_jit_target)9, &img, NULL), KR_ERR_INVALID_ARG, "target 9");
    kr_jit_free(jit);
}

/* ---- cache ----------------------------------------------------------------- */

Test(jit_cache, second_compile_is_a_hit)
{
    char dir[PATH_MAX];
    make_tmpdir(dir, sizeof dir);
    char cache[PATH_MAX + 16];
    snprintf(cache, sizeof cache, "%s/c", dir); /* does not exist yet: created 0700 */
    kr_jit_config cfg = {.cache_dir = cache, .kernel_dir = ""};
    kr_jit *jit = jit_or_skip(&cfg);
    cr_assert_str_eq(kr_jit_cache_dir(jit), cache);
    struct stat sb;
    cr_assert_eq(stat(cache, &sb), 0);
    cr_expect_eq(sb.st_mode & 0777, 0700, "cache dir mode %o", sb.st_mode & 0777);

    kr_jit_source s = src_of("t/a.cu", k_src_a);
    kr_jit_image a1, a2;
    compile_ok(jit, &s, 90, KR_JIT_CUBIN, &a1);
    cr_expect_not(a1.from_cache);
    compile_ok(jit, &s, 90, KR_JIT_CUBIN, &a2);
    cr_expect(a2.from_cache, "second compile was not a cache hit");
    cr_assert_eq(a1.size, a2.size);
    cr_expect_eq(memcmp(a1.data, a2.data, a1.size), 0, "cached cubin differs");
    kr_jit_stats stats;
    kr_jit_get_stats(jit, &stats);
    cr_expect_eq(stats.compiles, 1);
    cr_expect_eq(stats.cache_hits, 1);
    cr_expect_eq(stats.cache_writes, 1);

    /* the entry is where kr_jit_cache_path says, with the documented header */
    char path[PATH_MAX];
    cr_assert_eq(kr_jit_cache_path(jit, a1.key, path, sizeof path), KR_OK);
    uint8_t *f;
    size_t fsize;
    read_file(path, &f, &fsize);
    cr_assert_eq(fsize, KR_JIT_CACHE_HEADER_SIZE + a1.size);
    cr_expect_eq(memcmp(f, KR_JIT_CACHE_MAGIC, 8), 0);
    cr_expect_eq(memcmp(f + 16, a1.key, 32), 0);
    uint8_t sum[32];
    kr_sha256(a1.data, a1.size, sum);
    cr_expect_eq(memcmp(f + 56, sum, 32), 0, "stored checksum is not SHA-256 of the payload");
    cr_expect_eq(memcmp(f + KR_JIT_CACHE_HEADER_SIZE, a1.data, a1.size), 0);
    free(f);

    /* a new JIT (another process, in effect) hits too */
    kr_jit *jit2 = jit_or_skip(&cfg);
    kr_jit_image a3;
    compile_ok(jit2, &s, 90, KR_JIT_CUBIN, &a3);
    cr_expect(a3.from_cache);
    kr_jit_free(jit2);

    kr_jit_image_free(&a1);
    kr_jit_image_free(&a2);
    kr_jit_image_free(&a3);
    kr_jit_free(jit);
    rm_rf(dir);
}

typedef enum { CORRUPT_TRUNCATE_PAYLOAD, CORRUPT_TRUNCATE_HEADER, CORRUPT_EMPTY, CORRUPT_FLIP_PAYLOAD,
               CORRUPT_FLIP_KEY, CORRUPT_FLIP_MAGIC, CORRUPT_OTHER_KEY, CORRUPT_GROWN } corruption;

static const char *const corruption_name[] = {"truncated payload", "truncated header", "empty",
                                              "bit-flipped payload", "bit-flipped key", "bit-flipped magic",
                                              "entry of another key", "extra trailing byte"};

static void check_corruption(corruption c)
{
    char dir[PATH_MAX];
    make_tmpdir(dir, sizeof dir);
    kr_jit_config cfg = {.cache_dir = dir, .kernel_dir = ""};
    kr_jit *jit = jit_or_skip(&cfg);
    kr_jit_source sa = src_of("t/a.cu", k_src_a), sb = src_of("t/b.cu", k_src_b);
    kr_jit_image good, other;
    compile_ok(jit, &sa, 90, KR_JIT_CUBIN, &good);
    compile_ok(jit, &sb, 90, KR_JIT_CUBIN, &other);
    char pa[PATH_MAX], pb[PATH_MAX];
    cr_assert_eq(kr_jit_cache_path(jit, good.key, pa, sizeof pa), KR_OK);
    cr_assert_eq(kr_jit_cache_path(jit, other.key, pb, sizeof pb), KR_OK);
    uint8_t *f;
    size_t n;
    read_file(pa, &f, &n);
    switch (c) {
    case CORRUPT_TRUNCATE_PAYLOAD: write_file(pa, f, n - 1); break;
    case CORRUPT_TRUNCATE_HEADER: write_file(pa, f, KR_JIT_CACHE_HEADER_SIZE / 2); break;
    case CORRUPT_EMPTY: write_file(pa, f, 0); break;
    case CORRUPT_FLIP_PAYLOAD: f[KR_JIT_CACHE_HEADER_SIZE + (n - KR_JIT_CACHE_HEADER_SIZE) / 2] ^= 0x10; write_file(pa, f, n); break;
    case CORRUPT_FLIP_KEY: f[20] ^= 0x01; write_file(pa, f, n); break;
    case CORRUPT_FLIP_MAGIC: f[0] ^= 0x80; write_file(pa, f, n); break;
    case CORRUPT_OTHER_KEY: {
        uint8_t *g;
        size_t gn;
        read_file(pb, &g, &gn);
        write_file(pa, g, gn);
        free(g);
        break;
    }
    case CORRUPT_GROWN: {
        uint8_t *g = malloc(n + 1);
        memcpy(g, f, n);
        g[n] = 0;
        write_file(pa, g, n + 1);
        free(g);
        break;
    }
    }
    free(f);

    kr_jit_stats before, after;
    kr_jit_get_stats(jit, &before);
    kr_jit_image again;
    compile_ok(jit, &sa, 90, KR_JIT_CUBIN, &again);
    kr_jit_get_stats(jit, &after);
    cr_expect_not(again.from_cache, "%s entry was used", corruption_name[c]);
    cr_expect_eq(after.cache_rejects, before.cache_rejects + 1, "%s entry not counted as rejected",
                 corruption_name[c]);
    cr_expect_eq(after.compiles, before.compiles + 1, "%s: no recompile", corruption_name[c]);
    cr_assert_eq(again.size, good.size);
    cr_expect_eq(memcmp(again.data, good.data, good.size), 0, "%s: recompiled cubin differs", corruption_name[c]);

    /* rewritten: the next compile hits */
    kr_jit_image third;
    compile_ok(jit, &sa, 90, KR_JIT_CUBIN, &third);
    cr_expect(third.from_cache, "%s entry was not rewritten", corruption_name[c]);
    kr_jit_image_free(&good);
    kr_jit_image_free(&other);
    kr_jit_image_free(&again);
    kr_jit_image_free(&third);
    kr_jit_free(jit);
    rm_rf(dir);
}

Test(jit_cache, truncated_payload_rebuilt) { check_corruption(CORRUPT_TRUNCATE_PAYLOAD); }
Test(jit_cache, truncated_header_rebuilt) { check_corruption(CORRUPT_TRUNCATE_HEADER); }
Test(jit_cache, empty_entry_rebuilt) { check_corruption(CORRUPT_EMPTY); }
Test(jit_cache, flipped_payload_rebuilt) { check_corruption(CORRUPT_FLIP_PAYLOAD); }
Test(jit_cache, flipped_key_rebuilt) { check_corruption(CORRUPT_FLIP_KEY); }
Test(jit_cache, flipped_magic_rebuilt) { check_corruption(CORRUPT_FLIP_MAGIC); }
Test(jit_cache, other_keys_entry_rebuilt) { check_corruption(CORRUPT_OTHER_KEY); }
Test(jit_cache, grown_entry_rebuilt) { check_corruption(CORRUPT_GROWN); }

Test(jit_cache, read_only_dir_still_works)
{
    char dir[PATH_MAX];
    make_tmpdir(dir, sizeof dir);
    kr_jit_config cfg = {.cache_dir = dir, .kernel_dir = ""};
    kr_jit *jit = jit_or_skip(&cfg);
    kr_jit_source sa = src_of("t/a.cu", k_src_a), sb = src_of("t/b.cu", k_src_b);
    kr_jit_image a1, a2, b1;
    compile_ok(jit, &sa, 90, KR_JIT_CUBIN, &a1);
    kr_jit_free(jit);
    cr_assert_eq(chmod(dir, 0500), 0);
    jit = jit_or_skip(&cfg);
    cr_expect_not_null(kr_jit_cache_dir(jit), "a read-only (0500) dir is still usable for reading");
    compile_ok(jit, &sa, 90, KR_JIT_CUBIN, &a2);
    cr_expect(a2.from_cache, "existing entry not read from a read-only dir");
    compile_ok(jit, &sb, 90, KR_JIT_CUBIN, &b1); /* cannot be stored: compiled in memory */
    cr_expect_not(b1.from_cache);
    kr_jit_stats st;
    kr_jit_get_stats(jit, &st);
    if (geteuid() != 0) /* root writes through 0500 */
        cr_expect_eq(st.write_failures, 1, "write to a read-only dir should fail (and be tolerated)");
    kr_jit_image_free(&a1);
    kr_jit_image_free(&a2);
    kr_jit_image_free(&b1);
    kr_jit_free(jit);
    rm_rf(dir);
}

Test(jit_cache, uncreatable_dir_compiles_in_memory)
{
    char dir[PATH_MAX];
    make_tmpdir(dir, sizeof dir);
    char file[PATH_MAX + 8], cache[PATH_MAX + 16];
    snprintf(file, sizeof file, "%s/f", dir);
    write_file(file, "x", 1);
    snprintf(cache, sizeof cache, "%s/sub", file); /* under a regular file: mkdir fails even as root */
    kr_jit_config cfg = {.cache_dir = cache, .kernel_dir = ""};
    kr_jit *jit = jit_or_skip(&cfg);
    cr_expect_null(kr_jit_cache_dir(jit));
    kr_jit_source sa = src_of("t/a.cu", k_src_a);
    kr_jit_image a1;
    compile_ok(jit, &sa, 90, KR_JIT_CUBIN, &a1);
    cr_expect_not(a1.from_cache);
    kr_jit_image_free(&a1);
    kr_jit_free(jit);
    rm_rf(dir);
}

static void check_refused_mode(mode_t mode)
{
    char dir[PATH_MAX];
    make_tmpdir(dir, sizeof dir);
    cr_assert_eq(chmod(dir, mode), 0);
    kr_jit_config cfg = {.cache_dir = dir, .kernel_dir = ""};
    kr_jit *jit = jit_or_skip(&cfg);
    cr_expect_null(kr_jit_cache_dir(jit), "mode %03o dir accepted", (unsigned)mode);
    kr_jit_source sa = src_of("t/a.cu", k_src_a);
    kr_jit_image a1, a2;
    compile_ok(jit, &sa, 90, KR_JIT_CUBIN, &a1);
    compile_ok(jit, &sa, 90, KR_JIT_CUBIN, &a2);
    cr_expect_not(a2.from_cache);
    cr_expect_eq(count_files(dir), 0, "something was written to a %03o dir", (unsigned)mode);
    kr_jit_image_free(&a1);
    kr_jit_image_free(&a2);
    kr_jit_free(jit);
    rm_rf(dir);
}

Test(jit_cache, world_writable_dir_refused) { check_refused_mode(0777); }
Test(jit_cache, group_writable_dir_refused) { check_refused_mode(0770); }

Test(jit_cache, key_covers_every_input)
{
    kr_jit_config cfg = {.no_cache = true, .kernel_dir = ""};
    kr_jit *jit = jit_or_skip(&cfg);
    static const char hdr1[] = "#define V 1\n", hdr2[] = "#define V 2\n";
    kr_jit_header h1 = {.name = "v.cuh", .src = hdr1, .len = sizeof hdr1 - 1};
    kr_jit_header h2 = {.name = "v.cuh", .src = hdr2, .len = sizeof hdr2 - 1};
    const char *o1[] = {"-DX=1"}, *o2[] = {"-DX=2"};
    kr_jit_source base = src_of("t/a.cu", k_src_a);
    base.headers = &h1;
    base.n_headers = 1;
    base.options = o1;
    base.n_options = 1;
    uint8_t k0[32], k1[32];
    cr_assert_eq(kr_jit_key(jit, &base, 90, KR_JIT_CUBIN, k0, NULL), KR_OK);
    cr_assert_eq(kr_jit_key(jit, &base, 90, KR_JIT_CUBIN, k1, NULL), KR_OK);
    cr_expect_eq(memcmp(k0, k1, 32), 0, "key is not deterministic");

    kr_jit_source v = base;
    v.options = o2;
    cr_assert_eq(kr_jit_key(jit, &v, 90, KR_JIT_CUBIN, k1, NULL), KR_OK);
    cr_expect_neq(memcmp(k0, k1, 32), 0, "options not in the key");
    cr_assert_eq(kr_jit_key(jit, &base, 89, KR_JIT_CUBIN, k1, NULL), KR_OK);
    cr_expect_neq(memcmp(k0, k1, 32), 0, "arch not in the key");
    cr_assert_eq(kr_jit_key(jit, &base, 90, KR_JIT_PTX, k1, NULL), KR_OK);
    cr_expect_neq(memcmp(k0, k1, 32), 0, "target not in the key");
    v = base;
    v.headers = &h2;
    cr_assert_eq(kr_jit_key(jit, &v, 90, KR_JIT_CUBIN, k1, NULL), KR_OK);
    cr_expect_neq(memcmp(k0, k1, 32), 0, "header text not in the key");
    v = base;
    v.src = k_src_b;
    v.len = strlen(k_src_b);
    cr_assert_eq(kr_jit_key(jit, &v, 90, KR_JIT_CUBIN, k1, NULL), KR_OK);
    cr_expect_neq(memcmp(k0, k1, 32), 0, "source not in the key");
    v = base;
    v.name = "t/other.cu";
    cr_assert_eq(kr_jit_key(jit, &v, 90, KR_JIT_CUBIN, k1, NULL), KR_OK);
    cr_expect_neq(memcmp(k0, k1, 32), 0, "name not in the key");
    kr_jit_free(jit);

    /* driver version */
    kr_jit_config cfg2 = {.no_cache = true, .kernel_dir = "", .driver_version = 13000};
    jit = jit_or_skip(&cfg2);
    cr_assert_eq(kr_jit_key(jit, &base, 90, KR_JIT_CUBIN, k1, NULL), KR_OK);
    cr_expect_neq(memcmp(k0, k1, 32), 0, "driver version not in the key");
    kr_jit_free(jit);
}

Test(jit, kernel_dir_overrides_embedded_source)
{
    char dir[PATH_MAX];
    make_tmpdir(dir, sizeof dir);
    char sub[PATH_MAX + 8], file[PATH_MAX + 16];
    snprintf(sub, sizeof sub, "%s/t", dir);
    cr_assert_eq(mkdir(sub, 0700), 0);
    snprintf(file, sizeof file, "%s/a.cu", sub);
    /* the on-disk copy has an error the embedded one lacks: a failure proves it was read */
    static const char disk_src[] = "extern \"C\" __global__ void k() { from_disk_marker(); }\n";
    write_file(file, disk_src, strlen(disk_src));
    kr_jit_config cfg = {.no_cache = true, .kernel_dir = dir};
    kr_jit *jit = jit_or_skip(&cfg);
    kr_jit_source sa = src_of("t/a.cu", k_src_a);
    kr_jit_image img;
    kr_err e;
    kr_err_clear(&e);
    kr_status st = kr_jit_compile(jit, &sa, 90, KR_JIT_PTX, &img, &e);
    cr_expect_eq(st, KR_ERR_JIT);
    cr_expect(strstr(e.msg, "from_disk_marker") != NULL, "override not used: %s", e.msg);
    /* a name with no file on disk falls back to the embedded copy */
    kr_jit_source sb = src_of("t/b.cu", k_src_b);
    compile_ok(jit, &sb, 90, KR_JIT_PTX, &img);
    cr_expect(strstr(img.data, "mul2") != NULL);
    kr_jit_image_free(&img);
    kr_jit_free(jit);
    rm_rf(dir);
}

/* Two compilations of the same kernel at once into one cache dir both
 * succeed (atomic rename; readers never see a half-written entry). */
typedef struct {
    kr_jit *jit;
    kr_status st;
    kr_jit_image img;
} race_arg;

static void *race_thread(void *p)
{
    race_arg *a = p;
    kr_jit_source s = src_of("t/a.cu", k_src_a);
    a->st = kr_jit_compile(a->jit, &s, 90, KR_JIT_CUBIN, &a->img, NULL);
    return NULL;
}

Test(jit_cache, concurrent_compiles_both_succeed)
{
    char dir[PATH_MAX];
    make_tmpdir(dir, sizeof dir);
    kr_jit_config cfg = {.cache_dir = dir, .kernel_dir = ""};
    kr_jit *j1 = jit_or_skip(&cfg);
    kr_jit *j2 = jit_or_skip(&cfg);
    race_arg a = {.jit = j1}, b = {.jit = j2};
    pthread_t ta, tb;
    cr_assert_eq(pthread_create(&ta, NULL, race_thread, &a), 0);
    cr_assert_eq(pthread_create(&tb, NULL, race_thread, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    cr_expect_eq(a.st, KR_OK);
    cr_expect_eq(b.st, KR_OK);
    cr_assert_eq(a.img.size, b.img.size);
    cr_expect_eq(memcmp(a.img.data, b.img.data, a.img.size), 0);
    cr_expect_eq(count_files(dir), 1, "temp files left behind or entry missing");
    kr_jit_image_free(&a.img);
    kr_jit_image_free(&b.img);
    kr_jit_free(j1);
    kr_jit_free(j2);
    rm_rf(dir);
}

/* A missing NVRTC is an actionable error, not a crash. */
Test(jit, missing_nvrtc_is_a_clear_error)
{
    kr_jit_config cfg = {.no_cache = true, .kernel_dir = "", .nvrtc_path = "/nonexistent/libnvrtc.so.99"};
    kr_jit *jit = (kr_jit *)(uintptr_t)1;
    kr_err e;
    kr_err_clear(&e);
    kr_status st = kr_jit_create(&cfg, &jit, &e);
    if (st == KR_ERR_UNSUPPORTED)
        cr_skip_test("built without CUDA");
    cr_expect_eq(st, KR_ERR_NOT_FOUND, "got %s", kr_status_name(st));
    cr_expect_null(jit);
    cr_expect(strstr(e.msg, "NVRTC not found") != NULL, "message: %s", e.msg);
    cr_expect(strstr(e.msg, "/nonexistent/libnvrtc.so.99") != NULL, "message lacks the dlerror: %s", e.msg);
    cr_expect(strstr(e.msg, "CUDA_PATH") != NULL, "message lacks the fix: %s", e.msg);
}
