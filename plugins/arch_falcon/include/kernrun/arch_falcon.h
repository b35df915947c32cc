/* falcon architecture handler (plugins/arch_falcon). */
#ifndef KERNRUN_ARCH_FALCON_H
#define KERNRUN_ARCH_FALCON_H

#include "kernrun/arch.h"

extern const kr_arch_iface kr_arch_falcon_iface; /* general.architecture = "falcon" */

#endif
