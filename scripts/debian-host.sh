# Sourced by the scripts that set up what a suite needs on a Debian host (the QEMU guest
# suite, the Debian packages, the real-systemd test): one way to install what is missing
# and one way to find the host's Debian mirror. Each caller defines say() for its messages.

# debian_install_missing PACKAGE...: installs those not installed yet, as root; otherwise
# prints the apt-get line to run and fails.
debian_install_missing() {
    local package missing=()

    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q ' installed$' ||
            missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        say "missing packages; install them with: sudo apt-get install -y ${missing[*]}"
        return 1
    fi
    say "installing: ${missing[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >/dev/null
}

# debian_host_mirror OVERRIDE: the Debian mirror the host's apt uses, so no host name is
# written into the project, or OVERRIDE when it is set.
debian_host_mirror() {
    local uri

    if [ -n "${1:-}" ]; then
        echo "$1"
        return 0
    fi
    uri=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
        grep -oE '(https?|file)://[^ ]*/debian/?( |$)' | head -n 1 | tr -d ' ')
    [ -n "$uri" ] || { say "no Debian mirror found in /etc/apt"; return 1; }
    echo "$uri"
}
