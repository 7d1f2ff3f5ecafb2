/* threads.c: persistent worker pool (see threads.h).
 *
 * A job is published by bumping `generation`; workers spin on the generation counter for a
 * while (~0.2 ms: the ops of a forward pass come back to back, and a spinning worker starts
 * within a cache-line transfer), then block on the condition variable, and the publisher only
 * takes the mutex to broadcast when someone sleeps. Completion is counted with an atomic; the
 * caller spins (then yields) until every worker has reported. The in-job barrier is a
 * sense-counting spin barrier that yields after a while, so a thread that lost its core to
 * another process does not leave the others burning theirs.
 */
#include "threads.h"

#include "error.h"
#include "mem.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#define SPIN_ITERS 4000 /* pause-loop iterations before sleeping / yielding (~0.2 ms) */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

struct threadpool {
    int n_threads;      /* including the caller */
    pthread_t *workers; /* [n_threads - 1] */
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    _Atomic unsigned generation; /* bumped once per job */
    _Atomic int n_done;          /* workers finished with the current job */
    _Atomic int stop;
    _Atomic int n_sleeping; /* workers blocked (or about to block) on cond */
    threadpool_task_fn fn;  /* current job */
    void *ctx;
    _Atomic int barrier_count;      /* threads arrived at the current barrier */
    _Atomic unsigned barrier_phase; /* bumped when a barrier opens */
};

struct worker_arg {
    struct threadpool *pool;
    int ith;
};

static void *worker_main(void *p) {
    struct worker_arg arg = *(struct worker_arg *)p;
    mem_free(p);
    struct threadpool *pool = arg.pool;
    unsigned seen = 0;
    for (;;) {
        unsigned gen;
        int spins = 0;
        while ((gen = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen &&
               !atomic_load(&pool->stop) && spins < SPIN_ITERS) {
            cpu_relax();
            spins++;
        }
        if (gen == seen && !atomic_load(&pool->stop)) {
            /* seq_cst: either the publisher sees n_sleeping > 0 and broadcasts, or we see the
             * new generation here before waiting. */
            pthread_mutex_lock(&pool->mutex);
            atomic_fetch_add(&pool->n_sleeping, 1);
            while ((gen = atomic_load(&pool->generation)) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->cond, &pool->mutex);
            atomic_fetch_sub(&pool->n_sleeping, 1);
            pthread_mutex_unlock(&pool->mutex);
        }
        if (atomic_load(&pool->stop)) break;
        seen = gen;
        pool->fn(pool->ctx, arg.ith, pool->n_threads);
        atomic_fetch_add_explicit(&pool->n_done, 1, memory_order_release);
    }
    return NULL;
}

int threadpool_create(struct threadpool **out, int n_threads) {
    *out = NULL;
    if (n_threads < 1 || n_threads > 1024) return ERR_INVALID;
    struct threadpool *pool = mem_calloc(1, sizeof(*pool));
    if (!pool) return ERR_NOMEM;
    pool->n_threads = n_threads;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->cond, NULL);
    if (n_threads > 1) {
        pool->workers = mem_calloc((size_t)n_threads - 1, sizeof(pthread_t));
        if (!pool->workers) goto fail;
    }
    for (int i = 1; i < n_threads; i++) {
        struct worker_arg *arg = mem_alloc(sizeof(*arg));
        if (!arg) goto fail_threads;
        arg->pool = pool;
        arg->ith = i;
        if (pthread_create(&pool->workers[i - 1], NULL, worker_main, arg) != 0) {
            mem_free(arg);
            goto fail_threads;
        }
        continue;
    fail_threads:
        pool->n_threads = i; /* join only the threads that exist */
        threadpool_free(pool);
        return ERR_NOMEM;
    }
    *out = pool;
    return 0;
fail:
    pthread_mutex_destroy(&pool->mutex);
    pthread_cond_destroy(&pool->cond);
    mem_free(pool);
    return ERR_NOMEM;
}

void threadpool_free(struct threadpool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->mutex);
    atomic_store(&pool->stop, 1);
    pthread_cond_broadcast(&pool->cond);
    pthread_mutex_unlock(&pool->mutex);
    for (int i = 1; i < pool->n_threads; i++) pthread_join(pool->workers[i - 1], NULL);
    pthread_mutex_destroy(&pool->mutex);
    pthread_cond_destroy(&pool->cond);
    mem_free(pool->workers);
    mem_free(pool);
}

int threadpool_n_threads(const struct threadpool *pool) {
    return pool->n_threads;
}

void threadpool_run(struct threadpool *pool, threadpool_task_fn fn, void *ctx) {
    if (pool->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    pool->fn = fn;
    pool->ctx = ctx;
    atomic_store(&pool->n_done, 0);
    atomic_fetch_add(&pool->generation, 1);
    if (atomic_load(&pool->n_sleeping) > 0) {
        pthread_mutex_lock(&pool->mutex);
        pthread_cond_broadcast(&pool->cond);
        pthread_mutex_unlock(&pool->mutex);
    }
    fn(ctx, 0, pool->n_threads);
    int spins = 0;
    while (atomic_load_explicit(&pool->n_done, memory_order_acquire) < pool->n_threads - 1) {
        if (++spins > SPIN_ITERS)
            sched_yield();
        else
            cpu_relax();
    }
}

void threadpool_barrier(struct threadpool *pool) {
    if (pool->n_threads == 1) return;
    /* Read the phase before arriving: the barrier cannot open without this thread. */
    unsigned phase = atomic_load(&pool->barrier_phase);
    if (atomic_fetch_add(&pool->barrier_count, 1) == pool->n_threads - 1) {
        atomic_store(&pool->barrier_count, 0);
        atomic_fetch_add(&pool->barrier_phase, 1);
        return;
    }
    int spins = 0;
    while (atomic_load(&pool->barrier_phase) == phase) {
        if (++spins > SPIN_ITERS)
            sched_yield();
        else
            cpu_relax();
    }
}

int threads_n_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
