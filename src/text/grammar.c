/* grammar.c: byte grammars (builder, checks, listing) and the memoising pushdown matcher.
 *
 * Layout: elements of all alternatives live in one array; an alternative is a run of elements
 * ended by an END element, so "the element after" a position is simply position + 1 (as in
 * llama.cpp's grammar). A parse stack is a chain of frames, each frame a position plus its
 * parent frame, and frames are hash-consed so that equal stacks are equal integers.
 */
#include "grammar.h"

#include "../base/mem.h"

#include <stdlib.h>
#include <string.h>

enum { E_END = 0, E_SET = 1, E_REF = 2 };

struct gelem {
    int32_t type;  /* E_END, E_SET, E_REF */
    int32_t value; /* E_SET: index into sets; E_REF: rule id */
};

struct open_alt {
    int32_t rule;        /* the rule this alternative belongs to */
    struct gelem *elems; /* [n] elements so far */
    size_t n, cap;
};

struct grammar {
    /* rules */
    const char **names; /* [n_rules] printable names (borrowed, may be NULL) */
    int32_t n_rules, cap_rules;
    /* elements and alternatives */
    struct gelem *elems; /* [n_elems] */
    size_t n_elems, cap_elems;
    int32_t *alt_rule, *alt_start; /* [n_alts] owner rule and first element, in build order */
    size_t n_alts, cap_alts;
    /* byte sets, deduplicated */
    uint8_t (*sets)[32]; /* [n_sets] */
    int32_t n_sets, cap_sets;
    int32_t *set_index; /* [set_index_cap] open addressing over set hashes, -1 = empty */
    size_t set_index_cap;
    /* alternatives being built (a stack: builders may nest) */
    struct open_alt *open;
    int n_open, cap_open;
    int n_dead_open; /* alternatives begun after a failure (not on the open stack) */
    int failed;      /* an allocation failed during building (or see too_large) */
    int too_large;   /* the grammar passed GRAMMAR_MAX_ELEMS */
    /* after grammar_finish */
    int finished;
    int32_t root;
    int32_t *rule_alt_off; /* [n_rules + 1] into rule_alts */
    int32_t *rule_alts;    /* [n_alts] first element of each alternative, grouped by rule */
};

/* ============================================================================================
 * Building
 *
 * Everything appends to growable arrays and remembers an allocation failure in g->failed, so a
 * builder can emit a whole schema without checking each call; grammar_finish reports it once.
 * Open alternatives are kept on a stack so that a builder may compile a sub-part (adding its
 * own rules) while in the middle of an alternative.
 * ============================================================================================ */

static int grow_array(void **p, size_t elem, size_t need, size_t *cap) {
    if (need <= *cap) return 0;
    size_t ncap = *cap ? *cap : 16;
    while (ncap < need) ncap *= 2;
    void *np = mem_realloc(*p, ncap * elem);
    if (!np) return -1;
    *p = np;
    *cap = ncap;
    return 0;
}

int grammar_create(struct grammar **out, struct error *err) {
    *out = mem_calloc(1, sizeof(**out));
    if (!*out) return error_set(err, ERR_NOMEM, "out of memory");
    (*out)->root = -1;
    return 0;
}

void grammar_free(struct grammar *g) {
    if (!g) return;
    for (int i = 0; i < g->n_open; i++) mem_free(g->open[i].elems);
    mem_free(g->names);
    mem_free(g->elems);
    mem_free(g->alt_rule);
    mem_free(g->alt_start);
    mem_free(g->sets);
    mem_free(g->set_index);
    mem_free(g->open);
    mem_free(g->rule_alt_off);
    mem_free(g->rule_alts);
    mem_free(g);
}

int32_t grammar_rule_add(struct grammar *g, const char *name) {
    if (g->failed || g->finished) return -1;
    size_t cap = (size_t)g->cap_rules;
    if (g->n_rules >= GRAMMAR_MAX_ELEMS) {
        g->failed = g->too_large = 1;
        return -1;
    }
    if (grow_array((void **)&g->names, sizeof(char *), (size_t)g->n_rules + 1, &cap)) {
        g->failed = 1;
        return -1;
    }
    g->cap_rules = (int32_t)cap;
    g->names[g->n_rules] = name;
    return g->n_rules++;
}

