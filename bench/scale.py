"""Idle connections at scale, then one broadcast to all of them (issue 33), run by
`python3 bench/run.py --only scale`.

One fresh wasmroom (one lane, the relay, pinned to core 0) holds as many idle connections
to one document as this machine lets two processes open (each connection is a file
descriptor in the server and one in the generator, `loadgen hold` on core 1, from 4
loopback source addresses): the smaller of the two processes' open-file limits, less a
margin for the server's own files. Measured while they are open and counted (the
generator's sockets, the server's gauge, established TCP connections): the growth of the
server's resident memory and of the kernel's (halved: both ends are on this machine).
Then one client sends one message, which the relay sends to every other connection of the
document: the time from the send until the last client has it, from the generator's
clock.

The issue asks for 100,000 connections; a machine whose hard limit on open files is lower
(`ulimit -Hn`) cannot hold them in one process, and the result says what it allowed.
Results: results/scale.md and results/scale.json.
"""

import json
import os
import resource
import time
from pathlib import Path

from idle import SOURCES, established, websockets
from run import RESULTS, ROOT, Peer, hold, kernel_kib, machine, settle_rss

# The server's own files (listener, epoll, eventfds, the plugin, logs) and the
# generator's, with room to spare.
MARGIN = 200
WANTED = 100_000
# Broadcasts measured one after the other (the median and the worst are reported).
BROADCASTS = 5


def cpu_ms(pid):
    """User and system CPU time process `pid` has used, in milliseconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) * 1000 / ticks


def open_file_limit(pid):
    """The soft limit on open files of process `pid`."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise RuntimeError(f"no open-file limit for {pid}")


def measure():
    peer = Peer("wasmroom", ROOT / "plugins")
    gen = None
    try:
        server_limit = open_file_limit(peer.proc.pid)
        own_soft, own_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # The generator inherits this process's limit: raise it as far as allowed.
        resource.setrlimit(resource.RLIMIT_NOFILE, (own_hard, own_hard))
        n = min(WANTED, server_limit - MARGIN, own_hard - MARGIN)
        print(f"== wasmroom: {n:,} idle connections (server's open-file limit {server_limit:,}, "
              f"the generator's {own_hard:,})", flush=True)
        base = settle_rss(peer)
        kernel_before = kernel_kib()
        gen, (opened, failed, seconds) = hold(peer.url, 1, n, SOURCES, 256)
        deadline = time.time() + 60
        while websockets(peer) < opened and time.time() < deadline:
            time.sleep(0.1)
        served, tcp = websockets(peer), established(peer.port)
        rss = settle_rss(peer)
        kernel_after = kernel_kib()
        # Several broadcasts, each with the CPU time the server and the generator spent
        # on it: the time until the last client has the message is one figure of both.
        rounds = []
        for _ in range(BROADCASTS):
            server_cpu, gen_cpu = cpu_ms(peer.proc.pid), cpu_ms(gen.pid)
            gen.stdin.write("broadcast\n")
            gen.stdin.flush()
            line = gen.stdout.readline().split()
            if line[:1] != ["BROADCAST"]:
                raise RuntimeError(f"broadcast: {line}")
            rounds.append({
                "received": int(line[1]),
                "ms": float(line[2]),
                "server_cpu_ms": cpu_ms(peer.proc.pid) - server_cpu,
                "generator_cpu_ms": cpu_ms(gen.pid) - gen_cpu,
            })
            time.sleep(1)
        still = websockets(peer)
    finally:
        if gen:
            gen.stdin.close()
            gen.wait()
        peer.stop()
    out = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "wanted": WANTED,
        "server_open_file_limit": server_limit,
        "generator_open_file_limit": own_hard,
        "connections": n,
        "opened": opened,
        "failed": failed,
        "open_seconds": seconds,
        "served": served,
        "tcp_established": tcp,
        "served_after_broadcast": still,
        "rss_growth_kib": rss - base,
        "kib_per_connection": round((rss - base) / max(opened, 1), 2),
        "broadcast_recipients": opened - 1,
        "broadcast_received": min(r["received"] for r in rounds),
        "broadcast_ms": sorted(r["ms"] for r in rounds)[len(rounds) // 2],
        "broadcast_ms_max": max(r["ms"] for r in rounds),
        "broadcasts": rounds,
    }
    if kernel_before is not None and kernel_after is not None:
        out["kernel_growth_kib"] = round((kernel_after - kernel_before) / 2)
        out["kernel_kib_per_connection"] = round((kernel_after - kernel_before) / 2 / max(opened, 1), 2)
    print(f"  {out}", flush=True)
    return out


def table(r):
    kernel = r.get("kernel_kib_per_connection", "–")
    allowed = min(r["server_open_file_limit"], r["generator_open_file_limit"])
    return "\n".join([
        f"Idle connections at scale on one lane, then one broadcast to all ({r['machine']['cpu']}, {r['date']}; "
        "`python3 bench/run.py --only scale`, bench/scale.py).",
        "",
        "| connections held (open / server's count / TCP established) | process memory | per connection | "
        "kernel per connection (halved) | broadcast: recipients that got it | time until the last has it |",
        "|---|---:|---:|---:|---:|---:|",
        f"| {r['opened']:,} / {r['served']:,} / {r['tcp_established']:,} | {r['rss_growth_kib'] / 1024:,.1f} MiB | "
        f"{r['kib_per_connection']} KiB | {kernel} KiB | {r['broadcast_received']:,} of {r['broadcast_recipients']:,} "
        f"| {r['broadcast_ms']:,.1f} ms |",
        "",
        f"Each of {len(r['broadcasts'])} broadcasts, one after the other: time until the last client has it, "
        "and the CPU time the server and the generator spent meanwhile.",
        "",
        "| broadcast | recipients that got it | time until the last has it | server CPU | generator CPU |",
        "|---:|---:|---:|---:|---:|",
        *[f"| {i + 1} | {b['received']:,} | {b['ms']:,.1f} ms | {b['server_cpu_ms']:,.0f} ms | "
          f"{b['generator_cpu_ms']:,.0f} ms |" for i, b in enumerate(r["broadcasts"])],
        "",
        "The table above gives the median.",
        "",
        f"Asked for {r['wanted']:,} connections; this machine allows {allowed:,} open files per process "
        f"(the server's limit {r['server_open_file_limit']:,}, the generator's {r['generator_open_file_limit']:,}: "
        "hard limits, not raisable here), so it held "
        f"{r['connections']:,} (the limit less {MARGIN} for each process's own files). More needs a higher "
        "`ulimit -Hn` (systemd: `LimitNOFILE=`) for both processes.",
        "",
    ])


def main():
    r = measure()
    (RESULTS / "scale.json").write_text(json.dumps(r, indent=1) + "\n")
    (RESULTS / "scale.md").write_text(table(r))
    print(table(r))
