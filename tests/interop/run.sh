#!/bin/bash
# The QEMU guest suite (`make interop`): a real vfio-user client, QEMU's vfio-user-pci, drives
# testdev devices served by the vfio-userd daemon, from inside a Linux guest. The in-tree
# client shares the server's reading of the spec; QEMU does not, so this suite is the judge.
#
#   tests/interop/run.sh BUILD_DIR [BOOT...]
#
# Each "boot" starts QEMU (TCG: these machines have no KVM) with a Debian kernel and a
# busybox initramfs holding tests/interop/guest/, and the guest runs the cases named on its
# command line. One line per case, then "interop: N passed, N failed". Logs of each boot
# (serial console, QEMU's stderr, QEMU's vfio_user_* trace, the daemon's log) stay under
# build/interop/logs/.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: run.sh BUILD_DIR [BOOT...]}" && pwd)
shift
cache=${VFIO_USERD_INTEROP_CACHE:-/var/cache/vfio-userd-interop}
out=$top/build/interop
logs=$out/logs
boot_timeout=${INTEROP_BOOT_TIMEOUT:-240}

say() { printf 'interop: %s\n' "$*"; }

bash "$here/setup.sh" || exit 1
release=$(cat "$cache/kernel/release")
sid=$cache/sid
kernel=$cache/kernel/root/boot/vmlinuz-$release

# QEMU runs from the host through the sid tree's own dynamic loader, so every path it is
# given (sockets, logs, kernel) is a host path and nothing needs mounting.
qemu_binary=("$sid/usr/lib64/ld-linux-x86-64.so.2" --library-path
    "$sid/usr/lib/x86_64-linux-gnu" "$sid/usr/bin/qemu-system-x86_64"
    -L "$sid/usr/share/qemu" -L "$sid/usr/share/seabios")
export QEMU_MODULE_DIR=$sid/usr/lib/x86_64-linux-gnu/qemu

rm -rf "$out/run" "$logs"
mkdir -p "$out" "$logs"

# ---------------------------------------------------------------------------------------
# The guest: testdev_guest.ko built against the guest kernel, and the initramfs.

build_guest() {
    local staging=$out/initramfs binary
    rm -rf "$out/module" "$staging"
    mkdir -p "$out/module"
    cp "$here/guest/testdev_guest.c" "$here/guest/Kbuild" "$out/module/"
    if ! make -s -C "/lib/modules/$release/build" M="$out/module" modules >"$logs/module-build.log" 2>&1; then
        say "building testdev_guest.ko against $release failed:"
        cat "$logs/module-build.log"
        return 1
    fi
    mkdir -p "$staging/bin" "$staging/lib/modules" "$staging/usr/bin"
    cp /bin/busybox "$staging/bin/busybox"
    ln -s busybox "$staging/bin/sh"
    cp "$here/guest/init" "$here/guest/cases.sh" "$here/guest/nvme_cases.sh" "$staging/"
    chmod 0755 "$staging/init"
    cp "$out/module/testdev_guest.ko" "$staging/lib/modules/"
    add_nvme_tools "$staging" || return 1
    # lspci and setpci from the host's pciutils, with the libraries they load.
    for binary in /usr/bin/lspci /usr/bin/setpci; do
        copy_binary "$staging" "$binary"
    done
    (cd "$staging" && find . | cpio -o -H newc --quiet | gzip -1) >"$out/initramfs.gz"
}

# copy_binary STAGING BINARY: BINARY and the libraries it loads, at their host paths.
copy_binary() {
    local library
    mkdir -p "$1$(dirname "$2")"
    cp "$2" "$1$2"
    for library in $(ldd "$2" | grep -oE '/[^ ]+'); do
        mkdir -p "$1$(dirname "$library")"
        cp -L "$library" "$1$library"
    done
}

