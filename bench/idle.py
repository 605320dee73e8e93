"""What an idle WebSocket connection costs (issue 33), run by `python3 bench/run.py --only idle`.

Each figure on a fresh wasmroom (one lane, the relay, pinned to core 0; the generator,
`loadgen hold`, on core 1; 4 loopback source addresses):

  bench      the full run's method (`run.memory`): 10,000 documents with one connection
             each, then 15,000 connections to one document (2,000 and 4,000 with
             `--quick`), 256 handshakes in flight at a time
  burst      5,000 connections opened as fast as the generator can (every handshake in
             flight at once), on 50 documents x 100 and on 1 document x 5,000

Every connection is held while the server is measured, and counted three ways: the
generator's upgraded sockets, the server's `wasmroom_websockets` gauge, and the TCP
connections established on the server's port (/proc/net/tcp); the gauge is read again
after the measurement, so that none closed meanwhile. Process: growth of the server's
resident memory (VmRSS once it stops changing) over the connections, with the growth of
its anonymous memory (smaps_rollup) beside it. Kernel: growth of the kernel's slab caches
and TCP buffers over the same run, halved (the generator's end of each connection is on
this machine too). On 50 documents the process figure includes the 50 documents'
instances; `minus documents` takes the bench's per-document figure off.

Each run adds itself to results/idle.json under its commit (a dirty tree is marked) or
`--label`, so the file keeps the figures of earlier builds; results/idle.md shows them all.
"""

import json
import subprocess
import time
from pathlib import Path

from run import ROOT, RESULTS, Peer, hold, http_get, kernel_kib, machine, settle_rss

BURSTS = ((50, 100), (1, 5_000))
SOURCES = 4


def websockets(peer):
    """The server's own count of open WebSocket connections."""
    _, body = http_get(peer.port, "/metrics")
    return int(sum(float(line.rpartition(" ")[2]) for line in body.decode().splitlines()
                   if line.startswith("wasmroom_websockets{") or line.startswith("wasmroom_websockets ")))


def established(port):
    """TCP connections established on the server's side of `port`."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                count += 1
    return count


def anonymous_kib(pid):
    """The process's anonymous resident memory (heap, stacks, the pool's touched pages)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1])
    return 0


def held(docs, clients, concurrency):
    """A fresh server holding docs x clients idle connections: what they cost, and how
    many were open while it was measured."""
    peer = Peer("wasmroom", ROOT / "plugins")
    gen = None
    try:
        base, base_anon = settle_rss(peer), anonymous_kib(peer.proc.pid)
        kernel_before = kernel_kib()
        gen, (opened, failed, seconds) = hold(peer.url, docs, clients, SOURCES, concurrency)
        # The gauge counts a socket once its task runs: wait (bounded) for the last ones.
        deadline = time.time() + 30
        while websockets(peer) < opened and time.time() < deadline:
            time.sleep(0.1)
        served, tcp = websockets(peer), established(peer.port)
        rss, anon = settle_rss(peer), anonymous_kib(peer.proc.pid)
        kernel_after = kernel_kib()
        still = websockets(peer)
    finally:
        if gen:
            gen.stdin.close()
            gen.wait()
        peer.stop()
    n = max(min(opened, served, still), 1)
    out = {
        "documents": docs,
        "clients_per_document": clients,
        "handshakes_in_flight": concurrency,
        "opened": opened,
        "failed": failed,
        "open_seconds": seconds,
        "served": served,
        "tcp_established": tcp,
        "served_after_measurement": still,
        "rss_before_kib": base,
        "rss_growth_kib": rss - base,
        "anonymous_growth_kib": anon - base_anon,
        "kib_per_connection": round((rss - base) / n, 2),
        "anonymous_kib_per_connection": round((anon - base_anon) / n, 2),
    }
    if kernel_before is not None and kernel_after is not None:
        out["kernel_kib_per_connection"] = round((kernel_after - kernel_before) / 2 / n, 2)
    print(f"  {docs} x {clients} ({concurrency} at a time): {out}", flush=True)
    return out


