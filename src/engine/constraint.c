/* constraint.c: token masks from a byte grammar (see constraint.h).
 *
 * The vocabulary becomes a trie stored in preorder: node i has the byte on the edge into it,
 * its depth, and next[i], the index just past its subtree, so one forward scan visits every
 * token's bytes in order and a refused byte skips the whole subtree with one assignment. The
 * scan keeps the automaton state per depth; with the matcher's memoised transitions each node
 * costs a table lookup. A finished mask is cached under the automaton state it was computed
 * for, and inside a JSON string or a long value the state recurs, so most steps reuse a mask.
 */
#include "constraint.h"

#include "../base/buf.h"
#include "../base/mem.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ============================================================================================
 * Vocabulary trie
 * ============================================================================================ */

struct constraint_vocab {
    int32_t n_vocab;
    char *blob;        /* all token bytes, concatenated */
    size_t *piece_off; /* [n_vocab + 1] token id's bytes: blob[piece_off[id]..piece_off[id+1]) */
    uint8_t *is_eog;   /* [n_vocab] */
    int32_t *eog;      /* [n_eog] end-of-generation ids */
    int32_t n_eog;
    int32_t n_nodes;   /* trie nodes, node 0 the root */
    uint8_t *byte;     /* [n_nodes] byte on the edge into the node */
    int32_t *depth;    /* [n_nodes] root 0 */
    int32_t *next;     /* [n_nodes] first index after the node's subtree */
    int32_t *tok_off;  /* [n_nodes + 1] tokens ending at node i: toks[tok_off[i]..tok_off[i+1]) */
    int32_t *toks;     /* token ids, grouped by node */
    int32_t max_depth; /* longest token, bytes */
};

struct piece_ref {
    const uint8_t *p;
    size_t len;
    int32_t id;
};

static int piece_cmp(const void *a, const void *b) {
    const struct piece_ref *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->p, y->p, n);
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

void constraint_vocab_free(struct constraint_vocab *v) {
    if (!v) return;
    mem_free(v->blob);
    mem_free(v->piece_off);
    mem_free(v->is_eog);
    mem_free(v->eog);
    mem_free(v->byte);
    mem_free(v->depth);
    mem_free(v->next);
    mem_free(v->tok_off);
    mem_free(v->toks);
    mem_free(v);
}

int32_t constraint_vocab_n_vocab(const struct constraint_vocab *v) {
    return v->n_vocab;
}

/* Builds the trie from v->blob / piece_off / is_eog. */
static int vocab_build(struct constraint_vocab *v, struct error *err) {
    int32_t n = v->n_vocab;
    struct piece_ref *refs = mem_alloc((size_t)n * sizeof(*refs) + 1);
    int32_t *node_of = mem_alloc((size_t)n * sizeof(int32_t) + 1);
    size_t total = v->piece_off[n];
    size_t cap_nodes = total + 1;
    v->byte = mem_alloc(cap_nodes);
    v->depth = mem_alloc(cap_nodes * sizeof(int32_t));
    v->next = mem_alloc(cap_nodes * sizeof(int32_t));
    v->eog = mem_alloc((size_t)n * sizeof(int32_t) + 1);
    int32_t *path = NULL;
    int rc = 0;
    if (!refs || !node_of || !v->byte || !v->depth || !v->next || !v->eog) goto nomem;
    int32_t n_refs = 0, max_len = 0;
    for (int32_t id = 0; id < n; id++) {
        size_t len = v->piece_off[id + 1] - v->piece_off[id];
        if (v->is_eog[id]) v->eog[v->n_eog++] = id;
        if (v->is_eog[id] || len == 0) continue; /* never spelled through the trie */
        refs[n_refs].p = (const uint8_t *)v->blob + v->piece_off[id];
        refs[n_refs].len = len;
        refs[n_refs].id = id;
        if (len > (size_t)max_len) max_len = len > 65536 ? 65536 : (int32_t)len;
        n_refs++;
    }
    qsort(refs, (size_t)n_refs, sizeof(*refs), piece_cmp);
    path = mem_alloc(((size_t)max_len + 1) * sizeof(int32_t)); /* node per depth */
    if (!path) goto nomem;
    v->n_nodes = 1;
    v->byte[0] = 0;
    v->depth[0] = 0;
    path[0] = 0;
    int32_t path_len = 0; /* depth of the last node on the path */
    const struct piece_ref *prev = NULL;
    for (int32_t i = 0; i < n_refs; i++) {
        const struct piece_ref *r = &refs[i];
        size_t len = r->len > 65536 ? 65536 : r->len;
        size_t common = 0;
        if (prev) {
            size_t m = prev->len < len ? prev->len : len;
            while (common < m && prev->p[common] == r->p[common]) common++;
        }
        if ((int32_t)common > path_len) common = (size_t)path_len;
        while (path_len > (int32_t)common) { /* close the nodes we leave */
            v->next[path[path_len]] = v->n_nodes;
            path_len--;
        }
        for (size_t d = common; d < len; d++) {
            int32_t k = v->n_nodes++;
            v->byte[k] = r->p[d];
            v->depth[k] = (int32_t)d + 1;
            path[++path_len] = k;
        }
        node_of[i] = path[path_len];
        prev = r;
    }
    while (path_len > 0) {
        v->next[path[path_len]] = v->n_nodes;
        path_len--;
    }
    v->next[0] = v->n_nodes;
    v->max_depth = max_len;
    v->tok_off = mem_calloc((size_t)v->n_nodes + 1, sizeof(int32_t));
    v->toks = mem_alloc((size_t)n_refs * sizeof(int32_t) + 1);
    if (!v->tok_off || !v->toks) goto nomem;
    for (int32_t i = 0; i < n_refs; i++) v->tok_off[node_of[i] + 1]++;
    for (int32_t k = 0; k < v->n_nodes; k++) v->tok_off[k + 1] += v->tok_off[k];
    for (int32_t i = 0; i < n_refs; i++) v->toks[i] = refs[i].id; /* node_of is ascending */
    goto done;
nomem:
    rc = error_set(err, ERR_NOMEM, "out of memory");
done:
    mem_free(refs);
    mem_free(node_of);
    mem_free(path);
    return rc;
}

