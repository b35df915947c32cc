/* CUDA backend stub for builds without the CUDA toolkit. */
#include "../backend_internal.h"

kr_status kr__cuda_backend_create(int device, kr_backend **out, kr_err *err)
{
    return kr__cuda_backend_create_opts(device, NULL, out, err);
}

kr_status kr__cuda_backend_create_opts(int device, const kr__backend_opts *opts, kr_backend **out, kr_err *err)
{
    (void)device;
    (void)opts;
    if (out)
        *out = NULL;
    return kr_err_set(err, KR_ERR_NO_DEVICE, "CUDA backend: kernrun was built without CUDA");
}

kr_status kr__cuda_device_count(int *n, kr_err *err)
{
    if (n)
        *n = 0;
    return kr_err_set(err, KR_ERR_NO_DEVICE, "CUDA backend: kernrun was built without CUDA");
}
