/* test_chat_template.c: the Jinja2 chat-template engine (src/text/chat_template.h).
 *
 * chat_template_golden renders every ../shared/models/templates/<name>.jinja with every context of
 * tests/data/chat_templates/cases.json and compares byte for byte with what Python Jinja2 gave
 * (tests/data/chat_templates/expected/, made by tools/gen_template_renders.py). The other tests
 * pin single features; their expected strings were produced by Jinja2 3.1 in the HF chat
 * template environment.
 */
#include "test.h"

#include "../src/base/buf.h"
#include "../src/base/mem.h"
#include "../src/text/chat_template.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef NO_JANSSON
#include <jansson.h>
#endif

#define DATA_DIR "tests/data/chat_templates"

/* ---- helpers ------------------------------------------------------------------------------ */

/* Renders src with ctx (may be NULL); returns the text (caller frees) or NULL with *code/err. */
static char *render_opts(const char *src, const struct tpl_value *ctx,
                         const struct chat_template_opts *opts, int *code, struct error *err) {
    struct chat_template *t;
    struct error e0 = {0};
    if (!err) err = &e0;
    *code = chat_template_parse(&t, src, strlen(src), err);
    if (*code) return NULL;
    struct buf out;
    buf_init(&out);
    *code = chat_template_render_opts(t, ctx, opts, &out, err);
    chat_template_free(t);
    if (*code) {
        buf_free(&out);
        return NULL;
    }
    return buf_detach(&out);
}

static char *render(const char *src, const struct tpl_value *ctx, int *code, struct error *err) {
    return render_opts(src, ctx, NULL, code, err);
}

/* Prints where got and want first differ, with some context on both sides. */
static void show_diff(const char *what, const char *got, size_t got_n, const char *want,
                      size_t want_n) {
    size_t i = 0;
    while (i < got_n && i < want_n && got[i] == want[i]) i++;
    size_t from = i > 40 ? i - 40 : 0;
    printf("    %s: first difference at byte %zu (got %zu bytes, want %zu)\n", what, i, got_n,
           want_n);
    for (int side = 0; side < 2; side++) {
        const char *s = side ? want : got;
        size_t n = side ? want_n : got_n, to = i + 40 < n ? i + 40 : n;
        printf("      %s: \"", side ? "want" : "got ");
        for (size_t k = from; k < to; k++) {
            unsigned char c = (unsigned char)s[k];
            if (c == '\n')
                printf("\\n");
            else if (c < 0x20 || c == '"' || c == '\\')
                printf("\\x%02x", c);
            else
                putchar(c);
        }
        printf("\"\n");
    }
}

#define EXPECT_RENDER(src, want)                                                                   \
    do {                                                                                           \
        int code_;                                                                                 \
        struct error err_ = {0};                                                                   \
        char *got_ = render((src), NULL, &code_, &err_);                                           \
        if (!got_) {                                                                               \
            test_fail(__FILE__, __LINE__, "%s: error %d: %s", (src), code_, err_.msg);             \
        } else if (strcmp(got_, (want)) != 0) {                                                    \
            test_fail(__FILE__, __LINE__, "%s", (src));                                            \
            show_diff("render", got_, strlen(got_), (want), strlen(want));                         \
        }                                                                                          \
        mem_free(got_);                                                                            \
    } while (0)

/* ---- golden renders against Python Jinja2 -------------------------------------------------- */

#ifndef NO_JANSSON
static struct tpl_value *from_json(struct tpl_arena *a, json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        struct tpl_value *o = tpl_value_object(a);
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) tpl_object_set(a, o, k, strlen(k), from_json(a, v));
        return o;
    }
    case JSON_ARRAY: {
        struct tpl_value *arr = tpl_value_array(a);
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) tpl_array_push(a, arr, from_json(a, v));
        return arr;
    }
    case JSON_STRING: return tpl_value_string(a, json_string_value(j), json_string_length(j));
    case JSON_INTEGER: return tpl_value_int(a, (int64_t)json_integer_value(j));
    case JSON_REAL: return tpl_value_float(a, json_real_value(j));
    case JSON_TRUE: return tpl_value_bool(1);
    case JSON_FALSE: return tpl_value_bool(0);
    default: return tpl_value_none();
    }
}

/* defaults overlaid by the case's context, minus the case's "unset" keys (see cases.json). */
static struct tpl_value *case_context(struct tpl_arena *a, json_t *defaults, json_t *c) {
    json_t *ctx = json_deep_copy(defaults);
    json_object_update(ctx, json_object_get(c, "context"));
    size_t i;
    json_t *key;
    json_array_foreach(json_object_get(c, "unset"), i, key) json_object_del(ctx, json_string_value(key));
    struct tpl_value *v = from_json(a, ctx);
    json_decref(ctx);
    return v;
}

