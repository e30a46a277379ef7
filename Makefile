# The user-facing commands. Each installs what is missing first
# (scripts/deps.sh, idempotent), then drives CMake.
#
#   make demo            run Ferry end to end on its embedded defaults
#   make test            sanitizer build (clang, ASan+UBSan, libFuzzer) + every test via ctest
#   make bench [BENCH=N] release build + the benchmarks under bench/
#   make build           release build only
#   make format          clang-format the tree

JOBS      ?= $(shell nproc)
TEST_DIR  ?= build/test
REL_DIR   ?= build/release
BENCH     ?=
CTEST_ARGS ?=

.PHONY: all deps build test bench demo format clean

all: build

deps:
	@scripts/deps.sh

build: deps
	cmake -S . -B $(REL_DIR) -DCMAKE_BUILD_TYPE=Release -DFERRY_TESTS=OFF >/dev/null
	cmake --build $(REL_DIR) -j $(JOBS)

test: deps
	CC=clang cmake -S . -B $(TEST_DIR) -DCMAKE_BUILD_TYPE=Debug -DFERRY_SANITIZE=ON -DFERRY_FUZZ=ON >/dev/null
	cmake --build $(TEST_DIR) -j $(JOBS)
	cd $(TEST_DIR) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

bench: build
	scripts/bench.sh $(REL_DIR) $(BENCH)

demo: build
	scripts/demo.sh $(REL_DIR)

format:
	find include src cmd tests bench examples -name '*.[ch]' 2>/dev/null | xargs clang-format -i

clean:
	rm -rf build
