# moongate: `make run` starts the demo gateway, `make test` runs every test.
# Both install missing Debian packages first (scripts/deps.sh).

CC       ?= cc
PKGS     := luajit libuv openssl hiredis libedit zlib libbrotlienc
CFLAGS   ?= -O2 -g
WARN     := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
LLHTTP   := /usr/share/llhttp
# Flags come from pkg-config when make reads this file, so the targets that
# install the packages first (run, test, bench) build through a second make
# that reads it again once they are there.
MISSING  := $(shell command -v pkg-config >/dev/null || echo pkg-config; \
                for p in $(PKGS); do pkg-config --exists $$p 2>/dev/null || echo $$p; done; \
                [ -f $(LLHTTP)/llhttp.c ] || echo llhttp)
INCS     := -Isrc -I/usr/share/include/llhttp $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LIBS     := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm -ldl -lcrypt
# strict llhttp: no lenient parsing anywhere (request smuggling)
LLFLAGS  := -O2 -g -fPIC -w -DLLHTTP_STRICT_MODE=1 -I/usr/share/include/llhttp

VERSION  := $(shell sed -n 's/^\#define MG_VERSION "\(.*\)"/\1/p' src/version.h)

# Goals that build C code need the packages; say how to get them rather
# than let the compiler fail on a missing header.
BUILD_GOALS := all asan test-fast install build/moongate build/moongate-asan build/libmgtest.so \
               build/pkg/moongate
ifneq ($(strip $(MISSING)),)
ifneq ($(if $(MAKECMDGOALS),$(filter $(BUILD_GOALS),$(MAKECMDGOALS)),all),)
$(error build packages missing (pkg-config or files for: $(strip $(MISSING))). \
Install them with `make deps` (scripts/deps.sh, apt-get), or run `make run` or \
`make test`, which install them first)
endif
endif

