# Vigil build. Every target installs what it needs, idempotently:
#   make run    - build and start the agent with its defaults (root)
#   make test   - build and run the whole test suite (root for the kernel tiers)
#   make bench  - benchmarks, printed as ratios against a baseline from the same run
#   make lint   - ruff, mypy and the import contracts of docs/architecture.md
SHELL := /bin/bash
.DEFAULT_GOAL := all

CLANG      ?= clang-19
BPFTOOL    ?= bpftool
PYTHON     ?= python3
VENV       := .venv
VPY        := $(VENV)/bin/python
BUILD      := build
OBJDIR     := src/vigil/bpf/objects
ARCH       := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
BPF_SRCS   := $(wildcard bpf/*.bpf.c)
BPF_OBJS   := $(patsubst bpf/%.bpf.c,$(OBJDIR)/%.bpf.o,$(BPF_SRCS))
BPF_HDRS   := $(wildcard bpf/include/vigil/*.h)
# rsyslog, rsyslog-gnutls: the collector of the syslog-over-TLS exporter tests
# containerd, runc, podman: the container tests; mmdebstrap, umoci: `make image`
APT_PKGS   := clang-19 llvm-19 libbpf-dev libbpf1 bpftool libelf-dev zlib1g-dev \
              rsyslog rsyslog-gnutls systemtap-sdt-dev containerd runc podman mmdebstrap umoci
RUN_ARGS   ?=
PYTEST_ARGS ?=
LANE_PARALLEL ?= 0
LANE_REQUIRE ?=
LANE_BENCH ?= 1
LANE_SELECT ?=

.PHONY: all deps apt venv bpf abi proto image bytecode run test test-unit test-kernel test-kernels bench lint clean

all: bpf venv

# --- set-up ---------------------------------------------------------------------------
deps: apt venv

apt: $(BUILD)/.apt-stamp
$(BUILD)/.apt-stamp: Makefile
	@mkdir -p $(BUILD)
	@if ! command -v $(CLANG) >/dev/null || ! command -v $(BPFTOOL) >/dev/null \
	    || ! dpkg -s $(filter-out clang-19 llvm-19 bpftool,$(APT_PKGS)) >/dev/null 2>&1; then \
	  echo "installing $(APT_PKGS)"; \
	  apt-get -o DPkg::Lock::Timeout=600 update -qq \
	  && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
	    --no-install-recommends $(APT_PKGS) >/dev/null; \
	fi
	@touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	@touch $@

# --- BPF ------------------------------------------------------------------------------
# vmlinux.h comes from the running kernel's BTF; objects are CO-RE, so they load on any
# kernel with BTF (the kernel lane runs them under stock kernels).
$(BUILD)/vmlinux.h: | apt
	@mkdir -p $(BUILD)
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

BPF_CFLAGS := -g -O2 -Wall -Werror -target bpfel -D__TARGET_ARCH_$(ARCH) \
              -I$(BUILD) -Ibpf/include -mcpu=v3

$(OBJDIR)/%.bpf.o: bpf/%.bpf.c $(BPF_HDRS) $(BUILD)/vmlinux.h | apt
	@mkdir -p $(OBJDIR)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

# the USDT hook object is generic.bpf.c with one more entry program; libbpf's usdt.bpf.h
# includes <linux/errno.h>, whose <asm/errno.h> is in the multiarch include directory
$(OBJDIR)/generic_usdt.bpf.o: bpf/generic.bpf.c
$(OBJDIR)/generic_tp.bpf.o: bpf/generic.bpf.c
$(OBJDIR)/generic_substr.bpf.o: bpf/generic.bpf.c
$(OBJDIR)/generic_substr_icase.bpf.o: bpf/generic.bpf.c
$(OBJDIR)/generic_usdt_substr.bpf.o $(OBJDIR)/generic_usdt_substr_icase.bpf.o: \
  bpf/generic_usdt.bpf.c bpf/generic.bpf.c
$(OBJDIR)/generic_usdt.bpf.o $(OBJDIR)/generic_usdt_substr.bpf.o \
  $(OBJDIR)/generic_usdt_substr_icase.bpf.o: \
  BPF_CFLAGS += -idirafter /usr/include/$(shell uname -m)-linux-gnu

bpf: $(BPF_OBJS)

# Regenerate the Python view of bpf/include/vigil/abi.h (committed; test_abi checks it).
abi: bpf venv
	$(VPY) tools/gen_abi.py $(OBJDIR)/abi_anchor.bpf.o src/vigil/abi/_generated.py

# Regenerate src/vigil/api/tetragon from proto/tetragon (committed; test_proto_gen checks it)
# and src/vigil/api/cri from proto/cri (test_containers checks it).
proto: venv
	$(VPY) tools/gen_proto.py
	$(VPY) tools/gen_cri_proto.py

# The agent's OCI image (build/image/vigil-image.tar) from Debian packages: no base image.
image: bpf venv apt
	tools/build-image.sh

# --- run, test, bench -----------------------------------------------------------------
# The package's bytecode, written as an installed package has it (pip compiles on
# install; an editable install under PYTHONDONTWRITEBYTECODE=1 would otherwise compile
# every module at each start, in time and memory).
bytecode: venv
	@$(VPY) -m compileall -q src/vigil >/dev/null

run: bpf venv bytecode
	$(VENV)/bin/vigil agent $(RUN_ARGS)

# The whole suite; VIGIL_TEST_STRICT turns "skipped: needs root/BPF" into failures,
# so a run that cannot reach the kernel fails instead of passing empty. It runs as on a
# freshly booted host (tools/fresh-host.sh: a private mount namespace without tracefs,
# debugfs or bpffs), so what the code under test mounts is gone afterwards and nothing
# passes because of an earlier run's mounts.
test: bpf venv
	VIGIL_TEST_STRICT=$${VIGIL_TEST_STRICT:-1} tools/fresh-host.sh \
	  $(VPY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

test-unit: venv
	$(VPY) -m pytest -p no:cacheprovider -m 'not kernel and not e2e' $(PYTEST_ARGS)

# Kernel lane: the kernel tier inside stock Debian kernels (bookworm 6.1 and 6.12, sid's
# 7.2) booted under qemu with the host filesystem; fails if any test fails in any of them.
# Installs qemu, virtme-ng and the kernels on first use (cached in build/kernel-lane). The
# 6.12 run also prints the kprobe benchmark. LANE_KERNELS_RUN picks cached kernels
# (default: all); LANE_PARALLEL=1 boots them at once; LANE_REQUIRE="6.1 6.12 7.2" fails
# unless each ran (CI); LANE_SELECT="7.2=tests/kernel/test_x.py" runs only those files there.
test-kernels: bpf venv
	tools/kernel-lane.sh setup
	LANE_PARALLEL=$(LANE_PARALLEL) LANE_REQUIRE="$(LANE_REQUIRE)" LANE_BENCH=$(LANE_BENCH) \
	  LANE_SELECT="$(LANE_SELECT)" tools/kernel-lane.sh test $(LANE_KERNELS_RUN)

bench: bpf venv bytecode
	$(VPY) -m vigil.bench $(BENCH_ARGS)

# Static checks, all strict (any finding fails): ruff (rules in pyproject.toml), mypy
# (strict flags on the pure packages), import-linter (the layers of docs/architecture.md),
# and tools/check_text.py (no issue numbers or dangling references in code and docs).
$(VENV)/.lint-stamp: pyproject.toml | venv
	$(VPY) -m pip install -q -e '.[test,lint]'
	@touch $@

lint: $(VENV)/.lint-stamp
	$(VENV)/bin/ruff check src tests tools
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(VPY) tools/check_text.py

clean:
	rm -rf $(BUILD) $(OBJDIR)/*.o
