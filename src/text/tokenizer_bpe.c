/* tokenizer_bpe.c: byte-level BPE (llama.cpp's llm_tokenizer_bpe_session).
 *
 * A fragment is split into words by the pre-tokenizer; each word's bytes start as one symbol
 * per byte (the token of that byte's GPT-2 codepoint, e.g. ' ' -> "Ġ"). Adjacent symbol pairs
 * that have a merge go into a min-heap by merge rank (ties: leftmost first); the best pair is
 * merged into its result token and its new neighbour pairs are pushed; stale pairs (a side
 * merged away or changed) are skipped when popped. Working on token ids instead of strings is
 * equivalent to llama.cpp's string version because a merge is only used when both sides and
 * the result are tokens (true of every merge in a consistent vocabulary; see tokenizer.c).
 * With ignore_merges (llama-bpe) a word that is itself a token is emitted whole.
 */
#include "../base/error.h"
#include "../base/mem.h"
#include "tokenizer_internal.h"
#include "unicode.h"

#include <string.h>

struct bpe_pair {
    int32_t rank; /* merge rank */
    int32_t left; /* symbol indices; right is left's next when pushed */
    int32_t right;
    int32_t left_id; /* token ids when pushed (staleness check) */
    int32_t right_id;
    int32_t result; /* token id of the merge */
};

struct bpe_scratch {
    int32_t *ids;         /* [cap_sym] token id of each symbol, -1 once merged away */
    int32_t *prev, *next; /* [cap_sym] neighbour symbol indices, -1 at the ends */
    size_t cap_sym;
    struct bpe_pair *heap; /* [n_heap] min-heap by (rank, left) */
    size_t n_heap, cap_heap;
    char *word; /* [cap_word] a word in GPT-2 codepoints (ignore_merges lookup) */
    size_t cap_word;
    struct pretok_buf pre;
};

struct bpe_scratch *bpe_scratch_create(void) {
    struct bpe_scratch *s = mem_calloc(1, sizeof(*s));
    if (s) pretok_buf_init(&s->pre);
    return s;
}

void bpe_scratch_free(struct bpe_scratch *s) {
    if (!s) return;
    mem_free(s->ids);
    mem_free(s->prev);
    mem_free(s->next);
    mem_free(s->heap);
    mem_free(s->word);
    pretok_buf_free(&s->pre);
    mem_free(s);
}

/* ---- merge table lookup (built in tokenizer.c) ---- */

static uint64_t merge_key(int32_t left, int32_t right) {
    return (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
}

static uint32_t merge_hash(uint64_t key) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return (uint32_t)key;
}

static const struct bpe_merge *find_merge(const struct tokenizer *t, int32_t left, int32_t right) {
    uint64_t key = merge_key(left, right);
    for (uint32_t i = merge_hash(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const struct bpe_merge *m = &t->merges[i];
        if (m->key == key) return m;
        if (m->key == 0) return NULL;
    }
}

/* Inserts a merge unless the pair already has one (the first, lowest rank, wins, as with
 * llama.cpp's bpe_ranks.emplace). The table has room: its size is > 2x the merge count. */
int tokenizer_bpe_add_merge(struct tokenizer *t, int32_t left, int32_t right, int32_t rank,
                            int32_t result) {
    uint64_t key = merge_key(left, right);
    for (uint32_t i = merge_hash(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        struct bpe_merge *m = &t->merges[i];
        if (m->key == key) return 0;
        if (m->key == 0) {
            *m = (struct bpe_merge){.key = key, .rank = rank, .result = result};
            return 1;
        }
    }
}

/* ---- heap ---- */

static int pair_before(const struct bpe_pair *a, const struct bpe_pair *b) {
    if (a->rank != b->rank) return a->rank < b->rank;
    return a->left < b->left;
}

static int heap_push(struct bpe_scratch *s, struct bpe_pair p) {
    if (s->n_heap == s->cap_heap) {
        size_t cap = s->cap_heap ? s->cap_heap * 2 : 64;
        struct bpe_pair *heap = mem_realloc(s->heap, cap * sizeof(*heap));
        if (!heap) return ERR_NOMEM;
        s->heap = heap;
        s->cap_heap = cap;
    }
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(&p, &s->heap[parent])) break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = p;
    return 0;
}

static struct bpe_pair heap_pop(struct bpe_scratch *s) {
    struct bpe_pair top = s->heap[0];
    struct bpe_pair last = s->heap[--s->n_heap];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= s->n_heap) break;
        if (child + 1 < s->n_heap && pair_before(&s->heap[child + 1], &s->heap[child])) child++;
        if (!pair_before(&s->heap[child], &last)) break;
        s->heap[i] = s->heap[child];
        i = child;
    }
    if (s->n_heap > 0) s->heap[i] = last;
    return top;
}

