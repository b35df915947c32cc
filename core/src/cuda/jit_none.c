/* JIT stubs for builds without the CUDA toolkit headers: every entry
 * reports that CUDA support was not built. SHA-256 (sha256.c) stays. */
#include <string.h>

#include "kernrun/jit.h"

static kr_status kr__jit_unbuilt(kr_err *err)
{
    return kr_err_set(err, KR_ERR_UNSUPPORTED, "NVRTC JIT: kernrun was built without CUDA");
}

kr_status kr_jit_create(const kr_jit_config *cfg, kr_jit **out, kr_err *err)
{
    (void)cfg;
    if (out)
        *out = NULL;
    return kr__jit_unbuilt(err);
}

void kr_jit_free(kr_jit *jit) { (void)jit; }
int kr_jit_nvrtc_version(const kr_jit *jit) { (void)jit; return 0; }
const char *kr_jit_cache_dir(const kr_jit *jit) { (void)jit; return NULL; }

kr_status kr_jit_compile(kr_jit *jit, const kr_jit_source *src, int arch, kr_jit_target target,
                         kr_jit_image *out, kr_err *err)
{
    (void)jit, (void)src, (void)arch, (void)target;
    if (out)
        memset(out, 0, sizeof *out);
    return kr__jit_unbuilt(err);
}

void kr_jit_image_free(kr_jit_image *img) { (void)img; }

kr_status kr_jit_key(kr_jit *jit, const kr_jit_source *src, int arch, kr_jit_target target,
                     uint8_t key[32], kr_err *err)
{
    (void)jit, (void)src, (void)arch, (void)target, (void)key;
    return kr__jit_unbuilt(err);
}

kr_status kr_jit_cache_path(const kr_jit *jit, const uint8_t key[32], char *buf, size_t bufsize)
{
    (void)jit, (void)key, (void)buf, (void)bufsize;
    return KR_ERR_UNSUPPORTED;
}

void kr_jit_get_stats(kr_jit *jit, kr_jit_stats *out)
{
    (void)jit;
    if (out)
        memset(out, 0, sizeof *out);
}
