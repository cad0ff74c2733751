#!/usr/bin/env python3
"""
What one large JSON-RPC batch costs the daemon (issue 9, "Batch amplification").

Starts vfio-userd from BUILD (default build/plain) in a scratch directory, adds DEVICES
testdev devices, then sends one batch of COUNT device_list requests on one admin connection
while a second connection asks daemon_status every 10 ms. Prints the batch's size, what came
back (bytes, and whether it was an array, an error or a bare end of stream), the longest
daemon_status round trip during the batch (how long the main loop was blocked), and the
daemon's RSS before, at its peak (VmHWM) and one second after.

    python3 bench/admin_batch.py [--build DIR] [--devices 50] [--count 4000]
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time


def rss(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
    return -1


def connect(path):
    for _ in range(500):
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            return sock
        except OSError:
            time.sleep(0.01)
    raise SystemExit(f"cannot connect to {path}")


def read_line(sock, buffer):
    while b"\n" not in buffer:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return None, buffer
        buffer += chunk
    line, _, rest = buffer.partition(b"\n")
    return line, rest


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", default="build/plain")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--count", type=int, default=4000)
    args = parser.parse_args()

    scratch = tempfile.mkdtemp(prefix="vfio-userd-batch.")
    os.mkdir(f"{scratch}/devices.d")
    with open(f"{scratch}/vfio-userd.yaml", "w") as config:
        config.write("")
    admin_path = f"{scratch}/run/admin.sock"
    daemon = subprocess.Popen(
        [f"{args.build}/vfio-userd", "-c", f"{scratch}/vfio-userd.yaml",
         "--devices-dir", f"{scratch}/devices.d", "--runtime-dir", f"{scratch}/run",
         "--plugin-dir", f"{args.build}/plugins", "--log-level", "info"],
        stdout=open(f"{scratch}/daemon.log", "w"), stderr=subprocess.STDOUT)
    try:
        admin = connect(admin_path)
        buffer = b""
        for i in range(args.devices):
            request = {"jsonrpc": "2.0", "id": i, "method": "device_add",
                       "params": {"name": f"b{i}", "plugin": "testdev",
                                  "params": {"ram_size": "8K"}}}
            admin.sendall(json.dumps(request).encode())
            line, buffer = read_line(admin, buffer)
            assert line is not None and b'"result"' in line, line
        time.sleep(0.5)
        before = rss(daemon.pid, "VmRSS")

        batch = json.dumps([{"jsonrpc": "2.0", "id": i, "method": "device_list"}
                            for i in range(args.count)]).encode()
        probe = connect(admin_path)
        worst = [0.0]
        stop = threading.Event()

        def ask_status():
            pending = b""
            while not stop.is_set():
                started = time.monotonic()
                probe.sendall(b'{"jsonrpc":"2.0","id":0,"method":"daemon_status"}')
                line, pending = read_line(probe, pending)
                if line is None:
                    return
                worst[0] = max(worst[0], time.monotonic() - started)
                time.sleep(0.01)

        thread = threading.Thread(target=ask_status)
        thread.start()
        time.sleep(0.05)
        started = time.monotonic()
        batch_socket = connect(admin_path)
        batch_socket.sendall(batch)
        line, _ = read_line(batch_socket, b"")
        elapsed = time.monotonic() - started
        stop.set()
        thread.join()
        if line is None:
            outcome = "bare end of stream"
            received = 0
        else:
            received = len(line) + 1
            reply = json.loads(line)
            if isinstance(reply, dict):
                outcome = f"error {reply['error']['code']}: {reply['error']['message']}"
            else:
                errors = sum(1 for r in reply if "error" in r)
                outcome = f"array of {len(reply)} replies, {errors} of them errors"
        batch_socket.close()
        time.sleep(1.0)
        print(f"batch: {args.count} x device_list, {len(batch)} bytes, {args.devices} devices")
        print(f"reply: {outcome}; {received} bytes in {elapsed:.2f} s")
        print(f"main loop: longest daemon_status round trip {worst[0] * 1000:.0f} ms")
        print(f"RSS: before {before} MiB, peak {rss(daemon.pid, 'VmHWM')} MiB, "
              f"1 s after {rss(daemon.pid, 'VmRSS')} MiB")
        with open(f"{scratch}/daemon.log") as log:
            lines = [l.rstrip() for l in log if "admin" in l.lower()]
        print(f"admin log lines: {lines[-3:]}")
    finally:
        daemon.terminate()
        daemon.wait()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
