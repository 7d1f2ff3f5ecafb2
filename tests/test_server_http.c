/* test_server.c: `hearth serve` driven over real HTTP (libcurl) on a free port.
 *
 * Each test opens a server in-process on stories260K (port 0: the kernel picks a free one, so
 * runs never clash), talks to it like a client would, and closes it; in-process means the
 * sanitizer builds see the server's threads, leaks and races too. One test runs the real
 * `./hearth serve` binary. Tests print SKIP without ../shared.
 */
#include "test.h"

#include "../src/base/buf.h"
#include "../src/base/mem.h"
#include "../src/engine/engine.h"
#include "../src/server/json.h"
#include "../src/server/server.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Under the sanitizers the qwen35 forward pass is ~80x slower: its tests use fewer tokens. */
#if defined(__SANITIZE_ADDRESS__)
#define HTTP_SAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HTTP_SAN 1
#endif
#endif
#ifndef HTTP_SAN
#define HTTP_SAN 0
#endif

/* ============================================================================================
 * Helpers: a server, an HTTP client, JSON
 * ============================================================================================ */

static const char *stories(void) {
    return test_model_path("stories/stories260K.gguf");
}

static struct server *open_server(const char *model, int n_ctx, int n_parallel, const char *api_key,
                                  size_t max_body, size_t cache_bytes) {
    struct server_opts o;
    server_opts_default(&o);
    o.model_path = model;
    o.port = 0;
    o.n_ctx = n_ctx;
    o.n_parallel = n_parallel;
    o.n_threads = 1;
    o.api_key = api_key;
    if (max_body) o.max_body_bytes = max_body;
    o.cache_bytes = cache_bytes;
    struct server *s = NULL;
    struct error err = {0};
    if (server_open(&s, &o, &err)) test_fail(__FILE__, __LINE__, "server_open: %s", err.msg);
    return s;
}

struct resp {
    long status;
    struct buf body;
    size_t abort_after; /* close the connection once this many bytes arrived (0: never) */
    int aborted;
};

static size_t on_data(char *p, size_t sz, size_t n, void *ud) {
    struct resp *r = ud;
    buf_append(&r->body, p, sz * n);
    if (r->abort_after && r->body.len >= r->abort_after) {
        r->aborted = 1;
        return 0;
    }
    return sz * n;
}

static void curl_once(void) {
    static int done;
    if (!done) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        done = 1;
    }
}

static CURL *make_req(int port, const char *method, const char *path, const char *body,
                      size_t body_len, struct curl_slist *hdrs, struct resp *r, long timeout_ms) {
    curl_once();
    CURL *c = curl_easy_init();
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    return c;
}

/* One request; returns the status (0 if the transfer failed). r->body holds the body. */
static long request_h(int port, const char *method, const char *path, const char *body,
                      struct curl_slist *hdrs, struct resp *r) {
    memset(r, 0, sizeof(*r));
    buf_init(&r->body);
    CURL *c = make_req(port, method, path, body, body ? strlen(body) : 0, hdrs, r, 60000);
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_cleanup(c);
    return r->status;
}

static long request(int port, const char *method, const char *path, const char *body,
                    struct resp *r) {
    return request_h(port, method, path, body, NULL, r);
}

static json_t *parse(const struct resp *r) {
    return r->body.data ? json_loads(r->body.data, 0, NULL) : NULL;
}

static void resp_free(struct resp *r) {
    buf_free(&r->body);
}

/* POSTs body to path and returns the parsed JSON (NULL on failure); *status gets the status. */
static json_t *post_json(int port, const char *path, const char *body, long *status) {
    struct resp r;
    *status = request(port, "POST", path, body, &r);
    json_t *v = parse(&r);
    resp_free(&r);
    return v;
}

static const char *jstr(const json_t *v, const char *path) {
    /* path: keys and indices separated by '.', e.g. "choices.0.message.content" */
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "%s", path);
    const json_t *cur = v;
    for (char *tok = strtok(tmp, "."); tok && cur; tok = strtok(NULL, "."))
        cur =
            json_is_array(cur) ? json_array_get(cur, (size_t)atoi(tok)) : json_object_get(cur, tok);
    return json_string_value(cur);
}

static int streq(const char *a, const char *b) {
    return a && b && !strcmp(a, b);
}

static json_int_t jint(const json_t *v, const char *path) {
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "%s", path);
    const json_t *cur = v;
    for (char *tok = strtok(tmp, "."); tok && cur; tok = strtok(NULL, "."))
        cur =
            json_is_array(cur) ? json_array_get(cur, (size_t)atoi(tok)) : json_object_get(cur, tok);
    return json_is_integer(cur) ? json_integer_value(cur) : -1;
}

/* The SSE events of a stream body: the JSON after each "data: " (NULL for [DONE]). Returns the
 * count; *done says whether [DONE] came last. */
static int sse_events(const char *body, json_t **ev, int max, int *done) {
    int n = 0;
    *done = 0;
    const char *p = body;
    while (p && (p = strstr(p, "data: "))) {
        p += 6;
        const char *end = strstr(p, "\n\n");
        if (!end) break;
        if (!strncmp(p, "[DONE]", 6)) {
            *done = 1;
        } else if (n < max) {
            *done = 0;
            ev[n++] = json_loadb(p, (size_t)(end - p), 0, NULL);
        }
        p = end;
    }
    return n;
}

/* Greedy continuation computed with the engine directly: text of n tokens after the prompt. */
static void engine_greedy(const char *model, const char *prompt, int n, struct buf *text,
                          int32_t *ids_out) {
    struct engine *e = NULL;
    struct error err = {0};
    struct engine_params ep;
    engine_params_default(&ep);
    ep.n_threads = 1;
    if (engine_open(&e, model, &ep, &err)) return;
    struct session *s = NULL;
    struct session_params sp;
    session_params_default(&sp);
    sp.n_ctx = 256;
    session_create(&s, e, &sp, &err);
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    engine_tokenize(e, prompt, strlen(prompt), engine_add_bos(e), 1, &ids, &n_ids, &err);
    session_eval(s, ids, (int)n_ids, NULL, &err);
    struct sampler_params p;
    sampler_params_default(&p);
    p.temperature = 0;
    struct sampler *smp = NULL;
    struct engine_info info;
    engine_get_info(e, &info);
    sampler_create(&smp, &p, info.n_vocab, &err);
    for (int i = 0; i < n; i++) {
        int32_t t = session_sample(s, smp);
        if (engine_token_is_eog(e, t)) break;
        if (ids_out) ids_out[i] = t;
        engine_token_piece(e, t, 0, text);
        session_eval(s, &t, 1, NULL, &err);
    }
    sampler_free(smp);
    mem_free(ids);
    session_free(s);
    engine_close(e);
}

#define NEED_MODEL()                                                                               \
    const char *model = stories();                                                                 \
    if (!model) SKIP_TEST("../shared/models/stories not found");                                   \
    json_use_mem()

/* ============================================================================================
 * Basic endpoints
 * ============================================================================================ */

TEST(server_health_models_tokenize) {
    NEED_MODEL();
    struct server *s = open_server(model, 256, 2, NULL, 0, 0);
    ASSERT(s);
    int port = server_port(s);
    EXPECT(port > 0);
    struct resp r;
    EXPECT_EQ_INT(request(port, "GET", "/health", NULL, &r), 200);
    json_t *v = parse(&r);
    EXPECT(jstr(v, "status") && streq(jstr(v, "status"), "ok"));
    json_decref(v);
    resp_free(&r);
    EXPECT_EQ_INT(request(port, "GET", "/v1/models", NULL, &r), 200);
    v = parse(&r);
    EXPECT(jstr(v, "data.0.id") && streq(jstr(v, "data.0.id"), "stories260K.gguf"));
    EXPECT_EQ_INT(jint(v, "data.0.meta.n_ctx"), 256);
    json_decref(v);
    resp_free(&r);
    EXPECT_EQ_INT(request(port, "GET", "/models", NULL, &r), 200); /* without /v1 too */
    resp_free(&r);
    long st;
    v = post_json(port, "/tokenize", "{\"content\": \"Once upon a time\"}", &st);
    EXPECT_EQ_INT(st, 200);
    json_t *toks = json_object_get(v, "tokens");
    EXPECT_EQ_INT(json_array_size(toks), 4);
    EXPECT_EQ_INT(json_integer_value(json_array_get(toks, 0)), 403); /* " Once" */
    char body[256];
    snprintf(body, sizeof(body), "{\"tokens\": [%lld, %lld, %lld, %lld]}",
             (long long)json_integer_value(json_array_get(toks, 0)),
             (long long)json_integer_value(json_array_get(toks, 1)),
             (long long)json_integer_value(json_array_get(toks, 2)),
             (long long)json_integer_value(json_array_get(toks, 3)));
    json_decref(v);
    v = post_json(port, "/detokenize", body, &st);
    EXPECT_EQ_INT(st, 200);
    EXPECT(jstr(v, "content") && streq(jstr(v, "content"), "Once upon a time"));
    json_decref(v);
    v = post_json(port, "/tokenize",
                  "{\"content\": \"Once\", \"with_pieces\": true, "
                  "\"add_special\": true}",
                  &st);
    EXPECT_EQ_INT(jint(v, "tokens.0.id"), 1); /* BOS */
    EXPECT(jstr(v, "tokens.1.piece") && streq(jstr(v, "tokens.1.piece"), " Once"));
    json_decref(v);
    EXPECT_EQ_INT(request(port, "GET", "/metrics", NULL, &r), 200);
    EXPECT(r.body.data && strstr(r.body.data, "hearth_requests_total"));
    EXPECT(r.body.data && strstr(r.body.data, "hearth_prompt_tokens_seconds"));
    resp_free(&r);
    server_close(s);
}

