/* Moved to tests/common/kr_test_leaks.h (include dir kr_test_common_inc).
 * This forwarder stays while tests/gpu_forward includes it by this path. */
#include "../common/kr_test_leaks.h"
