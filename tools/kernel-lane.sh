#!/bin/bash
# Kernel lane: boot stock Debian kernels under QEMU (TCG) with virtme-ng, the host's
# filesystem as the guest's root, and run a command (the kernel test tier) inside.
#
#   tools/kernel-lane.sh setup            host packages, virtme-ng, virtiofsd, the kernels
#                                         (and each kernel's BTF in $LANE_CACHE/btf/KVER.btf)
#   tools/kernel-lane.sh run KVER CMD...  boot KVER, run CMD as root in the project dir;
#                                         exits with CMD's status
#   tools/kernel-lane.sh test [KVER...]   the lane: LANE_TEST_CMD in every kernel (default:
#                                         all cached ones); fails if any kernel fails
#   tools/kernel-lane.sh kernels          kernels in the cache
#
# Environment:
#   LANE_CACHE     cache (default: <project>/build/kernel-lane). The guest sees the host's
#                  filesystem, but /tmp, /run and /var/tmp are tmpfs there: keep it in the
#                  project tree (build/ is ignored by git).
#   LANE_KERNELS   what `setup` fetches: SUITE:PACKAGE words. A meta package is resolved to
#                  the ABI it depends on today (pin one, e.g. bookworm:linux-image-6.1.0-56-amd64,
#                  for reproducibility; old ABIs leave the archive eventually).
#   LANE_TEST_CMD  what `test` runs in each guest (default: the kernel test tier)
#   LANE_SELECT    per-kernel test selection: VERSION=PATH[,PATH...] words; a kernel whose
#                  version starts with VERSION. runs only those test files of the kernel
#                  tier (e.g. "7.2=tests/kernel/test_syscall_override.py": the tests only
#                  that kernel adds); other kernels run LANE_TEST_CMD or the whole tier
#   LANE_MEM, LANE_CPUS  guest size (2G, 2)
#   LANE_TIMEOUT   seconds one guest may run before it is killed (default 1500)
#   LANE_RETRIES   boots again (default 1) of a guest that died before its tests finished
#                  (no KVER.rc: QEMU or the guest kernel gone, not a timeout); failing
#                  tests are not retried
#   LANE_PARALLEL=1  boot the kernels at the same time (consoles kept in results/KVER.console)
#   LANE_REQUIRE   e.g. "6.1 6.12": fail unless a kernel of each of these versions is run
#   LANE_9P=1      9p root instead of virtiofs (slower Python start-up)
#   LANE_APPEND    extra kernel command line
#
# Traps this script handles (see shared KERNELS.md): virtme-ng's init needs udev on the
# host for its virtio ports (without it: no output, exit status 255); QEMU re-opens
# vng's stdout/stderr with O_TRUNC, so they are always pipes here; guest commands run
# under /bin/sh; KVM is not usable for stock kernels on this machine (--disable-kvm).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${LANE_CACHE:-$ROOT/build/kernel-lane}
# bookworm's 6.1 and 6.12, and sid's current kernel (7.2 when written: the one that lets
# fmod_ret attach to syscall functions)
KERNELS=${LANE_KERNELS:-"bookworm:linux-image-amd64 bookworm:linux-image-6.12-amd64 sid:linux-image-amd64"}
VNG_VERSION=1.42
HOST_PKGS="qemu-system-x86 busybox-static udev kmod libbpf1 iproute2"
DEFAULT_TEST_CMD='.venv/bin/python -m pytest -p no:cacheprovider -q -rs --durations=12 -m kernel tests/kernel'
# kernels of this version also run the kprobe benchmark in the same boot (LANE_BENCH=0: off)
BENCH_ON=${LANE_BENCH_ON:-6.12}

say() { echo "kernel-lane: $*" >&2; }
die() { say "$*"; exit 2; }

RES=$CACHE/results

