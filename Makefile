# vfio-userd build.
#
#   make                 build the daemon, the CLI, the plugins and the tests
#   make check           build, then run every test (installs build deps as root)
#   make check SANITIZE=1  the same under AddressSanitizer + UBSan (separate tree)
#   make fuzz            run each libFuzzer target (tests/fuzz/) briefly; fuzz-long: 1M inputs each
#   make bench           run the benchmarks against a floor server (bench/)
#   make bench-isolation process against thread isolation, 1 to 1,000 devices
#   make interop         the QEMU guest suite: QEMU's vfio-user-pci in a Linux guest
#   make run             start the daemon with one testdev and print how to use it
#   make install         install under $(DESTDIR)$(PREFIX)
#   make deb             Debian packages from a clean export of HEAD, into build/deb/
#   make systemd-test    boot Debian 12 with systemd as PID 1, install the packages, check them
#   make format          reformat every C file with the committed .clang-format
#   V=1                  show each command in full (quiet by default: "CC lib/wire.o")
#
# Layout: lib/*.c is the protocol core (a static archive), config/*.c the configuration
# parser (a static archive the daemon, the CLI and the tests link), plugins/NAME/*.c
# become plugins/NAME.so, daemon/*.c is vfio-userd, host/main.c is the device host
# (vfio-userd-device-host, with the rest of host/*.c, which the daemon links too, for the
# supervisor's side of the control channel), ctl/*.c is vfio-userctl,
# each tests/{unit,integration}/test_*.c is one check binary that links
# tests/common/*.c. New files are picked up without editing this file.

PREFIX        ?= /usr
SYSCONFDIR    ?= /etc
LIBDIR        ?= $(PREFIX)/lib
PKGLIBDIR     ?= $(LIBDIR)/vfio-userd
PLUGINDIR     ?= $(PKGLIBDIR)/plugins
RUNTIMEDIR    ?= /run/vfio-userd
MANDIR        ?= $(PREFIX)/share/man
INCLUDEDIR    ?= $(PREFIX)/include
PKGCONFIGDIR  ?= $(LIBDIR)/pkgconfig
UNITDIR       ?= $(LIBDIR)/systemd/system
SYSUSERSDIR   ?= $(LIBDIR)/sysusers.d
VERSION       := 0.1.0

CC            ?= cc
CFLAGS        ?= -O2 -g
WARNINGS      := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
                 -Wno-unused-parameter -Wformat=2 -Wvla
PKGS          := libsystemd yaml-0.1 jansson libseccomp

ifeq ($(SANITIZE),1)
BUILD         ?= build/sanitize
SANITIZE_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD         ?= build/plain
SANITIZE_FLAGS :=
# As Debian's package build has it, so an unchecked result fails here first.
HARDENING_FLAGS := -D_FORTIFY_SOURCE=2
endif

DEPS_STAMP    := build/.deps-ok
PKG_CFLAGS     = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS       = $(shell pkg-config --libs $(PKGS))
CHECK_CFLAGS   = $(shell pkg-config --cflags check)
CHECK_LIBS     = $(shell pkg-config --libs check)

ALL_CFLAGS     = -std=gnu11 -D_GNU_SOURCE -DVFIO_USERD_VERSION='"$(VERSION)"' \
                 -DVFIO_USERD_PLUGINDIR='"$(PLUGINDIR)"' -DVFIO_USERD_SYSCONFDIR='"$(SYSCONFDIR)"' \
                 -DVFIO_USERD_PKGLIBDIR='"$(PKGLIBDIR)"' -DVFIO_USERD_RUNTIMEDIR='"$(RUNTIMEDIR)"' \
                 -Iinclude -Ilib $(WARNINGS) $(CFLAGS) $(SANITIZE_FLAGS) $(HARDENING_FLAGS) $(PKG_CFLAGS) -MMD -MP
ALL_LDFLAGS    = $(LDFLAGS) $(SANITIZE_FLAGS)