int constraint_vocab_create_from_pieces(struct constraint_vocab **out, int32_t n_vocab,
                                        const char *const *pieces, const size_t *lens,
                                        const uint8_t *is_eog, struct error *err) {
    *out = NULL;
    if (n_vocab <= 0) return error_set(err, ERR_INVALID, "constraint: empty vocabulary");
    struct constraint_vocab *v = mem_calloc(1, sizeof(*v));
    if (!v) return error_set(err, ERR_NOMEM, "out of memory");
    v->n_vocab = n_vocab;
    size_t total = 0;
    for (int32_t i = 0; i < n_vocab; i++) total += lens[i];
    v->blob = mem_alloc(total + 1);
    v->piece_off = mem_alloc(((size_t)n_vocab + 1) * sizeof(size_t));
    v->is_eog = mem_calloc((size_t)n_vocab, 1);
    if (!v->blob || !v->piece_off || !v->is_eog) {
        constraint_vocab_free(v);
        return error_set(err, ERR_NOMEM, "out of memory");
    }
    size_t off = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        v->piece_off[i] = off;
        if (lens[i]) memcpy(v->blob + off, pieces[i], lens[i]);
        off += lens[i];
        v->is_eog[i] = is_eog && is_eog[i];
    }
    v->piece_off[n_vocab] = off;
    int rc = vocab_build(v, err);
    if (rc) {
        constraint_vocab_free(v);
        return rc;
    }
    *out = v;
    return 0;
}

const char *constraint_vocab_piece(const struct constraint_vocab *v, int32_t id, size_t *len) {
    if (id < 0 || id >= v->n_vocab) {
        *len = 0;
        return NULL;
    }
    *len = v->piece_off[id + 1] - v->piece_off[id];
    return v->blob + v->piece_off[id];
}

