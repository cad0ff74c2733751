# The interop suite's guest cases, sourced by /init. Each case_NAME function checks one
# thing a guest does with testdev through QEMU's vfio-user-pci; check and fail record what
# went wrong, and run_case turns that into the one line the host reads. Register offsets
# and expected values are those of vfio-userd-testdev(7).

TESTDEV_VENDOR=0x1234
TESTDEV_DEVICE=0x7464

# BAR0 registers.
MAGIC=0x000
VERSION=0x004
FEATURES=0x008
RESET=0x00c
SCRATCH0=0x010
SCRATCH1=0x014
SCRATCH2=0x018
SCRATCH3=0x01c
SCRATCH64=0x020
RAM_SIZE=0x028
RAM_TRAP_READS=0x030
RAM_TRAP_WRITES=0x034
MSIX_VECTORS=0x038
MSI_VECTORS=0x03c
DOORBELL=0x040
INT_STATUS=0x044
INT_COUNT=0x04c
INT_LAST_ERROR=0x054
INT_FAIL_COUNT=0x058
DMA_SOURCE=0x080
DMA_DESTINATION=0x088
DMA_LENGTH=0x090
DMA_PATTERN=0x094
DMA_OPERATION=0x098
DMA_CONTROL=0x09c
DMA_STATUS=0x0a0
DMA_CHECKSUM=0x0a4
DMA_ERRNO=0x0a8
DMA_DONE_COUNT=0x0b0
DMA_ERROR_COUNT=0x0b4
MESSAGE_COUNT_VERSION=0x208
MESSAGE_COUNT_REGION_READ=0x248
MESSAGE_COUNT_DEVICE_RESET=0x268

case_failure=""

fail() {
    echo "VUT check failed: $*"
    [ -n "$case_failure" ] || case_failure="$*"
}

# check WHAT EXPECTED ACTUAL: numbers compare by value, so 0x0A equals 0xa.
check() {
    local expected actual
    expected=$(printf '0x%x' "$2" 2>/dev/null) || expected=$2
    actual=$(printf '0x%x' "$3" 2>/dev/null) || actual=$3
    [ "$expected" = "$actual" ] || fail "$1: expected $expected, got $actual"
}

check_text() {
    [ "$2" = "$3" ] || fail "$1: expected '$2', got '$3'"
}

# check_match WHAT TEXT PATTERN: an extended regular expression that must match a line.
check_match() {
    echo "$2" | grep -qE -- "$3" || fail "$1: no line matches '$3'"
}

