#!/bin/bash
# Prepares what the QEMU guest suite needs and caches it, so a rerun takes seconds.
#
#   - a Debian sid chroot holding qemu-system-x86: the real vfio-user client. Debian 12's
#     QEMU (7.2) has no vfio-user-pci; sid's (11.x) has.
#   - the guest: Debian 12's kernel (linux-image-amd64), its headers for the guest test
#     module, pciutils and busybox for the initramfs. These come from the host's own
#     Debian 12 archive, so the module is built with the compiler the kernel was built with.
#
# Everything goes under $VFIO_USERD_INTEROP_CACHE (default /var/cache/vfio-userd-interop),
# outside the source tree, so every clone on the machine shares it. Needs root the first
# time (debootstrap, apt-get); prints what it downloads and why.
set -euo pipefail

cache=${VFIO_USERD_INTEROP_CACHE:-/var/cache/vfio-userd-interop}
chroot_dir=$cache/sid
kernel_dir=$cache/kernel

say() { printf 'interop setup: %s\n' "$*" >&2; }
. "$(dirname "$0")/../../scripts/debian-host.sh"

need_root() {
    if [ "$(id -u)" != 0 ]; then
        say "$1 needs root; run 'sudo make interop' once to fill $cache"
        exit 1
    fi
}

setup_chroot() {
    if [ -x "$chroot_dir/usr/bin/qemu-system-x86_64" ]; then
        return 0
    fi
    debian_install_missing debootstrap
    need_root "building the QEMU chroot"
    local mirror
    mirror=$(debian_host_mirror "${VFIO_USERD_INTEROP_MIRROR:-}")
    if [ ! -f "$chroot_dir.partial/.debootstrap-done" ]; then
        say "downloading a minimal Debian sid tree for its QEMU (vfio-user-pci needs QEMU >= 10); about 1 minute, once"
        rm -rf "$chroot_dir.partial"
        mkdir -p "$cache"
        debootstrap --variant=minbase sid "$chroot_dir.partial" "$mirror" >"$cache/debootstrap.log" 2>&1 || {
            say "debootstrap failed; see $cache/debootstrap.log"
            tail -n 20 "$cache/debootstrap.log" >&2
            exit 1
        }
        touch "$chroot_dir.partial/.debootstrap-done"
    fi
    # The mirror may serve a frozen snapshot of sid whose Release file has expired.
    echo 'Acquire::Check-Valid-Until "false";' >"$chroot_dir.partial/etc/apt/apt.conf.d/90vfio-userd-interop"
    # deb-src lets a reader run "apt-get source qemu" in the chroot, where the mirror has it.
    printf 'deb %s sid main\ndeb-src %s sid main\n' "$mirror" "$mirror" >"$chroot_dir.partial/etc/apt/sources.list"
    say "installing qemu-system-x86 in the chroot"
    chroot "$chroot_dir.partial" sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends qemu-system-x86 && apt-get clean' \
        >"$cache/chroot-apt.log" 2>&1 || {
        say "installing QEMU in the chroot failed; see $cache/chroot-apt.log"
        tail -n 20 "$cache/chroot-apt.log" >&2
        exit 1
    }
    mv "$chroot_dir.partial" "$chroot_dir"
}

# The guest kernel is the one whose headers the host has, so the module always matches it.
setup_kernel() {
    local release
    debian_install_missing linux-headers-amd64 busybox-static pciutils socat cpio kmod
    release=$(dpkg-query -W -f='${Depends}' linux-headers-amd64 | grep -oE 'linux-headers-[0-9][^ ,]*-amd64' | head -n 1)
    release=${release#linux-headers-}
    if [ -f "$kernel_dir/ready" ] && [ "$(cat "$kernel_dir/release")" = "$release" ]; then
        return 0
    fi
    need_root "fetching the guest kernel"
    say "downloading the guest kernel linux-image-$release"
    rm -rf "$kernel_dir"
    mkdir -p "$kernel_dir/deb"
    chmod 0755 "$kernel_dir"
    # apt drops to its own user to download where that user may write.
    chown _apt "$kernel_dir/deb" 2>/dev/null || true
    (cd "$kernel_dir/deb" && apt-get download -q "linux-image-$release" >&2)
    dpkg-deb -x "$kernel_dir"/deb/linux-image-*.deb "$kernel_dir/root"
    rm -rf "$kernel_dir/deb"
    echo "$release" >"$kernel_dir/release"
    touch "$kernel_dir/ready"
}

setup_chroot
setup_kernel
say "ready: $(chroot "$chroot_dir" qemu-system-x86_64 --version | head -n 1), guest kernel $(cat "$kernel_dir/release")"
