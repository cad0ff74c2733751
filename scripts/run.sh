#!/bin/bash
# `make run`: the daemon in the foreground on a scratch directory, serving one testdev, with
# the QEMU command line and the vfio-userctl commands that use it. Ctrl-C stops it; the
# scratch directory goes with it.
#
#   scripts/run.sh BUILD_DIR
set -euo pipefail

build=$(cd "${1:?usage: run.sh BUILD_DIR}" && pwd)
scratch=$(mktemp -d "${TMPDIR:-/tmp}/vfio-userd-run.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

mkdir -p "$scratch/devices.d"
: >"$scratch/vfio-userd.yaml"
cat >"$scratch/devices.d/tdev0.yaml" <<'EOF'
plugin: testdev
params:
  ram_size: 1M
EOF

socket=$scratch/run/devices/tdev0.sock
admin=$scratch/run/admin.sock
qemu=qemu-system-x86_64
cache=${VFIO_USERD_INTEROP_CACHE:-/var/cache/vfio-userd-interop}
if [ -x "$cache/sid/usr/bin/qemu-system-x86_64" ] && ! command -v qemu-system-x86_64 >/dev/null; then
    # The interop suite's QEMU (make interop fetched it), run through its own loader.
    qemu="$cache/sid/usr/lib64/ld-linux-x86-64.so.2 --library-path $cache/sid/usr/lib/x86_64-linux-gnu $cache/sid/usr/bin/qemu-system-x86_64 -L $cache/sid/usr/share/qemu -L $cache/sid/usr/share/seabios"
fi

cat <<EOF
vfio-userd serves one testdev device (vfio-userd-testdev(7)) from $scratch.

  device socket  $socket
  admin socket   $admin

Give it to a guest (QEMU 10 or later; guest RAM must be a shared memory backend so the
device reaches it directly, or DMA goes through slower messages):

  $qemu \\
    -machine q35,accel=kvm:tcg,memory-backend=ram -m 1G -nographic \\
    -object memory-backend-memfd,id=ram,size=1G,share=on \\
    -device '{"driver":"vfio-user-pci","socket":{"type":"unix","path":"$socket"}}'

and add your guest's disk or kernel. In the guest, lspci shows the device as 1234:7464.

Look at it from here, in another terminal:

  $build/vfio-userctl -s $admin list
  $build/vfio-userctl probe $socket          # while no VMM is connected
  $build/vfio-userctl -s $admin add tdev1 --plugin testdev --param ram_size=64K
  $build/vfio-userctl -s $admin status

Ctrl-C stops the daemon and removes the scratch directory.

EOF
# In the foreground: Ctrl-C reaches the daemon, which stops cleanly, then the EXIT trap runs.
"$build/vfio-userd" -c "$scratch/vfio-userd.yaml" --devices-dir "$scratch/devices.d" \
    --runtime-dir "$scratch/run" --plugin-dir "$build/plugins"