uptime_centiseconds() {
    local seconds fraction
    seconds=$(cut -d' ' -f1 /proc/uptime)
    fraction=${seconds#*.}
    echo $((${seconds%.*} * 100 + ${fraction#0}))
}

run_case() {
    local start elapsed
    case_failure=""
    start=$(uptime_centiseconds)
    "case_$1"
    elapsed=$(($(uptime_centiseconds) - start))
    elapsed=$(printf '%d.%02d' $((elapsed / 100)) $((elapsed % 100)))
    if [ -z "$case_failure" ]; then
        echo "VUT case $1 pass $elapsed"
    else
        dmesg | tail -n 12 | sed 's/^/VUT dmesg: /'
        echo "VUT case $1 fail $elapsed: $case_failure"
    fi
}

# ---------------------------------------------------------------------------------------
# Finding and driving the devices.

testdev_devices() {
    local d
    for d in /sys/bus/pci/devices/*; do
        [ "$(cat "$d/vendor")" = $TESTDEV_VENDOR ] && [ "$(cat "$d/device")" = $TESTDEV_DEVICE ] &&
            echo "${d##*/}"
    done
}

# select_device BDF: the register helpers below act on this device.
select_device() {
    dev=$1
    bar0=$(sed -n 1p "/sys/bus/pci/devices/$dev/resource" | cut -d' ' -f1)
    bar2=$(sed -n 3p "/sys/bus/pci/devices/$dev/resource" | cut -d' ' -f1)
    bar4=$(sed -n 5p "/sys/bus/pci/devices/$dev/resource" | cut -d' ' -f1)
}

select_first_device() {
    local first
    first=$(testdev_devices | head -n 1)
    if [ -z "$first" ]; then
        fail "no testdev ($TESTDEV_VENDOR:$TESTDEV_DEVICE) on the guest's PCI bus"
        return 1
    fi
    select_device "$first"
}

reg() { devmem $((bar0 + $1)) "${2:-32}"; }
reg_write() { devmem $((bar0 + $1)) "${3:-32}" "$2"; }

# Memory decoding and Bus Master, as a driver would leave them.
enable_device() {
    setpci -s "$dev" COMMAND=0006:0006
}

# load_driver MODE: testdev_guest bound to every testdev with MODE interrupts.
load_driver() {
    if [ "$(cat /sys/module/testdev_guest/parameters/irq_mode 2>/dev/null)" != "$1" ]; then
        rmmod testdev_guest 2>/dev/null
        insmod /lib/modules/testdev_guest.ko irq_mode="$1" || fail "insmod testdev_guest irq_mode=$1"
    fi
}

irq_count() {
    cut -d' ' -f$(($2 + 1)) "/sys/bus/pci/devices/$1/irq_counts"
}

# wait_irq BDF VECTOR COUNT: the guest handler of VECTOR ran COUNT times, within 5 s.
wait_irq() {
    local tries=0
    while [ "$(irq_count "$1" "$2")" -lt "$3" ] && [ $tries -lt 50 ]; do
        sleep 0.1
        tries=$((tries + 1))
    done
    check "$1 vector $2 handler runs" "$3" "$(irq_count "$1" "$2")"
}

# ---------------------------------------------------------------------------------------
# Cases.

# Identity, BARs and capabilities as lspci decodes them from the guest's config space.
case_lspci() {
    local out
    select_first_device || return
    out=$(lspci -nn -vv -s "$dev")
    echo "$out" | sed 's/^/VUT lspci: /'
    check_match "IDs and class" "$out" "^${dev#0000:} .*\[ff00\]: .*\[1234:7464\] \(rev 01\)"
    check_match "subsystem" "$out" "Subsystem: .*\[1234:0001\]"
    check_match "INTx pin" "$out" "Interrupt: pin A"
    check_match "BAR0" "$out" "Region 0: Memory at [0-9a-f]+ \(32-bit, non-prefetchable\) \[size=4K\]"
    check_match "BAR2" "$out" "Region 2: Memory at [0-9a-f]+ \(64-bit, prefetchable\) \[size=1M\]"
    check_match "BAR4" "$out" "Region 4: Memory at [0-9a-f]+ \(32-bit, non-prefetchable\)"
    check_match "PM" "$out" "Capabilities: \[[0-9a-f]+\] Power Management"
    check_match "MSI" "$out" "Capabilities: \[[0-9a-f]+\] MSI: Enable. Count=./4 Maskable\+ 64bit\+"
    check_match "MSI-X" "$out" "Capabilities: \[[0-9a-f]+\] MSI-X: Enable. Count=16"
    check_match "MSI-X table" "$out" "Vector table: BAR=4"
    check_match "Express" "$out" "Capabilities: \[[0-9a-f]+\] Express \(v[12]\) Endpoint"
    check_match "vendor-specific" "$out" "Capabilities: \[[0-9a-f]+\] Vendor Specific Information: Len=0b"
    [ "$(lspci -n -d 1234:7464 | wc -l)" -ge 1 ] || fail "lspci -d 1234:7464 finds nothing"
}

# BAR0: identity, scratch registers, access widths, reserved offsets, RESET.
case_bar0() {
    local reads_before reads_after
    select_first_device || return
    enable_device
    check "MAGIC" 0x54444556 "$(reg $MAGIC)"
    check "VERSION" 0x00010000 "$(reg $VERSION)"
    check "FEATURES" 0x1f "$(reg $FEATURES)"
    check "RAM_SIZE" 0x100000 "$(reg $RAM_SIZE 64)"
    check "MSIX_VECTORS" 16 "$(reg $MSIX_VECTORS)"
    check "MSI_VECTORS" 4 "$(reg $MSI_VECTORS)"
    reg_write $SCRATCH0 0x11111111
    reg_write $SCRATCH1 0x22222222
    reg_write $SCRATCH2 0x33333333
    reg_write $SCRATCH3 0x44444444
    check "SCRATCH0" 0x11111111 "$(reg $SCRATCH0)"
    check "SCRATCH1" 0x22222222 "$(reg $SCRATCH1)"
    check "SCRATCH2" 0x33333333 "$(reg $SCRATCH2)"
    check "SCRATCH3" 0x44444444 "$(reg $SCRATCH3)"
    reg_write $SCRATCH64 0x0123456789abcdef 64
    check "SCRATCH64 as 64 bits" 0x0123456789abcdef "$(reg $SCRATCH64 64)"
    check "SCRATCH64 low half" 0x89abcdef "$(reg $SCRATCH64)"
    check "SCRATCH64 high half" 0x01234567 "$(reg $((SCRATCH64 + 4)))"
    # A 1- or 2-byte write replaces those bytes of the register.
    reg_write $((SCRATCH0 + 1)) 0xaa 8
    check "1-byte write" 0x1111aa11 "$(reg $SCRATCH0)"
    reg_write $((SCRATCH0 + 2)) 0xbeef 16
    check "2-byte write" 0xbeefaa11 "$(reg $SCRATCH0)"
    check "1-byte read" 0xef "$(reg $((SCRATCH0 + 2)) 8)"
    check "2-byte read" 0xaa11 "$(reg $SCRATCH0 16)"
    # Read-only and reserved offsets.
    reg_write $MAGIC 0
    check "MAGIC after a write" 0x54444556 "$(reg $MAGIC)"
    check "reserved 0x100" 0 "$(reg 0x100)"
    reg_write 0x100 0xffffffff
    check "reserved 0x100 after a write" 0 "$(reg 0x100)"
    # Every read is one REGION_READ: the counter itself shows it.
    reads_before=$(reg $MESSAGE_COUNT_REGION_READ)
    reg $MAGIC >/dev/null
    reg $MAGIC >/dev/null
    reads_after=$(reg $MESSAGE_COUNT_REGION_READ)
    check "REGION_READ count over two reads" $((reads_before + 3)) "$reads_after"
    reg_write $RESET 1
    check "SCRATCH0 after RESET" 0 "$(reg $SCRATCH0)"
    check "SCRATCH64 after RESET" 0 "$(reg $SCRATCH64 64)"
    check "MAGIC after RESET" 0x54444556 "$(reg $MAGIC)"
}

# BAR2: page 0 is trapped (each access is counted by the device), the rest is mapped
# (accesses never reach the device, and the memory keeps what was written).
case_bar2() {
    local trap_reads trap_writes
    select_first_device || return
    enable_device
    trap_reads=$(reg $RAM_TRAP_READS)
    trap_writes=$(reg $RAM_TRAP_WRITES)
    devmem $((bar2 + 0x10)) 32 0xcafef00d
    devmem $((bar2 + 0xffc)) 32 0x600df00d
    check "page 0 readback" 0xcafef00d "$(devmem $((bar2 + 0x10)) 32)"
    check "page 0 last word" 0x600df00d "$(devmem $((bar2 + 0xffc)) 32)"
    check "RAM_TRAP_WRITES" $((trap_writes + 2)) "$(reg $RAM_TRAP_WRITES)"
    check "RAM_TRAP_READS" $((trap_reads + 2)) "$(reg $RAM_TRAP_READS)"
    trap_reads=$(reg $RAM_TRAP_READS)
    trap_writes=$(reg $RAM_TRAP_WRITES)
    devmem $((bar2 + 0x1000)) 32 0x12345678
    devmem $((bar2 + 0xffff8)) 64 0x1122334455667788
    check "mapped page readback" 0x12345678 "$(devmem $((bar2 + 0x1000)) 32)"
    check "mapped last word" 0x1122334455667788 "$(devmem $((bar2 + 0xffff8)) 64)"
    check "RAM_TRAP_WRITES after mapped accesses" "$trap_writes" "$(reg $RAM_TRAP_WRITES)"
    check "RAM_TRAP_READS after mapped accesses" "$trap_reads" "$(reg $RAM_TRAP_READS)"
}

# wait_dma: DMA_STATUS once it leaves BUSY (state 1), within 10 s.
wait_dma() {
    local status tries=0
    status=$(reg $DMA_STATUS)
    while [ $((status & 0xf)) -eq 1 ] && [ $tries -lt 100 ]; do
        sleep 0.1
        tries=$((tries + 1))
        status=$(reg $DMA_STATUS)
    done
    echo "$status"
}

# dma OPERATION SOURCE DESTINATION LENGTH [PATTERN [CONTROL]]: start one operation and
# print DMA_STATUS once it has ended.
dma() {
    reg_write $DMA_SOURCE "$2" 64
    reg_write $DMA_DESTINATION "$3" 64
    reg_write $DMA_LENGTH "$4"
    reg_write $DMA_PATTERN "${5:-0}"
    reg_write $DMA_OPERATION "$1"
    reg_write $DMA_CONTROL "${6:-1}"
    wait_dma
}

# buffer_bytes OFFSET COUNT: hex bytes of the driver's DMA buffer.
buffer_bytes() {
    dd if="/sys/bus/pci/devices/$dev/dma_buffer" bs=1 skip="$1" count="$2" 2>/dev/null |
        od -An -tx1 | tr -d ' \n'
}

# buffer_crc OFFSET LENGTH: CRC-32 of part of the buffer, computed by the guest.
buffer_crc() {
    dd if="/sys/bus/pci/devices/$dev/dma_buffer" bs=4096 skip=$(($1 / 4096)) \
        count=$(($2 / 4096)) 2>/dev/null | crc32
}

# The DMA engine against guest memory: FILL, COPY and CHECKSUM, their completion interrupt,
# and the error codes. vut.memory=shared (QEMU hands guest RAM over as fds: no messages)
# or private (every transfer goes through DMA_READ/DMA_WRITE messages).
case_dma() {
    local buffer status messages_bit done_count errors vectors_before
    select_first_device || return
    load_driver msix
    buffer=$(cat "/sys/bus/pci/devices/$dev/dma_address")
    buffer=$(printf '%d' "$buffer")
    case "$(sed -n 's/.*vut\.memory=\([a-z]*\).*/\1/p' /proc/cmdline)" in
    private) messages_bit=0x20 ;;
    *) messages_bit=0 ;;
    esac
    done_count=$(reg $DMA_DONE_COUNT)

    # FILL 1 MiB: the largest length, so message-based DMA goes out in chunks.
    status=$(dma 1 0 $buffer 0x100000 0x11223344)
    check "FILL status" $((0x2 | messages_bit)) "$status"
    check "FILL first bytes" "4433221144332211" "$(buffer_bytes 0 8)"
    check "FILL last bytes" "44332211" "$(buffer_bytes $((0x100000 - 4)) 4)"
    check "byte after FILL untouched" "00" "$(buffer_bytes $((0x100000)) 1)"
    check "DMA_DONE_COUNT" $((done_count + 1)) "$(reg $DMA_DONE_COUNT)"

    # CHECKSUM of "123456789", then of the filled MiB against the guest's own CRC.
    printf 123456789 | dd of="/sys/bus/pci/devices/$dev/dma_buffer" bs=9 count=1 conv=notrunc 2>/dev/null
    status=$(dma 2 $buffer 0 9)
    check "CHECKSUM status" $((0x2 | messages_bit)) "$status"
    check "CRC-32 of 123456789" 0xcbf43926 "$(reg $DMA_CHECKSUM)"
    dd if=/dev/urandom of="/sys/bus/pci/devices/$dev/dma_buffer" bs=4096 count=256 2>/dev/null
    status=$(dma 2 $buffer 0 0x100000)
    check "CHECKSUM of 1 MiB status" $((0x2 | messages_bit)) "$status"
    check "CRC-32 of 1 MiB of random data" "0x$(buffer_crc 0 0x100000)" "$(reg $DMA_CHECKSUM)"

    # COPY the random MiB to the second half of the buffer.
    status=$(dma 0 $buffer $((buffer + 0x100000)) 0x100000)
    check "COPY status" $((0x2 | messages_bit)) "$status"
    check "COPY result" "$(buffer_crc 0 0x100000)" "$(buffer_crc 0x100000 0x100000)"

    # Completion interrupt on vector 1.
    vectors_before=$(irq_count "$dev" 1)
    status=$(dma 1 0 $buffer 4096 0 $((1 << 16 | 0x2 | 0x1)))
    check "FILL with IRQ_ENABLE status" $((0x2 | messages_bit)) "$status"
    wait_irq "$dev" 1 $((vectors_before + 1))

    # Error codes: STATE 3 (ERROR), the code in bits 15:8, DMA_ERRNO.
    errors=$(reg $DMA_ERROR_COUNT)
    check "OPERATION error" 0x103 "$(dma 7 $buffer $buffer 16)"
    check "OPERATION errno" 22 "$(reg $DMA_ERRNO)"
    check "LENGTH error" 0x203 "$(dma 1 0 $buffer 0)"
    check "LENGTH above DMA_MAX_LENGTH" 0x203 "$(dma 1 0 $buffer 0x100001)"
    check "WRAP error" 0x303 "$(dma 1 0 0xfffffffffffff000 0x2000)"
    check "WRAP errno" 75 "$(reg $DMA_ERRNO)"
    check "UNMAPPED error" 0x403 "$(dma 1 0 0x7f0000000000 4096)"
    check "UNMAPPED errno" 14 "$(reg $DMA_ERRNO)"
    setpci -s "$dev" COMMAND=0000:0004
    check "BUS_MASTER error" 0x803 "$(dma 1 0 $buffer 16)"
    check "BUS_MASTER errno" 1 "$(reg $DMA_ERRNO)"
    setpci -s "$dev" COMMAND=0004:0004
    check "DMA_ERROR_COUNT" $((errors + 6)) "$(reg $DMA_ERROR_COUNT)"
}

# raise_and_wait VECTOR: ring the doorbell and wait for the driver's handler.
raise_and_wait() {
    local before
    before=$(irq_count "$dev" "$1")
    reg_write $DOORBELL "$1"
    wait_irq "$dev" "$1" $((before + 1))
}

# Doorbells on several vectors reach testdev_guest's handler in MODE.
interrupts_case() {
    local mode=$1 vectors=$2 failures vector
    select_first_device || return
    load_driver "$mode"
    check_text "interrupt type the driver enabled" "$mode" "$(cat "/sys/bus/pci/devices/$dev/irq_mode")"
    failures=$(reg $INT_FAIL_COUNT)
    for vector in $vectors; do
        raise_and_wait "$vector"
        raise_and_wait "$vector"
    done
    check "INT_FAIL_COUNT" "$failures" "$(reg $INT_FAIL_COUNT)"
    check "INT_LAST_ERROR" 0 "$(reg $INT_LAST_ERROR)"
}

case_msix() {
    local pba_offset
    interrupts_case msix "0 1 2 3 7"
    # The PBA, read through QEMU from the device, shows nothing pending.
    pba_offset=$(lspci -vv -s "$dev" | sed -n 's/.*PBA: BAR=4 offset=\([0-9a-f]*\).*/\1/p')
    check "PBA" 0 "$(devmem $((bar4 + 0x$pba_offset)) 32)"
}

case_msi() {
    interrupts_case msi "0"
}

# INTx, and PCI's Interrupt Disable: while Command bit 10 is set a doorbell sets Status
# bit 3 without interrupting; clearing bit 10 delivers it.
case_intx() {
    local before failures
    interrupts_case intx "0"
    before=$(irq_count "$dev" 0)
    failures=$(reg $INT_FAIL_COUNT)
    setpci -s "$dev" COMMAND=0400:0400
    reg_write $DOORBELL 0
    sleep 0.5
    check "handler runs while Interrupt Disable is set" "$before" "$(irq_count "$dev" 0)"
    check "Status.InterruptStatus" 0x8 "$((0x$(setpci -s "$dev" STATUS) & 0x8))"
    check "INT_FAIL_COUNT with Interrupt Disable set" "$failures" "$(reg $INT_FAIL_COUNT)"
    setpci -s "$dev" COMMAND=0000:0400
    wait_irq "$dev" 0 $((before + 1))
}

# Eight devices in one guest: each is itself (its own scratch registers) and interrupts.
case_eight() {
    local count=0 index=0 d
    load_driver msix
    for d in $(testdev_devices); do count=$((count + 1)); done
    check "testdev devices" 8 "$count"
    for d in $(testdev_devices); do
        select_device "$d"
        check "$d MAGIC" 0x54444556 "$(reg $MAGIC)"
        reg_write $SCRATCH0 $((0x5000 + index))
        index=$((index + 1))
    done
    index=0
    for d in $(testdev_devices); do
        select_device "$d"
        check "$d SCRATCH0" $((0x5000 + index)) "$(reg $SCRATCH0)"
        raise_and_wait 0
        index=$((index + 1))
    done
}

# A guest reboot: QEMU resets the device (DEVICE_RESET), BAR2 RAM survives it, and the
# device works after. The first boot leaves marks and reboots; the second checks them.
REBOOT_MARK=0xb007b007
case_reboot() {
    select_first_device || return
    enable_device
    if [ "$(printf '0x%x' "$(devmem $((bar2 + 0x2000)) 32)")" != $REBOOT_MARK ]; then
        reg_write $SCRATCH0 0x5ca1ab1e
        devmem $((bar2 + 0x2004)) 32 "$(reg $MESSAGE_COUNT_DEVICE_RESET)"
        devmem $((bar2 + 0x2000)) 32 $REBOOT_MARK
        echo "VUT waiting reboot"
        reboot -f
        sleep 60
    fi
    devmem $((bar2 + 0x2000)) 32 0
    check "SCRATCH0 after the reboot's reset" 0 "$(reg $SCRATCH0)"
    [ $(($(reg $MESSAGE_COUNT_DEVICE_RESET))) -gt $(($(devmem $((bar2 + 0x2004)) 32))) ] ||
        fail "no DEVICE_RESET counted across the reboot"
    check "MAGIC" 0x54444556 "$(reg $MAGIC)"
    interrupts_case msix "0 1"
}

# Not a case of its own: leaves marks for case_reconnect, then waits for the host to kill
# QEMU with SIGKILL once it sees "waiting kill".
case_hold() {
    select_first_device || return
    enable_device
    devmem $((bar2 + 0x3000)) 32 0xdeadbeef
    devmem $((bar2 + 0x3004)) 32 "$(reg $MESSAGE_COUNT_VERSION)"
    echo "VUT waiting kill"
    while :; do sleep 1; done
}

# After the killed QEMU, a new QEMU on the same socket gets the same device.
case_reconnect() {
    select_first_device || return
    enable_device
    check "BAR2 written by the killed QEMU's guest" 0xdeadbeef "$(devmem $((bar2 + 0x3000)) 32)"
    check "VERSION requests: one more connection" $(($(devmem $((bar2 + 0x3004)) 32) + 1)) \
        "$(reg $MESSAGE_COUNT_VERSION)"
    interrupts_case msix "0 1"
}

# Hotplug: the host adds a device with vfio-userctl and plugs it in with QMP device_add.
case_hotplug() {
    local tries=0
    load_driver msix
    [ -z "$(testdev_devices)" ] || fail "a testdev is present before the hotplug"
    echo "VUT waiting hotplug"
    while [ -z "$(testdev_devices)" ] && [ $tries -lt 600 ]; do
        sleep 0.1
        tries=$((tries + 1))
    done
    select_first_device || return
    tries=0
    while [ ! -e "/sys/bus/pci/devices/$dev/irq_counts" ] && [ $tries -lt 100 ]; do
        sleep 0.1
        tries=$((tries + 1))
    done
    check "MAGIC" 0x54444556 "$(reg $MAGIC)"
    interrupts_case msix "0 1"
}

# Hot-unplug: the host unplugs the device with QMP device_del once it sees "waiting
# unplug", and removes it from the daemon with vfio-userctl once QEMU let it go.
case_unplug() {
    local tries=0
    select_first_device || return
    echo "VUT waiting unplug"
    while [ -e "/sys/bus/pci/devices/$dev" ] && [ $tries -lt 300 ]; do
        sleep 0.1
        tries=$((tries + 1))
    done
    [ ! -e "/sys/bus/pci/devices/$dev" ] || fail "$dev still present 30 s after device_del"
    [ -z "$(testdev_devices)" ] || fail "a testdev is still on the bus"
}

# The NVMe controller's cases.
. /nvme_cases.sh