case $CACHE in
  /tmp/*|/run/*|/var/tmp/*|/dev/shm/*) die "LANE_CACHE=$CACHE is a tmpfs inside the guest";;
esac
case $(realpath -m "$RES") in # the guest writes there: only the project dir is writable
  "$ROOT"/*) ;;
  *) [ "${1:-}" != test ] || die "results dir $(realpath -m "$RES") is outside $ROOT: the guest cannot write it";;
esac

# ---- apt, also for suites the host does not list (trixie for virtiofsd) ---------------

mirror() {
  local m
  m=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1)
  [ -n "$m" ] || m=$(awk '$1=="deb" && $3 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  echo "${m:-http://deb.debian.org/debian}"
}

apt_opts() { # suite -> apt options for a private state dir (created and updated once)
  local suite=$1
  [ "$suite" = bookworm ] && return 0
  local d=$CACHE/apt/$suite
  if [ ! -s "$d/sources.list" ]; then
    mkdir -p "$d/lists/partial" "$d/archives/partial"
    echo "deb $(mirror) $suite main" > "$d/sources.list"
    apt-get -qq -o Dir::Etc::SourceList="$d/sources.list" -o Dir::Etc::SourceParts=/dev/null \
      -o Dir::State::Lists="$d/lists" -o Dir::Cache="$d" update >&2
  fi
  echo "-o Dir::Etc::SourceList=$d/sources.list -o Dir::Etc::SourceParts=/dev/null" \
       "-o Dir::State::Lists=$d/lists -o Dir::Cache=$d"
}

fetch_debs() { # dir suite pkg... -> .deb files in dir (apt-get download as root warns: drop it)
  local dir=$1 suite=$2; shift 2
  local opts
  opts=$(apt_opts "$suite")
  # shellcheck disable=SC2086
  (cd "$dir" && apt-get $opts download -qq "$@" 2>&1 | grep -v -i 'unsandboxed' >&2 || true)
}

# ---- setup -------------------------------------------------------------------------------

setup_host() {
  local missing=()
  for p in $HOST_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > "$CACHE/apt-install.log" 2>&1 || { cat "$CACHE/apt-install.log" >&2; die "apt-get install failed"; }
  fi
  if [ ! -x "$CACHE/vng/bin/vng" ]; then
    say "virtme-ng $VNG_VERSION"
    python3 -m venv "$CACHE/vng"
    "$CACHE/vng/bin/pip" install -q "virtme-ng==$VNG_VERSION"
  fi
}

setup_virtiofsd() {
  # bookworm has only QEMU's old C virtiofsd; take trixie's Rust one with trixie's libc,
  # started through trixie's own dynamic loader.
  local d=$CACHE/virtiofsd
  [ -x "$d/bin/virtiofsd" ] && return 0
  say "virtiofsd (trixie)"
  rm -rf "$d"; mkdir -p "$d/debs" "$d/root" "$d/bin"
  fetch_debs "$d/debs" trixie virtiofsd libc6 libcap-ng0 libseccomp2 libgcc-s1
  ls "$d"/debs/virtiofsd_*.deb >/dev/null 2>&1 || die "could not download virtiofsd"
  for f in "$d"/debs/*.deb; do dpkg-deb -x "$f" "$d/root"; done
  rm -rf "$d/debs"
  local lib=$d/root/usr/lib/x86_64-linux-gnu
  printf '#!/bin/sh\nexec %s --library-path %s %s "$@"\n' \
    "$lib/ld-linux-x86-64.so.2" "$lib" "$d/root/usr/libexec/virtiofsd" > "$d/bin/virtiofsd"
  chmod +x "$d/bin/virtiofsd"
  "$d/bin/virtiofsd" --version >&2
}

concrete() { # suite pkg -> linux-image-<abi> (a meta package depends on exactly one)
  local suite=$1 pkg=$2 opts dep
  opts=$(apt_opts "$suite")
  # shellcheck disable=SC2086
  dep=$(apt-cache $opts depends "$pkg" 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1)
  echo "${dep:-$pkg}"
}

vmlinuz() { # kver -> kernel image in the cache
  local d=$CACHE/kernels/$1 k
  for k in "$d/boot/vmlinuz-$1" "$d/usr/lib/modules/$1/vmlinuz" "$d/lib/modules/$1/vmlinuz"; do
    [ -f "$k" ] && { echo "$k"; return 0; }
  done
  return 1
}

setup_kernel() { # SUITE:PACKAGE
  local suite=${1%%:*} pkg
  pkg=$(concrete "$suite" "${1#*:}")
  local kver=${pkg#linux-image-} d
  d=$CACHE/kernels/$kver
  vmlinuz "$kver" >/dev/null && { say "kernel $kver: cached"; return 0; }
  say "kernel $kver ($suite)"
  rm -rf "$d" "$d.debs"; mkdir -p "$d.debs"
  fetch_debs "$d.debs" "$suite" "$pkg"
  # newer suites split the image into linux-image + linux-binary + linux-modules
  fetch_debs "$d.debs" "$suite" "linux-binary-$kver" "linux-modules-$kver" 2>/dev/null || true
  ls "$d".debs/*.deb >/dev/null 2>&1 || die "could not download $pkg"
  for f in "$d".debs/*.deb; do dpkg-deb -x "$f" "$d"; done
  rm -rf "$d.debs"
  vmlinuz "$kver" >/dev/null || die "no vmlinuz in $pkg"
}

setup_btf() { # each cached kernel's BTF, for `vigil tracingpolicy check --btf`
  local k py=$ROOT/.venv/bin/python
  [ -x "$py" ] || return 0
  mkdir -p "$CACHE/btf"
  for k in $(kernels); do
    [ -s "$CACHE/btf/$k.btf" ] && continue
    PYTHONPATH=$ROOT/src "$py" "$ROOT/tools/kernel_btf.py" "$(vmlinuz "$k")" "$CACHE/btf/$k.btf" >&2 ||
      say "kernel $k: no BTF extracted (check --btf will not have it)"
  done
}

setup() {
  mkdir -p "$CACHE/kernels"
  setup_host
  [ "${LANE_9P:-0}" = 1 ] || setup_virtiofsd
  for k in $KERNELS; do setup_kernel "$k"; done
  setup_btf
}

kernels() {
  local k
  for k in "$CACHE"/kernels/*/; do
    k=$(basename "$k")
    vmlinuz "$k" >/dev/null && echo "$k"
  done | sort -V
}

