#!/bin/sh
# Makes sure the Debian packages that building and testing vfio-userd need
# are installed. As root it installs what is missing with apt-get; as any
# other user it prints the exact apt-get line to run and fails, so that a
# build never half-works on a machine that lacks a library.
set -eu

packages="make gcc pkg-config libsystemd-dev libyaml-dev libjansson-dev libseccomp-dev check
linux-libc-dev clang libclang-rt-14-dev clang-format systemd valgrind zlib1g-dev liburing-dev"

missing=""
for package in $packages; do
    status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
    case "$status" in
    *" installed") ;;
    *) missing="$missing $package" ;;
    esac
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "vfio-userd: missing build dependencies; install them with:" >&2
    echo "    sudo apt-get install -y$missing" >&2
    exit 1
fi

echo "vfio-userd: installing build dependencies:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # the list is meant to split into words
apt-get install -y -qq --no-install-recommends $missing >/dev/null
