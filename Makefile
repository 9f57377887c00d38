# Synod's C build. One Makefile serves mix (the :synod_make compiler in
# mix.exs), rebar3 (pre_hooks in rebar.config) and humans.
#
#   make            priv/synod_nif.so (and later priv/synod_cnode)
#   make test       cmocka tests, optimised and under ASan+UBSan, plus short
#                   fuzz runs when clang's libFuzzer is available
#   make sim-long   the Raft simulator over 20,000 seeds (SIM_RUNS=n)
#   make bench      C benchmarks (bench/c/bench_*.c)
#   make format     clang-format on C, mix format on Elixir
#   make clean
#
# Conventions that let parts be added without editing this file:
#   c_src/*.c except synod_nif*.c  pure cores, linked into everything
#   test/c/test_*.c                one cmocka binary each
#   bench/c/bench_*.c              one benchmark binary each (test/c/support_*.c
#                                  linked in, e.g. the Raft simulator)
#   fuzz/fuzz_*.c                  one libFuzzer harness each; inputs that once
#                                  crashed live in fuzz/regressions/<name>/ and
#                                  are replayed by every test run
#   test/c/test_cnode_*.c,         also link the C node's modules (cnode/*.c
#   fuzz/fuzz_cnode_*.c            but main.c) and erl_interface's libei

SHELL   := /bin/bash
CC      ?= cc
CLANG   ?= clang
ERL     ?= erl
BUILD   := build

ERTS_INCLUDE := $(shell $(ERL) -noshell -eval 'io:format("~s/erts-~s/include", [code:root_dir(), erlang:system_info(version)]), halt().' 2>/dev/null)
EI_ROOT      := $(shell $(ERL) -noshell -eval 'io:format("~s", [code:lib_dir(erl_interface)]), halt().' 2>/dev/null)

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CSTD     := -std=c11 -D_POSIX_C_SOURCE=200809L
OPT      ?= -O2 -g
CFLAGS_  := $(CSTD) $(WARN) $(OPT) -fPIC $(CFLAGS)
SAN      := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
LIBS     := -lsodium -lm
# Test builds (cmocka, ASan, fuzzers) walk the store's invariants after
# every apply (store_check); the NIF, the C node and benchmarks do not.
CHECKS   := -DSYNOD_STORE_CHECK