/* temperature 0 through the server equals greedy decoding with the engine directly */
TEST(server_completion_matches_engine) {
    NEED_MODEL();
    struct buf want;
    buf_init(&want);
    engine_greedy(model, "Once upon a time", 24, &want, NULL);
    ASSERT(want.len > 10);
    struct server *s = open_server(model, 256, 2, NULL, 0, 0);
    ASSERT(s);
    long st;
    json_t *v = post_json(server_port(s), "/v1/completions",
                          "{\"prompt\": \"Once upon a time\", \"max_tokens\": 24, "
                          "\"temperature\": 0}",
                          &st);
    EXPECT_EQ_INT(st, 200);
    const char *text = jstr(v, "choices.0.text");
    EXPECT_MSG(text && !strcmp(text, want.data), "got '%s' want '%s'", text ? text : "(null)",
               want.data);
    EXPECT(jstr(v, "choices.0.finish_reason") &&
           streq(jstr(v, "choices.0.finish_reason"), "length"));
    EXPECT_EQ_INT(jint(v, "usage.completion_tokens"), 24);
    EXPECT_EQ_INT(jint(v, "usage.prompt_tokens"), 5);
    EXPECT(jstr(v, "object") && streq(jstr(v, "object"), "text_completion"));
    json_decref(v);
    /* a prompt of token ids, and max_tokens larger than the context: capped, not rejected */
    v = post_json(server_port(s), "/v1/completions",
                  "{\"prompt\": [1, 403, 407, 261, 378], \"max_tokens\": 100000, "
                  "\"temperature\": 0, \"ignore_eos\": true}",
                  &st);
    EXPECT_EQ_INT(st, 200);
    EXPECT(jstr(v, "choices.0.text") && !strncmp(jstr(v, "choices.0.text"), want.data, want.len));
    EXPECT(jstr(v, "choices.0.finish_reason") &&
           streq(jstr(v, "choices.0.finish_reason"), "length"));
    EXPECT_EQ_INT(jint(v, "usage.completion_tokens"), 256 - 5);
    json_decref(v);
    server_close(s);
    buf_free(&want);
}

/* ============================================================================================
 * Streaming
 * ============================================================================================ */

TEST(server_stream_chat_format) {
    NEED_MODEL();
    struct server *s = open_server(model, 256, 2, NULL, 0, 0);
    ASSERT(s);
    int port = server_port(s);
    const char *req = "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], "
                      "\"max_tokens\": 12, \"temperature\": 0%s}";
    char body[512];
    snprintf(body, sizeof(body), req, "");
    long st;
    json_t *whole = post_json(port, "/v1/chat/completions", body, &st);
    EXPECT_EQ_INT(st, 200);
    const char *want = jstr(whole, "choices.0.message.content");
    ASSERT(want);
    snprintf(body, sizeof(body), req,
             ", \"stream\": true, \"stream_options\": {\"include_usage\": true}");
    struct resp r;
    EXPECT_EQ_INT(request(port, "POST", "/v1/chat/completions", body, &r), 200);
    json_t *ev[64] = {0};
    int done, n = sse_events(r.body.data, ev, 64, &done);
    EXPECT(done);
    ASSERT(n >= 4);
    for (int i = 0; i < n; i++) ASSERT_MSG(ev[i], "event %d is not JSON", i);
    EXPECT(streq(jstr(ev[0], "choices.0.delta.role"), "assistant"));
    EXPECT(streq(jstr(ev[0], "object"), "chat.completion.chunk"));
    struct buf got;
    buf_init(&got);
    for (int i = 1; i < n - 2; i++) {
        const char *c = jstr(ev[i], "choices.0.delta.content");
        EXPECT(c != NULL);
        if (c) buf_append_str(&got, c);
        EXPECT(json_is_null(json_object_get(json_array_get(json_object_get(ev[i], "choices"), 0),
                                            "finish_reason")));
    }
    EXPECT_MSG(got.data && !strcmp(got.data, want), "stream '%s' vs whole '%s'",
               got.data ? got.data : "", want);
    EXPECT(streq(jstr(ev[n - 2], "choices.0.finish_reason"), "length"));
    EXPECT_EQ_INT(json_array_size(json_object_get(ev[n - 1], "choices")), 0);
    EXPECT_EQ_INT(jint(ev[n - 1], "usage.completion_tokens"), 12);
    EXPECT(jint(ev[n - 1], "usage.prompt_tokens") > 0);
    /* every chunk carries the same id */
    for (int i = 1; i < n; i++) EXPECT(streq(jstr(ev[i], "id"), jstr(ev[0], "id")));
    for (int i = 0; i < n; i++) json_decref(ev[i]);
    buf_free(&got);
    resp_free(&r);
    json_decref(whole);
    server_close(s);
}

/* A stop string that straddles a token boundary is never emitted, whole or streamed. */
TEST(server_stop_across_tokens) {
    NEED_MODEL();
    int32_t ids[40];
    struct buf text;
    buf_init(&text);
    engine_greedy(model, "Once upon a time", 40, &text, ids);
    ASSERT(text.len > 30);
    /* find two adjacent pieces of >= 2 bytes after the first 10 bytes and stop on their join */
    struct engine *e = NULL;
    struct error err = {0};
    ASSERT(engine_open(&e, model, NULL, &err) == 0);
    char stop[16] = {0};
    size_t off = 0, stop_at = 0;
    for (int i = 0; i + 1 < 40 && !stop[0]; i++) {
        struct buf a, b;
        buf_init(&a);
        buf_init(&b);
        engine_token_piece(e, ids[i], 0, &a);
        engine_token_piece(e, ids[i + 1], 0, &b);
        if (off > 10 && a.len >= 2 && b.len >= 2 && !strchr(a.data, '"') && !strchr(b.data, '"')) {
            memcpy(stop, a.data + a.len - 2, 2);
            memcpy(stop + 2, b.data, 2);
            stop_at = (size_t)(strstr(text.data, stop) - text.data);
        }
        off += a.len;
        buf_free(&a);
        buf_free(&b);
    }
    engine_close(e);
    ASSERT(stop[0]);
    struct server *s = open_server(model, 256, 2, NULL, 0, 0);
    ASSERT(s);
    char body[512];
    for (int stream = 0; stream < 2; stream++) {
        snprintf(body, sizeof(body),
                 "{\"prompt\": \"Once upon a time\", \"max_tokens\": 40, \"temperature\": 0, "
                 "\"stop\": [\"zzzz\", \"%s\"], \"stream\": %s}",
                 stop, stream ? "true" : "false");
        struct resp r;
        EXPECT_EQ_INT(request(server_port(s), "POST", "/v1/completions", body, &r), 200);
        struct buf got;
        buf_init(&got);
        const char *finish = NULL;
        json_t *ev[64] = {0};
        int n = 0, done = 0;
        if (stream) {
            n = sse_events(r.body.data, ev, 64, &done);
            EXPECT(done);
            for (int i = 0; i < n; i++) {
                const char *t = jstr(ev[i], "choices.0.text");
                if (t) buf_append_str(&got, t);
                if (jstr(ev[i], "choices.0.finish_reason"))
                    finish = jstr(ev[i], "choices.0.finish_reason");
            }
        } else {
            ev[0] = parse(&r);
            n = 1;
            buf_append_str(&got, jstr(ev[0], "choices.0.text"));
            finish = jstr(ev[0], "choices.0.finish_reason");
        }
        EXPECT_MSG(got.len == stop_at && !strncmp(got.data ? got.data : "", text.data, stop_at),
                   "stream=%d stop '%s': got '%s'", stream, stop, got.data ? got.data : "");
        EXPECT(finish && !strcmp(finish, "stop"));
        for (int i = 0; i < n; i++) json_decref(ev[i]);
        buf_free(&got);
        resp_free(&r);
    }
    server_close(s);
    buf_free(&text);
}

/* ============================================================================================
 * Scheduling: concurrency, cancellation, prefix cache
 * ============================================================================================ */

