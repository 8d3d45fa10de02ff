# fdpass: libfdpass (C, no Lua) + fdpass.core (Lua binding) + Lua modules.
# make            build for Lua $(LUA_VERSION): needs only a C compiler, make,
#                 pkg-config and the Lua headers; never installs anything
# make deps       check (as root: install) the packages the suite needs
# make test       every spec, Lua and C, ending with "N passed, N failed"
# make sanitize   the same suite under AddressSanitizer + UBSan
# make install    header, libraries, pkg-config file, Lua modules (make uninstall)
# make dist       the release: tarball, versioned rockspec, source rock (docs/INSTALL.md)

# LUA_VERSION: 5.1, 5.3, 5.4 or jit (LuaJIT 2.1, OpenResty's luajit2 build,
# the one Debian's nginx Lua module uses: see tools/deps.sh).
LUA_VERSION ?= 5.4
ifeq ($(LUA_VERSION),jit)
LUA         ?= luajit
LUA_PC      ?= luajit
LUA_ABI     := 5.1
else
LUA         ?= lua$(LUA_VERSION)
LUA_PC      ?= lua$(LUA_VERSION)
LUA_ABI     := $(LUA_VERSION)
endif
LUA_VERSIONS ?= 5.1 5.3 5.4 jit
# The Lua headers: pkg-config's answer, or LUA_CFLAGS=-I/where/lua.h/is
LUA_CFLAGS  ?= $(shell pkg-config --cflags $(LUA_PC) 2>/dev/null)

# ---- where `make install` puts things. LIBDIR is the multiarch directory
# on Debian (/usr/lib/x86_64-linux-gnu), as Debian's own libraries. The Lua
# modules go where that Lua looks: for PREFIX=/usr, where its pkg-config
# file says (Debian: /usr/share/lua/5.4, /usr/lib/x86_64-linux-gnu/lua/5.4);
# for any other prefix, Lua's own layout under it (/usr/local/share/lua/5.4,
# /usr/local/lib/lua/5.4: what Lua's default package.path/cpath search).
PREFIX      ?= /usr/local
DESTDIR     ?=
MULTIARCH   ?= $(if $(wildcard /etc/debian_version),$(shell m=$$($(CC) -print-multiarch 2>/dev/null); \
                 [ -n "$$m" ] || m=$$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null); echo $$m))
LIBDIR      ?= $(PREFIX)/lib$(if $(MULTIARCH),/$(MULTIARCH))
INCLUDEDIR  ?= $(PREFIX)/include
# fdpass.pc goes to PREFIX/lib/pkgconfig (on pkg-config's default path),
# not LIBDIR/pkgconfig: `pkg-config --define-prefix` takes the prefix to be
# two directories above the file, which a multiarch LIBDIR is not.
PKGCONFIGDIR ?= $(PREFIX)/lib/pkgconfig
BINDIR      ?= $(PREFIX)/bin
ifeq ($(PREFIX),/usr)
LUA_LMOD    ?= $(shell pkg-config --define-variable=prefix=$(PREFIX) --variable=INSTALL_LMOD $(LUA_PC) 2>/dev/null || echo $(PREFIX)/share/lua/$(LUA_ABI))
LUA_CMOD    ?= $(shell pkg-config --define-variable=prefix=$(PREFIX) --variable=INSTALL_CMOD $(LUA_PC) 2>/dev/null || echo $(PREFIX)/lib/lua/$(LUA_ABI))
else
LUA_LMOD    ?= $(PREFIX)/share/lua/$(LUA_ABI)
LUA_CMOD    ?= $(PREFIX)/lib/lua/$(LUA_ABI)
endif

# The one version string: the VERSION file (tools/version.sh).
VERSION     := $(shell cat VERSION)
SOVERSION   := 0
BUILD       ?= build
CC          ?= cc
WARN        := -Wall -Wextra -Werror
CFLAGS      ?= -O2 -g
ALL_CFLAGS  := -std=gnu11 $(WARN) -fPIC $(CFLAGS) $(SANFLAGS)
LDFLAGS_ALL := $(LDFLAGS) $(SANFLAGS)