static char *read_expected(const char *tmpl, const char *cname, const char *ext, size_t *n) {
    char path[512];
    snprintf(path, sizeof(path), DATA_DIR "/expected/%s__%s.%s", tmpl, cname, ext);
    return test_read_file(path, n);
}
#endif

TEST(chat_template_golden) {
#ifdef NO_JANSSON
    SKIP_TEST("built without jansson (libjansson-dev)");
#else
    json_error_t jerr;
    json_t *doc = json_load_file(DATA_DIR "/cases.json", JSON_ALLOW_NUL, &jerr);
    size_t manifest_n;
    char *manifest = test_read_file(DATA_DIR "/expected/MANIFEST", &manifest_n);
    if (!doc || !manifest) {
        json_decref(doc);
        mem_free(manifest);
        SKIP_TEST("%s/cases.json or expected/MANIFEST missing (run from the repo root)", DATA_DIR);
    }
    json_t *defaults = json_object_get(doc, "defaults"), *cases = json_object_get(doc, "cases");
    int n_pass = 0, n_total = 0, n_templates = 0;
    char *save = NULL;
    for (char *tmpl = strtok_r(manifest, "\n", &save); tmpl; tmpl = strtok_r(NULL, "\n", &save)) {
        char rel[300];
        snprintf(rel, sizeof(rel), "templates/%s.jinja", tmpl);
        const char *path = test_model_path(rel);
        size_t src_n;
        char *src = path ? test_read_file(path, &src_n) : NULL;
        if (!src) {
            printf("  note: %s not found under ../shared/models; skipped\n", rel);
            continue;
        }
        n_templates++;
        struct chat_template *t;
        struct error err = {0};
        int rc = chat_template_parse(&t, src, src_n, &err);
        mem_free(src);
        EXPECT_MSG(rc == 0, "%s: parse failed: %s", tmpl, err.msg);
        if (rc) continue;
        size_t ci;
        json_t *c;
        json_array_foreach(cases, ci, c) {
            const char *cname = json_string_value(json_object_get(c, "name"));
            struct tpl_arena *a = tpl_arena_create(0);
            struct tpl_value *ctx = case_context(a, defaults, c);
            struct buf out;
            buf_init(&out);
            memset(&err, 0, sizeof(err));
            rc = chat_template_render(t, ctx, &out, &err);
            size_t want_n;
            char *want = read_expected(tmpl, cname, "txt", &want_n);
            char *want_err = want ? NULL : read_expected(tmpl, cname, "err", &want_n);
            int ok = 0;
            n_total++;
            if (want) {
                ok = rc == 0 && out.len == want_n && memcmp(out.data ? out.data : "", want, want_n) == 0;
                if (!ok && rc)
                    test_fail(__FILE__, __LINE__, "%s x %s: render failed: %s", tmpl, cname, err.msg);
                else if (!ok) {
                    test_fail(__FILE__, __LINE__, "%s x %s: render differs from Jinja2", tmpl, cname);
                    show_diff("render", out.data ? out.data : "", out.len, want, want_n);
                }
            } else if (want_err) {
                /* Jinja2 raised: raise_exception's message must match exactly, any other error
                 * (TypeError, UndefinedError) only has to be an error too. */
                const char *prefix = "TemplateError: ";
                if (strncmp(want_err, prefix, strlen(prefix)) == 0)
                    ok = rc == ERR_INVALID && strcmp(err.msg, want_err + strlen(prefix)) == 0;
                else
                    ok = rc != 0;
                if (!ok)
                    test_fail(__FILE__, __LINE__, "%s x %s: want error \"%s\", got rc %d \"%s\"",
                              tmpl, cname, want_err, rc, rc ? err.msg : "");
            } else {
                test_fail(__FILE__, __LINE__, "%s x %s: no expected file; run tools/gen_template_renders.py",
                          tmpl, cname);
            }
            n_pass += ok;
            mem_free(want);
            mem_free(want_err);
            buf_free(&out);
            tpl_arena_free(a);
        }
        chat_template_free(t);
    }
    printf("  chat_template_golden: %d/%d template x case renders match Jinja2 (%d templates)\n",
           n_pass, n_total, n_templates);
    json_decref(doc);
    mem_free(manifest);
    if (n_templates == 0) SKIP_TEST("no templates under ../shared/models/templates");
#endif
}
