#!/usr/bin/env python3
"""What process isolation costs next to thread isolation (issue 10, "Tests and figures").

Usage: isolation.py [BUILD_DIR] [--counts 1,100,1000] [--modes process,thread]
                    [--requests 20000] [--rounds 3] [--py-requests 10000]

For each mode and each device count N, starts the real daemon from BUILD_DIR (default
build/plain) in a scratch directory with `default_isolation: MODE`, pinned to CPU 0 (its
device hosts inherit the pinning), and measures:

- add and remove: N testdev devices (ram_size 64K) over the admin socket, first as JSON-RPC
  batches (arrays of at most 256 requests, the daemon's ADMIN_MAX_BATCH; each array sent
  once, its reply awaited before the next), later one device_add at a time, each reply
  awaited ("seq");
- memory once the batch-added devices serve: the daemon's RSS, the sum of its device hosts'
  RSS and PSS (/proc/PID/smaps_rollup: PSS shares each library page among the processes
  that map it), and per device (daemon RSS + host PSS) / N and the marginal
  (daemon RSS delta + host PSS) / N; the daemon's descriptors per device;
- device_list's round trip, and the CPU the daemon and its hosts burn in 2 s of idling
  (health checks);
- REGION_READ of 8 bytes of BAR2 on the first device, with bench/bench_io (the raw C client
  run_bench.py uses; ops/s and p50, median of ROUNDS rounds interleaved with the floor
  server, bench/floor_server, pinned alike), and the ratio to the floor; bench_io prints no
  p99, so a Python client sending the same bytes gives p50 and p99 (its own overhead
  included, the same for every server; medians of the rounds too);
- the load average at the start and at the end.

Client, floor and daemon all run on CPU 0, as run_bench.py's "1 CPU" rows. The daemon needs
about 4 descriptors per process-mode device and 2 per thread-mode one: `ulimit -n` must
allow that.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ADMIN_MAX_BATCH = 256  # daemon/admin_server.h
HEADER = struct.Struct("<HHIII")  # struct vu_header (lib/wire.h)
VU_COMMAND_VERSION, VU_COMMAND_REGION_READ, VU_FLAGS_ERROR = 1, 9, 1 << 5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rollup_kib(pid):
    """RSS and PSS of a process, in KiB, from smaps_rollup."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_for_socket(path, process, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited early ({process.args})")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            return
        except OSError:
            time.sleep(0.02)
        finally:
            probe.close()
    raise SystemExit(f"no socket at {path}")


class Admin:
    """One admin connection; requests are newline-delimited JSON, replies likewise."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.pending = b""
        self.next_id = 0

    def request(self, method, params=None):
        self.next_id += 1
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            message["params"] = params
        return message

    def send(self, message):
        self.sock.sendall(json.dumps(message).encode() + b"\n")
        while b"\n" not in self.pending:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise SystemExit("the daemon closed the admin connection")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def call(self, method, params=None):
        return self.send(self.request(method, params))

    def errors(self, replies):
        if isinstance(replies, dict):
            replies = [replies]
        return [r["error"]["message"] for r in replies if "error" in r]

    def batched(self, method, params_list, per_request_ms=None):
        """Arrays of at most ADMIN_MAX_BATCH requests; error messages returned, and each
        array's milliseconds per request appended to `per_request_ms`."""
        errors = []
        for start in range(0, len(params_list), ADMIN_MAX_BATCH):
            chunk = params_list[start:start + ADMIN_MAX_BATCH]
            started = time.monotonic()
            errors += self.errors(self.send([self.request(method, p) for p in chunk]))
            if per_request_ms is not None:
                per_request_ms.append((time.monotonic() - started) * 1e3 / len(chunk))
        return errors

    def sequential(self, method, params_list):
        errors = []
        for params in params_list:
            errors += self.errors(self.call(method, params))
        return errors


def add_params(names):
    return [{"name": n, "plugin": "testdev", "params": {"ram_size": "64K"}} for n in names]


def bench_io(build, path, requests):
    out = subprocess.run(["taskset", "-c", "0", f"{build}/bench/bench_io", path, str(requests),
                          "read8"], check=True, capture_output=True, text=True).stdout
    name, ops, p50 = out.split()
    return float(ops), float(p50)