def revision():
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "host", "wire"], cwd=ROOT,
                           capture_output=True, text=True)
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def measure(quick, label):
    docs, conns = (2_000, 4_000) if quick else (10_000, 15_000)
    print("== wasmroom, idle connections: the bench's method", flush=True)
    per_doc = held(docs, 1, 256)
    per_conn = held(1, conns, 256)
    bench = {
        "idle_documents": per_doc["opened"],
        "idle_connections": per_conn["opened"],
        "kib_per_idle_connection": per_conn["kib_per_connection"],
        "kib_per_idle_document": round(max(per_doc["kib_per_connection"] - per_conn["kib_per_connection"], 0.0), 2),
        "kernel_kib_per_idle_connection": per_conn.get("kernel_kib_per_connection"),
        "documents_run": per_doc,
        "connections_run": per_conn,
    }
    print("== wasmroom, idle connections: bursts", flush=True)
    bursts = {}
    for d, c in BURSTS:
        b = held(d, c, d * c)
        b["kib_per_connection_minus_documents"] = round(
            b["kib_per_connection"] - d * bench["kib_per_idle_document"] / max(b["opened"], 1), 2)
        bursts[f"{d}x{c}"] = b
    return {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "revision": label or revision(), "quick": quick,
            "bench": bench, "bursts": bursts}


def table(runs):
    def open_count(b):
        return f"{b['opened']:,} / {b['served']:,} / {b['tcp_established']:,} / {b['served_after_measurement']:,}"

    lines = [
        "Process memory per idle WebSocket connection (KiB; `python3 bench/run.py --only idle`, bench/idle.py).",
        "",
        "| revision | date | machine | bench: process | bench: kernel | per document | 50 x 100 burst: process "
        "(minus documents) | 50 x 100: kernel | 1 x 5,000 burst: process | 1 x 5,000: kernel |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for rev, r in runs.items():
        b, s, o = r["bench"], r["bursts"]["50x100"], r["bursts"]["1x5000"]
        m = r["machine"]
        lines.append(
            f"| {rev} | {r['date']} | {m['cpu'].split(' Processor')[0]}, {m['cores']} cores | "
            f"{b['kib_per_idle_connection']:.2f} | {b['kernel_kib_per_idle_connection'] or 0:.2f} | "
            f"{b['kib_per_idle_document']:.1f} | {s['kib_per_connection']:.2f} "
            f"({s['kib_per_connection_minus_documents']:.2f}) | {s.get('kernel_kib_per_connection', 0):.2f} | "
            f"{o['kib_per_connection']:.2f} | {o.get('kernel_kib_per_connection', 0):.2f} |")
    lines += ["", "Connections counted while measured (generator upgraded / server gauge / TCP established / "
              "gauge after the measurement), and how long the generator took to open them:", "",
              "| revision | bench: 1 x connections | 50 x 100 burst | 1 x 5,000 burst |", "| --- | --- | --- | --- |"]
    for rev, r in runs.items():
        c, s, o = r["bench"]["connections_run"], r["bursts"]["50x100"], r["bursts"]["1x5000"]
        lines.append(f"| {rev} | {open_count(c)} in {c['open_seconds']:.1f} s | {open_count(s)} in "
                     f"{s['open_seconds']:.1f} s | {open_count(o)} in {o['open_seconds']:.1f} s |")
    lines += ["", "Process: growth of the server's VmRSS over the connections, settled; kernel: growth of slab "
              "caches and TCP buffers, halved (both ends are on this machine). The bench's method: "
              "documents with one connection each, then connections to one document, 256 handshakes in "
              "flight; a burst: every handshake in flight at once. Server on core 0, generator on core 1."]
    return "\n".join(lines) + "\n"


def main(quick=False, label=None):
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "idle.json"
    runs = json.loads(path.read_text()) if path.exists() else {}
    r = measure(quick, label)
    runs.pop(r["revision"], None)
    runs[r["revision"]] = r
    path.write_text(json.dumps(runs, indent=2))
    (RESULTS / "idle.md").write_text(table(runs))
    print((RESULTS / "idle.md").read_text())
