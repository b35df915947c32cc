/* Private helpers of the quant library. */
#ifndef KERNRUN_QUANT_COMMON_H
#define KERNRUN_QUANT_COMMON_H

#include <stdint.h>
#include <string.h>

#include "kernrun/err_local.h"
#include "kernrun/half.h"
#include "kernrun/quant.h"

static inline uint16_t kr__ld_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t kr__ld_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline void kr__st_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xff);
    p[1] = (uint8_t)(v >> 8);
}
static inline void kr__st_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
/* fp16 -> fp32 without branches (vectorizable); same results as
 * kr_fp16_to_fp32 for all 65536 inputs (tested). The 15 exponent/mantissa
 * bits placed at the top of an fp32's exponent/mantissa give 2^-112 times
 * the half's value (normals and subnormals alike, exactly), so one multiply
 * by 2^112 rebiases; inf/NaN (exponent 31) are patched in with a select. */
static inline float kr__f16_to_f32(uint16_t h)
{
    const uint32_t em = (uint32_t)(h & 0x7fffu) << 13;
    float v;
    memcpy(&v, &em, 4);
    v *= 0x1p112f;
    uint32_t r;
    memcpy(&r, &v, 4);
    const uint32_t special = 0u - (uint32_t)(em >= (0x7c00u << 13)); /* all ones for inf/NaN */
    r = (r & ~special) | ((em | 0x7f800000u) & special);
    r |= (uint32_t)(h & 0x8000u) << 16;
    memcpy(&v, &r, 4);
    return v;
}
static inline float kr__ld_f16(const uint8_t *p) { return kr__f16_to_f32(kr__ld_u16(p)); }

/* Validate (t, n) for an operation; ok_type says whether t is handled. */
kr_status kr__quant_check(kr_dtype t, size_t n, bool ok_type, const char *what, kr_err *err);
const char *kr__quant_type_name(kr_dtype t);

#endif
