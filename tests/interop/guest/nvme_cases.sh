# The interop suite's NVMe cases, sourced by cases.sh: the guest kernel's own nvme driver
# against the nvme plugin (vfio-userd-nvme(7)) through QEMU's vfio-user-pci. The host's
# drop-in gives one controller with two namespaces: 64 MiB of 512-byte blocks and 32 MiB of
# 4096-byte blocks. ext4 on both proves the data path; the checksums printed as
# "VUT sum NS FILE SHA256" let the host find the same bytes in the backing files.

NVME_MODULES=/lib/modules/nvme

# The nvme driver and ext4, with their dependencies, in the order the host resolved.
nvme_load() {
    local module
    [ -e /sys/module/nvme ] && [ -e /sys/module/ext4 ] && return 0
    for module in $(cat $NVME_MODULES/order); do
        insmod "$NVME_MODULES/$module" 2>/dev/null
    done
    [ -e /sys/module/nvme ] || fail "insmod nvme failed"
    [ -e /sys/module/ext4 ] || fail "insmod ext4 failed"
}

# nvme_wait: both namespaces' block devices, within 60 s (TCG is slow).
nvme_wait() {
    local tries=0
    while { [ ! -b /dev/nvme0n1 ] || [ ! -b /dev/nvme0n2 ]; } && [ $tries -lt 600 ]; do
        sleep 0.1
        tries=$((tries + 1))
    done
    [ -b /dev/nvme0n1 ] && [ -b /dev/nvme0n2 ] || {
        fail "no /dev/nvme0n1 and /dev/nvme0n2"
        return 1
    }
}

case_nvme() {
    local smp queues expected memory dbbuf
    nvme_load
    nvme_wait || return
    check "nvme0n1 sectors" 131072 "$(cat /sys/block/nvme0n1/size)"
    check "nvme0n1 logical block size" 512 "$(cat /sys/block/nvme0n1/queue/logical_block_size)"
    check "nvme0n2 sectors" 65536 "$(cat /sys/block/nvme0n2/size)"
    check "nvme0n2 logical block size" 4096 "$(cat /sys/block/nvme0n2/queue/logical_block_size)"
    check_text "model" "vfio-userd NVMe" "$(cat /sys/class/nvme/nvme0/model | sed 's/ *$//')"
    check_text "serial" "VUTNVME0" "$(cat /sys/class/nvme/nvme0/serial | sed 's/ *$//')"
    check_text "class" "0x010802" "$(cat /sys/class/nvme/nvme0/device/class)"
    # One I/O queue per CPU, up to the controller's 4, each with its MSI-X vector.
    smp=$(sed -n 's/.*vut\.smp=\([0-9]*\).*/\1/p' /proc/cmdline)
    expected=$((smp < 4 ? smp : 4))
    queues=$(ls /sys/block/nvme0n1/mq | wc -l)
    check "I/O queues" "$expected" "$queues"
    grep -q "nvme0q$expected" /proc/interrupts || fail "no interrupt line nvme0q$expected"
    grep nvme0q /proc/interrupts | grep -q MSI || fail "nvme interrupts are not MSI-X"
    grep nvme0q /proc/interrupts | sed 's/^ */VUT interrupts: /'
    # Shadow doorbells (Doorbell Buffer Config, OACS bit 8): the driver says only when the
    # controller refused them, which it does when guest memory is not shared with it (the
    # private boot); the host finds the other side in the device's log.
    memory=$(sed -n 's/.*vut\.memory=\([a-z]*\).*/\1/p' /proc/cmdline)
    dbbuf=on
    dmesg | grep -q "unable to set dbbuf" && dbbuf=off
    check_text "shadow doorbells with $memory memory" "$([ "$memory" = shared ] && echo on || echo off)" "$dbbuf"
    echo "VUT dbbuf $dbbuf"
}

# nvme_write NS DIR FILES...: files of random data, their sums in DIR/SUMS.
nvme_write() {
    local ns=$1 dir=$2 name
    shift 2
    for name in "$@"; do
        case $name in
        small*) dd if=/dev/urandom of="$dir/$name" bs=1k count=37 2>/dev/null ;;
        *) dd if=/dev/urandom of="$dir/$name" bs=64k count=40 2>/dev/null ;;
        esac || fail "writing $dir/$name"
        (cd "$dir" && sha256sum "$name") >>"$dir/SUMS"
    done
}

