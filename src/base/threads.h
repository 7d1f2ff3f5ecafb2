/* threads.h: a persistent thread pool for data-parallel loops.
 *
 * threadpool_run(pool, fn, ctx) calls fn(ctx, ith, nth) once on each of the pool's nth threads
 * (the caller is thread 0) and returns when all have finished. Workers sleep on a condition
 * variable between jobs after a short spin, so back-to-back ops (one per layer step) pay no
 * thread creation and little wake-up latency. One job at a time: the pool is owned by one
 * caller thread (the engine's compute thread); it is not reentrant.
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
/* Called by every thread of the running job (all nth of them, or none): returns once all have
 * arrived, and everything each thread wrote before it is visible to all after it. Lets one job
 * hold several phases (quantize the activations, then multiply) for the price of a spin instead
 * of a second wake-up. */
void threadpool_barrier(struct threadpool *pool);

/* Number of online CPUs (>= 1). */
int threads_n_cpus(void);

#endif
