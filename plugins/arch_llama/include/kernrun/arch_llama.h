/* llama / mistral architecture handlers (plugins/arch_llama). */
#ifndef KERNRUN_ARCH_LLAMA_H
#define KERNRUN_ARCH_LLAMA_H

#include "kernrun/arch.h"

extern const kr_arch_iface kr_arch_llama_iface;   /* general.architecture = "llama" */
extern const kr_arch_iface kr_arch_mistral_iface; /* "mistral": llama + sliding window */

#endif
