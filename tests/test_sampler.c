/* test_sampler.c: the sampling chain. */
#include "test.h"

#include "../src/engine/sampler.h"

#include <math.h>
#include <string.h>

static struct sampler *make(const struct sampler_params *p, int n) {
    struct sampler *s = NULL;
    struct error err = {0};
    if (sampler_create(&s, p, n, &err)) test_fail(__FILE__, __LINE__, "%s", err.msg);
    return s;
}

TEST(sampler_greedy_is_argmax) {
    struct sampler_params p;
    sampler_params_default(&p);
    p.temperature = 0;
    struct sampler *s = make(&p, 6);
    ASSERT(s);
    float l[6] = {0.1f, 2.0f, -1.0f, 3.5f, 3.5f, 0.0f};
    float prob = 0;
    EXPECT_EQ_INT(sampler_sample(s, l, &prob), 3); /* tie: lowest id */
    double sum = 0;
    for (int i = 0; i < 6; i++) sum += exp(l[i] - 3.5);
    EXPECT_NEAR(prob, 1.0 / sum, 1e-6);
    sampler_free(s);
}

TEST(sampler_seed_reproducible_and_distribution) {
    struct sampler_params p;
    sampler_params_default(&p);
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0;
    p.seed = 1234;
    float l[4] = {logf(0.1f), logf(0.2f), logf(0.3f), logf(0.4f)};
    struct sampler *a = make(&p, 4), *b = make(&p, 4);
    ASSERT(a && b);
    int counts[4] = {0};
    int same = 1;
    for (int i = 0; i < 20000; i++) {
        int x = sampler_sample(a, l, NULL), y = sampler_sample(b, l, NULL);
        same &= x == y;
        counts[x]++;
    }
    EXPECT(same);
    for (int i = 0; i < 4; i++) EXPECT_NEAR(counts[i] / 20000.0, 0.1 * (i + 1), 0.015);
    sampler_free(a);
    sampler_free(b);
    p.seed = 99;
    struct sampler *c = make(&p, 4);
    struct sampler_params p2 = p;
    p2.seed = 1234;
    struct sampler *d = make(&p2, 4);
    int differ = 0;
    for (int i = 0; i < 100; i++)
        differ |= sampler_sample(c, l, NULL) != sampler_sample(d, l, NULL);
    EXPECT(differ);
    sampler_free(c);
    sampler_free(d);
}

TEST(sampler_filters) {
    struct sampler_params p;
    sampler_params_default(&p);
    p.temperature = 1.0f;
    p.seed = 7;
    float l[5] = {5.0f, 4.9f, 1.0f, 0.5f, -3.0f};
    /* top-k 2: only ids 0 and 1 */
    p.top_k = 2;
    p.top_p = 1.0f;
    p.min_p = 0;
    struct sampler *s = make(&p, 5);
    for (int i = 0; i < 500; i++) {
        int x = sampler_sample(s, l, NULL);
        EXPECT(x == 0 || x == 1);
    }
    sampler_free(s);
    /* top-p 0.5: the best token alone covers > 0.5 */
    p.top_k = 0;
    p.top_p = 0.5f;
    s = make(&p, 5);
    for (int i = 0; i < 200; i++) EXPECT_EQ_INT(sampler_sample(s, l, NULL), 0);
    sampler_free(s);
    /* min-p 0.5: keeps ids with p >= 0.5 p_max (0 and 1) */
    p.top_p = 1.0f;
    p.min_p = 0.5f;
    s = make(&p, 5);
    int seen1 = 0;
    for (int i = 0; i < 500; i++) {
        int x = sampler_sample(s, l, NULL);
        EXPECT(x == 0 || x == 1);
        seen1 |= x == 1;
    }
    EXPECT(seen1);
    sampler_free(s);
}

TEST(sampler_penalties_and_bias) {
    struct sampler_params p;
    sampler_params_default(&p);
    p.temperature = 0;
    p.repeat_penalty = 2.0f;
    struct sampler *s = make(&p, 3);
    float l[3] = {2.0f, 1.5f, -1.0f};
    sampler_accept(s, 0); /* 2.0 / 2 = 1.0 < 1.5 */
    EXPECT_EQ_INT(sampler_sample(s, l, NULL), 1);
    sampler_free(s);
    sampler_params_default(&p);
    p.temperature = 0;
    p.presence_penalty = 1.0f;
    p.frequency_penalty = 0.5f;
    s = make(&p, 3);
    sampler_accept(s, 0);
    sampler_accept(s, 0); /* 2 - 1 - 2*0.5 = 0 < 1.5 */
    EXPECT_EQ_INT(sampler_sample(s, l, NULL), 1);
    sampler_reset(s);
    EXPECT_EQ_INT(sampler_sample(s, l, NULL), 0);
    EXPECT(sampler_set_logit_bias(s, 0, -INFINITY) == 0);
    sampler_reset(s);
    EXPECT_EQ_INT(sampler_sample(s, l, NULL), 1);
    EXPECT(sampler_set_logit_bias(s, 3, 1) != 0);
    sampler_free(s);
}