# nvme_remount DEV DIR: unmount, forget every cached page, mount again.
nvme_remount() {
    umount "$2" || fail "umount $2"
    echo 3 >/proc/sys/vm/drop_caches
    mount -t ext4 "$1" "$2" || fail "mount $1 again"
}

# nvme_verify NS DIR: every file matches SUMS, and the host hears of each sum.
nvme_verify() {
    local ns=$1 dir=$2 sum name
    [ -s "$dir/SUMS" ] || {
        fail "$dir/SUMS is missing"
        return
    }
    (cd "$dir" && sha256sum -c SUMS >/dev/null 2>&1) || fail "checksums differ on $ns"
    while read -r sum name; do
        echo "VUT sum $ns $name $sum"
    done <"$dir/SUMS"
}

nvme_mkfs() {
    local output
    output=$(/sbin/mke2fs -t ext4 -q -F "$1" 2>&1) || {
        echo "$output" | sed 's/^/VUT mkfs: /'
        fail "mkfs.ext4 $1"
    }
}

case_ext4() {
    nvme_load
    nvme_wait || return
    # After case_nvreboot's reboot the cases run again: the filesystem stays.
    nvme_rebooted && return
    mkdir -p /mnt/a /mnt/b
    [ -e /etc/mtab ] || ln -s /proc/mounts /etc/mtab
    nvme_mkfs /dev/nvme0n1
    nvme_mkfs /dev/nvme0n2
    mount -t ext4 /dev/nvme0n1 /mnt/a || fail "mount /dev/nvme0n1"
    mount -t ext4 /dev/nvme0n2 /mnt/b || fail "mount /dev/nvme0n2"
    nvme_write a /mnt/a small1 big1 big2
    nvme_write b /mnt/b small1 big1
    sync
    nvme_remount /dev/nvme0n1 /mnt/a
    nvme_remount /dev/nvme0n2 /mnt/b
    nvme_verify a /mnt/a
    nvme_verify b /mnt/b
    umount /mnt/a
    umount /mnt/b
}

# A later QEMU (another boot, here with private guest memory) finds the files and adds one.
case_ext4keep() {
    nvme_load
    nvme_wait || return
    mkdir -p /mnt/a /mnt/b
    mount -t ext4 /dev/nvme0n1 /mnt/a || fail "mount /dev/nvme0n1"
    mount -t ext4 /dev/nvme0n2 /mnt/b || fail "mount /dev/nvme0n2"
    (cd /mnt/a && sha256sum -c SUMS >/dev/null 2>&1) || fail "the first boot's files differ on a"
    (cd /mnt/b && sha256sum -c SUMS >/dev/null 2>&1) || fail "the first boot's files differ on b"
    nvme_write a /mnt/a big3
    nvme_write b /mnt/b small2
    sync
    nvme_remount /dev/nvme0n1 /mnt/a
    nvme_remount /dev/nvme0n2 /mnt/b
    nvme_verify a /mnt/a
    nvme_verify b /mnt/b
    umount /mnt/a
    umount /mnt/b
}

# nvme_rebooted: case_nvreboot's mark is on namespace 1 (this boot follows its reboot).
nvme_rebooted() {
    local found=1
    mkdir -p /mnt/r
    mount -t ext4 -o ro /dev/nvme0n1 /mnt/r 2>/dev/null || return 1
    [ -e /mnt/r/REBOOTED ] && found=0
    umount /mnt/r
    return $found
}

# A guest reboot within one QEMU keeps the data: QEMU resets the controller (DEVICE_RESET),
# the driver sets it up again from scratch (queues, shadow doorbells), and the files written
# before are there after. The first boot adds a file and a mark, and reboots; the boot after
# (which runs the earlier cases again, ext4 leaving the filesystem alone) checks every file.
case_nvreboot() {
    nvme_load
    nvme_wait || return
    mkdir -p /mnt/a
    mount -t ext4 /dev/nvme0n1 /mnt/a || {
        fail "mount /dev/nvme0n1"
        return
    }
    if [ ! -e /mnt/a/REBOOTED ]; then
        nvme_write a /mnt/a reboot1
        echo 1 >/mnt/a/REBOOTED
        umount /mnt/a || fail "umount /mnt/a"
        sync
        echo "VUT waiting nvreboot"
        reboot -f
        sleep 60
    fi
    rm /mnt/a/REBOOTED
    grep -q ' reboot1$' /mnt/a/SUMS || fail "the file written before the reboot is not in SUMS"
    nvme_remount /dev/nvme0n1 /mnt/a
    nvme_verify a /mnt/a
    umount /mnt/a
}
