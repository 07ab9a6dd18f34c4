# Sourced by /bin/sh inside a kernel-lane guest (tools/kernel-lane.sh) before the command:
# securityfs and cgroup2, no memlock limit, loopback up, and the facts the
# kernel tests use to tell "this kernel lacks it" (skip) from "this kernel should have
# it" (fail): VIGIL_LANE_KERNEL and VIGIL_EXPECT_FEATURES.
vl_mount() { # fstype target
  grep -q " $2 $1 " /proc/mounts && return 0
  mkdir -p "$2" && mount -t "$1" "$1" "$2" 2>/dev/null || echo "kernel-lane: cannot mount $1 on $2" >&2
}
vl_mount securityfs /sys/kernel/security
# tracefs, debugfs and bpffs are left unmounted, as on a freshly booted host: the code
# under test mounts what it needs (vigil.bpf.mounts), and the lane proves it does
grep -q ' cgroup2 ' /proc/mounts || vl_mount cgroup2 /sys/fs/cgroup
ulimit -l unlimited 2>/dev/null || true
ip link set lo up 2>/dev/null || true

VIGIL_LANE_KERNEL=$(uname -r)
# Stock Debian kernels (amd64, BPF LSM on by default): what each must allow. A test of a
# feature listed here fails instead of skipping when the kernel refuses it.
case $VIGIL_LANE_KERNEL in
  6.1.*) VIGIL_EXPECT_FEATURES="kprobe kretprobe fentry fexit fentry_security fmod_ret_security lsm d_path probe_write_user" ;;
  6.[2-9].*|6.1[0-9].*)
         VIGIL_EXPECT_FEATURES="kprobe kretprobe kprobe_multi fentry fexit fentry_security fmod_ret_security lsm d_path probe_write_user" ;;
  # sid's 7.x also lets fmod_ret attach to syscall functions (Override on syscalls) and
  # uprobe programs write their registers (Override on uprobes)
  [7-9].*)
         VIGIL_EXPECT_FEATURES="kprobe kretprobe kprobe_multi fentry fexit fentry_security fmod_ret_security fmod_ret_syscall lsm d_path probe_write_user uprobe_regs" ;;
  *) VIGIL_EXPECT_FEATURES="" ;;
esac
VIGIL_TEST_STRICT=${VIGIL_TEST_STRICT:-1}
export VIGIL_LANE_KERNEL VIGIL_EXPECT_FEATURES VIGIL_TEST_STRICT
echo "kernel-lane: guest $VIGIL_LANE_KERNEL, expecting: $VIGIL_EXPECT_FEATURES" >&2