static int try_add_pair(const struct tokenizer *t, struct bpe_scratch *s, int32_t left,
                        int32_t right) {
    if (left < 0 || right < 0) return 0;
    int32_t lid = s->ids[left], rid = s->ids[right];
    if (lid < 0 || rid < 0) return 0;
    const struct bpe_merge *m = find_merge(t, lid, rid);
    if (!m) return 0;
    struct bpe_pair p = {.rank = m->rank,
                         .left = left,
                         .right = right,
                         .left_id = lid,
                         .right_id = rid,
                         .result = m->result};
    return heap_push(s, p);
}

/* ---- one word ---- */

static int reserve_symbols(struct bpe_scratch *s, size_t n) {
    if (n <= s->cap_sym) return 0;
    size_t cap = n < 64 ? 64 : n + n / 2;
    int32_t *ids = mem_realloc(s->ids, cap * sizeof(*ids));
    if (!ids) return ERR_NOMEM;
    s->ids = ids;
    int32_t *prev = mem_realloc(s->prev, cap * sizeof(*prev));
    if (!prev) return ERR_NOMEM;
    s->prev = prev;
    int32_t *next = mem_realloc(s->next, cap * sizeof(*next));
    if (!next) return ERR_NOMEM;
    s->next = next;
    s->cap_sym = cap;
    return 0;
}

/* The word as a vocabulary string: each byte as the UTF-8 of its GPT-2 codepoint. */
static int whole_word_token(const struct tokenizer *t, struct bpe_scratch *s,
                            const unsigned char *w, size_t n, int32_t *id) {
    if (n > t->max_token_len) { /* cannot be a token (each byte encodes to >= 1 byte) */
        *id = -1;
        return 0;
    }
    if (2 * n > s->cap_word) {
        char *word = mem_realloc(s->word, 2 * n);
        if (!word) return ERR_NOMEM;
        s->word = word;
        s->cap_word = 2 * n;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char utf8[4];
        size_t m = unicode_encode_utf8(unicode_byte_to_cpt(w[i]), utf8);
        memcpy(s->word + k, utf8, m);
        k += m;
    }
    *id = tokenizer_lookup(t, s->word, k);
    return 0;
}

static int encode_word(const struct tokenizer *t, struct bpe_scratch *s, const unsigned char *w,
                       size_t n, struct id_vec *out) {
    if (t->ignore_merges) {
        int32_t id;
        if (whole_word_token(t, s, w, n, &id) != 0) return ERR_NOMEM;
        if (id >= 0) return id_vec_push(out, id);
    }
    if (n > INT32_MAX / 2 || reserve_symbols(s, n) != 0) return ERR_NOMEM;
    int32_t n_sym = (int32_t)n;
    for (int32_t i = 0; i < n_sym; i++) {
        s->ids[i] = t->byte_token[w[i]];
        s->prev[i] = i - 1;
        s->next[i] = i + 1 < n_sym ? i + 1 : -1;
    }
    s->n_heap = 0;
    for (int32_t i = 1; i < n_sym; i++) {
        if (try_add_pair(t, s, i - 1, i) != 0) return ERR_NOMEM;
    }
    while (s->n_heap > 0) {
        struct bpe_pair p = heap_pop(s);
        int32_t l = p.left, r = p.right;
        if (s->ids[l] != p.left_id || s->ids[r] != p.right_id || s->next[l] != r) continue;
        s->ids[l] = p.result;
        s->ids[r] = -1;
        s->next[l] = s->next[r];
        if (s->next[r] >= 0) s->prev[s->next[r]] = l;
        if (try_add_pair(t, s, s->prev[l], l) != 0) return ERR_NOMEM;
        if (try_add_pair(t, s, l, s->next[l]) != 0) return ERR_NOMEM;
    }
    /* A byte whose GPT-2 codepoint is not a token is dropped, as in llama.cpp. */
    for (int32_t i = 0; i >= 0; i = s->next[i]) {
        if (s->ids[i] >= 0 && id_vec_push(out, s->ids[i]) != 0) return ERR_NOMEM;
    }
    return 0;
}

int tokenizer_bpe_encode(const struct tokenizer *t, const char *text, size_t len,
                         struct bpe_scratch *s, struct id_vec *out) {
    if (pretokenize_split(t->pre, text, len, &s->pre) != 0) return ERR_NOMEM;
    size_t start = 0;
    for (size_t i = 0; i < s->pre.n_words; i++) {
        size_t end = s->pre.ends[i];
        if (encode_word(t, s, (const unsigned char *)text + start, end - start, out) != 0) {
            return ERR_NOMEM;
        }
        start = end;
    }
    return 0;
}