static uint64_t hash_bytes(const void *p, size_t n) { /* FNV-1a */
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

static int32_t set_intern(struct grammar *g, const uint8_t set[32]) {
    if (g->set_index_cap < 2 * ((size_t)g->n_sets + 1)) {
        size_t ncap = g->set_index_cap ? g->set_index_cap * 2 : 64;
        int32_t *idx = mem_alloc(ncap * sizeof(int32_t));
        if (!idx) return -1;
        for (size_t i = 0; i < ncap; i++) idx[i] = -1;
        for (int32_t s = 0; s < g->n_sets; s++) {
            size_t h = (size_t)hash_bytes(g->sets[s], 32) & (ncap - 1);
            while (idx[h] >= 0) h = (h + 1) & (ncap - 1);
            idx[h] = s;
        }
        mem_free(g->set_index);
        g->set_index = idx;
        g->set_index_cap = ncap;
    }
    size_t mask = g->set_index_cap - 1, h = (size_t)hash_bytes(set, 32) & mask;
    while (g->set_index[h] >= 0) {
        if (memcmp(g->sets[g->set_index[h]], set, 32) == 0) return g->set_index[h];
        h = (h + 1) & mask;
    }
    size_t cap = (size_t)g->cap_sets;
    if (grow_array((void **)&g->sets, 32, (size_t)g->n_sets + 1, &cap)) return -1;
    g->cap_sets = (int32_t)cap;
    memcpy(g->sets[g->n_sets], set, 32);
    g->set_index[h] = g->n_sets;
    return g->n_sets++;
}

static void alt_push(struct grammar *g, int32_t type, int32_t value) {
    if (g->failed) return;
    CHECK(g->n_open > 0); /* an element outside grammar_alt_begin/end is a builder bug */
    struct open_alt *a = &g->open[g->n_open - 1];
    if (grow_array((void **)&a->elems, sizeof(struct gelem), a->n + 1, &a->cap)) {
        g->failed = 1;
        return;
    }
    a->elems[a->n].type = type;
    a->elems[a->n].value = value;
    a->n++;
}

void grammar_alt_begin(struct grammar *g, int32_t rule) {
    size_t cap = (size_t)g->cap_open;
    if (g->failed ||
        grow_array((void **)&g->open, sizeof(struct open_alt), (size_t)g->n_open + 1, &cap)) {
        g->failed = 1;
        g->n_dead_open++; /* keeps begin/end balanced; dead levels are always on top */
        return;
    }
    g->cap_open = (int)cap;
    struct open_alt *a = &g->open[g->n_open++];
    memset(a, 0, sizeof(*a));
    a->rule = rule;
}

void grammar_alt_end(struct grammar *g) {
    if (g->n_dead_open > 0) {
        g->n_dead_open--;
        return;
    }
    CHECK(g->n_open > 0);
    struct open_alt *a = &g->open[--g->n_open];
    if (a->rule < 0 || a->rule >= g->n_rules) g->failed = 1;
    if (!g->failed) {
        size_t need = g->n_elems + a->n + 1;
        size_t cap_r = g->cap_alts, cap_s = g->cap_alts;
        if (need > (size_t)GRAMMAR_MAX_ELEMS + 1) {
            g->failed = g->too_large = 1;
        } else if (grow_array((void **)&g->elems, sizeof(struct gelem), need, &g->cap_elems) ||
                   grow_array((void **)&g->alt_rule, sizeof(int32_t), g->n_alts + 1, &cap_r) ||
                   grow_array((void **)&g->alt_start, sizeof(int32_t), g->n_alts + 1, &cap_s)) {
            g->failed = 1;
        } else {
            g->cap_alts = cap_r < cap_s ? cap_r : cap_s;
            g->alt_rule[g->n_alts] = a->rule;
            g->alt_start[g->n_alts] = (int32_t)g->n_elems;
            g->n_alts++;
            if (a->n) memcpy(g->elems + g->n_elems, a->elems, a->n * sizeof(struct gelem));
            g->n_elems += a->n;
            g->elems[g->n_elems].type = E_END;
            g->elems[g->n_elems].value = 0;
            g->n_elems++;
        }
    }
    mem_free(a->elems);
    a->elems = NULL;
}

void grammar_alt_set(struct grammar *g, const uint8_t set[32]) {
    if (g->failed) return;
    int32_t s = set_intern(g, set);
    if (s < 0) {
        g->failed = 1;
        return;
    }
    alt_push(g, E_SET, s);
}

void grammar_alt_range(struct grammar *g, uint8_t lo, uint8_t hi) {
    uint8_t set[32] = {0};
    for (unsigned c = lo; c <= hi; c++) set[c >> 3] |= (uint8_t)(1u << (c & 7));
    grammar_alt_set(g, set);
}

void grammar_alt_lit(struct grammar *g, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) grammar_alt_range(g, (uint8_t)s[i], (uint8_t)s[i]);
}

void grammar_alt_str(struct grammar *g, const char *s) {
    grammar_alt_lit(g, s, strlen(s));
}

void grammar_alt_ref(struct grammar *g, int32_t rule) {
    if (rule < 0) g->failed = 1;
    alt_push(g, E_REF, rule);
}

int32_t grammar_rule_lit(struct grammar *g, const char *s, size_t n) {
    int32_t r = grammar_rule_add(g, "lit");
    grammar_alt_begin(g, r);
    grammar_alt_lit(g, s, n);
    grammar_alt_end(g);
    return r;
}

int32_t grammar_rule_repeat(struct grammar *g, int32_t item, int min, int max) {
    if (min < 0) min = 0;
    if (min > 100000) min = 100000;
    if (max > 100000) max = 100000;
    if (max >= 0 && max < min) max = min;
    int32_t tail; /* what may follow the min required copies */
    if (max < 0) {
        tail = grammar_rule_add(g, "star");
        grammar_alt_begin(g, tail);
        grammar_alt_ref(g, item);
        grammar_alt_ref(g, tail);
        grammar_alt_end(g);
        grammar_alt_begin(g, tail);
        grammar_alt_end(g);
    } else {
        tail = grammar_rule_add(g, "opt0"); /* opt_k: up to k more copies */
        grammar_alt_begin(g, tail);
        grammar_alt_end(g);
        for (int k = 1; k <= max - min; k++) {
            int32_t r = grammar_rule_add(g, "opt");
            grammar_alt_begin(g, r);
            grammar_alt_ref(g, item);
            grammar_alt_ref(g, tail);
            grammar_alt_end(g);
            grammar_alt_begin(g, r);
            grammar_alt_end(g);
            tail = r;
        }
    }
    int32_t r = grammar_rule_add(g, "repeat");
    grammar_alt_begin(g, r);
    for (int i = 0; i < min; i++) grammar_alt_ref(g, item);
    grammar_alt_ref(g, tail);
    grammar_alt_end(g);
    return r;
}

