/* test_main.c: the runner. `test_runner` runs every test; `test_runner NAME...` runs the tests
 * whose names contain any NAME. The last line is always "N passed, M failed". */
#include "test.h"

#include "../src/base/mem.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define X(name) void test_##name(void);
#include "tests_list.h"
#undef X

struct test_entry {
    const char *name;
    void (*fn)(void);
};

static const struct test_entry g_tests[] = {
#define X(name) {#name, test_##name},
#include "tests_list.h"
#undef X
};

static int g_cur_failures;
static int g_cur_skipped;
static const char *g_cur_name;

void test_fail(const char *file, int line, const char *fmt, ...) {
    if (g_cur_failures < 20) {
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        printf("  FAIL %s (%s:%d): %s\n", g_cur_name, file, line, msg);
    }
    g_cur_failures++;
}

void test_skip(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    printf("  SKIP %s: %s\n", g_cur_name, msg);
    g_cur_skipped = 1;
}

int test_failed(void) {
    return g_cur_failures;
}

const char *test_model_path(const char *rel) {
    static char paths[8][4096]; /* rotating, so a test can hold a few results at once */
    static int next;
    char *path = paths[next++ % 8];
    const char *root = getenv("HEARTH_SHARED");
    if (!root || !*root) root = "../shared";
    snprintf(path, sizeof(paths[0]), "%s/models/%s", root, rel);
    struct stat st;
    if (stat(path, &st) != 0) return NULL;
    return path;
}

char *test_read_file(const char *path, size_t *n_bytes) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = n >= 0 ? mem_alloc((size_t)n + 1) : NULL;
    if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
        mem_free(data);
        data = NULL;
    }
    fclose(f);
    if (!data) return NULL;
    data[n] = 0;
    if (n_bytes) *n_bytes = (size_t)n;
    return data;
}

const char *test_tmp_dir(void) {
    static char dir[256];
    if (!dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(dir, sizeof(dir), "%s/hearth-test-XXXXXX", base && *base ? base : P_tmpdir);
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            exit(1);
        }
    }
    return dir;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int selected(const char *name, int argc, char **argv) {
    if (argc < 2) return 1;
    for (int i = 1; i < argc; i++)
        if (strstr(name, argv[i])) return 1;
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int n_pass = 0, n_fail = 0, n_skip = 0;
    double t_all = now_s();
    for (size_t i = 0; i < sizeof(g_tests) / sizeof(g_tests[0]); i++) {
        if (!selected(g_tests[i].name, argc, argv)) continue;
        g_cur_name = g_tests[i].name;
        g_cur_failures = 0;
        g_cur_skipped = 0;
        double t0 = now_s();
        g_tests[i].fn();
        double dt = now_s() - t0;
        if (g_cur_failures) {
            n_fail++;
            printf("FAIL %s (%.2fs, %d failures)\n", g_cur_name, dt, g_cur_failures);
        } else if (g_cur_skipped) {
            n_skip++;
            printf("SKIP %s\n", g_cur_name);
        } else {
            n_pass++;
            printf("ok   %s (%.2fs)\n", g_cur_name, dt);
        }
    }
    if (n_skip) printf("%d skipped\n", n_skip);
    printf("(%.1fs)\n", now_s() - t_all);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