# ---- run -----------------------------------------------------------------------------------

run_guest() { # kver cmd...
  local kver=$1; shift
  local img
  img=$(vmlinuz "$kver") || die "kernel $kver is not in $CACHE (tools/kernel-lane.sh setup)"
  [ -x "$CACHE/vng/bin/vng" ] || die "virtme-ng missing (tools/kernel-lane.sh setup)"
  local path=$CACHE/vng/bin:$PATH
  [ "${LANE_9P:-0}" = 1 ] || path=$CACHE/virtiofsd/bin:$path
  local cmd
  cmd=". $ROOT/tools/kernel-lane-guest.sh; cd $ROOT && $*"
  set +e
  # stdout/stderr must be pipes (QEMU truncates regular files it is handed)
  PATH=$path timeout -k 10 "${LANE_TIMEOUT:-1500}" vng --run "$img" --disable-kvm \
    --memory "${LANE_MEM:-2G}" --cpus "${LANE_CPUS:-2}" \
    --rwdir "$ROOT" --cwd "$ROOT" ${LANE_APPEND:+--append "$LANE_APPEND"} \
    --exec "$cmd" 2> >(cat >&2) | cat
  local rc=${PIPESTATUS[0]}
  set -e
  wait
  return "$rc"
}

selected() { # kver -> the LANE_SELECT test files for it, space-separated ("" if none)
  local k=$1 w
  for w in ${LANE_SELECT:-}; do
    case $k in "${w%%=*}".*) echo "${w#*=}" | tr , ' '; return 0;; esac
  done
}

test_cmd() { # kver -> the test command its guest runs
  local sel
  sel=$(selected "$1")
  if [ -n "$sel" ]; then
    echo ".venv/bin/python -m pytest -p no:cacheprovider -q -rs --durations=12 -m kernel $sel"
  else
    echo "${LANE_TEST_CMD:-$DEFAULT_TEST_CMD}"
  fi
}

guest_script() { # kver -> what runs in the guest: the tests (output kept in $res/KVER.txt,
  # status in $res/KVER.rc), then maybe the benchmark; the guest's exit status is the tests'
  local k=$1 cmd
  cmd=$(test_cmd "$k")
  local g="{ $cmd; echo \$? > $RES/$k.rc; } 2>&1 | tee $RES/$k.txt"
  if [ "${LANE_BENCH:-1}" = 1 ] && [[ $k == "$BENCH_ON".* ]]; then
    g="$g; .venv/bin/python -m vigil.bench kprobe > $RES/bench-$k.json || echo 'kernel-lane: benchmark failed' >&2; cat $RES/bench-$k.json"
  fi
  echo "$g; exit \$(cat $RES/$k.rc)"
}

