#!/usr/bin/env python3
"""Runs every wasmroom benchmark and writes bench/results/.

    python3 bench/run.py            # the whole suite (about 10 minutes)
    python3 bench/run.py --quick    # fewer rates, smaller memory runs

Peers, each started here and pinned to core 0 (the load generator runs on core 1):
  wasmroom   one lane, the relay plugin
  native     bench/src/bin/native_relay.rs: the same lane design without WebAssembly
  node-ws    bench/node-relay/server.js: Node with the `ws` package
  daphne     bench/daphne: Daphne + Django Channels, the seed's class-variable consumer

Writes results.json, results.md (the table the README shows) and throughput-latency.png.
"""

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
VENV = BENCH / ".venv"
SERVER_CPU = "0"
GENERATOR_CPU = "1"
# Good enough: every delivery arrived and the 99th percentile stayed interactive.
MIN_RATIO = 0.999
MAX_P99_MS = 50.0


def sh(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def ensure_venv():
    """Re-runs this script inside bench/.venv with the pinned Python packages."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not (VENV / "bin" / "python").exists():
        sh([sys.executable, "-m", "venv", str(VENV)])
    sh([VENV / "bin" / "pip", "install", "-q", "-r", BENCH / "requirements.txt"])
    os.execv(VENV / "bin" / "python", [str(VENV / "bin" / "python"), __file__, *sys.argv[1:]])


def build():
    sh(["cargo", "xtask", "plugins"], cwd=ROOT)
    sh(["cargo", "build", "--release", "-p", "wasmroom", "-p", "wasmroom-bench"], cwd=ROOT)
    if not (BENCH / "node-relay" / "node_modules" / "ws").exists():
        sh(["npm", "ci", "--silent"], cwd=BENCH / "node-relay")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, proc, http_probe, timeout=60):
    """Waits until the server answers. wasmroom binds its ports before it compiles its
    plugins, so an open port is not enough there: it must answer /healthz (otherwise the
    first measurement would include the compilation)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                if not http_probe:
                    return
                s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"port {port} not ready after {timeout}s")


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def peer_command(name, port, plugins_dir):
    release = ROOT / "target" / "release"
    if name == "wasmroom":
        return [release / "wasmroom", "serve", "--config", BENCH / "wasmroom.toml", "--port", str(port),
                "--plugins", plugins_dir], None
    if name == "native":
        return [release / "native_relay", str(port)], None
    if name == "node-ws":
        return ["node", BENCH / "node-relay" / "server.js", str(port)], None
    if name == "daphne":
        daphne = VENV / "bin" / "daphne"
        return [daphne, "-b", "127.0.0.1", "-p", str(port), "bench_daphne.asgi:application"], BENCH / "daphne"
    raise ValueError(name)


