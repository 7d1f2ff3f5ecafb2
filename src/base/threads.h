/* threads.h: a persistent thread pool for data-parallel loops.
 *
 * threadpool_run(pool, fn, ctx) calls fn(ctx, ith, nth) once on each of the pool's nth threads
 * (the caller is thread 0) and returns when all have finished. threadpool_run_dynamic runs fn
 * only on the threads that are ready, for work that is claimed dynamically (the CPU backend's
 * ops): on a shared machine a descheduled worker then costs a share of throughput, not a stall.
 * Workers spin for a moment between jobs and then sleep on a condition variable, so
 * back-to-back ops (one per layer step) pay no thread creation and little wake-up latency. One
 * job at a time: the pool is owned by one caller thread (the engine's compute thread); it is
 * not reentrant.
 */
#ifndef HEARTH_THREADS_H
#define HEARTH_THREADS_H

typedef void (*threadpool_task_fn)(void *ctx, int ith, int nth);

struct threadpool;

/* n_threads >= 1 (1 = run on the caller only). Returns 0, ERR_NOMEM or ERR_INVALID. */
int threadpool_create(struct threadpool **out, int n_threads);
void threadpool_free(struct threadpool *pool);
int threadpool_n_threads(const struct threadpool *pool);
void threadpool_run(struct threadpool *pool, threadpool_task_fn fn, void *ctx);
/* Like threadpool_run, but fn runs on the caller (ith 0) and only on the workers that join the
 * job before the caller's fn returns; each joins at most once and ith stays unique in [0, nth).
 * So fn must claim its work dynamically (an atomic counter), never split it by ith, and must not
 * wait for other threads except for work some thread has already claimed. In exchange a worker
 * that lost its core to another process, or is still waking up, holds nobody back: the caller
 * does the work itself. Returns when the caller's fn has returned and every joined worker's
 * fn too. */
void threadpool_run_dynamic(struct threadpool *pool, threadpool_task_fn fn, void *ctx);

/* Work for waiting workers: while a worker spins between jobs it calls fn(ctx, ith) before each
 * pause, until fn returns 0 (nothing left; called again after the worker's next job). fn must
 * be short (a few cache lines of prefetching, say): a new job waits for it. Set it before the
 * first job (a worker reads fn and ctx as it starts waiting); NULL (the default) for none. */
typedef int (*threadpool_idle_fn)(void *ctx, int ith);
void threadpool_set_idle(struct threadpool *pool, threadpool_idle_fn fn, void *ctx);
/* Number of online CPUs (>= 1). */
int threads_n_cpus(void);

#endif