/* Several requests at temperature 0 give the same text concurrently as alone. */
TEST(server_concurrent_equals_alone) {
    NEED_MODEL();
    struct server *s = open_server(model, 256, 3, NULL, 0, 0);
    ASSERT(s);
    int port = server_port(s);
    enum { N = 5 };
    const char *prompts[N] = {"Once upon a time", "The cat", "Lily went to the park and",
                              "One day, a big", "Tom had a red ball. He"};
    char bodies[N][256];
    char *alone[N] = {0};
    for (int i = 0; i < N; i++) {
        snprintf(bodies[i], sizeof(bodies[i]),
                 "{\"prompt\": \"%s\", \"max_tokens\": %d, \"temperature\": 0}", prompts[i],
                 20 + 7 * i);
        long st;
        json_t *v = post_json(port, "/v1/completions", bodies[i], &st);
        EXPECT_EQ_INT(st, 200);
        alone[i] = mem_strdup(jstr(v, "choices.0.text") ? jstr(v, "choices.0.text") : "?");
        json_decref(v);
    }
    /* all at once (more requests than slots: some queue) */
    CURLM *m = curl_multi_init();
    CURL *h[N];
    struct resp r[N];
    for (int i = 0; i < N; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        buf_init(&r[i].body);
        h[i] = make_req(port, "POST", "/v1/completions", bodies[i], strlen(bodies[i]), NULL, &r[i],
                        60000);
        curl_multi_add_handle(m, h[i]);
    }
    int running = 1;
    while (running) {
        curl_multi_perform(m, &running);
        if (running) curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    for (int i = 0; i < N; i++) {
        json_t *v = parse(&r[i]);
        const char *t = jstr(v, "choices.0.text");
        EXPECT_MSG(t && !strcmp(t, alone[i]), "prompt %d: concurrent '%s' alone '%s'", i,
                   t ? t : "(null)", alone[i]);
        json_decref(v);
        curl_multi_remove_handle(m, h[i]);
        curl_easy_cleanup(h[i]);
        resp_free(&r[i]);
        mem_free(alone[i]);
    }
    curl_multi_cleanup(m);
    server_close(s);
}

static double metric_value(int port, const char *name) {
    struct resp r;
    request(port, "GET", "/metrics", NULL, &r);
    double v = -1;
    char key[128];
    snprintf(key, sizeof(key), "\nhearth_%s ", name);
    const char *p = r.body.data ? strstr(r.body.data, key) : NULL;
    if (p) v = strtod(p + strlen(key), NULL);
    resp_free(&r);
    return v;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A client that disconnects (mid-stream, or while waiting for a whole answer) frees its slot at
 * once: generation stops long before max_tokens. */
TEST(server_disconnect_cancels) {
    NEED_MODEL();
    struct server *s = open_server(model, 2048, 1, NULL, 0, 0);
    ASSERT(s);
    int port = server_port(s);
    const char *body = "{\"prompt\": \"Once upon a time\", \"max_tokens\": 2000, "
                       "\"ignore_eos\": true, \"temperature\": 1, \"stream\": %s}";
    char b[256];
    for (int stream = 1; stream >= 0; stream--) {
        snprintf(b, sizeof(b), body, stream ? "true" : "false");
        double gen0 = metric_value(port, "tokens_predicted_total");
        struct resp r;
        memset(&r, 0, sizeof(r));
        buf_init(&r.body);
        r.abort_after = stream ? 600 : 0; /* a few chunks, then hang up */
        CURL *c =
            make_req(port, "POST", "/v1/completions", b, strlen(b), NULL, &r, stream ? 60000 : 150);
        curl_easy_perform(c);
        curl_easy_cleanup(c);
        double t0 = now_s();
        while (metric_value(port, "requests_processing") != 0 && now_s() - t0 < 5) usleep(10000);
        double dt = now_s() - t0;
        double gen = metric_value(port, "tokens_predicted_total") - gen0;
        EXPECT_MSG(dt < 1.0, "stream=%d: slot still busy after %.2fs", stream, dt);
        EXPECT_MSG(gen < 1500, "stream=%d: %g tokens generated after the disconnect", stream, gen);
        resp_free(&r);
    }
    EXPECT(metric_value(port, "requests_disconnected_total") >= 2);
    /* the slot serves the next request normally */
    long st;
    json_t *v = post_json(port, "/v1/completions", "{\"prompt\": \"Hi\", \"max_tokens\": 3}", &st);
    EXPECT_EQ_INT(st, 200);
    EXPECT_EQ_INT(jint(v, "usage.completion_tokens"), 3);
    json_decref(v);
    server_close(s);
}

/* An agent resending its growing conversation pays only for the new tokens; with one slot,
 * a side request in between does not lose the first conversation (RAM prefix cache). */
TEST(server_prefix_cache_reuse) {
    NEED_MODEL();
    struct server *s = open_server(model, 512, 1, NULL, 0, (size_t)64 << 20);
    ASSERT(s);
    int port = server_port(s);
    const char *sys = "You are a helpful assistant who tells short stories about animals.";
    char b[1024];
    long st;
    snprintf(b, sizeof(b),
             "{\"messages\": [{\"role\": \"system\", \"content\": \"%s\"}, {\"role\": \"user\", "
             "\"content\": \"Tell me about a cat.\"}], \"max_tokens\": 8, \"temperature\": 0}",
             sys);
    json_t *v1 = post_json(port, "/v1/chat/completions", b, &st);
    EXPECT_EQ_INT(st, 200);
    int p1 = (int)jint(v1, "usage.prompt_tokens");
    const char *a1 = jstr(v1, "choices.0.message.content");
    ASSERT(a1 && p1 > 20);
    EXPECT_EQ_INT(jint(v1, "usage.prompt_tokens_details.cached_tokens"), 0);
    /* a side request with a different prompt takes the only slot */
    json_t *side = post_json(port, "/v1/completions",
                             "{\"prompt\": \"A completely different prompt about dogs and birds "
                             "and trees\", \"max_tokens\": 4}",
                             &st);
    EXPECT_EQ_INT(st, 200);
    json_decref(side);
    /* the conversation continues: everything up to the new turn is reused */
    json_t *conv = json_pack("{s:[{s:s,s:s},{s:s,s:s},{s:s,s:s},{s:s,s:s}],s:i,s:i}", "messages",
                             "role", "system", "content", sys, "role", "user", "content",
                             "Tell me about a cat.", "role", "assistant", "content", a1, "role",
                             "user", "content", "And a dog?", "max_tokens", 8, "temperature", 0);
    char *cb = json_dump_str(conv, 0);
    ASSERT(cb && strlen(cb) < sizeof(b));
    snprintf(b, sizeof(b), "%s", cb);
    mem_free(cb);
    json_decref(conv);
    json_t *v2 = post_json(port, "/v1/chat/completions", b, &st);
    EXPECT_EQ_INT(st, 200);
    int cached = (int)jint(v2, "usage.prompt_tokens_details.cached_tokens");
    EXPECT_MSG(cached >= p1 - 2, "cached %d of the first request's %d prompt tokens", cached, p1);
    EXPECT(cached < (int)jint(v2, "usage.prompt_tokens"));
    EXPECT(metric_value(port, "prompt_cache_hits_total") >= 1);
    EXPECT(metric_value(port, "prompt_cache_entries") >= 1);
    json_decref(v1);
    json_decref(v2);
    /* Anthropic usage reports the same as cache_read_input_tokens */
    const char *msg = "{\"model\": \"m\", \"max_tokens\": 4, \"system\": \"%s\", \"messages\": "
                      "[{\"role\": \"user\", \"content\": \"Tell me about a cat.\"}]}";
    snprintf(b, sizeof(b), msg, sys);
    json_t *a = post_json(port, "/v1/messages", b, &st);
    json_t *a2 = post_json(port, "/v1/messages", b, &st);
    EXPECT_EQ_INT(st, 200);
    EXPECT(jint(a2, "usage.cache_read_input_tokens") > 10);
    EXPECT_EQ_INT(jint(a2, "usage.input_tokens") + jint(a2, "usage.cache_read_input_tokens"),
                  jint(a, "usage.input_tokens") + jint(a, "usage.cache_read_input_tokens"));
    json_decref(a);
    json_decref(a2);
    server_close(s);
}

/* ============================================================================================
 * Bad input
 * ============================================================================================ */

struct bad_case {
    const char *method, *path, *body;
    long status;
    const char *needle; /* in the error message */
};

static void expect_error(int port, const struct bad_case *c, int anthropic) {
    struct resp r;
    long st = request(port, c->method, c->path, c->body, &r);
    EXPECT_MSG(st == c->status, "%s %s %.60s: status %ld, want %ld (%s)", c->method, c->path,
               c->body ? c->body : "", st, c->status, r.body.data ? r.body.data : "");
    json_t *v = parse(&r);
    const char *msg = jstr(v, "error.message");
    EXPECT_MSG(msg != NULL, "no error.message in %s", r.body.data ? r.body.data : "");
    if (msg && c->needle)
        EXPECT_MSG(strstr(msg, c->needle) != NULL, "'%s' lacks '%s'", msg, c->needle);
    if (anthropic)
        EXPECT(jstr(v, "type") && streq(jstr(v, "type"), "error"));
    else
        EXPECT(jstr(v, "error.type") != NULL && jint(v, "error.code") == c->status);
    json_decref(v);
    resp_free(&r);
}

TEST(server_bad_input) {
    NEED_MODEL();
    struct server *s = open_server(model, 64, 2, NULL, 64 * 1024, 0);
    ASSERT(s);
    int port = server_port(s);
    const struct bad_case cases[] = {
        {"POST", "/v1/chat/completions", "{\"messages\": [", 400, "invalid JSON"},
        {"POST", "/v1/chat/completions", "", 400, "empty"},
        {"POST", "/v1/chat/completions", "[1, 2]", 400, "object"},
        {"POST", "/v1/chat/completions", "{\"messages\": []}", 400, "messages"},
        {"POST", "/v1/chat/completions", "{}", 400, "messages"},
        {"POST", "/v1/chat/completions", "{\"messages\": \"hi\"}", 400, "messages"},
        {"POST", "/v1/chat/completions", "{\"messages\": [{\"content\": \"hi\"}]}", 400, "role"},
        {"POST", "/v1/chat/completions",
         "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}", 400, "role"},
        {"POST", "/v1/chat/completions",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"temperature\": \"hot\"}",
         400, "temperature"},
        {"POST", "/v1/chat/completions",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": -5}", 400,
         "max_tokens"},
        {"POST", "/v1/chat/completions",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 1.5}", 400,
         "max_tokens"},
        {"POST", "/v1/chat/completions",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"n\": 0}", 400, "'n'"},
        {"POST", "/v1/chat/completions",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stop\": 5}", 400, "stop"},
        {"POST", "/v1/chat/completions",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"logit_bias\": {\"x\": 1}}",
         400, "logit_bias"},
        {"POST", "/v1/chat/completions",
         "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}", 400,
         "text only"},
        {"POST", "/v1/chat/completions",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"tool_choice\": "
         "\"required\"}",
         400, "tools"},
        {"POST", "/v1/chat/completions",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"response_format\": "
         "{\"type\": \"xml\"}}",
         400, "response_format"},
        {"POST", "/v1/chat/completions",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}", 400, "invalid JSON"},
        {"POST", "/v1/chat/completions",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"\\ud800\"}]}", 400, "invalid JSON"},
        {"POST", "/v1/completions", "{\"prompt\": 5}", 400, "prompt"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"logit_bias\": {\"70000\": 1}}", 400,
         "out of range"},
        {"POST", "/v1/completions", "{\"prompt\": [99999]}", 400, "out of range"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"echo\": true}", 400, "echo"},
        {"GET", "/v1/chat/completions", NULL, 405, "not allowed"},
        {"GET", "/v1/nothing", NULL, 404, "no endpoint"},
        {"POST", "/tokenize", "{\"content\": 3}", 400, "content"},
        {"POST", "/detokenize", "{\"tokens\": [1, -2]}", 400, "tokens[1]"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) expect_error(port, &cases[i], 0);
    /* a prompt longer than the context: 400 naming both counts */
    struct buf big;
    buf_init(&big);
    buf_append_str(&big, "{\"prompt\": \"");
    for (int i = 0; i < 80; i++) buf_append_str(&big, "Once upon a time ");
    buf_append_str(&big, "\"}");
    struct bad_case ctx = {"POST", "/v1/completions", big.data, 400, "context holds 64"};
    expect_error(port, &ctx, 0);
    struct resp r;
    request(port, "POST", "/v1/completions", big.data, &r);
    json_t *v = parse(&r);
    EXPECT(jstr(v, "error.type") && streq(jstr(v, "error.type"), "exceed_context_size_error"));
    EXPECT(jint(v, "error.n_prompt_tokens") > 64);
    EXPECT_EQ_INT(jint(v, "error.n_ctx"), 64);
    char want_msg[64];
    snprintf(want_msg, sizeof(want_msg), "%lld prompt tokens",
             (long long)jint(v, "error.n_prompt_tokens"));
    EXPECT(jstr(v, "error.message") && strstr(jstr(v, "error.message"), want_msg) != NULL);
    json_decref(v);
    resp_free(&r);
    buf_free(&big);
    /* a body over the limit: 413 without reading it */
    size_t n = 200 * 1024;
    char *huge = mem_alloc(n + 1);
    memset(huge, ' ', n);
    huge[n] = 0;
    struct bad_case too = {"POST", "/v1/chat/completions", huge, 413, "larger than"};
    expect_error(port, &too, 0);
    mem_free(huge);
    /* Anthropic-shaped errors on /v1/messages */
    const struct bad_case anth[] = {
        {"POST", "/v1/messages", "{\"max_tokens\": 5}", 400, "messages"},
        {"POST", "/v1/messages", "{\"messages\": [{\"role\": \"system\", \"content\": \"x\"}]}",
         400, "role"},
        {"POST", "/v1/messages?beta=true",
         "{\"messages\": [{\"role\": \"user\", \"content\": "
         "[{\"type\": \"image\"}]}]}",
         400, "text only"},
        {"POST", "/v1/messages/count_tokens", "nope", 400, "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof(anth) / sizeof(anth[0]); i++) expect_error(port, &anth[i], 1);
    /* still serving */
    EXPECT_EQ_INT(request(port, "GET", "/health", NULL, &r), 200);
    resp_free(&r);
    long st;
    v = post_json(port, "/v1/completions", "{\"prompt\": \"Hi\", \"max_tokens\": 2}", &st);
    EXPECT_EQ_INT(st, 200);
    json_decref(v);
    EXPECT(metric_value(port, "requests_errors_4xx_total") >= 30);
    server_close(s);
}

TEST(server_api_key) {
    NEED_MODEL();
    struct server *s = open_server(model, 64, 1, "sekrit", 0, 0);
    ASSERT(s);
    int port = server_port(s);
    struct bad_case none = {"GET", "/v1/models", NULL, 401, "API key"};
    expect_error(port, &none, 0);
    struct bad_case anth = {"POST", "/v1/messages", "{}", 401, "API key"};
    expect_error(port, &anth, 1);
    struct resp r;
    EXPECT_EQ_INT(request(port, "GET", "/health", NULL, &r), 200); /* public */
    resp_free(&r);
    struct curl_slist *h = curl_slist_append(NULL, "Authorization: Bearer wrong");
    EXPECT_EQ_INT(request_h(port, "GET", "/v1/models", NULL, h, &r), 401);
    resp_free(&r);
    curl_slist_free_all(h);
    h = curl_slist_append(NULL, "Authorization: Bearer sekrit");
    EXPECT_EQ_INT(request_h(port, "GET", "/v1/models", NULL, h, &r), 200);
    resp_free(&r);
    curl_slist_free_all(h);
    h = curl_slist_append(NULL, "x-api-key: sekrit");
    EXPECT_EQ_INT(request_h(port, "POST", "/v1/messages/count_tokens",
                            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", h, &r),
                  200);
    resp_free(&r);
    curl_slist_free_all(h);
    server_close(s);
}

/* ============================================================================================
 * Anthropic messages
 * ============================================================================================ */

TEST(server_anthropic_messages) {
    NEED_MODEL();
    struct server *s = open_server(model, 512, 2, NULL, 0, 0);
    ASSERT(s);
    int port = server_port(s);
    /* tools are declared only for count_tokens below: their ChatML preamble is long in this
     * model's 512-token vocabulary, and the history alone exercises the translation */
    const char *conv =
        "{\"model\": \"claude-x\", \"max_tokens\": 10, \"temperature\": 0, %s"
        "\"system\": [{\"type\": \"text\", \"text\": \"x-anthropic-billing-header: cch=123;\"}, "
        "{\"type\": \"text\", \"text\": \"Be brief.\"}], "
        "\"messages\": [{\"role\": \"user\", \"content\": \"Read a.txt\"}, {\"role\": "
        "\"assistant\", \"content\": [{\"type\": \"text\", \"text\": \"Reading.\"}, {\"type\": "
        "\"tool_use\", \"id\": \"toolu_1\", \"name\": \"read\", \"input\": {\"path\": "
        "\"a.txt\"}}]}, {\"role\": \"user\", \"content\": [{\"type\": \"tool_result\", "
        "\"tool_use_id\": \"toolu_1\", \"content\": \"hello\"}]}]}";
    const char *tools = "\"tools\": [{\"name\": \"read\", \"description\": \"read a file\", "
                        "\"input_schema\": {\"type\": \"object\", \"properties\": {\"path\": "
                        "{\"type\": \"string\"}}}}], ";
    char b[2048];
    snprintf(b, sizeof(b), conv, "");
    long st;
    json_t *v = post_json(port, "/v1/messages", b, &st);
    EXPECT_EQ_INT(st, 200);
    EXPECT(streq(jstr(v, "type"), "message"));
    EXPECT(streq(jstr(v, "role"), "assistant"));
    EXPECT(streq(jstr(v, "model"), "claude-x"));
    EXPECT(streq(jstr(v, "content.0.type"), "text"));
    EXPECT(streq(jstr(v, "stop_reason"), "max_tokens"));
    EXPECT_EQ_INT(jint(v, "usage.output_tokens"), 10);
    const char *want = jstr(v, "content.0.text");
    ASSERT(want);
    /* the streamed form carries the same text in named events */
    snprintf(b, sizeof(b), conv, "\"stream\": true, ");
    struct resp r;
    EXPECT_EQ_INT(request(port, "POST", "/v1/messages", b, &r), 200);
    const char *order[] = {"event: message_start",       "event: content_block_start",
                           "event: content_block_delta", "event: content_block_stop",
                           "event: message_delta",       "event: message_stop"};
    const char *p = r.body.data;
    for (size_t i = 0; i < 6 && p; i++) {
        p = strstr(p, order[i]);
        EXPECT_MSG(p != NULL, "missing %s in order", order[i]);
    }
    struct buf got;
    buf_init(&got);
    for (const char *q = r.body.data; q && (q = strstr(q, "data: ")); q += 6) {
        const char *end = strstr(q, "\n\n");
        json_t *ev = json_loadb(q + 6, (size_t)(end - q - 6), 0, NULL);
        EXPECT(ev != NULL);
        if (jstr(ev, "delta.text")) buf_append_str(&got, jstr(ev, "delta.text"));
        if (jstr(ev, "delta.stop_reason"))
            EXPECT(streq(jstr(ev, "delta.stop_reason"), "max_tokens"));
        json_decref(ev);
    }
    EXPECT_MSG(!strcmp(got.data ? got.data : "", want), "stream '%s' whole '%s'",
               got.data ? got.data : "", want);
    buf_free(&got);
    resp_free(&r);
    json_decref(v);
    /* count_tokens: the tools add to the count; the billing block is dropped */
    snprintf(b, sizeof(b), conv, "");
    v = post_json(port, "/v1/messages/count_tokens", b, &st);
    json_int_t n0 = jint(v, "input_tokens");
    json_decref(v);
    snprintf(b, sizeof(b), conv, tools);
    v = post_json(port, "/v1/messages/count_tokens", b, &st);
    EXPECT_EQ_INT(st, 200);
    json_int_t n1 = jint(v, "input_tokens");
    EXPECT(n0 > 20 && n1 > n0 + 50);
    json_decref(v);
    char *nobill = mem_strdup(b);
    char *bill = strstr(nobill, "cch=123;");
    memcpy(bill, "cch=999;", 8);
    v = post_json(port, "/v1/messages/count_tokens", nobill, &st);
    EXPECT_EQ_INT(jint(v, "input_tokens"), n1);
    json_decref(v);
    mem_free(nobill);
    server_close(s);
}

/* n choices, logprobs, chat template kwargs reach the prompt */
TEST(server_choices_and_logprobs) {
    NEED_MODEL();
    struct server *s = open_server(model, 256, 2, NULL, 0, 0);
    ASSERT(s);
    int port = server_port(s);
    long st;
    json_t *v =
        post_json(port, "/v1/chat/completions",
                  "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"n\": 3, "
                  "\"max_tokens\": 6, \"seed\": 7, \"logprobs\": true, \"top_logprobs\": 3}",
                  &st);
    EXPECT_EQ_INT(st, 200);
    json_t *ch = json_object_get(v, "choices");
    EXPECT_EQ_INT(json_array_size(ch), 3);
    for (int i = 0; i < 3; i++) {
        char path[64];
        snprintf(path, sizeof(path), "choices.%d.index", i);
        EXPECT_EQ_INT(jint(v, path), i);
        json_t *lp =
            json_object_get(json_object_get(json_array_get(ch, (size_t)i), "logprobs"), "content");
        EXPECT_EQ_INT(json_array_size(lp), 6);
        json_t *t0 = json_array_get(lp, 0), *top = json_object_get(t0, "top_logprobs");
        EXPECT_EQ_INT(json_array_size(top), 3);
        double l0 = json_real_value(json_object_get(json_array_get(top, 0), "logprob"));
        double l1 = json_real_value(json_object_get(json_array_get(top, 1), "logprob"));
        EXPECT(l0 >= l1 && l0 <= 0);
    }
    EXPECT_EQ_INT(jint(v, "usage.completion_tokens"), 18);
    json_decref(v);
    /* the same seed reproduces the same choices */
    json_t *a = post_json(port, "/v1/completions",
                          "{\"prompt\": \"Once\", \"max_tokens\": 8, \"seed\": 42, \"n\": 2}", &st);
    json_t *b = post_json(port, "/v1/completions",
                          "{\"prompt\": \"Once\", \"max_tokens\": 8, \"seed\": 42, \"n\": 2}", &st);
    EXPECT(streq(jstr(a, "choices.0.text"), jstr(b, "choices.0.text")));
    EXPECT(streq(jstr(a, "choices.1.text"), jstr(b, "choices.1.text")));
    json_decref(a);
    json_decref(b);
    server_close(s);
}

/* ============================================================================================
 * The command
 * ============================================================================================ */

TEST(server_cli_serve_process) {
    NEED_MODEL();
    if (access("./hearth", X_OK) != 0) SKIP_TEST("./hearth not built");
    int pipefd[2];
    ASSERT(pipe(pipefd) == 0);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        execl("./hearth", "hearth", "serve", "-m", model, "--port", "0", "-c", "128", "-t", "1",
              (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    char log[4096] = {0};
    size_t n = 0;
    int port = 0;
    double t0 = now_s();
    while (!port && n < sizeof(log) - 1 && now_s() - t0 < 20) {
        ssize_t k = read(pipefd[0], log + n, sizeof(log) - 1 - n);
        if (k <= 0) break;
        n += (size_t)k;
        const char *p = strstr(log, "http://127.0.0.1:");
        if (p) port = atoi(p + 17);
    }
    EXPECT_MSG(port > 0, "no port in: %s", log);
    if (port > 0) {
        struct resp r;
        EXPECT_EQ_INT(request(port, "GET", "/health", NULL, &r), 200);
        resp_free(&r);
        EXPECT_EQ_INT(request(port, "POST", "/v1/completions",
                              "{\"prompt\": \"Once\", \"max_tokens\": 4}", &r),
                      200);
        resp_free(&r);
    }
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    close(pipefd[0]);
    EXPECT_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d", status);
}

/* ============================================================================================
 * Constrained output: response_format and forced tool calls (grammars from the chat module)
 * ============================================================================================ */

TEST(server_json_schema_output) {
    NEED_MODEL();
    struct server *s = open_server(model, 256, 2, NULL, 0, 0);
    ASSERT(s);
    int port = server_port(s);
    long st;
    json_t *v = post_json(
        port, "/v1/chat/completions",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"Pick\"}], \"max_tokens\": 60, "
        "\"temperature\": 0, \"response_format\": {\"type\": \"json_schema\", \"json_schema\": "
        "{\"name\": \"c\", \"schema\": {\"type\": \"object\", \"properties\": {\"color\": "
        "{\"enum\": [\"red\", \"green\"]}, \"n\": {\"type\": \"integer\"}}, \"required\": "
        "[\"color\"], \"additionalProperties\": false}}}}",
        &st);
    EXPECT_EQ_INT(st, 200);
    const char *content = jstr(v, "choices.0.message.content");
    json_t *obj = content ? json_loads(content, 0, NULL) : NULL;
    EXPECT_MSG(json_is_object(obj), "content is not a JSON object: %s", content ? content : "");
    const char *color = json_string_value(json_object_get(obj, "color"));
    EXPECT(streq(color, "red") || streq(color, "green"));
    EXPECT(streq(jstr(v, "choices.0.finish_reason"), "stop"));
    json_decref(obj);
    json_decref(v);
    /* json_object on the completions endpoint */
    v = post_json(port, "/v1/completions",
                  "{\"prompt\": \"Once\", \"max_tokens\": 80, \"temperature\": 0, "
                  "\"response_format\": {\"type\": \"json_object\"}}",
                  &st);
    EXPECT_EQ_INT(st, 200);
    const char *text = jstr(v, "choices.0.text");
    obj = text ? json_loads(text, 0, NULL) : NULL;
    if (streq(jstr(v, "choices.0.finish_reason"), "stop"))
        EXPECT_MSG(json_is_object(obj), "not an object: %s", text ? text : "");
    else /* cut by max_tokens: at least it started as an object */
        EXPECT(text && text[strspn(text, " \n")] == '{');
    json_decref(obj);
    json_decref(v);
    /* a schema the compiler refuses is a 400, never an unconstrained answer */
    v = post_json(port, "/v1/chat/completions",
                  "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"response_format\": "
                  "{\"type\": \"json_schema\", \"json_schema\": {\"name\": \"c\", \"schema\": "
                  "{\"type\": \"strin\"}}}}",
                  &st);
    EXPECT_EQ_INT(st, 400);
    EXPECT(jstr(v, "error.message") && strstr(jstr(v, "error.message"), "response_format"));
    json_decref(v);
    server_close(s);
}

static const char *g_tools =
    "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"read\", \"parameters\": "
    "{\"type\": \"object\", \"properties\": {\"path\": {\"enum\": [\"a.c\", \"b.c\"]}}, "
    "\"required\": [\"path\"], \"additionalProperties\": false}}}]";

TEST(server_tool_calls_forced) {
    NEED_MODEL();
    struct server *s = open_server(model, 512, 2, NULL, 0, (size_t)64 << 20);
    ASSERT(s);
    int port = server_port(s);
    char b[1024];
    snprintf(b, sizeof(b),
             "{\"messages\": [{\"role\": \"user\", \"content\": \"Read\"}], \"max_tokens\": 80, "
             "\"temperature\": 0, \"tool_choice\": \"required\", \"parallel_tool_calls\": false, "
             "%s}",
             g_tools);
    long st;
    json_t *v = post_json(port, "/v1/chat/completions", b, &st);
    EXPECT_EQ_INT(st, 200);
    EXPECT(streq(jstr(v, "choices.0.finish_reason"), "tool_calls"));
    EXPECT(json_is_null(json_object_get(
        json_object_get(json_array_get(json_object_get(v, "choices"), 0), "message"), "content")));
    EXPECT(streq(jstr(v, "choices.0.message.tool_calls.0.function.name"), "read"));
    EXPECT(streq(jstr(v, "choices.0.message.tool_calls.0.type"), "function"));
    const char *id = jstr(v, "choices.0.message.tool_calls.0.id");
    EXPECT(id && !strncmp(id, "call_", 5));
    const char *args = jstr(v, "choices.0.message.tool_calls.0.function.arguments");
    json_t *a = args ? json_loads(args, 0, NULL) : NULL;
    const char *path = json_string_value(json_object_get(a, "path"));
    EXPECT_MSG(streq(path, "a.c") || streq(path, "b.c"), "arguments %s", args ? args : "");
    /* streamed: the head delta names the call, the argument fragments add up to the same JSON */
    snprintf(b, sizeof(b),
             "{\"messages\": [{\"role\": \"user\", \"content\": \"Read\"}], \"max_tokens\": 80, "
             "\"temperature\": 0, \"tool_choice\": \"required\", \"parallel_tool_calls\": false, "
             "\"stream\": true, %s}",
             g_tools);
    struct resp r;
    EXPECT_EQ_INT(request(port, "POST", "/v1/chat/completions", b, &r), 200);
    json_t *ev[128] = {0};
    int done, n = sse_events(r.body.data, ev, 128, &done);
    EXPECT(done);
    struct buf got;
    buf_init(&got);
    int heads = 0;
    const char *finish = NULL;
    for (int i = 0; i < n; i++) {
        if (jstr(ev[i], "choices.0.delta.tool_calls.0.function.name")) {
            heads++;
            EXPECT(streq(jstr(ev[i], "choices.0.delta.tool_calls.0.function.name"), "read"));
            EXPECT(jstr(ev[i], "choices.0.delta.tool_calls.0.id") != NULL);
            EXPECT_EQ_INT(jint(ev[i], "choices.0.delta.tool_calls.0.index"), 0);
        }
        const char *frag = jstr(ev[i], "choices.0.delta.tool_calls.0.function.arguments");
        if (frag) buf_append_str(&got, frag);
        if (jstr(ev[i], "choices.0.finish_reason")) finish = jstr(ev[i], "choices.0.finish_reason");
    }
    EXPECT_EQ_INT(heads, 1);
    EXPECT_MSG(streq(got.data ? got.data : "", args), "streamed args '%s' vs '%s'",
               got.data ? got.data : "", args ? args : "");
    EXPECT(streq(finish, "tool_calls"));
    for (int i = 0; i < n; i++) json_decref(ev[i]);
    buf_free(&got);
    resp_free(&r);
    json_decref(a);
    json_decref(v);
    /* tool_choice auto: the call grammar waits for "<tool_call>", which this model never
     * writes, so it tells its story as before (lazy-trigger behaviour: test_grammar.c) */
    snprintf(b, sizeof(b),
             "{\"messages\": [{\"role\": \"user\", \"content\": \"Read\"}], \"max_tokens\": 24, "
             "\"temperature\": 0, \"tool_choice\": \"auto\", %s}",
             g_tools);
    v = post_json(port, "/v1/chat/completions", b, &st);
    EXPECT_EQ_INT(st, 200);
    const char *told = jstr(v, "choices.0.message.content");
    EXPECT_MSG(told && strlen(told) > 20, "content '%s'", told ? told : "(null)");
    EXPECT(streq(jstr(v, "choices.0.finish_reason"), "length"));
    json_decref(v);
    /* Anthropic: a named tool_choice gives a tool_use block with an object input */
    v = post_json(port, "/v1/messages",
                  "{\"max_tokens\": 80, \"temperature\": 0, \"tool_choice\": {\"type\": \"tool\", "
                  "\"name\": \"read\", \"disable_parallel_tool_use\": true}, \"tools\": "
                  "[{\"name\": \"read\", \"input_schema\": {\"type\": \"object\", \"properties\": "
                  "{\"path\": {\"enum\": [\"a.c\", \"b.c\"]}}, \"required\": [\"path\"], "
                  "\"additionalProperties\": false}}], \"messages\": [{\"role\": \"user\", "
                  "\"content\": \"Read\"}]}",
                  &st);
    EXPECT_EQ_INT(st, 200);
    EXPECT(streq(jstr(v, "stop_reason"), "tool_use"));
    json_t *blocks = json_object_get(v, "content");
    json_t *tu = json_array_get(blocks, json_array_size(blocks) - 1);
    EXPECT(streq(json_string_value(json_object_get(tu, "type")), "tool_use"));
    EXPECT(streq(json_string_value(json_object_get(tu, "name")), "read"));
    path = json_string_value(json_object_get(json_object_get(tu, "input"), "path"));
    EXPECT(streq(path, "a.c") || streq(path, "b.c"));
    json_decref(v);
    /* and the same as named events */
    struct resp r2;
    EXPECT_EQ_INT(request(port, "POST", "/v1/messages",
                          "{\"max_tokens\": 80, \"temperature\": 0, \"stream\": true, "
                          "\"tool_choice\": {\"type\": \"any\"}, \"tools\": [{\"name\": \"read\", "
                          "\"input_schema\": {\"type\": \"object\", \"properties\": {\"path\": "
                          "{\"enum\": [\"a.c\", \"b.c\"]}}, \"required\": [\"path\"], "
                          "\"additionalProperties\": false}}], \"messages\": [{\"role\": \"user\", "
                          "\"content\": \"Read\"}]}",
                          &r2),
                  200);
    EXPECT(r2.body.data && strstr(r2.body.data, "\"type\":\"tool_use\""));
    EXPECT(r2.body.data && strstr(r2.body.data, "\"input_json_delta\""));
    EXPECT(r2.body.data && strstr(r2.body.data, "\"stop_reason\":\"tool_use\""));
    resp_free(&r2);
    server_close(s);
}

/* ============================================================================================
 * Robustness: allocation failures while serving
 * ============================================================================================ */

/* Fails the Nth allocation (whatever thread makes it) during a chat request, for every N up to
 * where the request succeeds: each answer is a success or a clean error (or a dropped
 * connection), never a crash, and once the server is closed every byte is back. */
TEST(server_oom_during_requests) {
    NEED_MODEL();
    int64_t live0 = mem_live_bytes();
    struct server *s = open_server(model, 128, 1, NULL, 0, (size_t)8 << 20);
    ASSERT(s);
    int port = server_port(s);
    const char *body =
        "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 4, "
        "\"stop\": [\"zz\"], \"logprobs\": true, \"top_logprobs\": 2, \"stream\": %s}";
    char b[256];
    /* Warm-up: the CPU backend grows its scratch lazily and CHECKs if that fails inside a
     * forward pass (an engine limit, see cpu_backend.c work_get); one run of the same request
     * first means the loop below never needs a larger scratch. */
    for (int stream = 0; stream < 2; stream++) {
        struct resp w;
        snprintf(b, sizeof(b), body, stream ? "true" : "false");
        EXPECT_EQ_INT(request(port, "POST", "/v1/chat/completions", b, &w), 200);
        resp_free(&w);
    }
    int ok_at = -1;
    for (int n = 0; n < 400 && ok_at < 0; n++) {
        for (int stream = 0; stream < 2; stream++) {
            snprintf(b, sizeof(b), body, stream ? "true" : "false");
            struct resp r;
            memset(&r, 0, sizeof(r));
            buf_init(&r.body);
            CURL *c = make_req(port, "POST", "/v1/chat/completions", b, strlen(b), NULL, &r, 20000);
            mem_fail_after(n);
            CURLcode cc = curl_easy_perform(c);
            mem_fail_after(-1);
            long st = 0;
            if (cc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
            curl_easy_cleanup(c);
            EXPECT_MSG(st == 0 || st == 200 || st == 400 || st == 500 || st == 503,
                       "n=%d stream=%d: status %ld", n, stream, st);
            int complete = st == 200 && r.body.data &&
                           (stream ? strstr(r.body.data, "[DONE]") != NULL
                                   : strstr(r.body.data, "\"usage\"") != NULL);
            if (complete && !stream) ok_at = n;
            buf_free(&r.body);
        }
    }
    EXPECT_MSG(ok_at > 20, "the request succeeded with allocation %d failing", ok_at);
    struct resp r;
    EXPECT_EQ_INT(request(port, "GET", "/health", NULL, &r), 200);
    resp_free(&r);
    long st;
    json_t *v = post_json(port, "/v1/chat/completions",
                          "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], "
                          "\"max_tokens\": 3}",
                          &st);
    EXPECT_EQ_INT(st, 200);
    EXPECT_EQ_INT(jint(v, "usage.completion_tokens"), 3);
    json_decref(v);
    server_close(s);
    EXPECT_EQ_INT(mem_live_bytes(), live0);
}

/* ============================================================================================
 * Speculative decoding in the continuous batch
 * ============================================================================================ */

static struct server *open_server_spec(const char *model, int n_ctx, int n_parallel,
                                       size_t cache_bytes, enum spec_mode mode,
                                       const char *draft_model) {
    struct server_opts o;
    server_opts_default(&o);
    o.model_path = model;
    o.port = 0;
    o.n_ctx = n_ctx;
    o.n_parallel = n_parallel;
    o.n_threads = 1;
    o.cache_bytes = cache_bytes;
    o.spec_mode = mode;
    o.draft_model_path = draft_model;
    struct server *s = NULL;
    struct error err = {0};
    if (server_open(&s, &o, &err)) test_fail(__FILE__, __LINE__, "server_open: %s", err.msg);
    return s;
}

/* POSTs each body at once (curl multi) and returns the parsed answers in out[]. */
static void post_concurrent(int port, const char *path, char *const *bodies, int n, json_t **out) {
    CURLM *m = curl_multi_init();
    CURL *h[16];
    struct resp r[16];
    for (int i = 0; i < n; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        buf_init(&r[i].body);
        h[i] = make_req(port, "POST", path, bodies[i], strlen(bodies[i]), NULL, &r[i], 120000);
        curl_multi_add_handle(m, h[i]);
    }
    int running = 1;
    while (running) {
        curl_multi_perform(m, &running);
        if (running) curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    for (int i = 0; i < n; i++) {
        out[i] = parse(&r[i]);
        curl_multi_remove_handle(m, h[i]);
        curl_easy_cleanup(h[i]);
        resp_free(&r[i]);
    }
    curl_multi_cleanup(m);
}

static double metric_labeled(int port, const char *name, const char *drafter) {
    char key[128];
    snprintf(key, sizeof(key), "spec_drafter_%s{drafter=\"%s\"}", name, drafter);
    struct resp r;
    request(port, "GET", "/metrics", NULL, &r);
    char full[160];
    snprintf(full, sizeof(full), "\nhearth_%s ", key);
    const char *p = r.body.data ? strstr(r.body.data, full) : NULL;
    double v = p ? strtod(p + strlen(full), NULL) : -1;
    resp_free(&r);
    return v;
}

/* Greedy output with n-gram speculation (the default on a model without an MTP block) equals
 * output without it, alone and with requests verified side by side in one batch; log-probs are
 * the same too; drafts and acceptances show up in the timings and /metrics. */
TEST(server_spec_greedy_identical) {
    NEED_MODEL();
    struct server *s = open_server(model, 512, 3, NULL, 0, 0);
    ASSERT(s);
    int port = server_port(s);
    enum { N = 5 };
    const char *prompts[N] = {"Once upon a time", "The cat", "Lily went to the park and",
                              "One day, a big", "Tom had a red ball. He"};
    char *plain[N] = {0}, *spec[N];
    json_t *v;
    long st;
    int drafted = 0, accepted = 0;
    for (int i = 0; i < N; i++) {
        char b[512];
        snprintf(b, sizeof(b),
                 "{\"prompt\": \"%s\", \"max_tokens\": %d, \"temperature\": 0, \"speculative\": "
                 "{\"mode\": \"none\"}}",
                 prompts[i], 60 + 10 * i);
        v = post_json(port, "/v1/completions", b, &st);
        EXPECT_EQ_INT(st, 200);
        plain[i] = mem_strdup(jstr(v, "choices.0.text") ? jstr(v, "choices.0.text") : "?");
        EXPECT_EQ_INT(jint(v, "timings.draft_n"), 0);
        json_decref(v);
        spec[i] = mem_alloc(512);
        snprintf(spec[i], 512, "{\"prompt\": \"%s\", \"max_tokens\": %d, \"temperature\": 0}",
                 prompts[i], 60 + 10 * i);
        v = post_json(port, "/v1/completions", spec[i], &st);
        EXPECT_EQ_INT(st, 200);
        EXPECT_MSG(streq(jstr(v, "choices.0.text"), plain[i]), "prompt %d: '%s' vs '%s'", i,
                   jstr(v, "choices.0.text") ? jstr(v, "choices.0.text") : "(null)", plain[i]);
        drafted += (int)jint(v, "timings.draft_n");
        accepted += (int)jint(v, "timings.draft_n_accepted");
        EXPECT(jint(v, "timings.draft_n_accepted") <= jint(v, "timings.draft_n"));
        EXPECT_EQ_INT(jint(v, "usage.completion_tokens"), 60 + 10 * i);
        json_decref(v);
    }
    EXPECT_MSG(drafted > 20 && accepted > 10, "%d drafted, %d accepted", drafted, accepted);
    EXPECT_EQ_INT((int)metric_value(port, "spec_draft_tokens_total"), drafted);
    EXPECT_EQ_INT((int)metric_value(port, "spec_accepted_tokens_total"), accepted);
    EXPECT_EQ_INT((int)metric_labeled(port, "draft_tokens_total", "ngram"), drafted);
    EXPECT_EQ_INT((int)metric_labeled(port, "accepted_tokens_total", "mtp"), 0);
    double rate = metric_value(port, "spec_acceptance_rate");
    EXPECT(rate > 0 && rate <= 1);
    EXPECT(metric_value(port, "spec_drafts_total") > 0);
    /* all at once: more requests than slots, drafts of several slots in each forward pass */
    json_t *out[N];
    post_concurrent(port, "/v1/completions", spec, N, out);
    for (int i = 0; i < N; i++) {
        EXPECT_MSG(streq(jstr(out[i], "choices.0.text"), plain[i]), "concurrent %d: '%s'", i,
                   jstr(out[i], "choices.0.text") ? jstr(out[i], "choices.0.text") : "(null)");
        json_decref(out[i]);
    }
    /* log-probs: each token's from its own verify row, as without speculation */
    const char *lp = "{\"prompt\": \"Once upon a time\", \"max_tokens\": 120, \"temperature\": 0, "
                     "\"logprobs\": 2%s}";
    char b[512];
    snprintf(b, sizeof(b), lp, ", \"speculative\": {\"mode\": \"none\"}");
    json_t *a = post_json(port, "/v1/completions", b, &st);
    snprintf(b, sizeof(b), lp, "");
    json_t *c = post_json(port, "/v1/completions", b, &st);
    EXPECT(jint(c, "timings.draft_n_accepted") > 0);
    char *la =
        json_dump_str(json_object_get(json_array_get(json_object_get(a, "choices"), 0), "logprobs"),
                      JSON_COMPACT);
    char *lc =
        json_dump_str(json_object_get(json_array_get(json_object_get(c, "choices"), 0), "logprobs"),
                      JSON_COMPACT);
    EXPECT_MSG(la && lc && !strcmp(la, lc) && strlen(la) > 100, "log-probs differ:\n%s\n%s",
               la ? la : "", lc ? lc : "");
    mem_free(la);
    mem_free(lc);
    json_decref(a);
    json_decref(c);
    /* a 1-token cap per step: still the same text */
    v = post_json(port, "/v1/completions",
                  "{\"prompt\": \"Once upon a time\", \"max_tokens\": 60, \"temperature\": 0, "
                  "\"speculative\": {\"draft_max\": 1}}",
                  &st);
    EXPECT_EQ_INT(st, 200);
    EXPECT(streq(jstr(v, "choices.0.text"), plain[0]));
    EXPECT(jint(v, "timings.draft_n") > 0);
    json_decref(v);
    /* what a request may not ask for */
    const struct bad_case bad[] = {
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"speculative\": {\"mode\": \"bogus\"}}",
         400, "speculative.mode"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"speculative\": {\"mode\": \"mtp\"}}",
         400, "not available"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"speculative\": {\"mode\": \"draft\"}}",
         400, "not available"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"speculative\": {\"draft_max\": 65}}",
         400, "draft_max"},
        {"POST", "/v1/chat/completions",
         "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"speculative\": 4}", 400,
         "speculative"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) expect_error(port, &bad[i], 0);
    for (int i = 0; i < N; i++) {
        mem_free(plain[i]);
        mem_free(spec[i]);
    }
    server_close(s);
    /* --spec none: nothing drafted, and a request cannot turn it on */
    s = open_server_spec(model, 256, 1, 0, SPEC_NONE, NULL);
    ASSERT(s);
    port = server_port(s);
    v = post_json(port, "/v1/completions",
                  "{\"prompt\": \"Once upon a time\", \"max_tokens\": 60, \"temperature\": 0}",
                  &st);
    EXPECT_EQ_INT(jint(v, "timings.draft_n"), 0);
    json_decref(v);
    const struct bad_case off = {"POST", "/v1/completions",
                                 "{\"prompt\": \"x\", \"speculative\": {\"mode\": \"ngram\"}}", 400,
                                 "not available"};
    expect_error(port, &off, 0);
    EXPECT_EQ_INT((int)metric_value(port, "spec_draft_tokens_total"), 0);
    server_close(s);
}

/* Grammar-constrained output (tool_choice required, json_schema) with n-gram drafts: the same
 * answer as without speculation; drafts the grammar forbids are rejected, accepted tokens
 * advance the grammar in order. */
TEST(server_spec_constrained) {
    NEED_MODEL();
    struct server *s = open_server(model, 512, 2, NULL, 0, 0);
    ASSERT(s);
    int port = server_port(s);
    const char *modes[2] = {"none", "ngram"};
    json_t *v[2][2];
    for (int m = 0; m < 2; m++) {
        char b[1536];
        long st;
        snprintf(b, sizeof(b),
                 "{\"messages\": [{\"role\": \"user\", \"content\": \"Read\"}], \"max_tokens\": "
                 "80, \"temperature\": 0, \"tool_choice\": \"required\", \"parallel_tool_calls\": "
                 "false, \"speculative\": {\"mode\": \"%s\"}, %s}",
                 modes[m], g_tools);
        v[0][m] = post_json(port, "/v1/chat/completions", b, &st);
        EXPECT_EQ_INT(st, 200);
        snprintf(b, sizeof(b),
                 "{\"messages\": [{\"role\": \"user\", \"content\": \"Pick a color and a number, "
                 "a number and a color\"}], \"max_tokens\": 80, \"temperature\": 0, "
                 "\"speculative\": {\"mode\": \"%s\"}, \"response_format\": {\"type\": "
                 "\"json_schema\", \"json_schema\": {\"name\": \"c\", \"schema\": {\"type\": "
                 "\"object\", \"properties\": {\"color\": {\"enum\": [\"red\", \"green\"]}, \"n\": "
                 "{\"type\": \"integer\"}, \"m\": {\"type\": \"integer\"}}, \"required\": "
                 "[\"color\", \"n\", \"m\"], \"additionalProperties\": false}}}}",
                 modes[m]);
        v[1][m] = post_json(port, "/v1/chat/completions", b, &st);
        EXPECT_EQ_INT(st, 200);
    }
    /* tool calls: the same call (ids are random per response) */
    EXPECT(streq(jstr(v[0][1], "choices.0.finish_reason"), "tool_calls"));
    EXPECT(streq(jstr(v[0][1], "choices.0.message.tool_calls.0.function.name"), "read"));
    const char *args = jstr(v[0][1], "choices.0.message.tool_calls.0.function.arguments");
    EXPECT_MSG(streq(args, jstr(v[0][0], "choices.0.message.tool_calls.0.function.arguments")),
               "arguments %s", args ? args : "(null)");
    /* json_schema: the same object */
    const char *content = jstr(v[1][1], "choices.0.message.content");
    EXPECT_MSG(streq(content, jstr(v[1][0], "choices.0.message.content")), "content %s",
               content ? content : "(null)");
    json_t *obj = content ? json_loads(content, 0, NULL) : NULL;
    EXPECT_MSG(json_is_object(obj) && json_is_integer(json_object_get(obj, "m")),
               "not the schema's object: %s", content ? content : "");
    json_decref(obj);
    int drafted = 0;
    for (int k = 0; k < 2; k++) {
        EXPECT_EQ_INT(jint(v[k][0], "timings.draft_n"), 0);
        EXPECT(streq(jstr(v[k][0], "choices.0.finish_reason"),
                     jstr(v[k][1], "choices.0.finish_reason")));
        EXPECT_EQ_INT(jint(v[k][0], "usage.completion_tokens"),
                      jint(v[k][1], "usage.completion_tokens"));
        drafted += (int)jint(v[k][1], "timings.draft_n");
        json_decref(v[k][0]);
        json_decref(v[k][1]);
    }
    EXPECT_MSG(drafted > 0, "no drafts in the constrained requests");
    server_close(s);
}

/* --spec draft with the model itself as the draft: every draft is accepted, output unchanged. */
TEST(server_spec_draft_model) {
    NEED_MODEL();
    struct server *s = open_server_spec(model, 256, 2, 0, SPEC_DRAFT, model);
    ASSERT(s);
    int port = server_port(s);
    struct buf want;
    buf_init(&want);
    engine_greedy(model, "Once upon a time", 40, &want, NULL);
    char *bodies[2];
    bodies[0] = mem_strdup("{\"prompt\": \"Once upon a time\", \"max_tokens\": 40, "
                           "\"temperature\": 0}");
    bodies[1] = mem_strdup(bodies[0]);
    json_t *out[2];
    post_concurrent(port, "/v1/completions", bodies, 2, out);
    for (int i = 0; i < 2; i++) {
        EXPECT(streq(jstr(out[i], "choices.0.text"), want.data));
        EXPECT(jint(out[i], "timings.draft_n") > 0);
        EXPECT_EQ_INT(jint(out[i], "timings.draft_n"), jint(out[i], "timings.draft_n_accepted"));
        json_decref(out[i]);
        mem_free(bodies[i]);
    }
    EXPECT(metric_labeled(port, "accepted_tokens_total", "draft") > 0);
    server_close(s);
    buf_free(&want);
    /* the flags' errors */
    struct server_opts o;
    server_opts_default(&o);
    o.model_path = model;
    o.port = 0;
    o.n_ctx = 64;
    o.spec_mode = SPEC_DRAFT;
    struct error err = {0};
    EXPECT(server_open(&s, &o, &err) == ERR_INVALID && strstr(err.msg, "--draft-model"));
    o.spec_mode = SPEC_MTP; /* stories260K has no MTP block */
    EXPECT(server_open(&s, &o, &err) == ERR_UNSUPPORTED);
    o.spec_mode = SPEC_NGRAM;
    o.draft_model_path = model;
    EXPECT(server_open(&s, &o, &err) == ERR_INVALID);
}

/* A hybrid model with an MTP block (qwen35-mtp-f32): the default (MTP head + n-gram) and forced
 * MTP drafting give the output of plain decoding, alone, side by side in one batch and from the
 * prefix cache (rollbacks restore the recurrent state from the slot's tail snapshots). Random
 * weights: the head's drafts are rejected, so every step rolls back. */
TEST(server_spec_mtp_hybrid) {
    const char *model = test_model_path("synthetic/qwen35-mtp-f32.gguf");
    if (!model) SKIP_TEST("../shared/models/synthetic not found");
    json_use_mem();
    struct server *s = open_server_spec(model, 128, 2, (size_t)16 << 20, SPEC_AUTO, NULL);
    ASSERT(s);
    int port = server_port(s);
    const char *prompts[2] = {"[1, 13, 42, 100, 7, 300, 55, 211, 480, 99, 3, 256]",
                              "[1, 13, 42, 100, 7, 300, 55, 17, 400, 64]"};
    const char *modes[3] = {", \"speculative\": {\"mode\": \"none\"}", "",
                            ", \"speculative\": {\"mode\": \"mtp\"}"};
    enum { N = HTTP_SAN ? 5 : 12 }; /* tokens per request */
    char *want[2] = {0};
    char b[512];
    long st;
    for (int i = 0; i < 2; i++) {
        for (int m = 0; m < 3; m++) {
            snprintf(b, sizeof(b),
                     "{\"prompt\": %s, \"max_tokens\": %d, \"temperature\": 0, \"ignore_eos\": "
                     "true%s}",
                     prompts[i], N, modes[m]);
            json_t *v = post_json(port, "/v1/completions", b, &st);
            EXPECT_EQ_INT(st, 200);
            const char *t = jstr(v, "choices.0.text");
            if (m == 0) want[i] = mem_strdup(t ? t : "?");
            EXPECT_MSG(streq(t, want[i]), "prompt %d, mode %d differs", i, m);
            EXPECT_EQ_INT(jint(v, "usage.completion_tokens"), N);
            if (m == 2) EXPECT(jint(v, "timings.draft_n") >= N - 2); /* every step but the last */
            if (m > 0) EXPECT(jint(v, "usage.prompt_tokens_details.cached_tokens") > 0);
            json_decref(v);
        }
    }
    EXPECT(metric_labeled(port, "draft_tokens_total", "mtp") >= 2 * (N - 2));
    /* both prompts at once, forced MTP drafts verified in shared passes */
    char *bodies[2];
    for (int i = 0; i < 2; i++) {
        snprintf(b, sizeof(b),
                 "{\"prompt\": %s, \"max_tokens\": %d, \"temperature\": 0, \"ignore_eos\": "
                 "true%s}",
                 prompts[i], N, modes[2]);
        bodies[i] = mem_strdup(b);
    }
    json_t *out[2];
    post_concurrent(port, "/v1/completions", bodies, 2, out);
    for (int i = 0; i < 2; i++) {
        EXPECT_MSG(streq(jstr(out[i], "choices.0.text"), want[i]), "concurrent %d differs", i);
        json_decref(out[i]);
        mem_free(bodies[i]);
        mem_free(want[i]);
    }
    server_close(s);
}
