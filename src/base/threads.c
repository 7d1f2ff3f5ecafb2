/* threads.c: persistent worker pool (see threads.h).
 *
 * A job is published through one 64-bit atomic word, `state`: the job's sequence number in the
 * high half, and in the low half either STATIC (every worker runs it once and counts itself in
 * n_done) or, for a dynamic job, a CLOSED bit and the number of workers inside. A worker joins
 * a dynamic job with a compare-and-swap that fails once the caller has closed it, so joining
 * and closing are ordered on one word and the caller only ever waits for workers that are
 * actually running its job. Workers spin on the word for a while (~0.2 ms: the ops of a forward
 * pass come back to back, and a spinning worker starts within a cache-line transfer), then
 * block on the condition variable; the publisher takes the mutex to broadcast only when someone
 * sleeps. Waits spin with `pause` and then yield, so a thread that lost its core to another
 * process does not leave the others burning theirs.
 */
#include "threads.h"

#include "error.h"
#include "mem.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#define SPIN_ITERS 4000 /* pause-loop iterations before sleeping / yielding (~0.2 ms) */

#define STATE_SEQ(s) ((uint32_t)((s) >> 32))
#define STATE_STATIC 0x80000000u /* static job: every worker runs fn once */
#define STATE_CLOSED 0x40000000u /* dynamic job: no more joining */
#define STATE_ACTIVE 0x3fffffffu /* dynamic job: workers inside fn */

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
    _Atomic uint64_t state; /* seq << 32 | STATIC, or seq << 32 | CLOSED? | active */
    uint32_t seq;           /* caller's copy of the current job's sequence number */
    _Atomic int n_done;     /* static job: workers finished */
    _Atomic int stop;
    _Atomic int n_sleeping; /* workers blocked (or about to block) on cond */
    threadpool_task_fn fn;  /* current job, written before state is published */
    void *ctx;
    _Atomic(threadpool_idle_fn) idle_fn; /* work for spinning workers (threadpool_set_idle) */
    void *idle_ctx;                      /* written before idle_fn */
};

struct worker_arg {
    struct threadpool *pool;
    int ith;
};

/* Waits until the published job is newer than `seen`; returns its state (or any state once
 * stop is set). */
static uint64_t wait_for_job(struct threadpool *pool, uint32_t seen, int ith) {
    uint64_t s;
    threadpool_idle_fn idle_fn = atomic_load_explicit(&pool->idle_fn, memory_order_acquire);
    void *idle_ctx = idle_fn ? pool->idle_ctx : NULL; /* published before idle_fn */
    int idle = idle_fn != NULL;
    for (int spins = 0; spins < SPIN_ITERS; spins++) {
        s = atomic_load_explicit(&pool->state, memory_order_acquire);
        if (STATE_SEQ(s) != seen || atomic_load_explicit(&pool->stop, memory_order_relaxed))
            return s;
        if (idle) idle = idle_fn(idle_ctx, ith);
        cpu_relax();
    }
    /* seq_cst: either the publisher sees n_sleeping > 0 and broadcasts, or we see the new job
     * here before waiting. */
    pthread_mutex_lock(&pool->mutex);
    atomic_fetch_add(&pool->n_sleeping, 1);
    while (STATE_SEQ(s = atomic_load(&pool->state)) == seen && !atomic_load(&pool->stop))
        pthread_cond_wait(&pool->cond, &pool->mutex);
    atomic_fetch_sub(&pool->n_sleeping, 1);
    pthread_mutex_unlock(&pool->mutex);
    return s;
}

static void *worker_main(void *p) {
    struct worker_arg arg = *(struct worker_arg *)p;
    mem_free(p);
    struct threadpool *pool = arg.pool;
    uint32_t seen = 0;
    for (;;) {
        uint64_t s = wait_for_job(pool, seen, arg.ith);
        if (atomic_load(&pool->stop)) break;
        seen = STATE_SEQ(s);
        if (s & STATE_STATIC) {
            pool->fn(pool->ctx, arg.ith, pool->n_threads);
            atomic_fetch_add_explicit(&pool->n_done, 1, memory_order_release);
            continue;
        }
        /* dynamic: join unless closed (or already replaced by a newer job) */
        while (STATE_SEQ(s) == seen && !(s & STATE_CLOSED)) {
            if (atomic_compare_exchange_weak(&pool->state, &s, s + 1)) {
                pool->fn(pool->ctx, arg.ith, pool->n_threads);
                atomic_fetch_sub_explicit(&pool->state, 1, memory_order_release);
                break;
            }
        }
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

void threadpool_set_idle(struct threadpool *pool, threadpool_idle_fn fn, void *ctx) {
    atomic_store_explicit(&pool->idle_fn, NULL, memory_order_release);
    pool->idle_ctx = ctx;
    atomic_store_explicit(&pool->idle_fn, fn, memory_order_release);
}

int threadpool_n_threads(const struct threadpool *pool) {
    return pool->n_threads;
}

/* One step of a wait loop: pause for a while, then yield the core. */
static void backoff(int *spins) {
    if (++*spins > SPIN_ITERS)
        sched_yield();
    else
        cpu_relax();
}

static void publish(struct threadpool *pool, threadpool_task_fn fn, void *ctx, uint32_t flags) {
    pool->fn = fn;
    pool->ctx = ctx;
    atomic_store(&pool->n_done, 0);
    pool->seq++;
    atomic_store(&pool->state, (uint64_t)pool->seq << 32 | flags);
    if (atomic_load(&pool->n_sleeping) > 0) {
        pthread_mutex_lock(&pool->mutex);
        pthread_cond_broadcast(&pool->cond);
        pthread_mutex_unlock(&pool->mutex);
    }
}

void threadpool_run(struct threadpool *pool, threadpool_task_fn fn, void *ctx) {
    if (pool->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    publish(pool, fn, ctx, STATE_STATIC);
    fn(ctx, 0, pool->n_threads);
    int spins = 0;
    while (atomic_load_explicit(&pool->n_done, memory_order_acquire) < pool->n_threads - 1)
        backoff(&spins);
}

void threadpool_run_dynamic(struct threadpool *pool, threadpool_task_fn fn, void *ctx) {
    if (pool->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    publish(pool, fn, ctx, 0);
    fn(ctx, 0, pool->n_threads);
    atomic_fetch_or(&pool->state, STATE_CLOSED);
    int spins = 0;
    while (atomic_load_explicit(&pool->state, memory_order_acquire) & STATE_ACTIVE) backoff(&spins);
}

int threads_n_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
