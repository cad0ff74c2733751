#!/bin/bash
# The real-systemd test (`make systemd-test`): boots a Debian 12 system with systemd as
# PID 1 in a container (systemd-nspawn --boot), installs the packages `make deb` built,
# and runs checks.sh in it as a service: install, enable --now, READY=1 and STATUS=,
# drop-ins, add --persist under the sandbox, reload, the journal, a crash, stop, socket
# activation, systemd-analyze security, upgrade and purge. One line per check, then
# "N passed, N failed".
#
#   tests/systemd/run.sh DEB_DIR
#
# Needs root. The Debian 12 tree is made once with debootstrap from the host's own apt
# mirror and cached in $VFIO_USERD_SYSTEMD_TEST_CACHE (default
# /var/cache/vfio-userd-systemd-test, about 250 MB); each run boots a fresh copy of it, so
# a rerun takes seconds. Logs of the last run: DEB_DIR/systemd-test/.
#
# The container is started with --register=no --keep-unit, so neither systemd-machined nor
# a systemd on the host is needed: this works on hosts (and CI machines) whose PID 1 is not
# systemd. --private-network: the daemon needs no network, and the host's stays untouched.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

debs=$(cd "${1:?usage: run.sh DEB_DIR}" && pwd)
cache=${VFIO_USERD_SYSTEMD_TEST_CACHE:-/var/cache/vfio-userd-systemd-test}
base=$cache/bookworm
timeout=${VFIO_USERD_SYSTEMD_TEST_TIMEOUT:-300}
# What the base tree holds besides minbase: systemd as init, and the daemon's libraries so
# that dpkg -i needs no network in the container.
include=systemd,systemd-sysv,dbus,libsystemd0,libyaml-0-2,libjansson4

say() { printf 'systemd-test: %s\n' "$*" >&2; }
. "$(dirname "$0")/../../scripts/debian-host.sh"

[ "$(id -u)" = 0 ] || { say "needs root (debootstrap, systemd-nspawn)"; exit 1; }
ls "$debs"/vfio-userd_*.deb "$debs"/vfio-userd-plugin-testdev_*.deb >/dev/null ||
    { say "no packages in $debs; run make deb"; exit 1; }

debian_install_missing systemd-container debootstrap debian-archive-keyring

mkdir -p "$cache"
if [ "$(cat "$base/.vfio-userd-include" 2>/dev/null)" != "$include" ]; then
    say "making a minimal Debian 12 tree with systemd (debootstrap, about 1 minute, once)"
    rm -rf "$base" "$base.partial"
    if ! debootstrap --variant=minbase --include="$include" bookworm "$base.partial" \
        "$(debian_host_mirror "${VFIO_USERD_SYSTEMD_TEST_MIRROR:-}")" >"$cache/debootstrap.log" 2>&1; then
        tail -n 20 "$cache/debootstrap.log" >&2
        say "debootstrap failed; see $cache/debootstrap.log"
        exit 1
    fi
    apt-get -o Dir="$base.partial" clean 2>/dev/null || rm -rf "$base.partial"/var/cache/apt/archives/*.deb
    echo "$include" >"$base.partial/.vfio-userd-include"
    mv "$base.partial" "$base"
fi

# A fresh copy of the tree for each run: the checks install, upgrade and purge packages.
root=$(mktemp -d "$cache/run.XXXXXX")
share=$root.share
logs=$debs/systemd-test
trap 'rm -rf "$root" "$share"' EXIT
rm -rf "$logs"
mkdir -p "$logs"
cp -a --reflink=auto "$base/." "$root/"
echo vfio-userd-test >"$root/etc/hostname"
rm -f "$root/etc/machine-id"
systemd-machine-id-setup --root="$root" >/dev/null 2>&1

# What the container sees in /vfio-userd-test: the checks, the packages, and the results
# directory it writes into.
mkdir -p "$share/debs" "$share/results"
cp "$here/checks.sh" "$share/"
cp "$debs"/vfio-userd_*.deb "$debs"/vfio-userd-plugin-testdev_*.deb "$share/debs/"

# The checks run once the system is up, then power it off.
cat >"$root/etc/systemd/system/vfio-userd-systemd-test.service" <<'EOF'
[Unit]
Description=vfio-userd real-systemd checks
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/bash /vfio-userd-test/checks.sh
ExecStopPost=/bin/systemctl poweroff --no-block
StandardOutput=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
EOF
ln -s /etc/systemd/system/vfio-userd-systemd-test.service \
    "$root/etc/systemd/system/multi-user.target.wants/vfio-userd-systemd-test.service"

start=$(date +%s)
status=0
timeout --kill-after=10 "$timeout" systemd-nspawn --quiet --directory="$root" --boot \
    --register=no --keep-unit --private-network --console=read-only \
    --bind="$share:/vfio-userd-test" </dev/null >"$logs/boot.log" 2>&1 || status=$?
elapsed=$(($(date +%s) - start))
cp -a "$share/results/." "$logs/" 2>/dev/null || true

if [ ! -s "$logs/checks.log" ] || ! tail -n 1 "$logs/checks.log" | grep -qE '^[0-9]+ passed, [0-9]+ failed$'; then
    [ -s "$logs/checks.log" ] && grep -E '^(PASS|FAIL|INFO) ' "$logs/checks.log"
    sed 's/\x1b\[[0-9;]*m//g' "$logs/boot.log" | tail -n 30 >&2
    say "the checks did not finish (systemd-nspawn exit $status after ${elapsed}s); see $logs/"
    echo "FAIL boot: the container did not finish the checks"
    passed=$(grep -c '^PASS ' "$logs/checks.log" 2>/dev/null || true)
    failed=$(grep -c '^FAIL ' "$logs/checks.log" 2>/dev/null || true)
    echo "${passed:-0} passed, $((${failed:-0} + 1)) failed"
    exit 1
fi
grep -E '^(PASS|FAIL|INFO) ' "$logs/checks.log"
say "booted, checked and powered off in ${elapsed}s; logs in $logs/"
tail -n 1 "$logs/checks.log"
tail -n 1 "$logs/checks.log" | grep -q ' 0 failed$'
