#!/usr/bin/env python3
"""What `sync_interval: always` costs: acknowledged JetStream publishes per second against two private
nats-servers (the one ops/dev-up runs), one syncing every write to disk before acknowledging it and
one with the default (a flush every 2 minutes). One at a time (the latency a stage's publish waits)
and 64 in flight (a batch). Prints one JSON object.

    ops/bench/nats_sync.py NATS_BIN [MESSAGES]
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

PAYLOAD = b"x" * 2048  # about a page.changed event


def read_until(sock, buffer, needle):
    while needle not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("nats-server closed the connection")
        buffer += chunk
    return buffer


def publish(port, messages, in_flight):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        buffer = read_until(sock, b"", b"\r\n")
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n')
        # The stream (file storage, one replica) on subject bench.>.
        config = json.dumps({"name": "BENCH", "subjects": ["bench.>"], "storage": "file",
                             "num_replicas": 1}).encode()
        sock.sendall(b"SUB _INBOX.c 1\r\n")
        sock.sendall(b"PUB $JS.API.STREAM.CREATE.BENCH _INBOX.c %d\r\n%s\r\n" % (len(config), config))
        buffer = read_until(sock, b"", b"MSG _INBOX.c")
        sock.sendall(b"SUB _INBOX.ack 2\r\nPING\r\n")
        buffer = read_until(sock, b"", b"PONG")
        started = time.perf_counter()
        sent = acked = 0
        buffer = b""
        while acked < messages:
            while sent < messages and sent - acked < in_flight:
                sock.sendall(b"PUB bench.%d _INBOX.ack %d\r\n%s\r\n" % (sent % 100, len(PAYLOAD), PAYLOAD))
                sent += 1
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("nats-server closed the connection")
            buffer += chunk
            acked += buffer.count(b"MSG _INBOX.ack")
            buffer = buffer[buffer.rfind(b"MSG _INBOX.ack") + 1:] if b"MSG _INBOX.ack" in buffer else buffer
        return messages / (time.perf_counter() - started)


def run_server(nats_bin, directory, port, sync):
    conf = os.path.join(directory, "nats.conf")
    with open(conf, "w") as f:
        f.write(f'listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: "{directory}/data"\n')
        if sync:
            f.write("  sync_interval: always\n")
        f.write("}\n")
    server = subprocess.Popen([nats_bin, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("nats-server did not start")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main():
    nats_bin = sys.argv[1]
    messages = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    figures = {}
    for sync in (False, True):
        directory = tempfile.mkdtemp(prefix="nats-sync-bench.")
        port = free_port()
        server = run_server(nats_bin, directory, port, sync)
        try:
            name = "sync_always" if sync else "default_flush"
            figures[f"{name}_acked_per_sec_1_in_flight"] = round(publish(port, messages // 4, 1))
            figures[f"{name}_acked_per_sec_64_in_flight"] = round(publish(port, messages, 64))
        finally:
            server.terminate()
            server.wait()
            shutil.rmtree(directory, ignore_errors=True)
    for in_flight in ("1", "64"):
        default = figures[f"default_flush_acked_per_sec_{in_flight}_in_flight"]
        always = figures[f"sync_always_acked_per_sec_{in_flight}_in_flight"]
        figures[f"sync_always_cost_ratio_{in_flight}_in_flight"] = round(default / max(always, 1), 2)
    figures["payload_bytes"] = len(PAYLOAD)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