int constraint_vocab_create(struct constraint_vocab **out, const struct engine *e,
                            struct error *err) {
    *out = NULL;
    struct engine_info info;
    engine_get_info(e, &info);
    int32_t n = info.n_vocab;
    if (n <= 0) return error_set(err, ERR_INVALID, "constraint: empty vocabulary");
    struct constraint_vocab *v = mem_calloc(1, sizeof(*v));
    if (!v) return error_set(err, ERR_NOMEM, "out of memory");
    v->n_vocab = n;
    v->piece_off = mem_alloc(((size_t)n + 1) * sizeof(size_t));
    v->is_eog = mem_calloc((size_t)n, 1);
    struct buf blob;
    buf_init(&blob);
    if (!v->piece_off || !v->is_eog) goto nomem;
    for (int32_t id = 0; id < n; id++) {
        v->piece_off[id] = blob.len;
        engine_token_piece(e, id, 0, &blob);
        v->is_eog[id] = engine_token_is_eog(e, id) != 0;
    }
    v->piece_off[n] = blob.len;
    if (blob.failed) goto nomem;
    v->blob = buf_detach(&blob);
    if (!v->blob) goto nomem;
    int rc = vocab_build(v, err);
    if (rc) {
        constraint_vocab_free(v);
        return rc;
    }
    *out = v;
    return 0;
nomem:
    buf_free(&blob);
    constraint_vocab_free(v);
    return error_set(err, ERR_NOMEM, "out of memory");
}

/* ============================================================================================
 * Masks
 * ============================================================================================ */

struct constraint {
    const struct constraint_vocab *v;
    struct grammar_matcher *m;
    size_t n_words;   /* 64-bit words per mask */
    uint64_t **masks; /* [cap_masks] cached mask per automaton state, or NULL */
    int32_t cap_masks;
    size_t mask_bytes; /* bytes held by cached masks */
    uint64_t *scratch; /* [n_words] mask being computed */
    int32_t *states;   /* [max_depth + 1] automaton state per trie depth */
    struct constraint_stats stats;
    /* lazy start (constraint_set_lazy): waiting until the output spells the trigger */
    int lazy_waiting, in_think;
    char trigger[CONSTRAINT_TAG_MAX + 1], think_open[CONSTRAINT_TAG_MAX + 1],
        think_close[CONSTRAINT_TAG_MAX + 1];
    char tail[CONSTRAINT_TAG_MAX]; /* the output's last bytes while waiting */
    size_t n_tail;
};

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void drop_masks(struct constraint *c) {
    for (int32_t i = 0; i < c->cap_masks; i++) {
        mem_free(c->masks[i]);
        c->masks[i] = NULL;
    }
    c->mask_bytes = 0;
}

