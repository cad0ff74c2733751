#!/usr/bin/env python3
"""Region I/O of two builds against the floor, in the same run: before and after a change.

Usage: compare_builds.py [--after-env NAME=VALUE]... BEFORE_BUILD AFTER_BUILD [ROUNDS]
                         [REQUESTS_1CPU] [REQUESTS_2CPUS]

With --after-env, the "after" servers run with that variable added to their environment:
the same build twice then measures a setting such as GLIBC_TUNABLES.

Starts run_bench.py's servers for both builds (one floor), then, in each round, for each
pinning (client on CPU 0 or CPU 1, every server on CPU 0) and each case (read8, write4,
write4k), runs bench_io once against every server, in an order reversed every other round so
that neither build always runs right after the floor. Each ratio is the median over the
rounds of the ratio to the floor of the same round, and "p50 - floor" the median of the
differences: on a shared machine the floor moves from round to round, and these follow it.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

import run_bench

CASES = ("read8", "write4", "write4k")


def client(build, cpu, path, case, requests):
    out = subprocess.run(["taskset", "-c", str(cpu), f"{build}/bench/bench_io", path,
                          str(requests), case], check=True, capture_output=True,
                         text=True).stdout.split()
    return float(out[1]), float(out[2])


def main():
    args, after_env = sys.argv[1:], {}
    while args and args[0] == "--after-env":
        name, _, value = args[1].partition("=")
        after_env[name] = value
        args = args[2:]
    before, after = args[0], args[1]
    rounds = int(args[2]) if len(args) > 2 else 9
    requests = {"1 CPU": int(args[3]) if len(args) > 3 else 20000,
                "2 CPUs": int(args[4]) if len(args) > 4 else 4000}
    pinnings = {"1 CPU": 0, "2 CPUs": 1}
    print(f"load average before: {run_bench.loadavg()}", flush=True)
    if after_env:
        print("after: " + " ".join(f"{k}={v}" for k, v in after_env.items()), flush=True)
    scratch = {tag: tempfile.mkdtemp(prefix="vfio-userd-compare.") for tag in ("before", "after")}
    started, paths = [], {}
    results = {}  # (pinning, server, case, round) -> (ops, p50)
    try:
        for tag, build in (("before", before), ("after", after)):
            env = dict(os.environ, **after_env) if tag == "after" and after_env else None
            servers = run_bench.start_servers(build, scratch[tag], env)
            started.append(servers)
            if tag == "before":
                paths["floor"] = servers["floor"][1]
            paths[f"{tag} --single"] = servers["--single"][1]
            paths[f"{tag} daemon"] = servers["daemon"][1]
        order = ["floor", "before --single", "after --single", "before daemon", "after daemon"]
        for round_ in range(rounds):
            names = order if round_ % 2 == 0 else order[:1] + order[:0:-1]
            for pinning, cpu in pinnings.items():
                for case in CASES:
                    for name in names:
                        results[(pinning, name, case, round_)] = client(
                            before, cpu, paths[name], case, requests[pinning])
    finally:
        for servers in started:
            run_bench.stop_servers(servers)
        for path in scratch.values():
            shutil.rmtree(path, ignore_errors=True)
    print(f"load average after: {run_bench.loadavg()}")
    print()
    print("| server | CPUs | " + " | ".join(f"{case} ops/s | p50 | x floor | p50 - floor"
                                            for case in CASES) + " |")
    print("|---" * (2 + 4 * len(CASES)) + "|")
    for pinning in pinnings:
        for name in order:
            cells = []
            for case in CASES:
                mine = [results[(pinning, name, case, r)] for r in range(rounds)]
                floor = [results[(pinning, "floor", case, r)] for r in range(rounds)]
                ops = statistics.median(v[0] for v in mine)
                p50 = statistics.median(v[1] for v in mine)
                ratio = statistics.median(m[0] / f[0] for m, f in zip(mine, floor))
                delta = statistics.median(m[1] - f[1] for m, f in zip(mine, floor))
                cells.append(f"{ops / 1000:.1f}k | {p50:.2f} µs | {ratio:.2f} | {delta:+.2f} µs")
            print(f"| {name} | {pinning} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