# For the NVMe cases: the guest kernel's nvme driver and ext4 with every module they
# depend on (in load order, in lib/modules/nvme/order), and e2fsprogs' mke2fs.
add_nvme_tools() {
    local staging=$1 modules=$cache/kernel/root/lib/modules/$release seen=" " order=() module
    resolve_module() {
        local name=$1 file dependency
        [[ $seen == *" $name "* ]] && return 0
        seen+="$name "
        file=$(find "$modules/kernel" -name "$name.ko" -o -name "${name//_/-}.ko" \
            -o -name "${name//-/_}.ko" | head -n 1)
        [ -n "$file" ] || return 0 # built in
        for dependency in $(modinfo -F depends "$file" | tr ',' ' '); do
            resolve_module "$dependency"
        done
        order+=("$(basename "$file")")
        cp "$file" "$staging/lib/modules/nvme/"
    }
    mkdir -p "$staging/lib/modules/nvme" "$staging/etc"
    # crc32c and the T10 checksums are loaded by name through the crypto API, not linked.
    for module in crc32c_generic crct10dif_generic crc64_rocksoft_generic nvme ext4; do
        resolve_module "$module"
    done
    printf '%s\n' "${order[@]}" >"$staging/lib/modules/nvme/order"
    copy_binary "$staging" /sbin/mke2fs
    cp /etc/mke2fs.conf "$staging/etc/" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------
# The daemon, with its drop-in directory and sockets under build/interop/run.

daemon_pid=
run=$out/run

# INTEROP_ISOLATION: where the devices run, process (each in its device host, the default)
# or thread (on the daemon's workers); the guest must not see a difference.
isolation=${INTEROP_ISOLATION:-process}

start_daemon() {
    mkdir -p "$run/devices.d"
    printf 'default_isolation: %s\n' "$isolation" >"$run/vfio-userd.yaml"
    "$build/vfio-userd" -c "$run/vfio-userd.yaml" --devices-dir "$run/devices.d" \
        --runtime-dir "$run/rt" --plugin-dir "$build/plugins" --log-level debug \
        >"$logs/daemon.log" 2>&1 &
    daemon_pid=$!
}

stop_daemon() {
    [ -n "$daemon_pid" ] || return 0
    kill "$daemon_pid" 2>/dev/null
    wait "$daemon_pid" 2>/dev/null
    daemon_pid=
}

ctl() {
    "$build/vfio-userctl" -s "$run/rt/admin.sock" "$@"
}

# wait_for PATH SECONDS
wait_for() {
    local tries=0
    while [ ! -e "$1" ] && [ $tries -lt $(($2 * 10)) ]; do
        sleep 0.1
        tries=$((tries + 1))
    done
    [ -e "$1" ]
}

# add_devices N: drop-ins tdev0..tdevN-1 and their sockets.
add_devices() {
    local i
    for ((i = 0; i < $1; i++)); do
        [ -e "$run/devices.d/tdev$i.yaml" ] || printf 'plugin: testdev\n' >"$run/devices.d/tdev$i.yaml"
    done
    for ((i = 0; i < $1; i++)); do
        wait_for "$run/rt/devices/tdev$i.sock" 10 || {
            say "device socket tdev$i.sock did not appear; daemon log:"
            tail -n 20 "$logs/daemon.log"
            return 1
        }
    done
}

# ---------------------------------------------------------------------------------------
# QEMU.

qemu_pid=

# start_qemu LABEL MEMORY CASES DEVICES [NAME...]: DEVICES sockets tdev0.. (or the NAMEs)
# behind root ports, and one empty root port (hotplug) after them. QEMU_SMP CPUs (1).
start_qemu() {
    local label=$1 memory=$2 cases=$3 devices=$4 i args=() names=("${@:5}") smp=${QEMU_SMP:-1}
    for ((i = ${#names[@]}; i < devices; i++)); do
        names+=("tdev$i")
    done
    args+=(-machine q35 -accel tcg -smp "$smp" -m 512M -nodefaults -no-user-config -display none)
    if [ "$memory" = shared ]; then
        args+=(-object memory-backend-memfd,id=ram,size=512M,share=on -machine memory-backend=ram)
    fi
    args+=(-chardev "file,id=serial,path=$logs/$label.serial" -serial chardev:serial)
    args+=(-qmp "unix:$logs/$label.qmp,server=on,wait=off")
    args+=(-D "$logs/$label.trace" -trace 'vfio_user_*')
    args+=(-kernel "$kernel" -initrd "$out/initramfs.gz")
    args+=(-append "console=ttyS0 quiet iomem=relaxed panic=-1 vut.cases=$cases vut.memory=$memory vut.smp=$smp")
    for ((i = 0; i <= devices; i++)); do
        args+=(-device "pcie-root-port,id=port$i,chassis=$((i + 1)),bus=pcie.0")
    done
    for ((i = 0; i < devices; i++)); do
        args+=(-device "{\"driver\":\"vfio-user-pci\",\"id\":\"${names[i]}\",\"bus\":\"port$i\",\"socket\":{\"type\":\"unix\",\"path\":\"$run/rt/devices/${names[i]}.sock\"}}")
    done
    echo "${qemu_binary[*]} ${args[*]}" >"$logs/$label.cmdline"
    "${qemu_binary[@]}" "${args[@]}" >>"$logs/$label.qemu" 2>&1 &
    qemu_pid=$!
    # Watched with kill -0, not job control: a QEMU that aborts is reported by the case,
    # not by bash.
    disown "$qemu_pid"
}

# wait_serial LABEL TEXT: until TEXT shows on the console, QEMU exits, or time runs out.
wait_serial() {
    local deadline=$((SECONDS + boot_timeout))
    while [ $SECONDS -lt $deadline ]; do
        grep -qF -- "$2" "$logs/$1.serial" 2>/dev/null && return 0
        kill -0 "$qemu_pid" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}

# wait_qemu: QEMU exits by itself (the guest powers off), or is killed at the deadline.
wait_qemu() {
    local deadline=$((SECONDS + boot_timeout))
    while kill -0 "$qemu_pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
        if grep -qaF "Kernel panic" "$logs/$1.serial" 2>/dev/null; then
            echo "interop: the guest kernel panicked; QEMU killed" >>"$logs/$1.qemu"
            break
        fi
        sleep 0.2
    done
    if kill -0 "$qemu_pid" 2>/dev/null; then
        [ $SECONDS -lt $deadline ] ||
            echo "interop: the guest did not power off within ${boot_timeout}s; QEMU killed" >>"$logs/$1.qemu"
        kill -9 "$qemu_pid"
        while kill -0 "$qemu_pid" 2>/dev/null; do sleep 0.1; done
    fi
    qemu_pid=
}

qmp() {
    local label=$1 command=$2
    printf '{"execute":"qmp_capabilities"}\n%s\n' "$command" |
        socat -t 5 - "UNIX-CONNECT:$logs/$label.qmp" >>"$logs/$label.qmp-log" 2>&1
}

# decode_trace LABEL: QEMU's vfio_user_* trace with command numbers and flags spelled out,
# one line per message, in LABEL.vfio-user.
decode_trace() {
    awk '
    BEGIN {
        split("VERSION DMA_MAP DMA_UNMAP DEVICE_GET_INFO DEVICE_GET_REGION_INFO " \
              "DEVICE_GET_REGION_IO_FDS DEVICE_GET_IRQ_INFO DEVICE_SET_IRQS REGION_READ " \
              "REGION_WRITE DMA_READ DMA_WRITE DEVICE_RESET DIRTY_PAGES REGION_WRITE_MULTI " \
              "DEVICE_FEATURE MIG_DATA_READ MIG_DATA_WRITE", names, " ")
    }
    function hex(text,   value, i) {
        value = 0
        text = tolower(text); sub(/^0x/, "", text)
        for (i = 1; i <= length(text); i++)
            value = value * 16 + index("0123456789abcdef", substr(text, i, 1)) - 1
        return value
    }
    function bit(value, mask) { return int(value / mask) % 2 }
    function field(name,   i) {
        for (i = 1; i < NF; i++) if ($i == name) return $(i + 1)
        return ""
    }
    /^vfio_user_recv_hdr/ {
        command = hex(field("cmd")); flags = hex(field("flags"))
        kind = (flags % 16 == 1) ? "reply" : "request"
        if (bit(flags, 16)) kind = kind " no_reply"
        if (bit(flags, 32)) kind = kind " ERROR"
        printf "server -> qemu  id %-6s %-24s %-16s %d bytes\n", field("id"),
            (command in names) ? names[command] : "command " command, kind, hex(field("size"))
        next
    }
    /^vfio_user_send_write/ {
        printf "qemu -> server  id %-6s %d bytes\n", field("id"), hex(field("wrote")); next
    }
    /^vfio_user_/ { sub(/^vfio_user_/, "                ") ; print; next }
    ' "$logs/$1.trace" >"$logs/$1.vfio-user" 2>/dev/null
}

# ---------------------------------------------------------------------------------------
# Results: every case named for a boot must report from the guest.

passed=0
failed=0
skipped=0

# Cases QEMU itself cannot finish today: CASE, then what QEMU prints when it fails. Such a
# case is run all the same and counted as skipped while QEMU fails that way; it passes
# once QEMU is fixed, and the daemon must survive the client's crash either way.
known_qemu_failures=(
    "unplug" "memory_region_del_subregion: Assertion"
)

# known_failure LABEL CASE: what QEMU printed, if it failed the way it is known to.
known_failure() {
    local i
    for ((i = 0; i < ${#known_qemu_failures[@]}; i += 2)); do
        [ "${known_qemu_failures[i]}" = "$2" ] || continue
        grep -m1 -F -- "${known_qemu_failures[i + 1]}" "$logs/$1.qemu" 2>/dev/null && return 0
    done
    return 1
}

# report LABEL CASES: one line per case, from the guest's "VUT case" lines.
report() {
    local label=$1 name line verdict rest shown=
    decode_trace "$label"
    for name in ${2//,/ }; do
        line=$(grep -aE "^VUT case $name (pass|fail)" "$logs/$label.serial" 2>/dev/null | tail -n 1)
        verdict=$(echo "$line" | cut -d' ' -f4)
        rest=$(echo "$line" | cut -d' ' -f5-)
        if [ "$verdict" = pass ]; then
            printf 'PASS %-10s %-16s %6ss\n' "$name" "[$label]" "$rest"
            passed=$((passed + 1))
        elif [ -z "$line" ] && rest=$(known_failure "$label" "$name"); then
            printf 'SKIP %-10s %-16s a known QEMU bug: %s\n' "$name" "[$label]" "${rest#*: }"
            skipped=$((skipped + 1))
        else
            failed=$((failed + 1))
            if [ -n "$line" ]; then
                printf 'FAIL %-10s %-16s %s\n' "$name" "[$label]" "$rest"
                # The case's failed checks and the guest kernel's last words, printed by
                # the guest just before its verdict.
                awk -v name="$name" '/^VUT case / { if ($3 == name) { printf "%s", block }; block = ""; next }
                    /^VUT (check failed|dmesg)/ { block = block "     " $0 "\n" }' "$logs/$label.serial"
            else
                printf 'FAIL %-10s %-16s no result from the guest\n' "$name" "[$label]"
            fi
            # Where the boot itself went wrong, once: QEMU's error and the end of the console.
            [ -z "$shown" ] || continue
            shown=1
            if [ -z "$line" ]; then
                sed 's/^/     qemu: /' "$logs/$label.qemu" 2>/dev/null | tail -n 10
                grep -av '^VUT lspci' "$logs/$label.serial" 2>/dev/null | tail -n 10 | sed 's/^/     guest: /'
            fi
            printf '     logs: %s/%s.{serial,qemu,vfio-user} and %s/daemon.log\n' "$logs" "$label" "$logs"
        fi
    done
}

# boot LABEL MEMORY CASES DEVICES: start a guest, wait for it to power off, report.
boot() {
    local started=$SECONDS
    add_devices "$4" || { report "$1" "$3"; return; }
    start_qemu "$@"
    wait_qemu "$1"
    say "boot $1 ($2 guest memory, $4 device(s)): $((SECONDS - started)) s"
    report "$1" "$3"
}

boot_shared() {
    boot shared shared lspci,bar0,bar2,dma,msix,msi,intx 1
}

boot_private() {
    boot private private bar0,bar2,dma,msix 1
}

boot_eight() {
    boot eight shared eight 8
}

boot_reboot() {
    boot reboot shared reboot 1
}

# QEMU is killed with SIGKILL mid-run; a second QEMU on the same socket must get the device.
boot_reconnect() {
    add_devices 1 || { report kill bar0; return; }
    start_qemu kill shared bar0,hold 1
    wait_serial kill "VUT waiting kill"
    kill -9 "$qemu_pid" 2>/dev/null
    while kill -0 "$qemu_pid" 2>/dev/null; do sleep 0.1; done
    qemu_pid=
    report kill bar0
    start_qemu reconnect shared reconnect 1
    wait_qemu reconnect
    report reconnect reconnect
}

# A device added with vfio-userctl while the guest runs, then plugged in with device_add.
boot_hotplug() {
    local socket=$run/rt/devices/tdevhp.sock
    start_qemu hotplug shared hotplug,unplug 0
    if wait_serial hotplug "VUT waiting hotplug"; then
        ctl add tdevhp --plugin testdev >>"$logs/hotplug.qmp-log" 2>&1 && wait_for "$socket" 10 &&
            qmp hotplug "{\"execute\":\"device_add\",\"arguments\":{\"driver\":\"vfio-user-pci\",\"id\":\"tdevhp\",\"bus\":\"port0\",\"socket\":{\"type\":\"unix\",\"path\":\"$socket\"}}}"
    fi
    if wait_serial hotplug "VUT waiting unplug"; then
        qmp hotplug '{"execute":"device_del","arguments":{"id":"tdevhp"}}'
    fi
    wait_qemu hotplug
    report hotplug hotplug,unplug
    # The daemon lets the device go as it took it: on an admin call, socket and all.
    if ctl remove tdevhp >>"$logs/hotplug.qmp-log" 2>&1 && [ ! -e "$socket" ]; then
        printf 'PASS %-10s %-16s\n' remove "[hotplug]"
        passed=$((passed + 1))
    else
        printf 'FAIL %-10s %-16s vfio-userctl remove tdevhp failed or left %s\n' remove "[hotplug]" "$socket"
        failed=$((failed + 1))
    fi
}

# The NVMe controller (plugins/nvme) under the guest's own nvme driver: 4 I/O queues, two
# namespaces backed by files. A first QEMU (shared memory, 4 CPUs, shadow doorbells) makes
# ext4 on both, writes files, and reboots the guest once, which finds them; a second
# (private memory: every DMA a message, BAR0 doorbells, 2 CPUs) finds them and adds more.
# After each, the host reads every file back from the images with debugfs.
# INTEROP_NVME_DOORBELLS: the device's doorbells parameter (trapped, the default, or mapped).
add_nvme_device() {
    local socket=$run/rt/devices/nvme0.sock
    [ -e "$run/devices.d/nvme0.yaml" ] || cat >"$run/devices.d/nvme0.yaml" <<EOF
plugin: nvme
params:
  serial: VUTNVME0
  io_queues: 4
  doorbells: ${INTEROP_NVME_DOORBELLS:-trapped}
  namespaces:
    - path: $run/nvme0-a.img
      size: 64M
    - path: $run/nvme0-b.img
      size: 32M
      block_size: 4096
EOF
    wait_for "$socket" 10 || {
        say "device socket nvme0.sock did not appear; daemon log:"
        tail -n 20 "$logs/daemon.log"
        return 1
    }
}

# check_nvme_data LABEL: each "VUT sum NS FILE SHA256" the guest printed, against the file
# as debugfs reads it from the namespace's image.
check_nvme_data() {
    local label=$1 ns name sum image actual bad= count=0
    while read -r _ _ ns name sum; do
        image=$run/nvme0-$ns.img
        actual=$(/usr/sbin/debugfs -R "cat /$name" "$image" 2>/dev/null | sha256sum | cut -d' ' -f1)
        count=$((count + 1))
        [ "$actual" = "$sum" ] || bad="$bad $ns:$name"
    done < <(grep -aE '^VUT sum [ab] ' "$logs/$label.serial" 2>/dev/null | tr -d '\r')
    if [ "$count" -gt 0 ] && [ -z "$bad" ]; then
        printf 'PASS %-10s %-16s %s files found in the images\n' hostdata "[$label]" "$count"
        passed=$((passed + 1))
    else
        printf 'FAIL %-10s %-16s %s files checked; differ in the images:%s\n' hostdata "[$label]" \
            "$count" "${bad:- (none reported)}"
        failed=$((failed + 1))
    fi
}

# check_nvme_dbbuf LABEL SINCE: the guest's driver turned shadow doorbells on (the device
# logs each Doorbell Buffer Config it takes) in the daemon log's lines after SINCE.
check_nvme_dbbuf() {
    local count
    count=$(tail -n +"$(($2 + 1))" "$logs/daemon.log" | grep -c "shadow doorbells on")
    if [ "$count" -gt 0 ]; then
        printf 'PASS %-10s %-16s Doorbell Buffer Config taken %s time(s)\n' dbbuf "[$1]" "$count"
        passed=$((passed + 1))
    else
        printf 'FAIL %-10s %-16s the driver never configured shadow doorbells\n' dbbuf "[$1]"
        failed=$((failed + 1))
    fi
}

# check_nvme_reboot LABEL: after a guest reboot the cases ran twice and report reads the
# last verdicts; the guest must have passed each case before the reboot as well.
check_nvme_reboot() {
    local before
    before=$(sed -n '1,/^VUT waiting nvreboot/p' "$logs/$1.serial" 2>/dev/null | tr -d '\r' |
        grep -aE '^VUT case [a-z0-9]+ (pass|fail)')
    if grep -q 'VUT waiting nvreboot' "$logs/$1.serial" 2>/dev/null &&
        ! echo "$before" | grep -q ' fail '; then
        printf 'PASS %-10s %-16s %s case(s) passed before the guest rebooted\n' firstboot "[$1]" \
            "$(echo "$before" | grep -c ' pass ')"
        passed=$((passed + 1))
    else
        printf 'FAIL %-10s %-16s before the reboot: %s\n' firstboot "[$1]" \
            "$(echo "$before" | grep ' fail ' | head -n 1)"
        failed=$((failed + 1))
    fi
}

boot_nvme() {
    local started lines
    add_nvme_device || { report nvme nvme,ext4,nvreboot; return; }
    started=$SECONDS
    lines=$(wc -l <"$logs/daemon.log")
    # nvreboot reboots the guest within this QEMU; the cases before it run again after.
    QEMU_SMP=4 start_qemu nvme shared nvme,ext4,nvreboot 1 nvme0
    wait_qemu nvme
    say "boot nvme (shared guest memory, 4 CPUs, one guest reboot): $((SECONDS - started)) s"
    report nvme nvme,ext4,nvreboot
    check_nvme_reboot nvme
    check_nvme_dbbuf nvme "$lines"
    check_nvme_data nvme
    started=$SECONDS
    QEMU_SMP=2 start_qemu nvme-private private nvme,ext4keep 1 nvme0
    wait_qemu nvme-private
    say "boot nvme-private (private guest memory, 2 CPUs): $((SECONDS - started)) s"
    report nvme-private nvme,ext4keep
    check_nvme_data nvme-private
}

boots=("$@")
[ ${#boots[@]} -gt 0 ] || boots=(shared private reboot reconnect eight hotplug nvme)

say "building the guest (testdev_guest.ko for $release, initramfs)"
build_guest || exit 1
start_daemon
trap 'stop_daemon; [ -z "$qemu_pid" ] || kill -9 "$qemu_pid" 2>/dev/null' EXIT
say "$("${qemu_binary[@]}" --version | head -n 1); guests run under TCG; devices in $isolation isolation"
for name in "${boots[@]}"; do
    "boot_$name"
done
# The daemon served every boot and stops cleanly: SIGTERM, exit status 0 (under
# SANITIZE=1 that also means no leak and no error report).
if kill -0 "$daemon_pid" 2>/dev/null; then
    kill "$daemon_pid"
    wait "$daemon_pid"
    status=$?
    daemon_pid=
else
    status=died
fi
if [ "$status" = 0 ]; then
    printf 'PASS %-10s %-16s\n' daemon "[stop]"
    passed=$((passed + 1))
else
    printf 'FAIL %-10s %-16s exit status %s; see %s/daemon.log\n' daemon "[stop]" "$status" "$logs"
    tail -n 20 "$logs/daemon.log" | sed 's/^/     /'
    failed=$((failed + 1))
fi
if [ "$skipped" -gt 0 ]; then
    echo "interop: $passed passed, $failed failed, $skipped skipped"
else
    echo "interop: $passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
