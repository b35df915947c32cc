/* Private helpers of the quant library. */
#ifndef KERNRUN_QUANT_COMMON_H
#define KERNRUN_QUANT_COMMON_H

#include <stdint.h>
#include <string.h>

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
static inline float kr__ld_f16(const uint8_t *p) { return kr_fp16_to_fp32(kr__ld_u16(p)); }

/* Fill err (if non-NULL) without libkernrun symbols. Returns code. */
kr_status kr__quant_err(kr_err *err, kr_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Validate (t, n) for an operation; ok_type says whether t is handled. */
kr_status kr__quant_check(kr_dtype t, size_t n, bool ok_type, const char *what, kr_err *err);
const char *kr__quant_type_name(kr_dtype t);

#endif
