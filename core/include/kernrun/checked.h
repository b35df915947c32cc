/* Checked size arithmetic. All size computations on untrusted input (file
 * headers, tensor shapes, counts) go through these: they return true on
 * overflow and leave *out unspecified. */
#ifndef KERNRUN_CHECKED_H
#define KERNRUN_CHECKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

static inline bool kr_add_overflow_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_add_overflow(a, b, out);
}
static inline bool kr_mul_overflow_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}
static inline bool kr_add_overflow_size(size_t a, size_t b, size_t *out)
{
    return __builtin_add_overflow(a, b, out);
}
static inline bool kr_mul_overflow_size(size_t a, size_t b, size_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}
/* a*b*c */
static inline bool kr_mul3_overflow_u64(uint64_t a, uint64_t b, uint64_t c, uint64_t *out)
{
    uint64_t t;
    return __builtin_mul_overflow(a, b, &t) || __builtin_mul_overflow(t, c, out);
}
/* Round x up to a multiple of align (align a power of two, non-zero). */
static inline bool kr_align_up_u64(uint64_t x, uint64_t align, uint64_t *out)
{
    uint64_t t;
    if (align == 0 || (align & (align - 1)) != 0)
        return true;
    if (__builtin_add_overflow(x, align - 1, &t))
        return true;
    *out = t & ~(align - 1);
    return false;
}
static inline bool kr_is_pow2_u64(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

#endif