/* Text up to a terminator: a multi-pattern automaton (Aho-Corasick, built by brute force since
 * patterns are short) whose state is the longest suffix of the text that is a prefix of some
 * pattern; each state becomes a rule, each group of bytes with the same successor an
 * alternative. A byte that completes a ban pattern has no alternative; one that completes an
 * end pattern ends the rule. */

#define UNTIL_MAX_PAT 64

static int has_suffix(const char *t, size_t tn, const char *p, size_t pn) {
    return pn <= tn && memcmp(t + tn - pn, p, pn) == 0;
}

int32_t grammar_rule_until(struct grammar *g, const char *const *ends, int n_ends,
                           const char *const *bans, int n_bans) {
    int n_pat = n_ends + n_bans;
    if (n_ends < 1 || n_bans < 0 || n_pat > 16) {
        g->failed = 1;
        return -1;
    }
    const char *pats[16];
    size_t lens[16];
    for (int i = 0; i < n_pat; i++) {
        pats[i] = i < n_ends ? ends[i] : bans[i - n_ends];
        lens[i] = strlen(pats[i]);
        if (lens[i] == 0 || lens[i] > UNTIL_MAX_PAT) {
            g->failed = 1;
            return -1;
        }
    }
    /* states: distinct proper prefixes of the patterns, as (pattern, length) */
    int st_pat[16 * UNTIL_MAX_PAT + 1];
    size_t st_len[16 * UNTIL_MAX_PAT + 1];
    int n_st = 1;
    st_pat[0] = 0;
    st_len[0] = 0;
    for (int i = 0; i < n_pat; i++)
        for (size_t l = 1; l < lens[i]; l++) {
            int dup = 0;
            for (int s = 0; s < n_st && !dup; s++)
                dup = st_len[s] == l && memcmp(pats[st_pat[s]], pats[i], l) == 0;
            if (!dup) {
                st_pat[n_st] = i;
                st_len[n_st] = l;
                n_st++;
            }
        }
    int32_t base = -1;
    for (int s = 0; s < n_st; s++) {
        int32_t r = grammar_rule_add(g, "until");
        if (r < 0) return -1;
        if (s == 0) base = r;
    }
    char t[UNTIL_MAX_PAT + 1];
    for (int s = 0; s < n_st; s++) {
        memcpy(t, pats[st_pat[s]], st_len[s]);
        size_t tn = st_len[s] + 1;
        int target[256]; /* -2 banned, -1 end, else state */
        for (int c = 0; c < 256; c++) {
            t[tn - 1] = (char)c;
            int banned = 0, ended = 0;
            for (int i = 0; i < n_pat; i++)
                if (has_suffix(t, tn, pats[i], lens[i])) {
                    if (i < n_ends)
                        ended = 1;
                    else
                        banned = 1;
                }
            if (banned) {
                target[c] = -2;
                continue;
            }
            if (ended) {
                target[c] = -1;
                continue;
            }
            int best = 0;
            size_t best_len = 0;
            for (int q = 1; q < n_st; q++)
                if (st_len[q] > best_len && has_suffix(t, tn, pats[st_pat[q]], st_len[q])) {
                    best = q;
                    best_len = st_len[q];
                }
            target[c] = best;
        }
        for (int want = -1; want < n_st; want++) {
            uint8_t set[32] = {0};
            int any = 0;
            for (int c = 0; c < 256; c++)
                if (target[c] == want) {
                    set[c >> 3] |= (uint8_t)(1u << (c & 7));
                    any = 1;
                }
            if (!any) continue;
            grammar_alt_begin(g, base + s);
            grammar_alt_set(g, set);
            if (want >= 0) grammar_alt_ref(g, base + want);
            grammar_alt_end(g);
        }
    }
    return base;
}

/* ============================================================================================
 * Checking and freezing
 *
 * The matcher expands rule references without consuming input, so a rule that can reach itself
 * that way (left recursion, e.g. a schema {"$ref": "#"}) would never stop: it is rejected here,
 * after computing which rules can match the empty string.
 * ============================================================================================ */

