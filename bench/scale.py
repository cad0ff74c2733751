#!/usr/bin/env python3
"""Scale figures of issue 11: N testdev devices (ram_size 8K) added to one daemon over the
admin socket, 200 requests pipelined at a time; then device_list, the daemon's RSS per
device, its CPU while idle, and its RSS once every device is removed.

    python3 bench/scale.py BUILD_DIR [N [MODE]]   # N defaults to 10000, MODE to thread

MODE is the daemon's default_isolation, thread or process. In process mode the figures
add the device hosts: their CPU while idle, and their proportional set size (PSS, from
each host's smaps_rollup, so that pages they share count once) next to the daemon's RSS.

The daemon runs with the environment systemd/vfio-userd.service gives it (its Environment=
lines: GLIBC_TUNABLES), so that the figures are those of the daemon as the unit runs it;
the output says which.

In thread mode the daemon needs two descriptors per device (its socket and BAR2's memory),
in process mode three (its socket, the host's pidfd and control channel): raise the
shell's `ulimit -n` above that first, as systemd's LimitNOFILE is for the service.
"""
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def unit_environment():
    """The assignments of the shipped unit's Environment= lines."""
    unit = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "systemd",
                        "vfio-userd.service")
    assignments = {}
    with open(unit) as lines:
        for line in lines:
            if line.startswith("Environment="):
                for word in shlex.split(line[len("Environment="):]):
                    name, _, value = word.partition("=")
                    assignments[name] = value
    return assignments


unit_env = unit_environment()
build = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
mode = sys.argv[3] if len(sys.argv) > 3 else "thread"
scratch = tempfile.mkdtemp(prefix="vfio-userd-scale.")
os.mkdir(scratch + "/devices.d")
with open(scratch + "/vfio-userd.yaml", "w") as config:
    config.write("log_level: err\ndefault_isolation: %s\n" % mode)
daemon = subprocess.Popen([build + "/vfio-userd", "-c", scratch + "/vfio-userd.yaml",
                           "--devices-dir", scratch + "/devices.d", "--runtime-dir", scratch + "/run",
                           "--plugin-dir", build + "/plugins"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env=dict(os.environ, **unit_env))
admin_path = scratch + "/run/admin.sock"
while not os.path.exists(admin_path):
    time.sleep(0.05)
time.sleep(0.3)


def rss_kib():
    with open("/proc/%d/status" % daemon.pid) as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1])


def hosts():
    """The daemon's children: its device hosts."""
    try:
        with open("/proc/%d/task/%d/children" % (daemon.pid, daemon.pid)) as children:
            return [int(pid) for pid in children.read().split()]
    except OSError:
        return []


def cpu_ticks():
    total = 0
    for pid in [daemon.pid] + hosts():
        try:
            with open("/proc/%d/stat" % pid) as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def hosts_pss_kib():
    total = 0
    for pid in hosts():
        try:
            with open("/proc/%d/smaps_rollup" % pid) as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


admin = socket.socket(socket.AF_UNIX)
admin.connect(admin_path)
pending = b""


def call_all(requests):
    """Sends the requests in one write and returns their replies, in order."""
    global pending
    admin.sendall(b"".join(json.dumps(request).encode() + b"\n" for request in requests))
    replies = []
    while len(replies) < len(requests):
        while b"\n" not in pending:
            pending += admin.recv(1 << 20)
        line, pending = pending.split(b"\n", 1)
        replies.append(json.loads(line))
    return replies


def in_batches(method, make_params):
    errors = []
    for start in range(0, count, 200):
        requests = [{"jsonrpc": "2.0", "id": i, "method": method, "params": make_params(i)}
                    for i in range(start, min(count, start + 200))]
        errors += [reply["error"]["message"] for reply in call_all(requests) if "error" in reply]
    return errors


baseline = rss_kib()
started = time.time()
add_errors = in_batches("device_add", lambda i: {"name": "scale%d" % i, "plugin": "testdev",
                                                  "params": {"ram_size": "8K"}})
add_seconds = time.time() - started
full = rss_kib()
host_count = len(hosts())
full_hosts = hosts_pss_kib()
started = time.time()
listed = len(call_all([{"jsonrpc": "2.0", "id": 0, "method": "device_list"}])[0]["result"])
list_seconds = time.time() - started
ticks = cpu_ticks()
time.sleep(3)
idle_ticks = cpu_ticks() - ticks
started = time.time()
in_batches("device_remove", lambda i: {"name": "scale%d" % i})
remove_seconds = time.time() - started
time.sleep(1)
after = rss_kib()
daemon.terminate()
daemon.wait()
shutil.rmtree(scratch, ignore_errors=True)
with open("/proc/loadavg") as load:
    load_average = load.read().split()[0]

print("isolation             %s" % mode)
print("environment           %s (systemd/vfio-userd.service's)"
      % (" ".join("%s=%s" % item for item in unit_env.items()) or "none added"))
print("devices added         %d of %d in %.2f s" % (count - len(add_errors), count, add_seconds))
for message in add_errors[:3]:
    print("  refused: %s" % message)
print("device_list           %.3f s for %d devices" % (list_seconds, listed))
print("RSS                   %d KiB before, %d KiB with them: %.1f KiB per device"
      % (baseline, full, (full - baseline) / max(1, count - len(add_errors))))
if mode == "process":
    added = max(1, count - len(add_errors))
    print("device hosts          %d, PSS %d KiB in all: (daemon RSS increase + PSS) %.1f KiB "
          "per device" % (host_count, full_hosts, (full - baseline + full_hosts) / added))
print("idle CPU              %d ticks in 3 s%s" % (idle_ticks,
                                                  " (daemon and hosts)" if mode == "process" else ""))
print("removed               in %.2f s; RSS %d KiB after (%+.0f%% of before)"
      % (remove_seconds, after, 100.0 * (after - baseline) / baseline))
print("load average          %s" % load_average)
