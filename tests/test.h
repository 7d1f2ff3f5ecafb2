/* test.h: the tiny test framework.
 *
 * A test is `TEST(name) { ... }` in tests/test_<module>.c. The Makefile collects every TEST line
 * into a table (build/tests_list.h), so adding a test needs no registration. EXPECT records a
 * failure and continues; ASSERT records and returns. SKIP_TEST prints a SKIP line and returns:
 * a skipped test counts as skipped, never as passed.
 */
#ifndef HEARTH_TEST_H
#define HEARTH_TEST_H

#include <math.h>
#include <stddef.h>
#include <stdio.h>

#define TEST(name) void test_##name(void)

void test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int test_failed(void); /* failures so far in the current test */

#define EXPECT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond)) test_fail(__FILE__, __LINE__, "%s", #cond);                                   \
    } while (0)
#define EXPECT_MSG(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) test_fail(__FILE__, __LINE__, __VA_ARGS__);                                   \
    } while (0)
#define ASSERT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            test_fail(__FILE__, __LINE__, "%s", #cond);                                            \
            return;                                                                                \
        }                                                                                          \
    } while (0)
#define ASSERT_MSG(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            test_fail(__FILE__, __LINE__, __VA_ARGS__);                                            \
            return;                                                                                \
        }                                                                                          \
    } while (0)
#define EXPECT_EQ_INT(a, b)                                                                        \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) test_fail(__FILE__, __LINE__, "%s == %s (%lld vs %lld)", #a, #b, a_, b_);    \
    } while (0)
#define EXPECT_NEAR(a, b, tol)                                                                     \
    do {                                                                                           \
        double a_ = (double)(a), b_ = (double)(b);                                                 \
        if (!(fabs(a_ - b_) <= (tol)))                                                             \
            test_fail(__FILE__, __LINE__, "|%s - %s| <= %g (%.9g vs %.9g)", #a, #b, (double)(tol), \
                      a_, b_);                                                                     \
    } while (0)
#define SKIP_TEST(...)                                                                             \
    do {                                                                                           \
        test_skip(__VA_ARGS__);                                                                    \
        return;                                                                                    \
    } while (0)

/* Path of a file under ../shared/models (or $HEARTH_SHARED/models), written into a static
 * buffer, or NULL if it does not exist. Tests SKIP when it returns NULL. */
const char *test_model_path(const char *rel);
/* Reads a whole file into a mem_alloc'ed buffer (NUL-terminated); NULL on failure. */
char *test_read_file(const char *path, size_t *n_bytes);
/* A scratch directory for this run (created on first use), e.g. for written GGUFs. */
const char *test_tmp_dir(void);

#endif