int constraint_create(struct constraint **out, const struct constraint_vocab *v,
                      const struct grammar *g, struct error *err) {
    *out = NULL;
    struct constraint *c = mem_calloc(1, sizeof(*c));
    if (!c) return error_set(err, ERR_NOMEM, "out of memory");
    c->v = v;
    c->n_words = ((size_t)v->n_vocab + 63) / 64;
    c->scratch = mem_alloc(c->n_words * sizeof(uint64_t));
    c->states = mem_alloc(((size_t)v->max_depth + 1) * sizeof(int32_t));
    int rc = 0;
    if (!c->scratch || !c->states)
        rc = error_set(err, ERR_NOMEM, "out of memory");
    else
        rc = grammar_matcher_create(&c->m, g, err);
    if (rc) {
        constraint_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void constraint_free(struct constraint *c) {
    if (!c) return;
    drop_masks(c);
    mem_free(c->masks);
    mem_free(c->scratch);
    mem_free(c->states);
    grammar_matcher_free(c->m);
    mem_free(c);
}

/* Walks the trie from state s0 and writes the allowed tokens into mask. */
static void compute_mask(struct constraint *c, int32_t s0, uint64_t *mask) {
    const struct constraint_vocab *v = c->v;
    struct grammar_matcher *m = c->m;
    memset(mask, 0, c->n_words * sizeof(uint64_t));
    int32_t *st = c->states;
    st[0] = s0;
    const uint8_t *byte = v->byte;
    const int32_t *depth = v->depth, *next = v->next, *tok_off = v->tok_off;
    int32_t *const *rows = grammar_matcher_rows(m);
    for (int32_t i = 1; i < v->n_nodes;) {
        int32_t from = st[depth[i] - 1];
        const int32_t *row = rows[from];
        int32_t s = row ? row[byte[i]] : GRAMMAR_UNKNOWN;
        if (s == GRAMMAR_UNKNOWN) { /* first time: compute (may add states and move rows) */
            s = grammar_matcher_next(m, from, byte[i]);
            rows = grammar_matcher_rows(m);
        }
        if (s < 0) {
            i = next[i];
            continue;
        }
        st[depth[i]] = s;
        for (int32_t k = tok_off[i]; k < tok_off[i + 1]; k++) {
            int32_t id = v->toks[k];
            mask[id >> 6] |= 1ULL << (id & 63);
        }
        i++;
    }
    if (grammar_matcher_accepts(m, s0))
        for (int32_t k = 0; k < v->n_eog; k++) mask[v->eog[k] >> 6] |= 1ULL << (v->eog[k] & 63);
}

/* The mask for the current state: cached, or computed (and cached when possible). */
static const uint64_t *current_mask(struct constraint *c) {
    if (grammar_matcher_trim(c->m, CONSTRAINT_MAX_MEMO_BYTES / 2)) drop_masks(c);
    if (c->mask_bytes > CONSTRAINT_MAX_MEMO_BYTES / 2) drop_masks(c);
    int32_t s = grammar_matcher_state(c->m);
    if (s < 0) {
        memset(c->scratch, 0, c->n_words * sizeof(uint64_t));
        return c->scratch;
    }
    if (s < c->cap_masks && c->masks[s]) {
        c->stats.n_cached++;
        return c->masks[s];
    }
    c->stats.n_walks++;
    compute_mask(c, s, c->scratch);
    if (grammar_matcher_failed(c->m)) {
        /* memory ran out mid-walk: the mask lacks some tokens (still safe: nothing invalid is
         * allowed). Not cached; everything but the current state is forgotten. */
        if (grammar_matcher_trim(c->m, 0)) drop_masks(c);
        return c->scratch;
    }
    if (s >= c->cap_masks) {
        int32_t ncap = c->cap_masks ? c->cap_masks : 64;
        while (ncap <= s) ncap *= 2;
        uint64_t **nm = mem_realloc(c->masks, (size_t)ncap * sizeof(*nm));
        if (!nm) return c->scratch;
        for (int32_t i = c->cap_masks; i < ncap; i++) nm[i] = NULL;
        c->masks = nm;
        c->cap_masks = ncap;
    }
    uint64_t *copy = mem_alloc(c->n_words * sizeof(uint64_t));
    if (!copy) return c->scratch;
    memcpy(copy, c->scratch, c->n_words * sizeof(uint64_t));
    c->masks[s] = copy;
    c->mask_bytes += c->n_words * sizeof(uint64_t);
    return copy;
}

int constraint_apply(struct constraint *c, float *logits) {
    if (c->lazy_waiting) return c->v->n_vocab;
    int64_t t0 = now_ns();
    const uint64_t *mask = current_mask(c);
    const struct constraint_vocab *v = c->v;
    int n_allowed = 0;
    for (size_t w = 0; w < c->n_words; w++) n_allowed += __builtin_popcountll(mask[w]);
    if (n_allowed == 0) { /* nothing can follow: let generation end */
        for (int32_t id = 0; id < v->n_vocab; id++)
            if (!v->is_eog[id]) logits[id] = -INFINITY;
        c->stats.apply_ns += now_ns() - t0;
        return 0;
    }
    for (size_t w = 0; w < c->n_words; w++) {
        uint64_t bits = mask[w];
        if (bits == ~0ULL) continue;
        int32_t base = (int32_t)(w * 64);
        int32_t lim = v->n_vocab - base < 64 ? v->n_vocab - base : 64;
        for (int32_t b = 0; b < lim; b++)
            if (!((bits >> b) & 1)) logits[base + b] = -INFINITY;
    }
    c->stats.apply_ns += now_ns() - t0;
    return n_allowed;
}

/* The state after token id from the current state, GRAMMAR_DEAD if it cannot follow. */
static int32_t state_after(struct constraint *c, int32_t id) {
    const struct constraint_vocab *v = c->v;
    int32_t s = grammar_matcher_state(c->m);
    size_t a = v->piece_off[id], e = v->piece_off[id + 1];
    if (a == e) return GRAMMAR_DEAD;
    for (size_t i = a; i < e && s >= 0; i++) s = grammar_matcher_next(c->m, s, (uint8_t)v->blob[i]);
    return s;
}

int constraint_allows(struct constraint *c, int32_t id) {
    if (id < 0 || id >= c->v->n_vocab) return 0;
    if (c->lazy_waiting) return 1;
    if (c->v->is_eog[id]) return constraint_is_complete(c);
    return state_after(c, id) >= 0;
}

static int tail_ends(const struct constraint *c, const char *s) {
    size_t n = strlen(s);
    return n && c->n_tail >= n && !memcmp(c->tail + c->n_tail - n, s, n);
}

/* Waiting for the trigger: follows the thinking tags through the token's bytes; at the trigger
 * the grammar starts with the trigger and the rest of the token. */
static int lazy_accept(struct constraint *c, int32_t id) {
    const struct constraint_vocab *v = c->v;
    const char *p = v->blob + v->piece_off[id];
    size_t len = v->piece_off[id + 1] - v->piece_off[id];
    for (size_t i = 0; i < len; i++) {
        if (c->n_tail == sizeof(c->tail)) {
            memmove(c->tail, c->tail + 1, sizeof(c->tail) - 1);
            c->n_tail--;
        }
        c->tail[c->n_tail++] = p[i];
        if (tail_ends(c, c->think_close)) {
            c->in_think = 0;
        } else if (tail_ends(c, c->think_open)) {
            c->in_think = 1;
        } else if (!c->in_think && tail_ends(c, c->trigger)) {
            c->lazy_waiting = 0;
            grammar_matcher_reset(c->m);
            int rc = constraint_accept_bytes(c, c->trigger, strlen(c->trigger));
            if (!rc && i + 1 < len) rc = constraint_accept_bytes(c, p + i + 1, len - i - 1);
            return rc;
        }
    }
    return 0;
}

int constraint_set_lazy(struct constraint *c, const char *trigger, const char *think_open,
                        const char *think_close, int in_think) {
    const char *tags[3] = {trigger, think_open ? think_open : "", think_close ? think_close : ""};
    char *dst[3] = {c->trigger, c->think_open, c->think_close};
    if (!trigger || !*trigger || !think_open != !think_close) return ERR_INVALID;
    for (int i = 0; i < 3; i++)
        if (strlen(tags[i]) > CONSTRAINT_TAG_MAX) return ERR_INVALID;
    for (int i = 0; i < 3; i++) memcpy(dst[i], tags[i], strlen(tags[i]) + 1);
    grammar_matcher_reset(c->m);
    c->lazy_waiting = 1;
    c->in_think = think_open && in_think;
    c->n_tail = 0;
    return 0;
}

int constraint_is_waiting(const struct constraint *c) {
    return c->lazy_waiting;
}

int constraint_accept(struct constraint *c, int32_t id) {
    if (id < 0 || id >= c->v->n_vocab) return ERR_INVALID;
    if (c->lazy_waiting) return lazy_accept(c, id);
    if (c->v->is_eog[id]) return constraint_is_complete(c) ? 0 : ERR_INVALID;
    int32_t s = state_after(c, id);
    if (s < 0 && grammar_matcher_failed(c->m)) { /* out of memo space: make room, once */
        if (grammar_matcher_trim(c->m, 0)) drop_masks(c);
        s = state_after(c, id);
    }
    if (s < 0) return grammar_matcher_failed(c->m) ? ERR_NOMEM : ERR_INVALID;
    grammar_matcher_set_state(c->m, s);
    return 0;
}

int constraint_accept_bytes(struct constraint *c, const void *bytes, size_t n) {
    int rc = grammar_matcher_feed(c->m, bytes, n);
    if (rc == ERR_NOMEM && grammar_matcher_trim(c->m, 0)) { /* out of memo space: once more */
        drop_masks(c);
        rc = grammar_matcher_feed(c->m, bytes, n);
    }
    return rc;
}

int constraint_is_complete(const struct constraint *c) {
    return !c->lazy_waiting && grammar_matcher_is_complete(c->m);
}

void constraint_reset(struct constraint *c) {
    grammar_matcher_reset(c->m);
    c->lazy_waiting = 0;
}

static void hook_mask(void *ctx, float *logits, int n_vocab) {
    struct constraint *c = ctx;
    CHECK(n_vocab == c->v->n_vocab);
    constraint_apply(c, logits);
}

static void hook_accept(void *ctx, int32_t id) {
    constraint_accept(ctx, id);
}

void constraint_hook(struct constraint *c, struct sampler_constraint *hook) {
    hook->ctx = c;
    hook->mask = hook_mask;
    hook->accept = hook_accept;
}

void constraint_get_stats(const struct constraint *c, struct constraint_stats *out) {
    *out = c->stats;
    out->n_states = grammar_matcher_n_states(c->m);
}
