/* CPU reference op table (plugins/cpu_ops). Linked statically into the
 * model tools/tests; the same code backs the cpu_ops plugin. */
#ifndef KERNRUN_CPU_OPS_H
#define KERNRUN_CPU_OPS_H

#include "kernrun/ops.h"

/* The table; static storage, valid for the process lifetime. */
extern const kr_ops kr_cpu_ops_table;
const kr_ops *kr_cpu_ops(void);

#endif
