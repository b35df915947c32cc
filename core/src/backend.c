/* Backend creation and kind names. */
#include <strings.h>

#include "backend_internal.h"
#include "kernrun/backend.h"

const char *kr_backend_kind_name(kr_backend_kind kind)
{
    switch (kind) {
    case KR_BACKEND_CPU: return "cpu";
    case KR_BACKEND_CUDA: return "cuda";
    default: return "?";
    }
}

kr_status kr_backend_kind_parse(const char *s, kr_backend_kind *out)
{
    if (!s || !out)
        return KR_ERR_INVALID_ARG;
    if (strcasecmp(s, "cpu") == 0)
        *out = KR_BACKEND_CPU;
    else if (strcasecmp(s, "cuda") == 0)
        *out = KR_BACKEND_CUDA;
    else
        return KR_ERR_INVALID_ARG;
    return KR_OK;
}

kr_status kr_backend_count_devices(kr_backend_kind kind, int *n, kr_err *err)
{
    if (!n)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_backend_count_devices: n is NULL");
    *n = 0;
    switch (kind) {
    case KR_BACKEND_CPU:
        *n = 1;
        return KR_OK;
    case KR_BACKEND_CUDA:
        return kr__cuda_device_count(n, err);
    default:
        return kr_err_set(err, KR_ERR_INVALID_ARG, "unknown backend kind %d", (int)kind);
    }
}

kr_status kr_backend_create(kr_backend_kind kind, int device_index, kr_backend **out, kr_err *err)
{
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_backend_create: out is NULL");
    *out = NULL;
    switch (kind) {
    case KR_BACKEND_CPU:
        if (device_index != 0)
            return kr_err_set(err, KR_ERR_RANGE, "cpu backend has one device (0), asked for %d", device_index);
        return kr__cpu_backend_create(out, err);
    case KR_BACKEND_CUDA:
        if (device_index < 0)
            return kr_err_set(err, KR_ERR_RANGE, "cuda device index %d is negative", device_index);
        return kr__cuda_backend_create(device_index, out, err);
    default:
        return kr_err_set(err, KR_ERR_INVALID_ARG, "unknown backend kind %d", (int)kind);
    }
}

void kr_backend_destroy(kr_backend *be)
{
    if (be && be->iface && be->iface->destroy)
        be->iface->destroy(be);
}