verdict() { # kver guest-status -> one summary line; fails unless the guest ran tests, all passed
  local k=$1 rc=$2 last why=""
  last=$(tail -n1 "$RES/$k.txt" 2>/dev/null || true)
  if [ ! -s "$RES/$k.rc" ]; then why="the tests did not finish (no $k.rc: boot failure, crash or timeout)"
  elif [ "$(cat "$RES/$k.rc")" != 0 ] || [ "$rc" != 0 ]; then why="tests exit $(cat "$RES/$k.rc"), guest exit $rc"
  elif { [ -z "${LANE_TEST_CMD:-}" ] || [ -n "$(selected "$k")" ]; } &&
       ! [[ $last =~ (^|[^0-9])[1-9][0-9]*\ passed ]]; then why="no test passed"
  elif [[ $last =~ (failed|error) ]]; then why="failures"
  fi
  echo "$k: ${why:-ok}: $last"
  [ -z "$why" ]
}

test_all() {
  local ks=("$@") k t0 failed=() summary=() pids=() retried=()
  [ ${#ks[@]} -gt 0 ] || mapfile -t ks < <(kernels)
  [ ${#ks[@]} -gt 0 ] || die "no kernels cached (tools/kernel-lane.sh setup)"
  for k in ${LANE_REQUIRE:-}; do # e.g. "6.1 6.12": each must be among the kernels run
    printf '%s\n' "${ks[@]}" | grep -q "^$k\." || die "no $k.* kernel to run (have: ${ks[*]})"
  done
  mkdir -p "$RES"
  t0=$(date +%s)
  for k in "${ks[@]}"; do
    vmlinuz "$k" >/dev/null || die "kernel $k is not in $CACHE (tools/kernel-lane.sh setup)"
    rm -f "$RES/$k".{rc,txt,exit,console} "$RES/compat-$k.json" "$RES/bench-$k.json"
    if [ "${LANE_PARALLEL:-0}" = 1 ]; then
      say "=== $k (parallel; console in $RES/$k.console)"
      { rc=0; run_guest "$k" "$(guest_script "$k")" > "$RES/$k.console" 2>&1 || rc=$?
        echo "$rc $(( $(date +%s) - t0 ))" > "$RES/$k.exit"; } &
      pids+=($!)
    else
      say "=== $k"
      local t1 rc=0 try
      t1=$(date +%s)
      for try in $(seq 0 "${LANE_RETRIES:-1}"); do
        rc=0
        run_guest "$k" "$(guest_script "$k")" || rc=$?
        # tests that ran to the end wrote $k.rc, passed or not: only a guest that died
        # before that (QEMU or the guest kernel gone, a timeout) is booted again
        [ -s "$RES/$k.rc" ] && break
        case $rc in 124|137) break ;; esac  # timed out: hung, not gone; do not wait again
        mv -f "$RES/$k.txt" "$RES/$k.died-$try.txt" 2>/dev/null || true
        say "$k: the guest died before its tests finished (exit $rc, output in $k.died-$try.txt)"
        [ "$try" -lt "${LANE_RETRIES:-1}" ] && retried+=("$k")
      done
      echo "$rc $(( $(date +%s) - t1 ))" > "$RES/$k.exit"
    fi
  done
  [ ${#pids[@]} -eq 0 ] || wait "${pids[@]}" || true
  for k in "${ks[@]}"; do
    if [ "${LANE_PARALLEL:-0}" = 1 ]; then
      say "=== $k: console"; cat "$RES/$k.console" >&2 || true
    fi
    local rc=255 secs=?
    [ -s "$RES/$k.exit" ] && read -r rc secs < "$RES/$k.exit"
    if line=$(verdict "$k" "$rc"); then :; else failed+=("$k"); fi
    summary+=("$line (${secs}s)")
  done
  say "summary ($(( $(date +%s) - t0 ))s in all):"
  printf '  %s\n' "${summary[@]}" >&2
  [ ${#retried[@]} -eq 0 ] || say "booted again after a guest died: ${retried[*]}"
  if [ ${#failed[@]} -gt 0 ]; then
    say "FAILED in: ${failed[*]}"
    return 1
  fi
}

case ${1:-} in
  setup) setup ;;
  run) shift; [ $# -ge 2 ] || die "usage: run KVER CMD..."; run_guest "$@" ;;
  test) shift; test_all "$@" ;;
  kernels) kernels ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
