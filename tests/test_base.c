/* test_base.c: base/ (mem accounting and failure injection, buf). */
#include "test.h"

#include "../src/base/buf.h"
#include "../src/base/mem.h"

#include <string.h>

TEST(mem_counts_and_fails) {
    int64_t live0 = mem_live_bytes();
    void *p = mem_alloc(100);
    ASSERT(p != NULL);
    EXPECT_EQ_INT(mem_live_bytes() - live0, 100);
    void *q = mem_alloc_aligned(64, 10);
    ASSERT(q != NULL);
    EXPECT_EQ_INT(((uintptr_t)q) % 64, 0);
    mem_free(q);
    p = mem_realloc(p, 1000);
    ASSERT(p != NULL);
    EXPECT_EQ_INT(mem_live_bytes() - live0, 1000);
    mem_free(p);
    EXPECT_EQ_INT(mem_live_bytes(), live0);
    mem_fail_after(1);
    void *a = mem_alloc(1);
    void *b = mem_alloc(1);
    void *c = mem_alloc(1);
    EXPECT(a != NULL);
    EXPECT(b == NULL);
    EXPECT(c != NULL);
    mem_free(a);
    mem_free(c);
    EXPECT(mem_calloc(SIZE_MAX / 2, 4) == NULL);
}

TEST(buf_builds_strings) {
    struct buf b;
    buf_init(&b);
    buf_append_str(&b, "hello");
    buf_printf(&b, " %d %s", 42, "world");
    buf_append_char(&b, '!');
    EXPECT(strcmp(b.data, "hello 42 world!") == 0);
    EXPECT_EQ_INT(b.len, 15);
    char *s = buf_detach(&b);
    EXPECT(s && strcmp(s, "hello 42 world!") == 0);
    EXPECT(b.data == NULL);
    mem_free(s);
}
