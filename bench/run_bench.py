#!/usr/bin/env python3
"""Region I/O against the floor, then DMA: the table `make bench` prints.

Usage: run_bench.py BUILD_DIR [ROUNDS] [REQUESTS]

Starts three servers, each pinned to CPU 0: the floor (bench/floor_server.c), `vfio-userd
--single testdev` and the daemon serving two drop-in testdev devices, one as it comes
("daemon") and one with `poll_us: 50` ("polling": its device host busy-polls its socket for
50 µs after each request instead of sleeping). The same raw-socket
client (bench/bench_io.c) drives each, pinned to CPU 0 too ("1 CPU": every request is a
context switch) and to CPU 1 ("2 CPUs": every request is a wake-up across CPUs). Rounds are
interleaved (floor, --single, daemon, floor, ...) and each figure is the median of the
rounds; every ratio is to the floor of the same pinning in the same run. Then
bench_protocol measures DMA against memcpy.
"""
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

CASES = ["read8", "write4", "write4k", "rt65", "posted65", "multi64"]


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def wait_for_socket(path, process, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited early ({process.args})")
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
                probe.close()
                time.sleep(0.05)  # let the server see the probe go
                return
            except OSError:
                pass
            finally:
                probe.close()
        time.sleep(0.02)
    raise SystemExit(f"no socket at {path}")


def start_servers(build, scratch, env=None):
    """`env`: the environment of the two vfio-userd servers (the floor keeps the caller's)."""
    servers = {}
    floor = os.path.join(scratch, "floor.sock")
    servers["floor"] = (subprocess.Popen(["taskset", "-c", "0", f"{build}/bench/floor_server",
                                          floor]), floor)
    single = os.path.join(scratch, "single.sock")
    servers["--single"] = (subprocess.Popen(
        ["taskset", "-c", "0", f"{build}/vfio-userd", "--single", f"{build}/plugins/testdev.so",
         "--socket", single, "--param", "ram_size=64K", "--log-level", "warning"], env=env), single)
    devices = os.path.join(scratch, "devices.d")
    os.mkdir(devices)
    with open(os.path.join(scratch, "vfio-userd.yaml"), "w") as f:
        f.write("# the defaults\n")
    with open(os.path.join(devices, "bench.yaml"), "w") as f:
        f.write("plugin: testdev\nparams:\n  ram_size: 64K\n")
    # The same device with poll_us: its host busy-polls for 50 µs after each request.
    with open(os.path.join(devices, "polling.yaml"), "w") as f:
        f.write("plugin: testdev\npoll_us: 50\nparams:\n  ram_size: 64K\n")
    runtime = os.path.join(scratch, "run")
    daemon_socket = os.path.join(runtime, "devices", "bench.sock")
    servers["daemon"] = (subprocess.Popen(
        ["taskset", "-c", "0", f"{build}/vfio-userd", "-c", os.path.join(scratch, "vfio-userd.yaml"),
         "--devices-dir", devices, "--runtime-dir", runtime, "--plugin-dir", f"{build}/plugins",
         "--log-level", "warning"], env=env), daemon_socket)
    servers["polling"] = (servers["daemon"][0], os.path.join(runtime, "devices", "polling.sock"))
    try:
        for process, path in servers.values():
            wait_for_socket(path, process)
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def stop_servers(servers):
    processes = {process for process, _ in servers.values()}
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait()


def run_client(build, cpu, path, requests):
    out = subprocess.run(["taskset", "-c", str(cpu), f"{build}/bench/bench_io", path,
                          str(requests)], check=True, capture_output=True, text=True).stdout
    figures = {}
    for line in out.splitlines():
        name, ops, p50 = line.split()
        figures[name] = (float(ops), float(p50))
    return figures


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build/plain"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    requests = int(sys.argv[3]) if len(sys.argv) > 3 else 50000
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    print(f"vfio-userd benchmark: commit {commit}, {os.cpu_count()} CPUs, "
          f"{rounds} interleaved rounds of {requests} requests per case, "
          f"load average before: {loadavg()}")
    scratch = tempfile.mkdtemp(prefix="vfio-userd-bench.")
    servers = start_servers(build, scratch)
    pinnings = {"1 CPU": 0, "2 CPUs": 1}
    results = {}  # (pinning, server) -> case -> [(ops, p50)]
    try:
        for _ in range(rounds):
            for pinning, cpu in pinnings.items():
                for name, (_, path) in servers.items():
                    figures = run_client(build, cpu, path, requests)
                    for case, value in figures.items():
                        results.setdefault((pinning, name), {}).setdefault(case, []).append(value)
    finally:
        stop_servers(servers)
        shutil.rmtree(scratch, ignore_errors=True)

    def median(pinning, name, case):
        values = results[(pinning, name)][case]
        return (statistics.median(v[0] for v in values), statistics.median(v[1] for v in values))

    print()
    print("Region I/O (median ops/s, p50 latency, ratio of ops/s to the floor's):")
    print(f"| {'server':<9} | {'CPUs':<6} | {'8 B read':>9} | {'p50':>7} | {'x floor':>7} "
          f"| {'4 B write':>9} | {'p50':>7} | {'x floor':>7} | {'4 KiB write':>11} | {'p50':>7} "
          f"| {'x floor':>7} |")
    print("|" + "|".join("-" * w for w in (11, 8, 11, 9, 9, 11, 9, 9, 13, 9, 9)) + "|")
    for pinning in pinnings:
        for name in servers:
            cells = []
            for case in ("read8", "write4", "write4k"):
                ops, p50 = median(pinning, name, case)
                floor_ops, _ = median(pinning, "floor", case)
                cells.append(f"{ops / 1000:>8.1f}k" if case != "write4k" else f"{ops / 1000:>10.1f}k")
                cells.append(f"{p50:>5.2f}us")
                cells.append(f"{ops / floor_ops:>7.2f}")
            print(f"| {name:<9} | {pinning:<6} | " + " | ".join(cells) + " |")
    print()
    print("Pipelining (median bursts/s; posted65 = 64 posted writes + 1 read, rt65 = 65 round "
          "trips, multi64 = one REGION_WRITE_MULTI of 64 writes):")
    print(f"| {'server':<9} | {'CPUs':<6} | {'rt65/s':>9} | {'posted65/s':>10} | "
          f"{'posted/rt':>9} | {'multi64/s':>9} | {'multi/rt':>8} |")
    print("|" + "|".join("-" * w for w in (11, 8, 11, 12, 11, 11, 10)) + "|")
    for pinning in pinnings:
        for name in servers:
            rt, _ = median(pinning, name, "rt65")
            posted, _ = median(pinning, name, "posted65")
            multi, _ = median(pinning, name, "multi64")
            print(f"| {name:<9} | {pinning:<6} | {rt:>9.0f} | {posted:>10.0f} | "
                  f"{posted / rt:>9.2f} | {multi:>9.0f} | {multi / rt:>8.2f} |")
    print()
    print(f"load average after region I/O: {loadavg()}")
    print()
    sys.stdout.flush()
    print("DMA (bench_protocol, client and server threads pinned to CPU 0):")
    sys.stdout.flush()
    subprocess.run(["taskset", "-c", "0", f"{build}/bench/bench_protocol", f"{build}/plugins/testdev.so",
                    os.environ.get("BENCH_SECONDS", "1")], check=True, stderr=subprocess.DEVNULL)
    print(f"load average at the end: {loadavg()}")


if __name__ == "__main__":
    main()
