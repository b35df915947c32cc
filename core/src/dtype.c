#include "kernrun/dtype.h"

#include <strings.h>

#include "kernrun/checked.h"

typedef struct dtype_info {
    const char *name;
    uint32_t block_size;
    uint32_t type_size;
} dtype_info;

static const dtype_info g_info[KR_DTYPE_COUNT] = {
#define KR__DTYPE_INFO(nm, id, bs, ts, str) [id] = {str, bs, ts},
    KR_DTYPE_MAP(KR__DTYPE_INFO)
#undef KR__DTYPE_INFO
};

/* GGML ids that exist but that kernrun does not implement; named in messages. */
static const char *const g_other_names[KR_DTYPE_COUNT] = {
    [4] = "q4_2 (removed)", [5] = "q4_3 (removed)", [16] = "iq2_xxs", [17] = "iq2_xs",
    [18] = "iq3_xxs", [19] = "iq1_s", [20] = "iq4_nl", [21] = "iq3_s", [22] = "iq2_s",
    [23] = "iq4_xs", [29] = "iq1_m", [31] = "q4_0_4_4 (removed)", [32] = "q4_0_4_8 (removed)",
    [33] = "q4_0_8_8 (removed)", [34] = "tq1_0", [35] = "tq2_0", [39] = "mxfp4",
};

bool kr_dtype_valid(int id)
{
    return id >= 0 && id < KR_DTYPE_COUNT && g_info[id].name != NULL;
}

size_t kr_dtype_block_size(kr_dtype t) { return kr_dtype_valid((int)t) ? g_info[t].block_size : 0; }
size_t kr_dtype_type_size(kr_dtype t) { return kr_dtype_valid((int)t) ? g_info[t].type_size : 0; }

const char *kr_dtype_name(int id)
{
    if (kr_dtype_valid(id))
        return g_info[id].name;
    if (id >= 0 && id < KR_DTYPE_COUNT && g_other_names[id])
        return g_other_names[id];
    return "?";
}

kr_dtype kr_dtype_from_name(const char *name)
{
    if (!name)
        return KR_DTYPE_INVALID;
    for (int i = 0; i < KR_DTYPE_COUNT; i++)
        if (g_info[i].name && strcasecmp(name, g_info[i].name) == 0)
            return (kr_dtype)i;
    return KR_DTYPE_INVALID;
}

bool kr_dtype_is_quantized(kr_dtype t) { return kr_dtype_valid((int)t) && g_info[t].block_size > 1; }

bool kr_dtype_row_size(kr_dtype t, uint64_t n, uint64_t *bytes)
{
    if (!kr_dtype_valid((int)t))
        return false;
    uint64_t bs = g_info[t].block_size;
    if (n % bs != 0)
        return false;
    return !kr_mul_overflow_u64(n / bs, g_info[t].type_size, bytes);
}
