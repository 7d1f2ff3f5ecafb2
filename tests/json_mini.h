/* json_mini.h: a small JSON reader for test data (golden files). Test-only; the server uses a
 * real JSON library. Strings are decoded (escapes incl. \uXXXX surrogate pairs to UTF-8). */
#ifndef HEARTH_JSON_MINI_H
#define HEARTH_JSON_MINI_H

#include <stddef.h>

enum jm_type { JM_NULL, JM_BOOL, JM_NUM, JM_STR, JM_ARR, JM_OBJ };

struct jm {
    enum jm_type type;
    double num;       /* JM_NUM, JM_BOOL (0/1) */
    char *str;        /* JM_STR (NUL-terminated) */
    size_t len;       /* JM_STR bytes; JM_ARR/JM_OBJ element count */
    struct jm *items; /* JM_ARR / JM_OBJ values */
    char **keys;      /* JM_OBJ keys */
};

/* Parses text; returns NULL on malformed input. Free with jm_free. */
struct jm *jm_parse(const char *text, size_t len);
void jm_free(struct jm *v);
/* Object member by key (NULL if absent or not an object); array element (NULL if out of range). */
const struct jm *jm_get(const struct jm *obj, const char *key);
const struct jm *jm_at(const struct jm *arr, size_t i);

#endif