static int check_left_recursion(const struct grammar *g, struct error *err) {
    int32_t n = g->n_rules;
    uint8_t *nullable = mem_calloc((size_t)n, 1);
    uint8_t *color = mem_calloc((size_t)n, 1); /* 0 new, 1 on the DFS path, 2 done */
    int32_t *stack_rule = mem_alloc(((size_t)n + 1) * sizeof(int32_t));
    int32_t *stack_alt = mem_alloc(((size_t)n + 1) * sizeof(int32_t));
    int32_t *stack_pos = mem_alloc(((size_t)n + 1) * sizeof(int32_t));
    int rc = 0;
    if (!nullable || !color || !stack_rule || !stack_alt || !stack_pos) {
        rc = error_set(err, ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int changed = 1; changed;) {
        changed = 0;
        for (int32_t r = 0; r < n; r++) {
            if (nullable[r]) continue;
            for (int32_t a = g->rule_alt_off[r]; a < g->rule_alt_off[r + 1]; a++) {
                const struct gelem *e = g->elems + g->rule_alts[a];
                while (e->type == E_REF && nullable[e->value]) e++;
                if (e->type == E_END) {
                    nullable[r] = 1;
                    changed = 1;
                    break;
                }
            }
        }
    }
    /* iterative DFS over "r may start with s" edges; stack_pos walks the elements of an alt */
    for (int32_t start = 0; start < n && !rc; start++) {
        if (color[start]) continue;
        int sp = 0;
        stack_rule[0] = start;
        stack_alt[0] = g->rule_alt_off[start];
        stack_pos[0] = -1;
        color[start] = 1;
        while (sp >= 0) {
            int32_t r = stack_rule[sp];
            if (stack_alt[sp] >= g->rule_alt_off[r + 1]) {
                color[r] = 2;
                sp--;
                continue;
            }
            int32_t pos = stack_pos[sp] < 0 ? g->rule_alts[stack_alt[sp]] : stack_pos[sp];
            const struct gelem *e = g->elems + pos;
            if (e->type != E_REF) { /* this alternative is done */
                stack_alt[sp]++;
                stack_pos[sp] = -1;
                continue;
            }
            /* next time: the element after, if this one can be empty; else the next alt */
            if (nullable[e->value])
                stack_pos[sp] = pos + 1;
            else {
                stack_alt[sp]++;
                stack_pos[sp] = -1;
            }
            int32_t s = e->value;
            if (color[s] == 1) {
                rc = error_set(err, ERR_INVALID,
                               "grammar: rule '%s' is left-recursive (it can reach itself "
                               "without consuming input)",
                               g->names[s] ? g->names[s] : "?");
                break;
            }
            if (color[s] == 0) {
                color[s] = 1;
                sp++;
                stack_rule[sp] = s;
                stack_alt[sp] = g->rule_alt_off[s];
                stack_pos[sp] = -1;
            }
        }
    }
done:
    mem_free(nullable);
    mem_free(color);
    mem_free(stack_rule);
    mem_free(stack_alt);
    mem_free(stack_pos);
    return rc;
}

int grammar_finish(struct grammar *g, int32_t root, struct error *err) {
    CHECK(!g->finished);
    CHECK(g->n_open == 0 && g->n_dead_open == 0); /* unbalanced begin/end: a builder bug */
    if (g->too_large)
        return error_set(err, ERR_RANGE, "grammar: too large (over %d elements)",
                         GRAMMAR_MAX_ELEMS);
    if (g->failed) return error_set(err, ERR_NOMEM, "grammar: out of memory while building");
    if (root < 0 || root >= g->n_rules) return error_set(err, ERR_INVALID, "grammar: no root");
    g->rule_alt_off = mem_calloc((size_t)g->n_rules + 1, sizeof(int32_t));
    g->rule_alts = mem_alloc((g->n_alts ? g->n_alts : 1) * sizeof(int32_t));
    if (!g->rule_alt_off || !g->rule_alts) return error_set(err, ERR_NOMEM, "out of memory");
    for (size_t a = 0; a < g->n_alts; a++) g->rule_alt_off[g->alt_rule[a] + 1]++;
    for (int32_t r = 0; r < g->n_rules; r++) {
        if (g->rule_alt_off[r + 1] == 0)
            return error_set(err, ERR_INVALID, "grammar: rule '%s' has no alternatives",
                             g->names[r] ? g->names[r] : "?");
        g->rule_alt_off[r + 1] += g->rule_alt_off[r];
    }
    int32_t *fill = mem_alloc(((size_t)g->n_rules + 1) * sizeof(int32_t));
    if (!fill) return error_set(err, ERR_NOMEM, "out of memory");
    memcpy(fill, g->rule_alt_off, (size_t)g->n_rules * sizeof(int32_t));
    for (size_t a = 0; a < g->n_alts; a++) g->rule_alts[fill[g->alt_rule[a]]++] = g->alt_start[a];
    mem_free(fill);
    for (size_t i = 0; i < g->n_elems; i++)
        if (g->elems[i].type == E_REF && (g->elems[i].value < 0 || g->elems[i].value >= g->n_rules))
            return error_set(err, ERR_INVALID, "grammar: reference to an undefined rule");
    int rc = check_left_recursion(g, err);
    if (rc) return rc;
    g->root = root;
    g->finished = 1;
    return 0;
}

int32_t grammar_n_rules(const struct grammar *g) {
    return g->n_rules;
}

static void print_byte(struct buf *out, unsigned c, int in_class) {
    if (c == '\n')
        buf_append_str(out, "\\n");
    else if (c == '\t')
        buf_append_str(out, "\\t");
    else if (c == '\\' || c == '"' || (in_class && (c == ']' || c == '-' || c == '^')))
        buf_printf(out, "\\%c", (char)c);
    else if (c >= 0x20 && c < 0x7F)
        buf_append_char(out, (char)c);
    else
        buf_printf(out, "\\x%02X", c);
}

static void print_set(struct buf *out, const uint8_t *set) {
    int n = 0, single = -1;
    for (int c = 0; c < 256; c++)
        if (set[c >> 3] & (1u << (c & 7))) {
            n++;
            single = c;
        }
    if (n == 1) {
        buf_append_char(out, '"');
        print_byte(out, (unsigned)single, 0);
        buf_append_char(out, '"');
        return;
    }
    buf_append_char(out, '[');
    for (int c = 0; c < 256;) {
        if (!(set[c >> 3] & (1u << (c & 7)))) {
            c++;
            continue;
        }
        int e = c;
        while (e + 1 < 256 && (set[(e + 1) >> 3] & (1u << ((e + 1) & 7)))) e++;
        print_byte(out, (unsigned)c, 1);
        if (e > c) {
            buf_append_char(out, '-');
            print_byte(out, (unsigned)e, 1);
        }
        c = e + 1;
    }
    buf_append_char(out, ']');
}

void grammar_print(const struct grammar *g, struct buf *out) {
    if (!g->finished) return;
    for (int32_t r = 0; r < g->n_rules; r++) {
        buf_printf(out, "%s%d ::=", g->names[r] ? g->names[r] : "r", r);
        for (int32_t a = g->rule_alt_off[r]; a < g->rule_alt_off[r + 1]; a++) {
            if (a > g->rule_alt_off[r]) buf_append_str(out, " |");
            const struct gelem *e = g->elems + g->rule_alts[a];
            if (e->type == E_END) buf_append_str(out, " \"\"");
            for (; e->type != E_END; e++) {
                buf_append_char(out, ' ');
                if (e->type == E_SET)
                    print_set(out, g->sets[e->value]);
                else
                    buf_printf(out, "%s%d", g->names[e->value] ? g->names[e->value] : "r",
                               e->value);
            }
        }
        buf_append_char(out, '\n');
    }
}

/* ============================================================================================
 * Matching
 *
 * The automaton's state is the set of live parse stacks, each normalised so that its top frame
 * sits on a byte-set element (rule references are expanded eagerly; a reference in tail
 * position does not push a frame, so right recursion such as `chars ::= char chars | ""` keeps
 * the stack flat and the state recurs). A stack that has completed the root is recorded as the
 * state's accept flag. Frames and states are interned, transitions memoised per state in a
 * 256-entry row, so every distinct state is expanded once. trim() rebuilds all of it around
 * the current state when it grows past a budget.
 * ============================================================================================ */

#define UNKNOWN GRAMMAR_UNKNOWN

struct frame {
    int32_t pos;    /* element index */
    int32_t parent; /* frame id, -1 = bottom */
    int32_t depth;  /* frames below this one, + 1 */
};

struct mstate {
    uint64_t hash;
    size_t off;     /* into m->pool */
    int32_t n;      /* frames (tops) */
    int32_t accept; /* the root can be complete here */
};

struct grammar_matcher {
    const struct grammar *g;
    struct frame *frames;
    int32_t n_frames, cap_frames;
    int32_t *frame_index; /* open addressing over (pos, parent), -1 empty */
    size_t frame_index_cap;
    struct mstate *states;
    int32_t **rows; /* [cap_states] per state: [256] successor per byte (UNKNOWN, GRAMMAR_DEAD
                       or an id), or NULL */
    int32_t n_states, cap_states;
    int32_t *state_index; /* open addressing over state hashes, -1 empty */
    size_t state_index_cap;
    int32_t *pool; /* tops of all states */
    size_t pool_n, pool_cap;
    size_t row_bytes; /* bytes in transition rows */
    int32_t cur, start;
    int failed;
    /* scratch for one closure */
    int32_t *tops;
    size_t n_tops, cap_tops;
    int accept;
    uint64_t *seen; /* visited (pos, parent) keys of the current closure, 0 = empty */
    size_t seen_cap, seen_n;
    int64_t *work; /* pending (pos, parent) pairs */
    size_t work_n, work_cap;
};

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t frame_key(int32_t pos, int32_t parent) {
    return ((uint64_t)(uint32_t)pos << 32 | (uint32_t)(parent + 1)) + 1; /* never 0 */
}

static int32_t frame_intern(struct grammar_matcher *m, int32_t pos, int32_t parent) {
    if (m->frame_index_cap < 2 * ((size_t)m->n_frames + 1)) {
        size_t ncap = m->frame_index_cap ? m->frame_index_cap * 2 : 1024;
        int32_t *idx = mem_alloc(ncap * sizeof(int32_t));
        if (!idx) return -1;
        for (size_t i = 0; i < ncap; i++) idx[i] = -1;
        for (int32_t f = 0; f < m->n_frames; f++) {
            size_t h = (size_t)mix64(frame_key(m->frames[f].pos, m->frames[f].parent)) & (ncap - 1);
            while (idx[h] >= 0) h = (h + 1) & (ncap - 1);
            idx[h] = f;
        }
        mem_free(m->frame_index);
        m->frame_index = idx;
        m->frame_index_cap = ncap;
    }
    size_t mask = m->frame_index_cap - 1, h = (size_t)mix64(frame_key(pos, parent)) & mask;
    while (m->frame_index[h] >= 0) {
        const struct frame *f = &m->frames[m->frame_index[h]];
        if (f->pos == pos && f->parent == parent) return m->frame_index[h];
        h = (h + 1) & mask;
    }
    size_t cap = (size_t)m->cap_frames;
    if (grow_array((void **)&m->frames, sizeof(struct frame), (size_t)m->n_frames + 1, &cap))
        return -1;
    m->cap_frames = (int32_t)cap;
    struct frame *f = &m->frames[m->n_frames];
    f->pos = pos;
    f->parent = parent;
    f->depth = parent >= 0 ? m->frames[parent].depth + 1 : 1;
    m->frame_index[h] = m->n_frames;
    return m->n_frames++;
}

static int seen_insert(struct grammar_matcher *m, uint64_t key) { /* 1 if new, -1 on NOMEM */
    if (m->seen_cap < 2 * (m->seen_n + 1)) {
        size_t ncap = m->seen_cap ? m->seen_cap * 2 : 256;
        uint64_t *t = mem_calloc(ncap, sizeof(uint64_t));
        if (!t) return -1;
        for (size_t i = 0; i < m->seen_cap; i++)
            if (m->seen[i]) {
                size_t h = (size_t)mix64(m->seen[i]) & (ncap - 1);
                while (t[h]) h = (h + 1) & (ncap - 1);
                t[h] = m->seen[i];
            }
        mem_free(m->seen);
        m->seen = t;
        m->seen_cap = ncap;
    }
    size_t mask = m->seen_cap - 1, h = (size_t)mix64(key) & mask;
    while (m->seen[h]) {
        if (m->seen[h] == key) return 0;
        h = (h + 1) & mask;
    }
    m->seen[h] = key;
    m->seen_n++;
    return 1;
}

static int work_push(struct grammar_matcher *m, int32_t pos, int32_t parent) {
    if (grow_array((void **)&m->work, sizeof(int64_t), m->work_n + 1, &m->work_cap)) return -1;
    m->work[m->work_n++] = (int64_t)((uint64_t)(uint32_t)pos << 32 | (uint32_t)parent);
    return 0;
}

/* Expands everything in m->work into normalised tops (m->tops, m->accept). */
static int closure(struct grammar_matcher *m) {
    const struct grammar *g = m->g;
    while (m->work_n) {
        uint64_t w = (uint64_t)m->work[--m->work_n];
        int32_t pos = (int32_t)(w >> 32), parent = (int32_t)(uint32_t)w;
        int fresh = seen_insert(m, frame_key(pos, parent));
        if (fresh < 0) return -1;
        if (!fresh) continue;
        const struct gelem *e = &g->elems[pos];
        if (e->type == E_SET) {
            if (parent >= 0 && m->frames[parent].depth >= GRAMMAR_MAX_DEPTH) continue;
            int32_t f = frame_intern(m, pos, parent);
            if (f < 0 ||
                grow_array((void **)&m->tops, sizeof(int32_t), m->n_tops + 1, &m->cap_tops))
                return -1;
            m->tops[m->n_tops++] = f;
        } else if (e->type == E_END) {
            if (parent < 0)
                m->accept = 1;
            else if (work_push(m, m->frames[parent].pos + 1, m->frames[parent].parent))
                return -1;
        } else {
            int32_t np = parent;
            if (g->elems[pos + 1].type != E_END) { /* not a tail call: push a return frame */
                if (parent >= 0 && m->frames[parent].depth >= GRAMMAR_MAX_DEPTH) continue;
                np = frame_intern(m, pos, parent);
                if (np < 0) return -1;
            }
            int32_t r = e->value;
            for (int32_t a = g->rule_alt_off[r]; a < g->rule_alt_off[r + 1]; a++)
                if (work_push(m, g->rule_alts[a], np)) return -1;
        }
    }
    return 0;
}

static void closure_begin(struct grammar_matcher *m) {
    m->n_tops = 0;
    m->accept = 0;
    m->work_n = 0;
    if (m->seen_n) {
        memset(m->seen, 0, m->seen_cap * sizeof(uint64_t));
        m->seen_n = 0;
    }
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Interns the state in m->tops / m->accept; returns its id, GRAMMAR_DEAD if empty, or -3 on
 * allocation failure. */
static int32_t state_intern(struct grammar_matcher *m) {
    if (m->n_tops > 1) {
        qsort(m->tops, m->n_tops, sizeof(int32_t), cmp_i32);
        size_t k = 1;
        for (size_t i = 1; i < m->n_tops; i++)
            if (m->tops[i] != m->tops[k - 1]) m->tops[k++] = m->tops[i];
        m->n_tops = k;
    }
    if (m->n_tops == 0 && !m->accept) return GRAMMAR_DEAD;
    uint64_t h = mix64(hash_bytes(m->tops, m->n_tops * sizeof(int32_t)) ^ (uint64_t)m->accept);
    if (m->state_index_cap < 2 * ((size_t)m->n_states + 1)) {
        size_t ncap = m->state_index_cap ? m->state_index_cap * 2 : 256;
        int32_t *idx = mem_alloc(ncap * sizeof(int32_t));
        if (!idx) return -3;
        for (size_t i = 0; i < ncap; i++) idx[i] = -1;
        for (int32_t s = 0; s < m->n_states; s++) {
            size_t j = (size_t)m->states[s].hash & (ncap - 1);
            while (idx[j] >= 0) j = (j + 1) & (ncap - 1);
            idx[j] = s;
        }
        mem_free(m->state_index);
        m->state_index = idx;
        m->state_index_cap = ncap;
    }
    size_t mask = m->state_index_cap - 1, j = (size_t)h & mask;
    while (m->state_index[j] >= 0) {
        const struct mstate *s = &m->states[m->state_index[j]];
        if (s->hash == h && s->accept == m->accept && (size_t)s->n == m->n_tops &&
            memcmp(m->pool + s->off, m->tops, m->n_tops * sizeof(int32_t)) == 0)
            return m->state_index[j];
        j = (j + 1) & mask;
    }
    size_t cap = (size_t)m->cap_states, cap_rows = (size_t)m->cap_states;
    if (grow_array((void **)&m->states, sizeof(struct mstate), (size_t)m->n_states + 1, &cap) ||
        grow_array((void **)&m->rows, sizeof(int32_t *), (size_t)m->n_states + 1, &cap_rows) ||
        grow_array((void **)&m->pool, sizeof(int32_t), m->pool_n + m->n_tops + 1, &m->pool_cap))
        return -3;
    m->cap_states = (int32_t)(cap < cap_rows ? cap : cap_rows);
    struct mstate *s = &m->states[m->n_states];
    s->hash = h;
    s->off = m->pool_n;
    s->n = (int32_t)m->n_tops;
    s->accept = m->accept;
    m->rows[m->n_states] = NULL;
    memcpy(m->pool + m->pool_n, m->tops, m->n_tops * sizeof(int32_t));
    m->pool_n += m->n_tops;
    m->state_index[j] = m->n_states;
    return m->n_states++;
}

static int32_t compute_start(struct grammar_matcher *m) {
    const struct grammar *g = m->g;
    closure_begin(m);
    for (int32_t a = g->rule_alt_off[g->root]; a < g->rule_alt_off[g->root + 1]; a++)
        if (work_push(m, g->rule_alts[a], -1)) return -3;
    if (closure(m)) return -3;
    return state_intern(m);
}

int grammar_matcher_create(struct grammar_matcher **out, const struct grammar *g,
                           struct error *err) {
    CHECK(g->finished);
    *out = NULL;
    struct grammar_matcher *m = mem_calloc(1, sizeof(*m));
    if (!m) return error_set(err, ERR_NOMEM, "out of memory");
    m->g = g;
    m->start = compute_start(m);
    if (m->start == -3) {
        grammar_matcher_free(m);
        return error_set(err, ERR_NOMEM, "out of memory");
    }
    m->cur = m->start;
    *out = m;
    return 0;
}

static void free_tables(struct grammar_matcher *m) {
    for (int32_t s = 0; s < m->n_states; s++) mem_free(m->rows[s]);
    mem_free(m->rows);
    m->rows = NULL;
    mem_free(m->frames);
    mem_free(m->frame_index);
    mem_free(m->states);
    mem_free(m->state_index);
    mem_free(m->pool);
    m->frames = NULL;
    m->frame_index = NULL;
    m->states = NULL;
    m->state_index = NULL;
    m->pool = NULL;
    m->n_frames = m->cap_frames = m->n_states = m->cap_states = 0;
    m->frame_index_cap = m->state_index_cap = m->pool_n = m->pool_cap = m->row_bytes = 0;
}

void grammar_matcher_free(struct grammar_matcher *m) {
    if (!m) return;
    free_tables(m);
    mem_free(m->tops);
    mem_free(m->seen);
    mem_free(m->work);
    mem_free(m);
}

int32_t grammar_matcher_next(struct grammar_matcher *m, int32_t state, uint8_t byte) {
    if (state < 0) return GRAMMAR_DEAD;
    if (m->rows[state] && m->rows[state][byte] != UNKNOWN) return m->rows[state][byte];
    if (grammar_matcher_memory(m) > GRAMMAR_MATCHER_MAX_BYTES) { /* hostile grammar: give up */
        m->failed = 1;
        return GRAMMAR_DEAD;
    }
    if (!m->rows[state]) {
        int32_t *row = mem_alloc(256 * sizeof(int32_t));
        if (!row) {
            m->failed = 1;
            return GRAMMAR_DEAD;
        }
        for (int i = 0; i < 256; i++) row[i] = UNKNOWN;
        m->rows[state] = row;
        m->row_bytes += 256 * sizeof(int32_t);
    }
    const struct grammar *g = m->g;
    closure_begin(m);
    size_t off = m->states[state].off;
    int32_t n = m->states[state].n;
    for (int32_t i = 0; i < n; i++) {
        const struct frame *f = &m->frames[m->pool[off + (size_t)i]];
        const uint8_t *set = g->sets[g->elems[f->pos].value];
        if ((set[byte >> 3] >> (byte & 7)) & 1)
            if (work_push(m, f->pos + 1, f->parent)) {
                m->failed = 1;
                return GRAMMAR_DEAD;
            }
    }
    if (closure(m)) {
        m->failed = 1;
        return GRAMMAR_DEAD;
    }
    int32_t next = state_intern(m);
    if (next == -3) {
        m->failed = 1;
        return GRAMMAR_DEAD;
    }
    m->rows[state][byte] = next; /* rows may have moved: index again */
    return next;
}

int grammar_matcher_feed(struct grammar_matcher *m, const void *bytes, size_t n) {
    const uint8_t *b = bytes;
    int32_t s = m->cur;
    for (size_t i = 0; i < n; i++) {
        s = grammar_matcher_next(m, s, b[i]);
        if (s < 0) return m->failed ? ERR_NOMEM : ERR_INVALID;
    }
    m->cur = s;
    return 0;
}

int grammar_matcher_is_complete(const struct grammar_matcher *m) {
    return m->cur >= 0 && m->states[m->cur].accept;
}

int grammar_matcher_can_continue(const struct grammar_matcher *m) {
    return m->cur >= 0 && m->states[m->cur].n > 0;
}

void grammar_matcher_reset(struct grammar_matcher *m) {
    m->cur = m->start;
}

int32_t grammar_matcher_state(const struct grammar_matcher *m) {
    return m->cur;
}

void grammar_matcher_set_state(struct grammar_matcher *m, int32_t state) {
    CHECK(state >= 0 && state < m->n_states);
    m->cur = state;
}

int grammar_matcher_accepts(const struct grammar_matcher *m, int32_t state) {
    return state >= 0 && m->states[state].accept;
}

int32_t *const *grammar_matcher_rows(const struct grammar_matcher *m) {
    return m->rows;
}

int grammar_matcher_failed(const struct grammar_matcher *m) {
    return m->failed;
}

int32_t grammar_matcher_n_states(const struct grammar_matcher *m) {
    return m->n_states;
}

size_t grammar_matcher_memory(const struct grammar_matcher *m) {
    return m->row_bytes + (size_t)m->cap_frames * sizeof(struct frame) +
           m->frame_index_cap * sizeof(int32_t) +
           (size_t)m->cap_states * (sizeof(struct mstate) + sizeof(int32_t *)) +
           m->state_index_cap * sizeof(int32_t) + m->pool_cap * sizeof(int32_t);
}

/* Re-interns one stack given as positions from the bottom up; returns the top frame. */
static int32_t reintern_stack(struct grammar_matcher *m, const int32_t *pos, int32_t depth) {
    int32_t parent = -1;
    for (int32_t i = 0; i < depth; i++) {
        parent = frame_intern(m, pos[i], parent);
        if (parent < 0) return -1;
    }
    return parent;
}

int grammar_matcher_trim(struct grammar_matcher *m, size_t max_bytes) {
    if (grammar_matcher_memory(m) <= max_bytes) return 0;
    /* save the current and start states as explicit stacks of positions */
    int32_t keep[2] = {m->cur, m->start};
    int32_t *saved[2] = {NULL, NULL};
    size_t saved_n[2] = {0, 0};
    int accept[2] = {0, 0};
    int32_t n_stack[2] = {0, 0};
    int ok = 1;
    for (int k = 0; k < 2 && ok; k++) {
        if (keep[k] < 0) continue;
        const struct mstate *s = &m->states[keep[k]];
        accept[k] = s->accept;
        n_stack[k] = s->n;
        size_t total = 0;
        for (int32_t i = 0; i < s->n; i++)
            total += (size_t)m->frames[m->pool[s->off + (size_t)i]].depth + 1;
        saved[k] = mem_alloc((total ? total : 1) * sizeof(int32_t));
        if (!saved[k]) {
            ok = 0;
            break;
        }
        for (int32_t i = 0; i < s->n; i++) {
            int32_t f = m->pool[s->off + (size_t)i], d = m->frames[f].depth;
            saved[k][saved_n[k]++] = d;
            for (int32_t j = d - 1; j >= 0; j--, f = m->frames[f].parent)
                saved[k][saved_n[k] + (size_t)j] = m->frames[f].pos;
            saved_n[k] += (size_t)d;
        }
    }
    if (!ok) {
        mem_free(saved[0]);
        mem_free(saved[1]);
        return 0; /* keep the big tables rather than lose the state */
    }
    free_tables(m);
    m->failed = 0;
    int32_t ids[2] = {GRAMMAR_DEAD, GRAMMAR_DEAD};
    for (int k = 0; k < 2; k++) {
        if (keep[k] < 0) continue;
        m->n_tops = 0;
        m->accept = accept[k];
        size_t p = 0;
        for (int32_t i = 0; i < n_stack[k]; i++) {
            int32_t d = saved[k][p++];
            int32_t top = reintern_stack(m, saved[k] + p, d);
            p += (size_t)d;
            if (top < 0 ||
                grow_array((void **)&m->tops, sizeof(int32_t), m->n_tops + 1, &m->cap_tops)) {
                m->failed = 1;
                break;
            }
            m->tops[m->n_tops++] = top;
        }
        ids[k] = state_intern(m);
        if (ids[k] == -3) {
            m->failed = 1;
            ids[k] = GRAMMAR_DEAD;
        }
    }
    mem_free(saved[0]);
    mem_free(saved[1]);
    m->cur = ids[0];
    m->start = ids[1];
    return 1;
}