CORE_SRCS  ?= $(filter-out c_src/synod_nif%.c,$(wildcard c_src/*.c))
CORE_HDRS  := $(wildcard c_src/*.h)
NIF_SRCS   := $(wildcard c_src/synod_nif*.c)
TEST_SRCS  := $(wildcard test/c/test_*.c)
TEST_SUPPORT ?= $(wildcard test/c/support_*.c)
BENCH_SRCS := $(wildcard bench/c/bench_*.c)
FUZZ_SRCS  := $(wildcard fuzz/fuzz_*.c)
CNODE_SRCS := $(wildcard cnode/*.c)
CNODE_LIB  := $(filter-out cnode/main.c,$(CNODE_SRCS)) $(CORE_SRCS)
CNODE_DEPS := $(CNODE_LIB) $(wildcard cnode/*.h) $(CORE_HDRS)
EI_CFLAGS  := -pthread -I$(EI_ROOT)/include -Icnode
EI_LIBS    := -L$(EI_ROOT)/lib -lei -lpthread

TESTS      := $(patsubst test/c/%.c,$(BUILD)/test/%,$(TEST_SRCS))
ASAN_TESTS := $(patsubst test/c/%.c,$(BUILD)/asan/%,$(TEST_SRCS))
BENCHES    := $(patsubst bench/c/%.c,$(BUILD)/bench/%,$(BENCH_SRCS))
FUZZERS    := $(patsubst fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRCS))

FUZZ_SECONDS ?= 20

.PHONY: all nif cnode test test-bins test-c test-asan fuzz-smoke sim-long bench format clean

all: nif $(if $(CNODE_SRCS),cnode)

nif: priv/synod_nif.so

# c_src/nif_assert/assert.h replaces the system's for the NIF build only: a
# failed assert in a core stops one instance, not the VM (synod_nif_guard.c).
priv/synod_nif.so: $(NIF_SRCS) $(CORE_SRCS) $(CORE_HDRS) $(wildcard c_src/nif_assert/*.h)
	@mkdir -p priv
	$(CC) $(CFLAGS_) -Ic_src/nif_assert -I$(ERTS_INCLUDE) -Ic_src -shared -o $@ $(NIF_SRCS) $(CORE_SRCS) $(LIBS)

cnode: priv/synod_cnode

priv/synod_cnode: $(CNODE_SRCS) $(wildcard cnode/*.h) $(CORE_SRCS) $(CORE_HDRS)
	@mkdir -p priv
	$(CC) $(CFLAGS_) -pthread -I$(EI_ROOT)/include -Ic_src -Icnode -o $@ $(CNODE_SRCS) $(CORE_SRCS) \
	  -L$(EI_ROOT)/lib -lei $(LIBS) -lpthread

$(BUILD)/fuzz/fuzz_cnode_%: fuzz/fuzz_cnode_%.c $(CNODE_DEPS)
	@mkdir -p $(@D)
	$(CLANG) $(CSTD) $(WARN) -O1 -g -fsanitize=fuzzer,address,undefined $(CHECKS) $(EI_CFLAGS) -Ic_src -Itest/c -o $@ $< $(CNODE_LIB) $(EI_LIBS) $(LIBS)

# The cmocka binaries share their objects: every core, test-support and C
# node source (not main.c) is compiled once per flavour, optimised with the
# store's checks or under ASan+UBSan, into one archive per flavour; each
# test links its own object against it and takes only the members it uses
# (the C node's modules and libei only where a test calls them).
TEST_CFLAGS := $(CFLAGS_) $(CHECKS) $(EI_CFLAGS) -Ic_src -Itest/c
ASAN_CFLAGS := $(CSTD) $(WARN) -O1 -g $(SAN) -DSYNOD_SANITIZED $(CHECKS) $(EI_CFLAGS) -Ic_src -Itest/c
ALL_HDRS    := $(CORE_HDRS) $(wildcard test/c/*.h cnode/*.h)
LIB_SRCS    := $(TEST_SUPPORT) $(filter-out cnode/main.c,$(CNODE_SRCS)) $(CORE_SRCS)
TEST_ARCHIVE := $(BUILD)/obj/test/libsynod_test.a
ASAN_ARCHIVE := $(BUILD)/obj/asan/libsynod_test.a

$(BUILD)/obj/test/%.o: %.c $(ALL_HDRS)
	@mkdir -p $(@D)
	$(CC) $(TEST_CFLAGS) -c -o $@ $<

$(BUILD)/obj/asan/%.o: %.c $(ALL_HDRS)
	@mkdir -p $(@D)
	$(CC) $(ASAN_CFLAGS) -c -o $@ $<

# Keep the test mains' objects (make would delete them as intermediates).
.SECONDARY: $(patsubst test/c/%.c,$(BUILD)/obj/test/test/c/%.o,$(TEST_SRCS)) \
  $(patsubst test/c/%.c,$(BUILD)/obj/asan/test/c/%.o,$(TEST_SRCS))

$(TEST_ARCHIVE): $(patsubst %.c,$(BUILD)/obj/test/%.o,$(LIB_SRCS))
	@rm -f $@
	ar rcs $@ $^

$(ASAN_ARCHIVE): $(patsubst %.c,$(BUILD)/obj/asan/%.o,$(LIB_SRCS))
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/test/%: $(BUILD)/obj/test/test/c/%.o $(TEST_ARCHIVE)
	@mkdir -p $(@D)
	$(CC) -pthread -o $@ $^ $(EI_LIBS) $(LIBS) -lcmocka

$(BUILD)/asan/%: $(BUILD)/obj/asan/test/c/%.o $(ASAN_ARCHIVE)
	@mkdir -p $(@D)
	$(CC) $(SAN) -pthread -o $@ $^ $(EI_LIBS) $(LIBS) -lcmocka

$(BUILD)/bench/%: bench/c/%.c $(TEST_SUPPORT) $(CORE_SRCS) $(CORE_HDRS)
	@mkdir -p $(@D)
	$(CC) $(CSTD) $(WARN) -O2 -march=native -DNDEBUG -Ic_src -Itest/c -o $@ $< $(TEST_SUPPORT) $(CORE_SRCS) $(LIBS) -lm

$(BUILD)/fuzz/%: fuzz/%.c $(CORE_SRCS) $(CORE_HDRS)
	@mkdir -p $(@D)
	$(CLANG) $(CSTD) $(WARN) -O1 -g -fsanitize=fuzzer,address,undefined $(CHECKS) -Ic_src -Itest/c -o $@ $< $(CORE_SRCS) $(LIBS)

test: test-c test-asan fuzz-smoke

# Every binary `test` runs, for a parallel build first (`make -j2
# test-bins && make test`: the tests themselves then run one at a time).
test-bins: $(TESTS) $(ASAN_TESTS) $(FUZZERS)

# Tests run from the repository root so they can read test/vectors/.
test-c: $(TESTS)
	@set -e; for t in $(TESTS); do echo "== $$t"; ./$$t; done

test-asan: $(ASAN_TESTS)
	@set -e; for t in $(ASAN_TESTS); do echo "== $$t (ASan+UBSan)"; \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 ./$$t; done

# Replays every saved crasher, then fuzzes each harness for FUZZ_SECONDS.
fuzz-smoke: $(FUZZERS)
	@set -e; for f in $(FUZZERS); do n=$$(basename $$f); \
	  mkdir -p $(BUILD)/fuzz/corpus-$$n fuzz/regressions/$$n fuzz/corpus/$$n; \
	  if ls fuzz/regressions/$$n/* >/dev/null 2>&1; then \
	    echo "== $$n: replaying regressions"; ./$$f fuzz/regressions/$$n/*; fi; \
	  echo "== $$n: fuzzing $(FUZZ_SECONDS)s"; \
	  ./$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 $(BUILD)/fuzz/corpus-$$n fuzz/corpus/$$n 2>&1 | tail -n 3; \
	  test $${PIPESTATUS[0]} -eq 0; done

# The Raft simulator's long run: 20,000 seeds (SIM_RUNS=n for another count).
SIM_RUNS ?= 20000
sim-long: $(BUILD)/test/test_raft_sim
	SYNOD_SIM_RUNS=$(SIM_RUNS) ./$(BUILD)/test/test_raft_sim

bench: $(BENCHES)
	@set -e; for b in $(BENCHES); do echo "== $$b"; ./$$b; done

format:
	clang-format -i $(wildcard c_src/*.[ch] cnode/*.[ch] test/c/*.[ch] bench/c/*.c fuzz/*.c)
	mix format

clean:
	rm -rf $(BUILD) priv/synod_nif.so priv/synod_cnode