LIB_SRC := $(wildcard src/lib/*.c)
LUA_SRC := $(wildcard src/lua/*.c)
LIB_OBJ := $(LIB_SRC:src/lib/%.c=$(BUILD)/lib/%.o)
LUA_OBJ := $(LUA_SRC:src/lua/%.c=$(BUILD)/lua$(LUA_VERSION)/%.o)
CTEST_SRC := $(wildcard spec/c/test_*.c)
CTEST_BIN := $(CTEST_SRC:spec/c/%.c=$(BUILD)/ctest/%)

SHLIB   := $(BUILD)/libfdpass.so.$(VERSION)
STLIB   := $(BUILD)/libfdpass.a
PCFILE  := $(BUILD)/fdpass.pc
CORE_SO := $(BUILD)/lua$(LUA_VERSION)/fdpass/core.so

.PHONY: all deps test test-san sanitize install uninstall clean demo soak example
all: $(SHLIB) $(STLIB) $(PCFILE) $(CORE_SO) $(CTEST_BIN)

# ---- packages. The build needs none beyond a compiler and the Lua headers;
# the targets that run something (DEPS_GOALS) first check the packages the
# suite and the demo need: tools/deps.sh installs them when root (apt-get),
# otherwise prints the exact command and fails. When one of these goals is
# on the command line, compiling waits for the check (a fresh machine may
# get its Lua headers from it), so `make -j test` works from nothing.
DEPS_GOALS := deps test test-all sanitize test-san demo soak example bench bench-publish doc lint valgrind fuzz
deps:
	@tools/deps.sh $(LUA_VERSION)
DEPS_FIRST := $(if $(filter $(DEPS_GOALS) lint-% fuzz-%,$(MAKECMDGOALS)),deps)

# Directories as order-only prerequisites, so that `make -j` creates each
# before anything is written into it.
BUILD_DIRS := $(BUILD) $(BUILD)/lib $(BUILD)/lua$(LUA_VERSION)/fdpass $(BUILD)/ctest $(BUILD)/bench
$(BUILD_DIRS):
	@mkdir -p $@

# The build fails when src/lib/fdpass.h and VERSION disagree.
$(BUILD)/version.ok: VERSION src/lib/fdpass.h tools/version.sh | $(BUILD)
	@tools/version.sh check
	@touch $@

$(BUILD)/lib/%.o: src/lib/%.c src/lib/fdpass.h src/lib/internal.h | $(BUILD)/lib $(BUILD)/version.ok $(DEPS_FIRST)
	$(CC) $(ALL_CFLAGS) -fvisibility=hidden -DFDPASS_BUILD -c $< -o $@

$(SHLIB): $(LIB_OBJ) | $(BUILD)
	$(CC) -shared -Wl,-soname,libfdpass.so.$(SOVERSION) $(LDFLAGS_ALL) -o $@ $^
	ln -sf libfdpass.so.$(VERSION) $(BUILD)/libfdpass.so.$(SOVERSION)
	ln -sf libfdpass.so.$(VERSION) $(BUILD)/libfdpass.so

$(STLIB): $(LIB_OBJ) | $(BUILD)
	$(AR) rcs $@ $^

# Relocatable: libdir and includedir are written relative to ${prefix} when
# they are under PREFIX, so `pkg-config --define-prefix` (or a DESTDIR
# staging tree) works without PKG_CONFIG_SYSROOT_DIR.
# $(BUILD)/pc.vars changes when PREFIX, LIBDIR or INCLUDEDIR do, so that
# `make install PREFIX=/usr` after a plain `make` rewrites the file.
PC_REL  = $(patsubst $(PREFIX)/%,$${prefix}/%,$(1))
PC_VARS = $(PREFIX) $(LIBDIR) $(INCLUDEDIR) $(VERSION)
.PHONY: FORCE
$(BUILD)/pc.vars: FORCE | $(BUILD)
	@echo '$(PC_VARS)' | cmp -s - $@ || echo '$(PC_VARS)' > $@
$(PCFILE): src/lib/fdpass.pc.in $(BUILD)/pc.vars | $(BUILD)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(call PC_REL,$(LIBDIR))|' \
	    -e 's|@INCLUDEDIR@|$(call PC_REL,$(INCLUDEDIR))|' -e 's|@VERSION@|$(VERSION)|' $< > $@

# The Lua module carries the library inside it, so that `require "fdpass"`
# needs nothing installed beside it.
$(BUILD)/lua$(LUA_VERSION)/%.o: src/lua/%.c $(wildcard src/lua/*.h) src/lib/fdpass.h \
  | $(BUILD)/lua$(LUA_VERSION)/fdpass $(BUILD)/version.ok $(DEPS_FIRST)
	$(CC) $(ALL_CFLAGS) -Isrc/lib $(LUA_CFLAGS) -c $< -o $@

$(CORE_SO): $(LUA_OBJ) $(LIB_OBJ) | $(BUILD)/lua$(LUA_VERSION)/fdpass
	$(CC) -shared $(LDFLAGS_ALL) -o $@ $^

$(BUILD)/ctest/%: spec/c/%.c spec/c/ctest.h spec/c/testutil.h $(SHLIB) | $(BUILD)/ctest
	$(CC) $(ALL_CFLAGS) -Isrc/lib $< -o $@ -L$(BUILD) -lfdpass -Wl,-rpath,$(abspath $(BUILD)) $(LDFLAGS_ALL)

# In-tree paths for the specs and the demo; the versioned names win over a
# stray LUA_PATH, see PITFALLS.
LUA_ENV = LUA_PATH_$(subst .,_,$(LUA_ABI))="$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/spec/?.lua;;" \
          LUA_CPATH_$(subst .,_,$(LUA_ABI))="$(CURDIR)/$(BUILD)/lua$(LUA_VERSION)/?.so;;" \
          LUA_PATH="$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/spec/?.lua;;" \
          LUA_CPATH="$(CURDIR)/$(BUILD)/lua$(LUA_VERSION)/?.so;;" \
          FDPASS_LUA=$(LUA) FDPASS_CTESTS="$(CTEST_BIN)"

test: all deps stack-cores
	@$(LUA_ENV) $(LUA) spec/run.lua

# The adapters' specs (spec/adapters_*_spec.lua) run lua-http and copas on
# Lua 5.1 whatever Lua runs the suite (Debian has them for 5.1 and LuaJIT
# only): fdpass.core is built for STACK_LUA_VERSIONS too, into the same
# $(BUILD). spec/stackload.lua finds it there.
STACK_LUA_VERSIONS ?= 5.1
.PHONY: stack-cores
stack-cores:
	@for v in $(STACK_LUA_VERSIONS); do [ "$$v" = "$(LUA_VERSION)" ] || \
	  $(MAKE) -s --no-print-directory LUA_VERSION=$$v BUILD=$(BUILD) SANFLAGS="$(SANFLAGS)" \
	    $(BUILD)/lua$$v/fdpass/core.so || exit 1; done

# The whole suite on every Lua of LUA_VERSIONS, one after the other (each
# builds into its own build/lua<version>); ends with the totals of all.
.PHONY: test-all
test-all:
	@total_p=0; total_f=0; total_s=0; for v in $(LUA_VERSIONS); do \
	  echo "== Lua $$v"; \
	  out=$$($(MAKE) --no-print-directory LUA_VERSION=$$v test 2>&1); rc=$$?; \
	  echo "$$out" | grep -v '^cc \|^ln \|^sed '; \
	  line=$$(echo "$$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -1); \
	  p=$$(echo "$$line" | sed -n 's/^\([0-9]*\) passed.*/\1/p'); f=$$(echo "$$line" | sed -n 's/.* \([0-9]*\) failed.*/\1/p'); \
	  s=$$(echo "$$out" | sed -n 's/^\([0-9]*\) skipped$$/\1/p' | tail -1); \
	  [ -n "$$p" ] || { p=0; f=1; }; [ $$rc -eq 0 ] || [ "$$f" -gt 0 ] || f=1; \
	  total_p=$$((total_p + p)); total_f=$$((total_f + f)); total_s=$$((total_s + $${s:-0})); \
	done; echo "test-all ($(LUA_VERSIONS)):"; \
	[ $$total_s -eq 0 ] || echo "$$total_s skipped"; \
	echo "$$total_p passed, $$total_f failed"; [ $$total_f -eq 0 ]

# The Lua interpreter is not instrumented: the sanitizer runtime is
# preloaded into it (and so into the processes the specs start).
SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
sanitize: deps
	@$(MAKE) --no-print-directory BUILD=build-san SANFLAGS="$(SAN)" all stack-cores
	@$(MAKE) --no-print-directory BUILD=build-san SANFLAGS="$(SAN)" test-san

test-san: deps
	@$(LUA_ENV) LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  FDPASS_CTEST_ENV="LD_PRELOAD= ASAN_OPTIONS=detect_leaks=1" $(LUA) spec/run.lua

# ---- install. Every Lua file under lua/ (subdirectories too: a new
# module is installed without an edit here), every script in bin/. The
# rockspec must list the same modules: `make lint-install` checks it.
# A script's #! line is rewritten to the Lua it was installed for: bin/ says
# lua5.4, which cannot load a core.so built for LUA_VERSION=5.1 or jit.
LUA_FILES = $$(cd lua && find . -type f -name '*.lua' | sed 's|^\./||' | sort)
BIN_FILES = $$(cd bin && find . -maxdepth 1 -type f | sed 's|^\./||' | sort)
install: $(SHLIB) $(STLIB) $(PCFILE) $(CORE_SO)
	install -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(LUA_LMOD) \
	  $(DESTDIR)$(LUA_CMOD)/fdpass $(DESTDIR)$(BINDIR)
	install -m 644 src/lib/fdpass.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 755 $(SHLIB) $(DESTDIR)$(LIBDIR)/
	ln -sf libfdpass.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libfdpass.so.$(SOVERSION)
	ln -sf libfdpass.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libfdpass.so
	install -m 644 $(STLIB) $(DESTDIR)$(LIBDIR)/
	install -m 644 $(PCFILE) $(DESTDIR)$(PKGCONFIGDIR)/
	@for f in $(LUA_FILES); do echo "install -D -m 644 lua/$$f $(DESTDIR)$(LUA_LMOD)/$$f"; \
	  install -D -m 644 "lua/$$f" "$(DESTDIR)$(LUA_LMOD)/$$f" || exit 1; done
	install -m 755 $(CORE_SO) $(DESTDIR)$(LUA_CMOD)/fdpass/
	@for f in $(BIN_FILES); do d="$(DESTDIR)$(BINDIR)/$$f"; \
	  echo "sed '1s|^#!.*|#!/usr/bin/env $(notdir $(LUA))|' bin/$$f > $$d; chmod 755 $$d"; \
	  rm -f "$$d" && sed '1s|^#!.*|#!/usr/bin/env $(notdir $(LUA))|' "bin/$$f" > "$$d" && chmod 755 "$$d" || exit 1; done

# Removes what `make install` put (the fdpass/ module directories are
# fdpass's own: whatever is in them goes), and no directory it did not make.
uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/fdpass.h $(DESTDIR)$(LIBDIR)/libfdpass.so.$(VERSION) \
	      $(DESTDIR)$(LIBDIR)/libfdpass.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libfdpass.so \
	      $(DESTDIR)$(LIBDIR)/libfdpass.a $(DESTDIR)$(PKGCONFIGDIR)/fdpass.pc
	@for f in $(LUA_FILES); do rm -f "$(DESTDIR)$(LUA_LMOD)/$$f"; done
	@for f in $(BIN_FILES); do rm -f "$(DESTDIR)$(BINDIR)/$$f"; done
	rm -rf $(DESTDIR)$(LUA_LMOD)/fdpass $(DESTDIR)$(LUA_CMOD)/fdpass

clean:
	rm -rf build build-san dist

# ---- release: `make dist [DIST_URL=https://.../fdpass-X.Y.Z.tar.gz]` makes
# dist/fdpass-X.Y.Z.tar.gz, fdpass-X.Y.Z-1.rockspec and fdpass-X.Y.Z-1.src.rock
# from the committed HEAD (tools/dist.sh); tools/check-dist.sh checks them
# (every Lua installs the rock offline), tools/check-install.sh checks
# `make install` (docs/INSTALL.md).
.PHONY: dist
dist:
	@DIST_URL="$(DIST_URL)" DIST_DIR=dist tools/dist.sh

# README's first command: an HTTP server upgraded UPGRADES times (default
# 20) under keep-alive load; fails if one request fails or one connection
# is reset. `make example` runs the short handover of README's example.
UPGRADES ?= 20
demo: all deps
	@$(LUA_ENV) UPGRADES=$(UPGRADES) $(LUA) examples/upgrade_demo.lua

# Issue-sized endurance: 1000 upgrades back to back under load (UPGRADES=,
# MAX_SECONDS= bound it); descriptors and memory must stay flat.
soak: all deps
	@$(LUA_ENV) SOAK=1 UPGRADES=$(if $(filter command line environment,$(origin UPGRADES)),$(UPGRADES),1000) \
	  $(LUA) examples/upgrade_demo.lua

example: all deps
	@$(LUA_ENV) $(LUA) examples/handover.lua

# ---- fuzzing: `make fuzz [FUZZ_SECONDS=60] [FUZZ_TARGETS=...]` builds the
# libFuzzer targets of fuzz/ (clang, ASan + UBSan) into build-fuzz/ and runs
# each FUZZ_SECONDS on a copy of fuzz/corpus/<target>; fails on a finding.
# `make fuzz-corpus` rewrites the seeds (fuzz/mkcorpus.lua).
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_BUILD   ?= build-fuzz
FUZZ_TARGETS ?= fuzz_records fuzz_codec fuzz_handshake
FUZZ_CFLAGS  := -std=gnu11 -g -O1 -Wall -Wextra -fno-omit-frame-pointer \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
.PHONY: fuzz fuzz-build fuzz-deps fuzz-corpus clean-fuzz
fuzz: fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_TARGETS)
fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/%)
fuzz-deps:
	@fuzz/deps.sh $(FUZZ_CC)
