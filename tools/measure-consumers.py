#!/usr/bin/env python3
"""What a document costs in each consumer language (docs/writing-consumers.md).

For each of chat (Rust), js-chat, py-chat and c-chat, on a fresh release server (pinned
to core 0, the load generator to core 1, as bench/run.py does):
- cold open: `loadgen cold`, connect -> upgraded for fresh documents one after another
  (instantiation from the pool, `open`, `on-connect`; the chat also sends its history);
- resident memory: RSS growth of the server holding N documents with one idle connection
  each (`loadgen hold`), divided by N, minus the cost of an idle connection (RSS growth
  of N idle connections to ONE relay document, divided by N).

Needs `cargo xtask plugins` and `cargo build --release -p wasmroom -p wasmroom-bench`.
Usage: python3 tools/measure-consumers.py [--docs 1000] [--cold 300]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILT = ROOT / "target" / "wasm32-wasip2" / "plugin"
SERVER = ROOT / "target" / "release" / "wasmroom"
LOADGEN = ROOT / "target" / "release" / "loadgen"
PLUGINS = ["chat", "js-chat", "py-chat", "c-chat"]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settle(pid):
    """RSS once it stops changing (allocators return memory lazily)."""
    last = rss_kib(pid)
    for _ in range(40):
        time.sleep(0.25)
        now = rss_kib(pid)
        if abs(now - last) < 64:
            return now
        last = now
    return last


class Server:
    def __init__(self, plugin):
        self.plugins = tempfile.TemporaryDirectory()
        self.data = tempfile.TemporaryDirectory()
        shutil.copy(BUILT / f"{plugin}.wasm", Path(self.plugins.name) / f"{plugin}.wasm")
        config = Path(self.data.name) / "config.toml"
        # Idle documents stay in memory for the whole measurement; pings far apart.
        config.write_text("idle_grace_secs = 3600\n[limits]\nping_interval_ms = 3600000\n")
        self.log = open(Path(self.data.name) / "log", "w+")
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", SERVER, "serve", "--port", "0", "--plugins", self.plugins.name,
             "--data", Path(self.data.name) / "data", "--config", config],
            stdout=subprocess.DEVNULL, stderr=self.log, env={**os.environ, "RUST_LOG": "info"})
        deadline = time.time() + 300
        while time.time() < deadline:
            self.log.seek(0)
            for line in self.log:
                if "listening on " in line:
                    self.addr = line.rsplit("listening on ", 1)[1].strip()
                    return
            time.sleep(0.2)
        raise RuntimeError("server did not start")

    def url(self, plugin):
        return f"ws://{self.addr}/ws/{plugin}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        self.log.close()


def loadgen(url, *args):
    out = subprocess.run(["taskset", "-c", "1", LOADGEN, "--url", url, *map(str, args)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def held_growth(plugin, docs, clients):
    """(held sockets, RSS growth in KiB) of a fresh server holding docs x clients."""
    server = Server(plugin)
    try:
        # One document first, so that the plugin's code and the lane are warm.
        loadgen(server.url(plugin), "cold", "--count", 1)
        base = settle(server.proc.pid)
        gen = subprocess.Popen(
            ["taskset", "-c", "1", LOADGEN, "--url", server.url(plugin), "hold", "--docs", str(docs),
             "--clients", str(clients), "--sources", "4"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = gen.stdout.readline().split()
        if not ready or ready[0] != "READY":
            raise RuntimeError(f"hold failed: {ready}")
        grown = settle(server.proc.pid) - base
        gen.stdin.close()
        gen.wait()
        return int(ready[1]), grown
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--cold", type=int, default=300)
    args = parser.parse_args()
    for tool in (SERVER, LOADGEN):
        if not tool.exists():
            sys.exit(f"{tool} missing: cargo build --release -p wasmroom -p wasmroom-bench")
    conns, conn_growth = held_growth("relay", 1, args.docs)
    per_conn = conn_growth / conns
    print(f"idle connection: {per_conn:.1f} KiB ({conns} connections to one relay document)")
    results = {"kib_per_idle_connection": round(per_conn, 1), "consumers": {}}
    for plugin in PLUGINS:
        size = (BUILT / f"{plugin}.wasm").stat().st_size
        server = Server(plugin)
        try:
            cold = loadgen(server.url(plugin), "cold", "--count", args.cold)
        finally:
            server.stop()
        held, growth = held_growth(plugin, args.docs, 1)
        per_doc = growth / held - per_conn
        results["consumers"][plugin] = {
            "component_bytes": size,
            "cold_open_p50_ms": cold["p50_ms"],
            "cold_open_p99_ms": cold["p99_ms"],
            "idle_documents": held,
            "kib_per_idle_document": round(per_doc, 1),
        }
        print(f"{plugin:8} {size / 1e6:6.2f} MB  cold open p50 {cold['p50_ms']:.2f} ms "
              f"p99 {cold['p99_ms']:.2f} ms  {per_doc:8.1f} KiB per idle document ({held} held)",
              flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
