# moongate: `make run` starts the demo gateway, `make test` runs every test.
# Both install missing Debian packages first (scripts/deps.sh).

CC       ?= cc
PKGS     := luajit libuv openssl hiredis libedit
CFLAGS   ?= -O2 -g
WARN     := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
INCS     := -Isrc -I/usr/share/include/llhttp $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LIBS     := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm -ldl
LLHTTP   := /usr/share/llhttp
# strict llhttp: no lenient parsing anywhere (request smuggling)
LLFLAGS  := -O2 -g -fPIC -w -DLLHTTP_STRICT_MODE=1 -I/usr/share/include/llhttp

SRCS     := $(wildcard src/*.c)
LIB_SRCS := $(filter-out src/main.c,$(SRCS))
OBJS     := $(SRCS:src/%.c=build/obj/%.o)
ASAN_OBJS:= $(SRCS:src/%.c=build/asan/%.o)
LL_OBJS  := build/obj/llhttp.o build/obj/llhttp_api.o build/obj/llhttp_http.o
LL_ASAN  := build/asan/llhttp.o build/asan/llhttp_api.o build/asan/llhttp_http.o
SAN      := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

.PHONY: all deps run test test-fast bench asan clean

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

run: deps all
	@bash scripts/demo.sh

test: deps all asan
	@bash scripts/test.sh

# the suite without rebuilding the sanitizer binary (quick local loop)
test-fast: all
	@MG_SKIP_ASAN=1 bash scripts/test.sh

bench: deps all
	@bash scripts/bench.sh

clean:
	rm -rf build