SRCS     := $(wildcard src/*.c)
LIB_SRCS := $(filter-out src/main.c,$(SRCS))
OBJS     := $(SRCS:src/%.c=build/obj/%.o)
ASAN_OBJS:= $(SRCS:src/%.c=build/asan/%.o)
LL_OBJS  := build/obj/llhttp.o build/obj/llhttp_api.o build/obj/llhttp_http.o
LL_ASAN  := build/asan/llhttp.o build/asan/llhttp_api.o build/asan/llhttp_http.o
SAN      := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

.PHONY: all deps run test test-fast bench bench-counts bench-deps asan clean install uninstall deb help

all: build/moongate build/libmgtest.so

deps:
	@bash scripts/deps.sh

build/obj/%.o: src/%.c $(wildcard src/*.h) | build/obj
	$(CC) $(CFLAGS) -fPIC $(WARN) $(INCS) -c $< -o $@
build/asan/%.o: src/%.c $(wildcard src/*.h) | build/asan
	$(CC) -O1 -g $(SAN) $(WARN) $(INCS) -c $< -o $@

build/obj/llhttp.o: $(LLHTTP)/llhttp.c | build/obj
	$(CC) $(LLFLAGS) -c $< -o $@
build/obj/llhttp_api.o: $(LLHTTP)/api.c | build/obj
	$(CC) $(LLFLAGS) -c $< -o $@
build/obj/llhttp_http.o: $(LLHTTP)/http.c | build/obj
	$(CC) $(LLFLAGS) -c $< -o $@
build/asan/llhttp.o: build/obj/llhttp.o | build/asan
	cp $< $@
build/asan/llhttp_api.o: build/obj/llhttp_api.o | build/asan
	cp $< $@
build/asan/llhttp_http.o: build/obj/llhttp_http.o | build/asan
	cp $< $@

build/obj build/asan:
	mkdir -p $@

# -Wl,-E exports mg_ffi_* so that LuaJIT's ffi.C finds them
build/moongate: $(OBJS) $(LL_OBJS)
	$(CC) $(CFLAGS) -Wl,-E -o $@ $^ $(LIBS)

build/moongate-asan: $(ASAN_OBJS) $(LL_ASAN)
	$(CC) -g $(SAN) -Wl,-E -o $@ $^ $(LIBS)

# C units reached from busted through FFI (spec/c)
# (plus the test-only helpers in spec/c/*.c, compiled here with the same flags)
build/libmgtest.so: $(filter-out build/obj/main.o,$(OBJS)) $(LL_OBJS) $(wildcard spec/c/*.c)
	$(CC) $(CFLAGS) -fPIC $(WARN) $(INCS) -shared -o $@ $^ $(LIBS)

asan: build/moongate-asan

run: deps
	@$(MAKE) --no-print-directory all
	@bash scripts/demo.sh

test: deps
	@$(MAKE) --no-print-directory all asan
	@bash scripts/test.sh

# the suite without rebuilding the sanitizer binary (quick local loop)
test-fast: all
	@MG_SKIP_ASAN=1 bash scripts/test.sh

# `make bench`: peers' table, counts, reload, cache, idle memory (scripts/bench.sh);
# `make bench-counts`: only the counts. Both install the peers first
# (scripts/bench/deps.sh, kept out of `make deps` so the tests never need them).
bench: deps bench-deps
	@$(MAKE) --no-print-directory all
	@bash scripts/bench.sh

bench-counts: deps bench-deps
	@$(MAKE) --no-print-directory all
	@bash scripts/bench/counts.sh

bench-deps:
	@bash scripts/bench/deps.sh

# `make install` (PREFIX, DESTDIR, ...: see scripts/install.sh) and a Debian
# package (`make deb`, scripts/deb.sh).
PREFIX ?= /usr/local
INSTALL_VARS = DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" \
    $(foreach v,BINDIR DATADIR DOCDIR SYSCONFDIR UNITDIR SYSUSERSDIR,$(if $($(v)),$(v)="$($(v))"))

install: all
	@$(INSTALL_VARS) bash scripts/install.sh install

uninstall:
	@$(INSTALL_VARS) bash scripts/install.sh uninstall

deb: deps
	@bash scripts/deb.sh

# the packaged binary: the same sources with Debian's hardening flags
PKG_CFLAGS  = $(shell dpkg-buildflags --get CPPFLAGS) $(shell dpkg-buildflags --get CFLAGS)
PKG_LDFLAGS = $(shell dpkg-buildflags --get LDFLAGS)
PKG_OBJS   := $(SRCS:src/%.c=build/pkg/%.o) build/pkg/llhttp.o build/pkg/llhttp_api.o \
              build/pkg/llhttp_http.o
build/pkg/%.o: src/%.c $(wildcard src/*.h) | build/pkg
	$(CC) $(PKG_CFLAGS) $(WARN) $(INCS) -c $< -o $@
build/pkg/llhttp.o: $(LLHTTP)/llhttp.c | build/pkg
	$(CC) $(PKG_CFLAGS) -w -DLLHTTP_STRICT_MODE=1 -I/usr/share/include/llhttp -c $< -o $@
build/pkg/llhttp_api.o: $(LLHTTP)/api.c | build/pkg
	$(CC) $(PKG_CFLAGS) -w -DLLHTTP_STRICT_MODE=1 -I/usr/share/include/llhttp -c $< -o $@
build/pkg/llhttp_http.o: $(LLHTTP)/http.c | build/pkg
	$(CC) $(PKG_CFLAGS) -w -DLLHTTP_STRICT_MODE=1 -I/usr/share/include/llhttp -c $< -o $@
build/pkg:
	mkdir -p $@
build/pkg/moongate: $(PKG_OBJS)
	$(CC) $(PKG_CFLAGS) $(PKG_LDFLAGS) -Wl,-E -o $@ $^ $(LIBS)

clean:
	rm -rf build

# ---- fuzzing (spec/fuzz, docs/fuzzing.md) ---------------------------------
# libFuzzer targets built with clang: every src/ file but main.c, compiled
# with coverage and ASan+UBSan; one binary per spec/fuzz/<target>.c. A
# target that #includes a src/ file (to reach its static functions) is
# linked without that file's object (FUZZ_OWN_<target>).
FUZZ_CC      ?= clang
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS  := -O1 -g $(FUZZ_SAN) -fsanitize=fuzzer-no-link
FUZZ_TARGETS := $(basename $(notdir $(wildcard spec/fuzz/*.c)))
FUZZ_TARGETS := $(filter-out harness,$(FUZZ_TARGETS))
FUZZ_OBJS    := $(LIB_SRCS:src/%.c=build/fuzz/obj/%.o)
FUZZ_LL      := build/fuzz/obj/llhttp.o build/fuzz/obj/llhttp_api.o build/fuzz/obj/llhttp_http.o
FUZZ_BINS    := $(FUZZ_TARGETS:%=build/fuzz/%)
FUZZ_TIME    ?= 60
FUZZ_OWN_cache := build/fuzz/obj/cache.o
FUZZ_OWN_redis := build/fuzz/obj/redis.o
FUZZ_OWN_accesslog := build/fuzz/obj/accesslog.o

ifneq ($(filter fuzz-build build/fuzz/%,$(MAKECMDGOALS)),)
ifeq ($(shell command -v $(FUZZ_CC)),)
$(error $(FUZZ_CC) is missing: `make deps` installs clang and libclang-rt-14-dev)
endif
endif

.PHONY: fuzz fuzz-build
# the objects are made by pattern rules for pattern rules: keep them
.SECONDARY: $(FUZZ_OBJS) $(FUZZ_LL)

build/fuzz/obj:
	mkdir -p $@
build/fuzz/obj/%.o: src/%.c $(wildcard src/*.h) | build/fuzz/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(WARN) $(INCS) -c $< -o $@
build/fuzz/obj/llhttp.o: $(LLHTTP)/llhttp.c | build/fuzz/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(LLFLAGS) -c $< -o $@
build/fuzz/obj/llhttp_api.o: $(LLHTTP)/api.c | build/fuzz/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(LLFLAGS) -c $< -o $@
build/fuzz/obj/llhttp_http.o: $(LLHTTP)/http.c | build/fuzz/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(LLFLAGS) -c $< -o $@
build/fuzz/obj/harness.o: spec/fuzz/harness.c spec/fuzz/harness.h $(wildcard src/*.h) | build/fuzz/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(WARN) $(INCS) -c $< -o $@

# -Wl,-E: the hooks' Lua finds mg_ffi_* (and the harness's mg_fuzz_*) in ffi.C
build/fuzz/%: spec/fuzz/%.c build/fuzz/obj/harness.o $(FUZZ_OBJS) $(FUZZ_LL) $(wildcard src/*.c src/*.h)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $(WARN) $(INCS) -Wl,-E -o $@ $< \
	    build/fuzz/obj/harness.o $(filter-out $(FUZZ_OWN_$*),$(FUZZ_OBJS)) $(FUZZ_LL) $(LIBS)

fuzz-build: $(FUZZ_BINS)

# Each target for FUZZ_TIME seconds (FUZZ_TARGETS="a b" picks some). New
# inputs go to build/fuzz/corpus/<target>, crashes to build/fuzz/crashes/.
# (`make test` runs each a few seconds over its corpus: scripts/test.sh.)
fuzz: deps
	@$(MAKE) --no-print-directory fuzz-build FUZZ_TARGETS="$(FUZZ_TARGETS)"
	@bash scripts/fuzz.sh run $(FUZZ_TIME) $(FUZZ_TARGETS)