class Peer:
    def __init__(self, name, plugins_dir, lanes=1, cpus=SERVER_CPU, extra=()):
        self.name = name
        self.port = free_port()
        cmd, cwd = peer_command(name, self.port, plugins_dir)
        cmd += list(extra)
        self.ports = [self.port]
        for _ in range(lanes - 1):
            self.ports.append(free_port())
            cmd += ["--port", str(self.ports[-1])]
        env = dict(os.environ, RUST_LOG="warn")
        self.proc = subprocess.Popen(
            ["taskset", "-c", cpus, *map(str, cmd)],
            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for port in self.ports:
            wait_ready(port, self.proc, http_probe=name == "wasmroom")
        self.url = f"ws://127.0.0.1:{self.port}/ws/relay"
        self.urls = [f"ws://127.0.0.1:{p}/ws/relay" for p in self.ports]

    def rss_kib(self):
        return rss_kib(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def loadgen(url, *args, stdin=None):
    cmd = ["taskset", "-c", GENERATOR_CPU, ROOT / "target" / "release" / "loadgen", "--url", url, *args]
    out = subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def hold(url, docs, clients, sources):
    """Opens idle connections; returns (process, opened)."""
    cmd = ["taskset", "-c", GENERATOR_CPU, ROOT / "target" / "release" / "loadgen", "--url", url,
           "hold", "--docs", str(docs), "--clients", str(clients), "--sources", str(sources)]
    proc = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    if not line or line[0] != "READY":
        raise RuntimeError(f"hold failed: {line}")
    return proc, int(line[1])


def settle_rss(peer):
    """Resident memory once it stops changing (allocators return memory lazily)."""
    last = peer.rss_kib()
    for _ in range(20):
        time.sleep(0.25)
        now = peer.rss_kib()
        if abs(now - last) < 64:
            return now
        last = now
    return last


def held_rss(name, plugins_dir, docs, clients):
    """(opened, RSS growth in KiB) of a fresh server holding docs x clients idle sockets."""
    peer = Peer(name, plugins_dir)
    try:
        base = settle_rss(peer)
        gen, opened = hold(peer.url, docs, clients, 4)
        grown = settle_rss(peer) - base
        gen.stdin.close()
        gen.wait()
        return opened, grown
    finally:
        peer.stop()


def memory(name, plugins_dir, docs, conns):
    # Each figure on a fresh process, so that memory freed by one run cannot be reused
    # by the next.
    opened_docs, docs_growth = held_rss(name, plugins_dir, docs, 1)
    opened_conns, conns_growth = held_rss(name, plugins_dir, 1, conns)
    per_conn = conns_growth / max(opened_conns, 1)
    per_doc_and_conn = docs_growth / max(opened_docs, 1)
    return {
        "idle_documents": opened_docs,
        "idle_connections": opened_conns,
        "kib_per_idle_connection": round(per_conn, 2),
        "kib_per_idle_document": round(max(per_doc_and_conn - per_conn, 0.0), 2),
    }


def sweep(peer, rates, seconds):
    points = []
    failures = 0
    for rate in rates:
        cpu0, t0 = cpu_seconds(peer.proc.pid), time.time()
        r = loadgen(peer.url, "run", "--docs", "100", "--clients", "4", "--size", "64",
                    "--rate", str(rate), "--seconds", str(seconds))
        # The server's CPU share over the run (connects and drain included, so slightly
        # pessimistic): deliveries per server CPU-second compare peers even where the
        # generator, not the server, limits the rate.
        r["server_cpu_share"] = (cpu_seconds(peer.proc.pid) - cpu0) / (time.time() - t0)
        busy = r["server_cpu_share"] * (time.time() - t0)
        r["deliveries_per_server_cpu_sec"] = r["delivered"] / busy if busy > 0 else 0
        r["ok"] = r["ratio"] >= MIN_RATIO and r["p99_ms"] < MAX_P99_MS
        print(f"  {peer.name:9} rate {rate:>5}/s/client: {r['deliveries_per_sec']:>10.0f} deliveries/s "
              f"ratio {r['ratio']:.4f} p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms "
              f"server CPU {r['server_cpu_share']:.0%} generator CPU {r['generator_cpu_share']:.0%}", flush=True)
        points.append(r)
        failures = 0 if r["ok"] else failures + 1
        if failures == 2:
            break
    return points


def lanes_scaling(plugins_dir, seconds):
    """The same total load (100 documents x 4 clients at 40 messages/s) on 1 lane and on
    2 lanes (documents split between the ports). With 2 cores, the second lane shares a
    core with the generator: this shows the lanes are independent, not a 2x."""
    out = {}
    for lanes in (1, 2):
        peer = Peer("wasmroom", plugins_dir, lanes=lanes, cpus="0" if lanes == 1 else "0,1")
        try:
            cpu0, t0 = cpu_seconds(peer.proc.pid), time.time()
            docs = 100 // lanes
            procs = [
                subprocess.Popen(
                    [str(c) for c in ["taskset", "-c", GENERATOR_CPU, ROOT / "target" / "release" / "loadgen",
                                      "--url", url, "run", "--docs", docs, "--clients", 4, "--size", 64,
                                      "--rate", 40, "--seconds", seconds]],
                    stdout=subprocess.PIPE, text=True)
                for url in peer.urls
            ]
            runs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
            share = (cpu_seconds(peer.proc.pid) - cpu0) / (time.time() - t0)
        finally:
            peer.stop()
        out[str(lanes)] = {
            "deliveries_per_sec": sum(r["deliveries_per_sec"] for r in runs),
            "ratio": min(r["ratio"] for r in runs),
            "p99_ms": max(r["p99_ms"] for r in runs),
            "server_cpu_share": share,
        }
        print(f"  {lanes} lane(s): {out[str(lanes)]}", flush=True)
    return out


def handover(count):
    """Cold opens through the first port of 1 lane and of 4 lanes (all on the server's
    core): with 4 lanes about 3/4 of the sockets arrive on a lane that does not own their
    document and are handed to the owner before the upgrade. The difference is the cost
    of a hand-over."""
    out = {}
    for lanes in (1, 4):
        peer = Peer("wasmroom", ROOT / "plugins", lanes=lanes)
        try:
            r = loadgen(peer.url, "cold", "--count", str(count))
            stats = [json.loads(http_get(p, "/stats")[1]) for p in peer.ports]
            r["handed_over"] = sum(s["handed_over"] for s in stats)
        finally:
            peer.stop()
        out[str(lanes)] = r
        print(f"  {lanes} lane(s): {r}", flush=True)
    return out


def http_get(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def reload_times(counts):
    """Hot reload of the relay under N live documents: from the rename of the new build
    into the plugins directory to every document running on it (as /plugins reports),
    debounce (200 ms) and compilation included."""
    import tempfile
    out = {}
    for n in counts:
        with tempfile.TemporaryDirectory() as plugins, tempfile.TemporaryDirectory() as data:
            shutil.copy(ROOT / "plugins" / "relay.wasm", Path(plugins) / "relay.wasm")
            peer = Peer("wasmroom", plugins, extra=["--idle-grace", "600", "--data", data])
            try:
                for i in range(n):
                    status, _ = http_get(peer.port, f"/docs/relay/reload-{i}")
                    assert status == 200, status
                _, body = http_get(peer.port, "/plugins")
                old = next(p for p in json.loads(body)["plugins"] if p["name"] == "relay")["current"]["version"]
                tagged = ROOT / "target" / "wasm32-wasip2" / "plugin" / "variants" / "relay-tag.wasm"
                shutil.copy(tagged, Path(plugins) / ".relay.upload")
                started = time.time()
                os.rename(Path(plugins) / ".relay.upload", Path(plugins) / "relay.wasm")
                while True:
                    _, body = http_get(peer.port, "/plugins")
                    relay = next(p for p in json.loads(body)["plugins"] if p["name"] == "relay")
                    current = relay["current"]
                    if current and current["version"] != old and current["live_documents"] == n:
                        break
                    if time.time() - started > 120:
                        raise RuntimeError(f"reload under {n} documents did not finish: {relay}")
                    time.sleep(0.005)
                out[str(n)] = round(time.time() - started, 3)
            finally:
                peer.stop()
        print(f"  reload under {n} live documents: {out[str(n)]} s", flush=True)
    return out


def machine():
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)}


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, r in results["peers"].items():
        pts = [p for p in r["sweep"] if p["ratio"] > 0]
        ax.plot([p["deliveries_per_sec"] for p in pts], [p["p99_ms"] for p in pts], marker="o", label=name)
    ax.axhline(MAX_P99_MS, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("deliveries per second (100 documents x 4 clients, 64-byte messages)")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_title(f"Relay throughput vs latency, server on 1 core ({results['machine']['cpu']})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def efficiency(r):
    """Deliveries per server CPU-second, pooled over the moderate steps (20-80 messages/s
    per client; one step alone is noisy on a shared 2-core machine). A server that is
    saturated there (Daphne) is measured at saturation."""
    pts = [p for p in r["sweep"] if 20 <= p["rate"] <= 80 and p["deliveries_per_server_cpu_sec"] > 0]
    busy = sum(p["delivered"] / p["deliveries_per_server_cpu_sec"] for p in pts)
    return sum(p["delivered"] for p in pts) / busy if busy else 0


def table(results):
    for r in results["peers"].values():
        r["deliveries_per_server_cpu_sec"] = efficiency(r)
    floor = results["peers"].get("native", {}).get("deliveries_per_server_cpu_sec") or 0
    lines = [
        "| peer | max deliveries/s (ratio ≥ 0.999, p99 < 50 ms) | deliveries per server CPU-second (24k-96k deliveries/s) | × native | p50 / p99 at 12k deliveries/s | cold open p50 / p99 | KiB per idle connection | KiB per idle document |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results["peers"].items():
        best = r["max_deliveries_per_sec"]
        eff = r.get("deliveries_per_server_cpu_sec", 0)
        ratio = f"{eff / floor:.2f}" if floor and eff else "–"
        moderate = next((p for p in r["sweep"] if p["rate"] == 10), None)
        mod = f"{moderate['p50_ms']:.2f} / {moderate['p99_ms']:.2f} ms" if moderate else "–"
        cold = r.get("cold")
        cold_s = f"{cold['p50_ms']:.2f} / {cold['p99_ms']:.2f} ms" if cold else "–"
        mem = r.get("memory", {})
        lines.append(
            f"| {name} | {best:,.0f} | {eff:,.0f} | {ratio} | {mod} | {cold_s} | "
            f"{mem.get('kib_per_idle_connection', '–')} | {mem.get('kib_per_idle_document', '–')} |"
        )
    m = results["machine"]
    if "reload_seconds" in results:
        lines.append("")
        lines.append("| hot reload of the relay, rename to all documents migrated | seconds |")
        lines.append("|---|---:|")
        for n, secs in results["reload_seconds"].items():
            lines.append(f"| {int(n):,} live documents | {secs:.2f} |")
    if "handover" in results:
        lines.append("")
        lines.append("| cold opens through the first port | sockets handed over | connect to upgraded p50 / p99 |")
        lines.append("|---|---:|---:|")
        for n, r in results["handover"].items():
            lines.append(f"| {n} lane(s) | {r['handed_over']:,} of {r['count']:,} | {r['p50_ms']:.3f} / {r['p99_ms']:.3f} ms |")
    if "lanes" in results:
        lines.append("")
        lines.append("| wasmroom, 48k deliveries/s offered | deliveries/s | ratio | p99 | server CPU (cores) |")
        lines.append("|---|---:|---:|---:|---:|")
        for n, r in results["lanes"].items():
            lines.append(f"| {n} lane(s) | {r['deliveries_per_sec']:,.0f} | {r['ratio']:.4f} | {r['p99_ms']:.2f} ms | {r['server_cpu_share']:.2f} |")
    lines.append("")
    lines.append(
        f"Measured {results['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}; "
        f"server pinned to core {SERVER_CPU}, load generator to core {GENERATOR_CPU}. "
        f"Memory: {results['memory_setup']}."
    )
    bound = [n for n, r in results["peers"].items() if any(p["generator_cpu_share"] > 0.9 for p in r["sweep"] if p["ok"])]
    if bound:
        lines.append(f"The generator used over 90 % of its core at the best point of: {', '.join(bound)}: "
                     "there the generator, not the server, set the maximum, and deliveries per server "
                     "CPU-second (× native) is the fairer comparison.")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rates, shorter runs, smaller memory runs")
    parser.add_argument("--peers", default="wasmroom,native,node-ws,daphne")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="redo the table and plot from results.json")
    parser.add_argument("--only", choices=["handover"], help="run one wasmroom section and update results.json")
    args = parser.parse_args()
    ensure_venv()
    if args.only:
        if not args.no_build:
            build()
        results = json.loads((RESULTS / "results.json").read_text())
        print(f"== wasmroom, {args.only}", flush=True)
        results["handover"] = handover(600 if args.quick else 3000)
        (RESULTS / "results.md").write_text(table(results))
        (RESULTS / "results.json").write_text(json.dumps(results, indent=2))
        print((RESULTS / "results.md").read_text())
        return
    if args.report_only:
        results = json.loads((RESULTS / "results.json").read_text())
        (RESULTS / "results.md").write_text(table(results))
        (RESULTS / "results.json").write_text(json.dumps(results, indent=2))
        plot(results, RESULTS / "throughput-latency.png")
        print((RESULTS / "results.md").read_text())
        return
    if not shutil.which("taskset"):
        sys.exit("taskset (util-linux) is needed to pin the server and the generator")
    if not args.no_build:
        build()
    RESULTS.mkdir(parents=True, exist_ok=True)
    plugins_dir = ROOT / "plugins"

    rates = [5, 10, 20, 40, 80, 160, 320, 640, 1280]
    seconds = 2 if args.quick else 4
    docs, conns = (2000, 4000) if args.quick else (10000, 15000)
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "memory_setup": f"{docs} documents with one idle connection each, then {conns} idle connections to one document "
                        "(the process file limit here is 20,000)",
        "peers": {},
    }
    for name in args.peers.split(","):
        print(f"== {name}", flush=True)
        peer = Peer(name, plugins_dir)
        try:
            r = {"sweep": sweep(peer, rates[:6] if args.quick else rates, seconds)}
            ok = [p for p in r["sweep"] if p["ok"]]
            r["max_deliveries_per_sec"] = max((p["deliveries_per_sec"] for p in ok), default=0)
            r["cold"] = loadgen(peer.url, "cold", "--count", "200" if args.quick else "1000")
            print(f"  cold open p50 {r['cold']['p50_ms']:.3f} ms p99 {r['cold']['p99_ms']:.3f} ms", flush=True)
        finally:
            peer.stop()
        r["memory"] = memory(name, plugins_dir, docs, conns)
        print(f"  memory {r['memory']}", flush=True)
        results["peers"][name] = r
    if "wasmroom" in results["peers"]:
        print("== wasmroom, 1 vs 2 lanes", flush=True)
        results["lanes"] = lanes_scaling(plugins_dir, seconds)
        print("== wasmroom, hot reload", flush=True)
        results["reload_seconds"] = reload_times([1000, 10000])
        print("== wasmroom, hand-over", flush=True)
        results["handover"] = handover(600 if args.quick else 3000)
    (RESULTS / "results.md").write_text(table(results))
    (RESULTS / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, RESULTS / "throughput-latency.png")
    print((RESULTS / "results.md").read_text())


if __name__ == "__main__":
    main()