def py_latency(path, requests):
    """REGION_READ of 8 bytes of BAR2, one at a time; (p50, p99) in microseconds."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)

    def exchange(message):
        sock.sendall(message)
        header = sock.recv(HEADER.size, socket.MSG_WAITALL)
        _, _, size, flags, error = HEADER.unpack(header)
        if size > HEADER.size:
            sock.recv(size - HEADER.size, socket.MSG_WAITALL)
        if flags & VU_FLAGS_ERROR:
            raise SystemExit(f"error reply {error} from {path}")

    capabilities = b'{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576}}\0'
    body = struct.pack("<HH", 0, 1) + capabilities
    exchange(HEADER.pack(0, VU_COMMAND_VERSION, HEADER.size + len(body), 0, 0) + body)
    read = HEADER.pack(1, VU_COMMAND_REGION_READ, HEADER.size + 16, 0, 0) + struct.pack(
        "<QII", 0, 2, 8)
    for _ in range(requests // 10):
        exchange(read)
    latencies = []
    clock = time.perf_counter_ns
    for _ in range(requests):
        before = clock()
        exchange(read)
        latencies.append(clock() - before)
    sock.close()
    latencies.sort()
    return latencies[len(latencies) // 2] / 1e3, latencies[len(latencies) * 99 // 100] / 1e3


def measure_latency(build, floor_path, path, args):
    """Rounds interleaved, floor first; medians of the rounds. The Python client runs on
    CPU 0 too, like bench_io, so that no request pays a wake-up across CPUs."""
    ours, floor, py, py_floor = [], [], [], []
    affinity = os.sched_getaffinity(0)
    for _ in range(args.rounds):
        floor.append(bench_io(build, floor_path, args.requests))
        ours.append(bench_io(build, path, args.requests))
        os.sched_setaffinity(0, {0})
        try:
            py_floor.append(py_latency(floor_path, args.py_requests))
            py.append(py_latency(path, args.py_requests))
        finally:
            os.sched_setaffinity(0, affinity)
    ops = statistics.median(o for o, _ in ours)
    floor_ops = statistics.median(o for o, _ in floor)
    return {"ops": ops, "p50": statistics.median(p for _, p in ours), "x_floor": ops / floor_ops,
            "floor_ops": floor_ops, "py_p50": statistics.median(p for p, _ in py),
            "py_p99": statistics.median(p for _, p in py),
            "py_floor_p50": statistics.median(p for p, _ in py_floor),
            "py_floor_p99": statistics.median(p for _, p in py_floor)}


def run_case(build, mode, count, floor_path, args):
    scratch = tempfile.mkdtemp(prefix=f"vfio-userd-isolation-{mode}-{count}.")
    os.mkdir(f"{scratch}/devices.d")
    with open(f"{scratch}/vfio-userd.yaml", "w") as f:
        f.write(f"default_isolation: {mode}\nlog_level: warning\n")
    log = open(f"{scratch}/daemon.log", "w")
    daemon = subprocess.Popen(
        ["taskset", "-c", "0", f"{build}/vfio-userd", "-c", f"{scratch}/vfio-userd.yaml",
         "--devices-dir", f"{scratch}/devices.d", "--runtime-dir", f"{scratch}/run",
         "--plugin-dir", f"{build}/plugins"], stdout=log, stderr=subprocess.STDOUT)
    result = {"mode": mode, "n": count}
    try:
        wait_for_socket(f"{scratch}/run/admin.sock", daemon)
        admin = Admin(f"{scratch}/run/admin.sock")
        time.sleep(0.3)
        base_rss = status_kib(daemon.pid, "VmRSS")
        base_fds = len(os.listdir(f"/proc/{daemon.pid}/fd"))
        names = [f"iso{i}" for i in range(count)]

        started = time.monotonic()
        result["add_batches"] = []
        errors = admin.batched("device_add", add_params(names), result["add_batches"])
        result["add_batch"] = time.monotonic() - started
        result["added"] = count - len(errors)
        result["add_errors"] = errors[:3]
        if errors:
            print(f"  {mode} N={count}: {len(errors)} adds refused, first: {errors[0]}",
                  file=sys.stderr)
        time.sleep(0.5)

        started = time.monotonic()
        listed = admin.call("device_list")["result"]
        result["list"] = time.monotonic() - started
        # Thread-mode devices report the daemon's own pid.
        pids = [d["pid"] for d in listed
                if d.get("isolation") == "process" and d.get("pid") and d["pid"] != daemon.pid]
        daemon_rss = status_kib(daemon.pid, "VmRSS")
        host_rss = host_pss = 0
        for pid in pids:
            rss, pss = rollup_kib(pid)
            host_rss += rss
            host_pss += pss
        added = max(1, result["added"])
        result.update(
            daemon_rss=daemon_rss, daemon_delta=daemon_rss - base_rss, hosts=len(pids),
            host_rss=host_rss, host_pss=host_pss,
            per_device=(daemon_rss + host_pss) / added,
            marginal=(daemon_rss - base_rss + host_pss) / added,
            fds_per_device=(len(os.listdir(f"/proc/{daemon.pid}/fd")) - base_fds) / added)

        everyone = [daemon.pid] + pids
        before = sum(cpu_ticks(p) for p in everyone)
        time.sleep(2)
        result["idle_cpu"] = 100.0 * (sum(cpu_ticks(p) for p in everyone) - before) / (
            2 * CLOCK_TICKS)

        device_socket = next(d["socket"] for d in listed if d["name"] == "iso0")
        result.update(measure_latency(build, floor_path, device_socket, args))

        started = time.monotonic()
        errors = admin.batched("device_remove", [{"name": n} for n in names[:result["added"]]])
        result["remove_batch"] = time.monotonic() - started
        time.sleep(0.5)
        result["rss_after"] = status_kib(daemon.pid, "VmRSS")

        started = time.monotonic()
        errors = admin.sequential("device_add", add_params(names))
        result["add_seq"] = time.monotonic() - started
        started = time.monotonic()
        admin.sequential("device_remove", [{"name": n} for n in names[:count - len(errors)]])
        result["remove_seq"] = time.monotonic() - started
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return result


def print_table(results):
    def per_add(seconds, n):
        return f"{seconds:.3f} s ({seconds / n * 1e3:.2f} ms)"

    print("| mode    | N    | add, batches       | add, one by one    | remove, batches    "
          "| remove, one by one | device_list | daemon RSS | hosts RSS sum | hosts PSS sum "
          "| (daemon RSS + PSS)/N | marginal/N | daemon fds/dev | idle CPU "
          "| read8 ops/s | p50 (bench_io) | x floor | p50 / p99 (py) | floor p50 / p99 (py) |")
    print("|" + "|".join("-" * w for w in (9, 6, 20, 20, 20, 20, 13, 12, 15, 15, 22, 12, 16,
                                          10, 13, 16, 9, 16, 22)) + "|")
    for r in results:
        n = max(1, r["added"])
        print(f"| {r['mode']:<7} | {r['n']:<4} | {per_add(r['add_batch'], n):<18} "
              f"| {per_add(r['add_seq'], n):<18} | {per_add(r['remove_batch'], n):<18} "
              f"| {per_add(r['remove_seq'], n):<18} | {r['list'] * 1e3:>8.1f} ms "
              f"| {r['daemon_rss'] / 1024:>6.1f} MiB | {r['host_rss'] / 1024:>9.1f} MiB "
              f"| {r['host_pss'] / 1024:>9.1f} MiB | {r['per_device']:>16.0f} KiB "
              f"| {r['marginal']:>6.0f} KiB | {r['fds_per_device']:>14.1f} "
              f"| {r['idle_cpu']:>6.1f}% | {r['ops'] / 1000:>10.1f}k | {r['p50']:>11.2f} µs "
              f"| {r['x_floor']:>7.2f} | {r['py_p50']:>5.1f} / {r['py_p99']:>5.1f} µs "
              f"| {r['py_floor_p50']:>7.1f} / {r['py_floor_p99']:>6.1f} µs |")
    print()
    print("ms per device_add in each batch of at most 256, as the daemon fills up:")
    for r in results:
        if len(r["add_batches"]) > 1:
            print(f"  {r['mode']:<7} N={r['n']}: " +
                  " ".join(f"{ms:.2f}" for ms in r["add_batches"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("build", nargs="?", default="build/plain")
    parser.add_argument("--counts", default="1,100,1000")
    parser.add_argument("--modes", default="process,thread")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--py-requests", type=int, default=10000)
    args = parser.parse_args()
    build = args.build
    counts = [int(c) for c in args.counts.split(",")]
    modes = args.modes.split(",")

    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    started = time.monotonic()
    load_start = loadavg()
    print(f"vfio-userd isolation benchmark: commit {commit}, {os.cpu_count()} CPUs, "
          f"load average at the start: {load_start}", flush=True)
    scratch = tempfile.mkdtemp(prefix="vfio-userd-isolation-floor.")
    floor_path = f"{scratch}/floor.sock"
    floor = subprocess.Popen(["taskset", "-c", "0", f"{build}/bench/floor_server", floor_path])
    results = []
    try:
        wait_for_socket(floor_path, floor)
        for count in counts:
            for mode in modes:
                case_start = time.monotonic()
                results.append(run_case(build, mode, count, floor_path, args))
                print(f"  {mode} N={count}: {time.monotonic() - case_start:.1f} s, "
                      f"load average {loadavg()}", file=sys.stderr)
    finally:
        floor.terminate()
        floor.wait()
        shutil.rmtree(scratch, ignore_errors=True)
    print()
    print_table(results)
    print()
    print(f"load average at the start: {load_start}, at the end: {loadavg()}; "
          f"took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
