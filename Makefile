# hearth — one Makefile. `make` builds ./hearth (libc, libm, pthreads only); `make test` runs the
# suite; `make asan` runs it under ASan+UBSan; `make fuzz` builds and briefly runs the fuzzers.

CC       ?= cc
BUILD    ?= build
OPT      ?= -O2
CFLAGS   ?=
WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wvla -Wno-unused-parameter
# -ffp-contract=off: a*b+c stays two roundings everywhere (clang would fuse it in the FMA-enabled
# ISA files), so SIMD kernels and the scalar references agree bit for bit.
BASEFLAGS := -std=c11 $(OPT) -g $(WARN) -ffp-contract=off -D_GNU_SOURCE -MMD -MP -pthread
ifeq ($(WERROR),1)
BASEFLAGS += -Werror
endif
ifeq ($(SAN),1)
BASEFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDSAN := -fsanitize=address,undefined
endif
LDLIBS   := -lm -pthread

# Each instruction-set file gets its own flags; nothing else is compiled with them.
ISA_AVX2   := -mavx2 -mfma -mf16c
ISA_AVX512 := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx512bf16 -mfma -mf16c -mavx2
ISA_AMX    := $(ISA_AVX512) -mavx512vbmi -mamx-tile -mamx-int8

LIB_SRC   := $(sort $(wildcard src/*/*.c src/*/*/*.c))
LIB_SRC   := $(filter-out src/cli/%,$(LIB_SRC))
TOOL_SRC  := $(sort $(wildcard tools/*.c))
CLI_SRC   := $(sort $(wildcard src/cli/*.c))
TEST_SRC  := $(sort $(wildcard tests/test_*.c))

# The server (src/server, `hearth serve`) needs libmicrohttpd and jansson, its tests libcurl.
# It is built in only when their headers are found (SERVER=0 leaves it out); without it the core
# binary needs only libc, libm and pthreads and `hearth serve` says what to install.
probe_header = $(shell $(CC) -E -include $(1) -x c /dev/null >/dev/null 2>&1 && echo 1)
ifndef SERVER
SERVER := $(if $(and $(call probe_header,microhttpd.h),$(call probe_header,jansson.h)),1,0)
endif
ifeq ($(SERVER),1)
BASEFLAGS += -DHEARTH_HAVE_SERVER
LDLIBS    += -lmicrohttpd -ljansson
ifndef SERVER_TESTS
SERVER_TESTS := $(if $(call probe_header,curl/curl.h),1,0)
endif
else
LIB_SRC   := $(filter-out src/server/%,$(LIB_SRC))
TEST_SRC  := $(filter-out tests/test_server%,$(TEST_SRC))
SERVER_TESTS := 0
endif
ifeq ($(SERVER_TESTS),1)
TEST_LDLIBS := -lcurl
else
TEST_SRC  := $(filter-out tests/test_server_http.c,$(TEST_SRC))
endif

LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o)
TOOL_OBJ  := $(TOOL_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ   := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ  := $(TEST_SRC:%.c=$(BUILD)/%.o)

.PHONY: all deps run serve test test-scalar asan tsan fuzz bench bench-kernels format format-check clean

all: hearth

$(BUILD)/hearth: $(CLI_OBJ) $(TOOL_OBJ) $(LIB_OBJ)
	$(CC) $(BASEFLAGS) $(CFLAGS) -o $@ $^ $(LDSAN) $(LDLIBS)

hearth: $(BUILD)/hearth
	cp $< $@

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/src/backend/cpu/kernels_avx2.o: src/backend/cpu/kernels_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) $(ISA_AVX2) -c -o $@ $<

$(BUILD)/src/backend/cpu/kernels_avx512.o: src/backend/cpu/kernels_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) $(ISA_AVX512) -c -o $@ $<

$(BUILD)/src/backend/cpu/kernels_amx.o: src/backend/cpu/kernels_amx.c
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) $(ISA_AMX) -c -o $@ $<

# The test table: every `TEST(name)` line in tests/test_*.c becomes X(name).
$(BUILD)/tests/tests_list.h: $(TEST_SRC)
	@mkdir -p $(dir $@)
	sed -n 's/^TEST(\([A-Za-z0-9_]*\)).*/X(\1)/p' $(TEST_SRC) > $@.tmp && mv $@.tmp $@

$(BUILD)/tests/test_main.o: tests/test_main.c $(BUILD)/tests/tests_list.h
	@mkdir -p $(dir $@)
	$(CC) $(BASEFLAGS) $(CFLAGS) -I$(BUILD)/tests -c -o $@ $<

# tests/test_chat_template.c reads its cases with jansson; without it those tests SKIP. Only the
# test runner links it, never ./hearth.
JANSSON := $(shell pkg-config --libs jansson 2>/dev/null)
ifeq ($(JANSSON),)
$(BUILD)/tests/test_chat_template.o: CFLAGS += -DNO_JANSSON
endif

$(BUILD)/test_runner: $(BUILD)/tests/test_main.o $(TEST_OBJ) $(TOOL_OBJ) $(LIB_OBJ)
	$(CC) $(BASEFLAGS) $(CFLAGS) -o $@ $^ $(LDSAN) $(LDLIBS) $(TEST_LDLIBS) $(JANSSON)

# Kernel speed per dtype and instruction set (bench/bench_kernels.c; one thread, ~1 minute).
$(BUILD)/bench_kernels: $(BUILD)/bench/bench_kernels.o $(LIB_OBJ)
	$(CC) $(BASEFLAGS) $(CFLAGS) -o $@ $^ $(LDSAN) $(LDLIBS)

bench-kernels: $(BUILD)/bench_kernels
	./$(BUILD)/bench_kernels $(ARGS)

# Installs missing Debian packages (no-op when everything is there).
deps:
	@scripts/deps.sh

# The main job of README: generate from a prompt. make run MODEL=path.gguf PROMPT="text" [N=128]
MODEL  ?=
PROMPT ?= Once upon a time
N      ?= 128
run: hearth
	@test -n "$(MODEL)" || { echo "usage: make run MODEL=path/to/model.gguf [PROMPT=...] [N=...]"; exit 1; }
	./hearth run -m "$(MODEL)" -p "$(PROMPT)" -n $(N)

# Serve the OpenAI/Anthropic API: make serve MODEL=path.gguf [PORT=8080] [ARGS="--parallel 2"]
PORT ?= 8080
ARGS ?=
serve: deps
	@$(MAKE) --no-print-directory hearth
	@test -n "$(MODEL)" || { echo "usage: make serve MODEL=path/to/model.gguf [PORT=8080] [ARGS=...]"; exit 1; }
	./hearth serve -m "$(MODEL)" --port $(PORT) $(ARGS)

# The test command of README and CI. Tests that need ../shared print SKIP without it.
test: deps
	@$(MAKE) --no-print-directory $(BUILD)/test_runner hearth
	./$(BUILD)/test_runner $(T)

test-scalar: $(BUILD)/test_runner hearth
	HEARTH_CPU=scalar ./$(BUILD)/test_runner $(T)

asan:
	$(MAKE) BUILD=build/asan SAN=1 OPT=-O1 $(if $(WERROR),WERROR=$(WERROR)) build/asan/test_runner
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ./build/asan/test_runner $(T)

tsan:
	$(MAKE) BUILD=build/tsan OPT=-O1 CFLAGS=-fsanitize=thread LDSAN=-fsanitize=thread build/tsan/test_runner
	./build/tsan/test_runner $(T)

# hearth's benchmarks (not part of `make test`): `hearth bench` on random-weight files at real
# shapes, generated once into $HEARTH_BENCH_DIR (default ../hearth-bench, beside the checkout). BENCH_MODELS picks
# some (names in bench/models.sh). bench/compare.sh alternates hearth and llama.cpp.
BENCH_MODELS ?=
bench: hearth
	bench/run.sh $(BENCH_MODELS)

# libFuzzer targets: tests/fuzz/fuzz_<parser>.c, built with clang against the library sources.
FUZZ_SRC     := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN     := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
FUZZ_SECONDS ?= 20
FUZZ_FLAGS   := -std=c11 -O1 -g -D_GNU_SOURCE -pthread -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=undefined

FUZZ_LIB     := $(sort $(wildcard src/base/*.c src/gguf/*.c src/tensor/*.c src/text/*.c))
FUZZ_LIBS    := -lm
# The request layer of the server (JSON -> validated request -> prompt); no HTTP, no engine.
ifeq ($(SERVER),1)
FUZZ_LIB     += src/server/json.c src/server/utf8.c src/server/arena.c src/server/request.c \
                src/server/chat_prompt.c
FUZZ_LIBS    += -ljansson
else
FUZZ_SRC     := $(filter-out tests/fuzz/fuzz_request.c,$(FUZZ_SRC))
FUZZ_BIN     := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
endif

build/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB) $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -o $@ $< $(FUZZ_LIB) $(FUZZ_LIBS)

fuzz: $(FUZZ_BIN)
	@for f in $(FUZZ_BIN); do \
	  name=$$(basename $$f); mkdir -p build/fuzz/corpus-$$name; \
	  seeds=tests/fuzz/seeds-$$name; [ -d $$seeds ] || seeds=; \
	  echo "== $$name ($(FUZZ_SECONDS)s)"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -max_len=65536 build/fuzz/corpus-$$name $$seeds || exit 1; \
	done

format:
	clang-format -i $(LIB_SRC) $(CLI_SRC) $(TOOL_SRC) $(TEST_SRC) $(wildcard src/*/*.h src/*/*/*.h tests/*.h)

format-check:
	clang-format --dry-run -Werror $(LIB_SRC) $(CLI_SRC) $(TOOL_SRC) $(TEST_SRC) $(wildcard src/*/*.h src/*/*/*.h tests/*.h)

clean:
	rm -rf build hearth

-include $(LIB_OBJ:.o=.d) $(TOOL_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BUILD)/tests/test_main.d \
         $(BUILD)/bench/bench_kernels.d