LIB_SRCS       := $(wildcard lib/*.c)
LIB_OBJS       := $(LIB_SRCS:%.c=$(BUILD)/%.o)
LIB_ARCHIVE    := $(BUILD)/libvfio-userd-core.a

PLUGIN_NAMES   := $(notdir $(patsubst %/,%,$(wildcard plugins/*/)))
PLUGIN_SOS     := $(PLUGIN_NAMES:%=$(BUILD)/plugins/%.so)

# The configuration parser: device files, device_add objects and the daemon's file.
CONFIG_SRCS    := $(wildcard config/*.c)
CONFIG_OBJS    := $(CONFIG_SRCS:%.c=$(BUILD)/%.o)
CONFIG_ARCHIVE := $(BUILD)/libvfio-userd-config.a

DAEMON_SRCS    := $(wildcard daemon/*.c)
DAEMON_OBJS    := $(DAEMON_SRCS:%.c=$(BUILD)/%.o)
DAEMON_LIB_OBJS := $(filter-out $(BUILD)/daemon/main.o,$(DAEMON_OBJS))
DAEMON         := $(if $(wildcard daemon/main.c),$(BUILD)/vfio-userd)

# The device host: one sandboxed process per device in process isolation.
HOST_SRCS      := $(wildcard host/*.c)
HOST_OBJS      := $(HOST_SRCS:%.c=$(BUILD)/%.o)
HOST_LIB_OBJS  := $(filter-out $(BUILD)/host/main.o,$(HOST_OBJS))
HOST_ARCHIVE   := $(BUILD)/libvfio-userd-host.a
DEVICE_HOST    := $(if $(wildcard host/main.c),$(BUILD)/vfio-userd-device-host)

CTL_SRCS       := $(wildcard ctl/*.c)
CTL_OBJS       := $(CTL_SRCS:%.c=$(BUILD)/%.o)
CTL            := $(if $(wildcard ctl/main.c),$(BUILD)/vfio-userctl)

TEST_COMMON_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tests/common/*.c))
TEST_SRCS      := $(wildcard tests/unit/test_*.c tests/integration/test_*.c)
TEST_BINS      := $(TEST_SRCS:%.c=$(BUILD)/%)

BENCH_SRCS     := $(wildcard bench/*.c)
BENCH_BINS     := $(BENCH_SRCS:%.c=$(BUILD)/%)

.PHONY: all deps check fuzz install clean format format-check bench bench-isolation interop run
.DEFAULT_GOAL := all

# Quiet by default, one line per target, so a warning stands out; V=1 shows the commands.
ifeq ($(V),1)
Q       :=
quiet    = @:
else
Q       := @
quiet    = @printf '  %-7s %s\n' $(1) $(2)
endif

# The shared test objects are intermediates of every test program: keep them, so an
# unchanged tree relinks nothing.
.SECONDARY:

all: $(DEPS_STAMP)
	@$(MAKE) --no-print-directory binaries

.PHONY: binaries
binaries: $(LIB_ARCHIVE) $(PLUGIN_SOS) $(DAEMON) $(DEVICE_HOST) $(CTL) $(TEST_BINS) $(BENCH_BINS)

deps $(DEPS_STAMP): scripts/ensure-deps.sh
	@sh scripts/ensure-deps.sh
	@mkdir -p build && touch $(DEPS_STAMP)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(call quiet,CC,$<)
	$(Q)$(CC) $(ALL_CFLAGS) $(EXTRA_CFLAGS) -fPIC -c $< -o $@

# The CLI validates device files with the daemon's own parser before sending them.
$(CTL_OBJS): EXTRA_CFLAGS := -Iconfig

$(CONFIG_ARCHIVE): $(CONFIG_OBJS)
	@mkdir -p $(dir $@)
	$(call quiet,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(LIB_ARCHIVE): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	$(call quiet,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

# The daemon and the tests include host/'s headers; the host sees lib/ and its own.
$(DAEMON_OBJS): EXTRA_CFLAGS := -Ihost -Iconfig
$(HOST_ARCHIVE): $(HOST_LIB_OBJS)
	@mkdir -p $(dir $@)
	$(call quiet,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^


.SECONDEXPANSION:

# The libraries a plugin links, by plugin name: testdev's CRC-32 is zlib's.
PLUGIN_LIBS_testdev := -lz
PLUGIN_LIBS_nvme := -luring

# A plugin sees only include/: it is compiled without -Ilib on purpose. Its own headers
# are prerequisites, so changing one rebuilds it.
$(BUILD)/plugins/%.so: $$(wildcard plugins/%/*.c) $$(wildcard plugins/%/*.h) include/vfio-userd/plugin.h
	@mkdir -p $(dir $@)
	$(call quiet,CCLD,$@)
	$(Q)$(CC) -std=gnu11 -D_GNU_SOURCE -Iinclude $(WARNINGS) $(CFLAGS) $(SANITIZE_FLAGS) $(HARDENING_FLAGS) \
	    $(shell pkg-config --cflags jansson) -fPIC -shared -fvisibility=hidden \
	    $(filter %.c,$^) -o $@ $(ALL_LDFLAGS) $(PLUGIN_LIBS_$*)

# Test-only plugins, tests/plugins/NAME.c -> BUILD/tests/plugins/NAME.so: never installed.
TEST_PLUGIN_SOS := $(patsubst tests/plugins/%.c,$(BUILD)/tests/plugins/%.so,$(wildcard tests/plugins/*.c))
TEST_PLUGIN_SOS += $(BUILD)/tests/plugins/testdev-abi-1.0.so
TEST_PLUGIN_SOS += $(BUILD)/tests/plugins/man-example.so $(BUILD)/tests/plugins/man-example-abi-1.0.so
binaries: $(TEST_PLUGIN_SOS)
$(BUILD)/tests/plugins/%.so: tests/plugins/%.c include/vfio-userd/plugin.h
	@mkdir -p $(dir $@)
	$(call quiet,CCLD,$@)
	$(Q)$(CC) -std=gnu11 -D_GNU_SOURCE -Iinclude $(WARNINGS) $(CFLAGS) $(SANITIZE_FLAGS) $(HARDENING_FLAGS) \
	    $(shell pkg-config --cflags jansson) -fPIC -shared -fvisibility=hidden $< -o $@ $(ALL_LDFLAGS)

# The example plugin of vfio-userd-plugin(3), as a reader copies it out of the page, built
# with today's header and with the frozen 1.0 one: the page's code must build and work.
$(BUILD)/tests/plugins/man-example.c: man/vfio-userd-plugin.3
	@mkdir -p $(dir $@)
	$(Q)awk '/^\.SH EXAMPLE/ { example = 1 } example && /^\.EE/ && code { exit } \
	    code { print } example && /^\.EX/ { code = 1 }' $< | sed -e 's/\\-/-/g' -e 's/\\e/\\/g' > $@
$(BUILD)/tests/plugins/man-example.so: $(BUILD)/tests/plugins/man-example.c include/vfio-userd/plugin.h
	$(call quiet,CCLD,$@)
	$(Q)$(CC) -std=gnu11 -D_GNU_SOURCE -Iinclude $(WARNINGS) $(CFLAGS) $(SANITIZE_FLAGS) $(HARDENING_FLAGS) \
	    $(shell pkg-config --cflags jansson) -fPIC -shared -fvisibility=hidden $< -o $@ $(ALL_LDFLAGS)
$(BUILD)/tests/plugins/man-example-abi-1.0.so: $(BUILD)/tests/plugins/man-example.c tests/plugins/abi-1.0/vfio-userd/plugin.h
	$(call quiet,CCLD,$@)
	$(Q)$(CC) -std=gnu11 -D_GNU_SOURCE -Itests/plugins/abi-1.0 $(WARNINGS) $(CFLAGS) $(SANITIZE_FLAGS) $(HARDENING_FLAGS) \
	    $(shell pkg-config --cflags jansson) -fPIC -shared -fvisibility=hidden $< -o $@ $(ALL_LDFLAGS)

# testdev built with the frozen ABI 1.0 header: the host must keep serving 1.0 plugins.
$(BUILD)/tests/plugins/testdev-abi-1.0.so: $(wildcard plugins/testdev/*.c) $(wildcard plugins/testdev/*.h) tests/plugins/abi-1.0/vfio-userd/plugin.h
	@mkdir -p $(dir $@)
	$(call quiet,CCLD,$@)
	$(Q)$(CC) -std=gnu11 -D_GNU_SOURCE -Itests/plugins/abi-1.0 $(WARNINGS) $(CFLAGS) $(SANITIZE_FLAGS) $(HARDENING_FLAGS) \
	    $(shell pkg-config --cflags jansson) -fPIC -shared -fvisibility=hidden \
	    $(filter %.c,$^) -o $@ $(ALL_LDFLAGS) $(PLUGIN_LIBS_testdev)

$(BUILD)/vfio-userd: $(DAEMON_OBJS) $(HOST_ARCHIVE) $(CONFIG_ARCHIVE) $(LIB_ARCHIVE)
	$(call quiet,LD,$@)
	$(Q)$(CC) $^ -o $@ $(ALL_LDFLAGS) $(PKG_LIBS) -ldl -lpthread

$(BUILD)/vfio-userd-device-host: $(BUILD)/host/main.o $(HOST_ARCHIVE) $(LIB_ARCHIVE)
	$(call quiet,LD,$@)
	$(Q)$(CC) $^ -o $@ $(ALL_LDFLAGS) $(PKG_LIBS) -ldl

$(BUILD)/vfio-userctl: $(CTL_OBJS) $(CONFIG_ARCHIVE) $(LIB_ARCHIVE)
	$(call quiet,LD,$@)
	$(Q)$(CC) $^ -o $@ $(ALL_LDFLAGS) $(PKG_LIBS)

# Tests link the core, the configuration parser, the daemon's modules (not its main)
# and the shared test helpers; integration tests find binaries and plugins through
# VFIO_USERD_BUILD_DIR.
$(BUILD)/tests/%: tests/%.c $(TEST_COMMON_OBJS) $(DAEMON_LIB_OBJS) $(HOST_ARCHIVE) $(CONFIG_ARCHIVE) $(LIB_ARCHIVE) | $(PLUGIN_SOS) $(TEST_PLUGIN_SOS) $(DEVICE_HOST)
	@mkdir -p $(dir $@)
	$(call quiet,CCLD,$@)
	$(Q)$(CC) $(ALL_CFLAGS) -Itests/common -Idaemon -Ihost -Iconfig $(CHECK_CFLAGS) $< $(TEST_COMMON_OBJS) \
	    $(DAEMON_LIB_OBJS) $(HOST_ARCHIVE) $(CONFIG_ARCHIVE) $(LIB_ARCHIVE) -o $@ $(ALL_LDFLAGS) $(CHECK_LIBS) $(PKG_LIBS) -ldl -lpthread

$(BUILD)/tests/common/%.o: tests/common/%.c
	@mkdir -p $(dir $@)
	$(call quiet,CC,$<)
	$(Q)$(CC) $(ALL_CFLAGS) -Itests/common -Idaemon -Ihost -Iconfig $(CHECK_CFLAGS) -c $< -o $@

$(BUILD)/bench/%: bench/%.c $(LIB_ARCHIVE)
	@mkdir -p $(dir $@)
	$(call quiet,CCLD,$@)
	$(Q)$(CC) $(ALL_CFLAGS) $< $(LIB_ARCHIVE) -o $@ $(ALL_LDFLAGS) $(PKG_LIBS) -ldl -lpthread

check: all format-check
	@sh tests/run-tests.sh $(BUILD) $(TEST_BINS)

# Benchmarks (bench/run_bench.py): region I/O through --single and the daemon against a
# floor server in the same run, interleaved BENCH_ROUNDS times (medians), then DMA against
# memcpy for BENCH_SECONDS per case. One table, in about two minutes.
BENCH_ROUNDS   ?= 3
BENCH_REQUESTS ?= 50000
BENCH_SECONDS  ?= 1
bench: all
	@BENCH_SECONDS=$(BENCH_SECONDS) python3 bench/run_bench.py $(BUILD) $(BENCH_ROUNDS) $(BENCH_REQUESTS)

# Process against thread isolation at 1, 100 and 1,000 devices (bench/isolation.py): add and
# remove times, memory per device, REGION_READ latency against the floor. About a minute.
bench-isolation: all
	@python3 bench/isolation.py $(BUILD)

# The daemon in the foreground with one testdev device, and how to use it.
run: all
	@bash scripts/run.sh $(BUILD)

# The QEMU guest suite (tests/interop/run.sh): fetches and caches QEMU and a guest kernel
# on first use; INTEROP_BOOTS picks some of its boots (shared private reboot reconnect
# eight hotplug nvme).
interop: all
	@bash tests/interop/run.sh $(BUILD) $(INTEROP_BOOTS)

# libFuzzer targets (clang): tests/fuzz/fuzz_NAME.c, each with its seed corpus in
# tests/fuzz/seeds/NAME/ and a working corpus in build/fuzz/corpus/NAME/.
#   message  the vfio-user message path of one device (lib/)
#   config   the YAML loader: device drop-ins and the daemon's file
#   admin    the admin socket's framing and JSON-RPC dispatch
# `make fuzz` runs each for FUZZ_SECONDS; `make fuzz-long` runs each for FUZZ_RUNS inputs.
FUZZ_TARGETS   := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS      := $(FUZZ_TARGETS:%=build/fuzz/fuzz_%)
FUZZ_SECONDS   ?= 20
FUZZ_RUNS      ?= 1000000
FUZZ_DAEMON_SRCS := $(filter-out daemon/main.c,$(DAEMON_SRCS)) $(filter-out host/main.c,$(HOST_SRCS)) \
                    $(CONFIG_SRCS)
FUZZ_FLAGS     := -max_len=8192 -timeout=10 -print_final_stats=1

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(LIB_SRCS) $(FUZZ_DAEMON_SRCS) $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(call quiet,FUZZCC,$@)
	$(Q)clang -std=gnu11 -D_GNU_SOURCE -DVFIO_USERD_VERSION='"$(VERSION)"' \
	    -DVFIO_USERD_PLUGINDIR='"$(PLUGINDIR)"' -DVFIO_USERD_SYSCONFDIR='"$(SYSCONFDIR)"' \
	    -DVFIO_USERD_PKGLIBDIR='"$(PKGLIBDIR)"' -DVFIO_USERD_RUNTIMEDIR='"$(RUNTIMEDIR)"' \
	    -Iinclude -Ilib -Idaemon -Ihost -Iconfig -O1 -g -fsanitize=fuzzer,address,undefined $(PKG_CFLAGS) \
	    $< $(LIB_SRCS) $(FUZZ_DAEMON_SRCS) -o $@ $(PKG_LIBS) -ldl -lpthread

# run_fuzzers LIMIT DESCRIPTION: each target with its corpus and seeds, stopping at LIMIT.
define run_fuzzers
	@for target in $(FUZZ_TARGETS); do \
	    mkdir -p build/fuzz/corpus/$$target; \
	    echo "fuzz: $$target for $(2)"; \
	    build/fuzz/fuzz_$$target $(1) $(FUZZ_FLAGS) -artifact_prefix=build/fuzz/$$target- \
	        build/fuzz/corpus/$$target tests/fuzz/seeds/$$target 2>build/fuzz/$$target.log || \
	        { tail -n 40 build/fuzz/$$target.log; exit 1; }; \
	    grep -E '^(stat::number_of_executed_units|Done)' build/fuzz/$$target.log; \
	done
endef

.PHONY: fuzz-long
fuzz: $(FUZZ_BINS)
	$(call run_fuzzers,-max_total_time=$(FUZZ_SECONDS),$(FUZZ_SECONDS) s)

fuzz-long: $(FUZZ_BINS)
	$(call run_fuzzers,-runs=$(FUZZ_RUNS),$(FUZZ_RUNS) inputs)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	@out=$$(for f in $$(git ls-files '*.c' '*.h'); do \
	    clang-format --dry-run --Werror $$f >/dev/null 2>&1 || echo $$f; done); \
	if [ -n "$$out" ]; then echo "not clang-formatted (run make format):" $$out; exit 1; fi

install: all
	install -d $(DESTDIR)$(PLUGINDIR) $(DESTDIR)$(INCLUDEDIR)/vfio-userd $(DESTDIR)$(PKGCONFIGDIR)
	install -m 0644 include/vfio-userd/plugin.h $(DESTDIR)$(INCLUDEDIR)/vfio-userd/
	for so in $(PLUGIN_SOS); do install -m 0755 $$so $(DESTDIR)$(PLUGINDIR)/; done
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' \
	    -e 's|@PLUGINDIR@|$(PLUGINDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
	    include/vfio-userd-plugin.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/vfio-userd-plugin.pc
	install -d $(DESTDIR)$(MANDIR)/man3 $(DESTDIR)$(MANDIR)/man5 \
	    $(DESTDIR)$(MANDIR)/man7 $(DESTDIR)$(MANDIR)/man8
	for page in $(wildcard man/*.[1-8]); do \
	    section=$${page##*.}; install -m 0644 $$page $(DESTDIR)$(MANDIR)/man$$section/; done
	if [ -n "$(DAEMON)" ]; then install -D -m 0755 $(DAEMON) $(DESTDIR)$(PREFIX)/sbin/vfio-userd; fi
	if [ -n "$(DEVICE_HOST)" ]; then install -D -m 0755 $(DEVICE_HOST) \
	    $(DESTDIR)$(PKGLIBDIR)/vfio-userd-device-host; fi
	if [ -n "$(CTL)" ]; then install -D -m 0755 $(CTL) $(DESTDIR)$(PREFIX)/bin/vfio-userctl; fi
	install -D -m 0644 ctl/vfio-userctl.bash-completion \
	    $(DESTDIR)$(PREFIX)/share/bash-completion/completions/vfio-userctl
# Units name the default paths; only the programs' locations follow PREFIX.
	install -d $(DESTDIR)$(UNITDIR)
	sed -e 's|/usr/sbin/vfio-userd|$(PREFIX)/sbin/vfio-userd|g' \
	    -e 's|/usr/bin/vfio-userctl|$(PREFIX)/bin/vfio-userctl|g' systemd/vfio-userd.service \
	    > $(DESTDIR)$(UNITDIR)/vfio-userd.service
	install -m 0644 systemd/vfio-userd.socket $(DESTDIR)$(UNITDIR)/
	install -D -m 0644 systemd/vfio-userd.sysusers $(DESTDIR)$(SYSUSERSDIR)/vfio-userd.conf
# The daemon configuration is all comments (the defaults): an administrator's copy is
# kept. Device examples go to the documentation only, so installing starts no device.
	install -d $(DESTDIR)$(SYSCONFDIR)/vfio-userd/devices.d $(DESTDIR)$(PKGLIBDIR)/devices.d \
	    $(DESTDIR)$(PREFIX)/share/doc/vfio-userd/examples/devices.d
	[ -e $(DESTDIR)$(SYSCONFDIR)/vfio-userd/vfio-userd.yaml ] || \
	    install -m 0644 conf/vfio-userd.yaml $(DESTDIR)$(SYSCONFDIR)/vfio-userd/
	install -m 0644 conf/vfio-userd.yaml $(DESTDIR)$(PREFIX)/share/doc/vfio-userd/examples/
	install -m 0644 conf/devices.d/*.yaml \
	    $(DESTDIR)$(PREFIX)/share/doc/vfio-userd/examples/devices.d/

# Debian packages (debian/make-deb): dpkg-buildpackage on an export of DEB_REF (HEAD by
# default) in build/deb/src, never in this tree; packages and lintian.log land in build/deb/.
DEB_DIR        ?= build/deb
.PHONY: deb systemd-test
deb:
	@DEB_REF=$(DEB_REF) bash debian/make-deb $(DEB_DIR)

# The real-systemd test (tests/systemd/): the packages just built, installed in a Debian 12
# container booted with systemd-nspawn; the tree is cached in /var/cache/vfio-userd-systemd-test.
systemd-test: deb
	@bash tests/systemd/run.sh $(DEB_DIR)

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' -type f 2>/dev/null)
