/* cpu_internal.h: what the CPU backend's op files share with cpu_backend.c.
 *
 * cpu_backend.c owns the context (thread pool, kernel table, scratch) and installs the core ops;
 * other op files (cpu_ops_recurrent.c, ...) reach the thread pool through these accessors and
 * install their own entries into the struct backend at creation. Not a public header: only
 * src/backend/cpu/ includes it.
 */
#ifndef HEARTH_CPU_INTERNAL_H
#define HEARTH_CPU_INTERNAL_H

#include "../../base/threads.h"
#include "../backend.h"

/* The backend's thread pool (valid for the backend's lifetime). */
struct threadpool *cpu_backend_pool(struct backend *be);
const struct cpu_kernels *cpu_backend_kernels(struct backend *be);

/* Split [0, n) into nth near-equal contiguous ranges; thread ith gets [*lo, *hi). */
void cpu_split_range(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi);

/* Installs the ops of hybrid models (ssm_conv, gated_delta_net, sigmoid_mul). */
void cpu_ops_recurrent_install(struct backend *be);

#endif
