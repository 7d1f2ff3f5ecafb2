/* arena.h: a per-request bump allocator.
 *
 * A request's parsed data (the validated fields, stop lists, logit biases, small strings) is
 * allocated here and freed all at once when the request ends, so handlers have no per-field
 * cleanup paths. Blocks come from base/mem (so allocation-failure tests see them). Not
 * thread-safe: one arena belongs to one request on one thread.
 */
#ifndef HEARTH_SERVER_ARENA_H
#define HEARTH_SERVER_ARENA_H

#include <stddef.h>

struct arena_block;

struct arena {
    struct arena_block *head; /* newest block first */
    size_t used;              /* bytes used in head */
    size_t cap;               /* bytes usable in head */
    size_t total;             /* bytes allocated in all blocks */
};

void arena_init(struct arena *a);
void arena_free(struct arena *a); /* releases every block; the arena can be reused */
/* n bytes aligned to 16, zeroed; NULL on allocation failure or overflow. */
void *arena_alloc(struct arena *a, size_t n);
/* Overflow-checked array allocation (zeroed). */
void *arena_array(struct arena *a, size_t n, size_t size);
char *arena_strndup(struct arena *a, const char *s, size_t n); /* NUL-terminated copy */

#endif