$(FUZZ_BUILD)/fuzz_records: fuzz/fuzz_records.c fuzz/fuzz_common.h $(LIB_SRC) src/lib/fdpass.h src/lib/internal.h | fuzz-deps
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Isrc/lib $< $(LIB_SRC) -o $@
$(FUZZ_BUILD)/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_common.h $(LIB_SRC) $(LUA_SRC) $(wildcard lua/*.lua lua/fdpass/*.lua lua/fdpass/upgrade/*.lua) src/lib/fdpass.h src/lib/internal.h $(wildcard src/lua/*.h) | fuzz-deps deps
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -DFDPASS_LUA_DIR='"$(CURDIR)/lua"' -Isrc/lib $$(pkg-config --cflags $(LUA_PC)) $< $(LIB_SRC) $(LUA_SRC) -o $@ $$(pkg-config --libs $(LUA_PC)) -lm
fuzz-corpus: all
	@$(LUA_ENV) $(LUA) fuzz/mkcorpus.lua
clean-fuzz:
	rm -rf $(FUZZ_BUILD)
clean: clean-fuzz

# ---- valgrind: `make valgrind` runs every spec, Lua and C, under memcheck
# (spec/run.lua puts FDPASS_WRAP before each command): any memory error or
# definite leak exits 99 and fails its spec file. The processes the specs
# start (fdpass.spawn) run without valgrind.
# Skipped there (FDPASS_SKIP), as they cannot mean anything under it:
# valgrind runs posix_spawn's vfork as a fork, so a program that cannot be
# executed is no spawn error but a child that exits 127; it emulates
# RLIMIT_NOFILE, which the kernel then never enforces; and a sender under
# valgrind is slower than its native reader, so an 8 MiB state never fills
# the socket buffer (the test of a non-blocking handover needs it full).
VALGRIND       ?= valgrind
VALGRIND_FLAGS ?= --quiet --leak-check=full --errors-for-leak-kinds=definite \
                  --error-exitcode=99 --track-fds=no
VALGRIND_SKIP  ?= spawn_missing_program raw_rlimit_ctrunc raw_rlimit_ctrunc_stream \
  framed_rlimit_ctrunc framed_rlimit_ctrunc_stream raw_etoomanyrefs_unprivileged \
  test_spawn_failures test_spawn_fails_phase_spawn \
  test_old_side_at_its_descriptor_limit_fails_in_spawn_and_keeps_everything \
  test_a_state_larger_than_the_socket_buffer_goes_through_without_blocking
.PHONY: valgrind
valgrind: all deps stack-cores
	@tools/deps.sh $(LUA_VERSION) valgrind
	@start=$$(date +%s); $(LUA_ENV) FDPASS_WRAP="$(VALGRIND) $(VALGRIND_FLAGS)" \
	  FDPASS_SKIP="$(strip $(VALGRIND_SKIP))" \
	  FDPASS_SKIP_WHY="not meaningful under valgrind: see VALGRIND_SKIP in the Makefile" \
	  $(LUA) spec/run.lua; \
	  rc=$$?; echo "valgrind: $$(( $$(date +%s) - start )) s"; exit $$rc

# make bench: in one run the floor (plain C sendmsg/recvmsg), the C API, the
# Lua module on Lua 5.4 and LuaJIT, Python's send_fds and cqueues on the same
# work (rates, callgrind instructions), the handover at several sizes against
# the kernel's floor, and issue 14's targets MET or MISSED. Writes
# RESULTS.md, fds.svg and raw.txt into BENCH_OUT ($(BUILD)/bench: a checkout
# stays clean); `make bench-publish` copies RESULTS.md and fds.svg from there
# to bench/, the committed results (running the bench first if there are none).
# About 5 minutes; `make bench QUICK=1` about 2; BENCH_RUNS, BENCH_SECS,
# BENCH_CG, BENCH_HANDOVER: see bench/run.lua. RLIMIT_NOFILE is raised as far
# as this user may (100,000 connections need a hard limit above 200,064:
# root with CAP_SYS_RESOURCE, or ulimit -Hn).
CBENCH    := $(BUILD)/bench/cbench
HBENCH    := $(BUILD)/bench/hbench
BENCH_OUT ?= $(BUILD)/bench
$(CBENCH): bench/cbench.c src/lib/fdpass.h $(SHLIB) | $(BUILD)/bench
	$(CC) $(ALL_CFLAGS) -Isrc/lib $< -o $@ -L$(BUILD) -lfdpass -Wl,-rpath,$(abspath $(BUILD)) $(LDFLAGS_ALL)
$(HBENCH): bench/hbench.c | $(BUILD)/bench
	$(CC) $(ALL_CFLAGS) $< -o $@ $(LDFLAGS_ALL)

.PHONY: bench bench-publish
bench: all deps $(CBENCH) $(HBENCH)
	@bench/deps.sh
	@if command -v luajit >/dev/null; then $(MAKE) --no-print-directory LUA_VERSION=jit BUILD=$(BUILD) \
	  $(BUILD)/luajit/fdpass/core.so >/dev/null; fi
	@mkdir -p $(BENCH_OUT)
	@ulimit -n 200000 2>/dev/null || ulimit -n $$(ulimit -Hn); \
	  $(LUA_ENV) FDPASS_CBENCH=$(CBENCH) FDPASS_HBENCH=$(HBENCH) FDPASS_LIBFDPASS=$(abspath $(BUILD))/libfdpass.so \
	  FDPASS_LUAJIT_CPATH="$(CURDIR)/$(BUILD)/luajit/?.so" BENCH_OUT=$(BENCH_OUT) QUICK=$(QUICK) \
	  $(LUA) bench/run.lua
bench-publish:
	@test -f $(BENCH_OUT)/RESULTS.md || $(MAKE) --no-print-directory bench
	cp $(BENCH_OUT)/RESULTS.md bench/RESULTS.md
	@if [ -f $(BENCH_OUT)/fds.svg ]; then cp $(BENCH_OUT)/fds.svg bench/fds.svg; fi

# Issue 10's loop-gap harness: the worst gap of a serving loop under each
# attack, measured inside it (ROUNDS=3; LOAD=1 adds keep-alive HTTP load).
.PHONY: bench-attack
bench-attack: all
	@$(LUA_ENV) LOAD=$(LOAD) $(LUA) bench/attack_gaps.lua $(or $(ROUNDS),3)

# ---- lint and doc. `make lint` (`make -k lint` to see every failure):
# luacheck over every Lua file (.luacheckrc: std "min", what 5.1, 5.3,
# 5.4 and LuaJIT all define), luac5.1 over the same files (syntax only
# newer Luas parse, which luacheck accepts), `luarocks lint`, cppcheck on
# the C, and tools/install-parity.sh: `make install` and the rockspec
# install the same Lua modules, C modules and scripts.
# `make doc`: the LDoc reference of every module in lua/ (config.ld), in
# build/doc/index.html; any LDoc warning fails it.
LINT_LUA = $$(find . \( -path ./.git -o -path './build*' -o -path ./lua_modules -o -path ./luarocks \
             -o -path ./fdpass \) -prune -o -type f -name '*.lua' -print | sort) bin/fdpass-upgrade
.PHONY: lint lint-deps lint-lua lint-syntax lint-rockspec lint-c lint-install doc
lint: lint-lua lint-syntax lint-rockspec lint-c lint-install
lint-deps:
	@tools/deps.sh $(LUA_VERSION) lua-check lua5.1 luarocks cppcheck
lint-lua: lint-deps
	luacheck -q .
lint-syntax: lint-deps
	@lua5.1 tools/lint-syntax.lua $(LINT_LUA)
lint-rockspec: lint-deps
	luarocks lint rockspec/fdpass-scm-1.rockspec
	@tools/version.sh check
lint-c: lint-deps
	cppcheck --enable=warning,portability --error-exitcode=1 -q -Isrc/lib -Isrc/lua src spec/c bench/cbench.c bench/hbench.c
lint-install: lint-deps
	@tools/install-parity.sh
doc: deps
	@tools/deps.sh $(LUA_VERSION) lua-ldoc lua-markdown
	ldoc --fatalwarnings .

# ---- nginx: spec/nginx_spec.lua runs examples/nginx/ in Debian's nginx and
# its Lua module, which links OpenResty's LuaJIT (luajit2, so LUA_VERSION=jit
# builds the core it loads: the spec does). Installed before the specs when
# root; otherwise `-` lets the suite go on and the spec skips, saying why.
.PHONY: nginx-deps
test: nginx-deps
nginx-deps: deps
	-@tools/deps.sh jit nginx-light libnginx-mod-http-lua
