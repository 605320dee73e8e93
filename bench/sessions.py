"""The cost of sessions (issue 31, docs/sessions.md), run by `python3 bench/run.py --only sessions`.

One wasmroom host (one lane, core 0, the relay plugin, bench/wasmroom.toml) under the
ceiling load of run.py (100 documents x 10 clients, 100-byte text messages, each relayed
to the 9 others), once with plain clients and once with session clients (`loadgen run
--session`: each client offers `wasmroom.session.v1`, reads the hello, numbers what it
sends, checks and strips the host's numbers, a gap or a duplicate failing the point, and
acknowledges as clients/js does: after 32 messages, or 100 ms after the first one not
acknowledged). The two alternate at every offered load, on the same host in the same run,
so that the machine's drift falls on both alike. Reported:

  - the ceiling of each (as run.py defines it: the sweep, then three bisections) and
    their ratio; p50 / p99, the server's CPU share, deliveries per server CPU-second and
    the generator's CPU share at every load both were measured at; deliveries per server
    CPU-second pooled over 36k-144k offered;
  - the bytes the framing adds: computed from the wire format for the messages of each
    point (the numbers 1..n of each client, the `!ack` frames the generator counted), and
    measured (bytes the generator read and wrote per message, sessions minus plain);
  - memory per session at rest: N idle session connections to one document against N
    idle plain ones, each on a fresh host, alternating, twice each; the growth of the
    host's resident memory while they are open, per connection. The count is checked:
    every socket got the hello of a new session, the ids are distinct, and the host's
    /stats counts N connections.

Writes results/sessions.{json,md}.
"""

import json
import subprocess
import time

from run import (CLIENTS, DOCS, EFFICIENCY_RANGE, GENERATOR_CPU, MAX_P99_MS, MIN_RATIO, OFFERED, QUICK_OFFERED,
                 RESULTS, ROOT, SIZE, Peer, ceiling, efficiency, http_get, machine, offered, plugins_dir_default,
                 refine, relay_point, settle_rss, unusable)

MODES = {"plain": (), "sessions": ("--session",)}
# Idle connections held for the memory figure (the process file limit here is 20,000).
IDLE = 10_000
IDLE_ROUNDS = 2
# `!hello <32 hex digits> new`: the host's first frame on a session socket, once per socket.
HELLO_FRAME_BYTES = 2 + len("!hello ") + 32 + len(" new")


def sweep_both(peer, loads, seconds):
    """The relay sweep of both modes, alternating at each load; a mode stops after two
    loads in a row it did not carry, or at one that cannot tell (generator saturated,
    core stolen), as run.sweep does."""
    points = {mode: [] for mode in MODES}
    failures = {mode: 0 for mode in MODES}
    done = set()
    for load in loads:
        for mode, extra in MODES.items():
            if mode in done:
                continue
            r = relay_point(peer, load, seconds, extra)
            r["requested_offered"] = load
            points[mode].append(r)
            if unusable(r):
                done.add(mode)
                continue
            failures[mode] = 0 if r["ok"] else failures[mode] + 1
            if failures[mode] == 2:
                done.add(mode)
        if len(done) == len(MODES):
            break
    return points


def mean_prefix(n):
    """Mean bytes of `<seq>:` over the data messages numbered 1..n (docs/sessions.md:
    decimal, no leading zeros, then a colon)."""
    if n <= 0:
        return 0.0
    total, digits, lo = 0, 1, 1
    while lo <= n:
        hi = min(n, 10 ** digits - 1)
        total += (hi - lo + 1) * (digits + 1)
        lo, digits = hi + 1, digits + 1
    return total / n


def bytes_added(plain, session):
    """What the framing added at one load: per delivery (host to client) and per message
    sent (client to host), computed from the format and measured on the wire."""
    clients = DOCS * CLIENTS
    recv, sent = session["delivered"], session["sent"]
    if not recv or not sent or not plain["delivered"] or not plain["sent"]:
        return None
    # Every client receives about as many messages as the others: numbers 1..n each.
    number_in = mean_prefix(round(recv / clients))
    number_out = mean_prefix(round(sent / clients))
    acks_in = session["session_ack_bytes_received"] / recv
    acks_out = session["session_ack_bytes_sent"] / sent
    return {
        "host_to_client_per_delivery": {
            "number_computed": number_in,
            "number_counted": session["session_prefix_bytes_received"] / recv,
            "acks": acks_in,
            "computed": number_in + acks_in,
            "measured": session["bytes_read"] / recv - plain["bytes_read"] / plain["delivered"],
        },
        "client_to_host_per_message": {
            "number_computed": number_out,
            "number_counted": session["session_prefix_bytes_sent"] / sent,
            "acks": acks_out,
            "computed": number_out + acks_out,
            "measured": session["bytes_written"] / sent - plain["bytes_written"] / plain["sent"],
        },
        "plain_bytes_per_delivery": plain["bytes_read"] / plain["delivered"],
        "plain_bytes_per_message_sent": plain["bytes_written"] / plain["sent"],
        "host_acks_per_message_sent": session["session_acks_received"] / sent,
        "client_acks_per_delivery": session["session_acks_sent"] / recv,
    }


def held(plugins_dir, n, session):
    """Resident memory growth of a fresh host while `n` idle connections to one document
    are open (sessions or plain), with the checks that they are."""
    peer = Peer("wasmroom", plugins_dir)
    gen = None
    try:
        base = settle_rss(peer)
        cmd = ["taskset", "-c", GENERATOR_CPU, ROOT / "target" / "release" / "loadgen", "--url", peer.url,
               "hold", "--docs", 1, "--clients", n, "--sources", 4, *(["--session"] if session else [])]
        gen = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = gen.stdout.readline().split()
        if len(line) < 4 or line[0] != "READY":
            raise RuntimeError(f"hold failed: {line}")
        opened, failed, sessions = map(int, line[1:4])
        grown = settle_rss(peer) - base
        stats = json.loads(http_get(peer.port, "/stats")[1])
    finally:
        if gen:
            gen.stdin.close()
            gen.wait()
        peer.stop()
    r = {"session": session, "opened": opened, "failed": failed, "distinct_sessions": sessions,
         "host_connections": stats["connections"], "rss_growth_kib": grown,
         "kib_per_connection": grown / max(opened, 1)}
    r["count_verified"] = (opened == n and stats["connections"] == n and sessions == (n if session else 0))
    print(f"  {'sessions' if session else 'plain':8} {opened:,} idle connections open "
          f"({sessions:,} sessions, /stats {stats['connections']:,}): +{grown:,} KiB, "
          f"{r['kib_per_connection']:.2f} KiB each", flush=True)
    return r


def idle_memory(plugins_dir, n, rounds):
    runs = [held(plugins_dir, n, session) for _ in range(rounds) for session in (False, True)]
    mean = lambda session: sum(r["kib_per_connection"] for r in runs if r["session"] == session) / rounds  # noqa: E731
    return {"connections": n, "runs": runs, "plain_kib_per_connection": mean(False),
            "session_kib_per_connection": mean(True),
            "kib_per_session_at_rest": mean(True) - mean(False),
            "count_verified": all(r["count_verified"] for r in runs)}


def paired(points):
    """(load, plain point, sessions point) for every load of the sweep both modes were
    measured at (the bisections' loads differ)."""
    by = {mode: {p["requested_offered"]: p for p in pts if "requested_offered" in p}
          for mode, pts in points.items()}
    return [(load, p, by["sessions"][load]) for load, p in sorted(by["plain"].items()) if load in by["sessions"]]


def fmt_point(p, unit=""):
    note = "" if p["ok"] else " (not carried)"
    if p.get("generator_saturated"):
        note = " (generator saturated)"
    return f"{p['p50_ms']:.2f} / {p['p99_ms']:.2f}{unit}{note}"


def table(r):
    m = r["machine"]
    lo, hi = EFFICIENCY_RANGE
    plain, sess = r["modes"]["plain"], r["modes"]["sessions"]

    def ceil(x):
        return f"{'≥ ' if x['ceiling_is_lower_bound'] else ''}{x['ceiling']:,.0f}"

    ratio = sess["ceiling"] / plain["ceiling"] if plain["ceiling"] else 0
    # A lower bound above the ratio makes it an upper bound, and the other way round.
    bounds = (plain["ceiling_is_lower_bound"], sess["ceiling_is_lower_bound"])
    ratio_s = {(False, False): f"{ratio:.2f}", (True, False): f"≤ {ratio:.2f}",
               (False, True): f"≥ {ratio:.2f}", (True, True): f"{ratio:.2f} (both lower bounds)"}[bounds]
    lines = [
        f"Sessions on vs off, the relay at the ceiling load ({m['cpu']}, {r['date']}): {DOCS} documents x "
        f"{CLIENTS} clients, {SIZE}-byte text messages, each relayed to the {CLIENTS - 1} others; the two "
        f"alternate at every load on one host, {r['seconds']} s per point. Carried: ratio ≥ {MIN_RATIO}, "
        f"p99 < {MAX_P99_MS:.0f} ms, every lower load too, and with sessions no gap or duplicate.",
        "",
        "| clients | ceiling (deliveries/s) | × plain | deliveries per server CPU-second "
        f"({lo // 1000}k-{hi // 1000}k offered) | × plain |",
        "|---|---:|---:|---:|---:|",
        f"| plain | {ceil(plain)} | 1.00 | {plain['deliveries_per_server_cpu_sec']:,.0f} | 1.00 |",
        f"| sessions | {ceil(sess)} | {ratio_s} | "
        f"{sess['deliveries_per_server_cpu_sec']:,.0f} | "
        f"{sess['deliveries_per_server_cpu_sec'] / plain['deliveries_per_server_cpu_sec']:.2f} |",
        "",
        "| offered/s | plain p50 / p99 ms | sessions p50 / p99 ms | server CPU plain / sessions "
        "| deliveries per server CPU-s plain / sessions | generator CPU plain / sessions "
        "| session errors, unacknowledged at the end |",
        "|---:|---|---|---|---|---|---|",
    ]
    for load, p, s in paired(r["points"]):
        lines.append(
            f"| {load:,.0f} | {fmt_point(p)} | {fmt_point(s)} "
            f"| {p.get('server_cpu_share') or 0:.0%} / {s.get('server_cpu_share') or 0:.0%} "
            f"| {p['deliveries_per_server_cpu_sec']:,.0f} / {s['deliveries_per_server_cpu_sec']:,.0f} "
            f"({s['deliveries_per_server_cpu_sec'] / max(p['deliveries_per_server_cpu_sec'], 1):.2f}x) "
            f"| {p['generator_cpu_share']:.0%} / {s['generator_cpu_share']:.0%} "
            f"| {s.get('session_errors', '–')}, {s.get('session_unacked', '–')} |")
    lines += [
        "",
        "Bytes the framing adds. Format (docs/sessions.md): a text data message gains its number in "
        "decimal and a colon (2 bytes for 1-9, 3 for 10-99, ... at most 21), a binary one 8 bytes; a "
        "frame whose payload then crosses 125 or 65,535 bytes gets a 2 or 6 bytes longer header (not "
        f"here: {SIZE} + 7 < 126); acknowledgements are frames of their own (`!ack <n>`: 2 bytes of "
        "header, 6 with the client's mask, plus 5 + digits); the hello, once per socket, is "
        f"{HELLO_FRAME_BYTES} bytes. Per point, computed from that format for the numbers the "
        "clients used and the acknowledgements the generator counted, and measured: bytes on the "
        "wire per message, sessions minus plain, same load.",
        "",
        "| offered/s | host → client per delivery: number (computed) + acks = computed / measured "
        "| client → host per message sent: number (computed) + acks = computed / measured "
        "| host acks per message sent | client acks per delivery |",
        "|---:|---|---|---:|---:|",
    ]
    for load, p, s in paired(r["points"]):
        b = bytes_added(p, s)
        if not b:
            continue
        i, o = b["host_to_client_per_delivery"], b["client_to_host_per_message"]
        lines.append(
            f"| {load:,.0f} | {i['number_computed']:.2f} + {i['acks']:.2f} = {i['computed']:.2f} / "
            f"{i['measured']:.2f} | {o['number_computed']:.2f} + {o['acks']:.2f} = {o['computed']:.2f} / "
            f"{o['measured']:.2f} | {b['host_acks_per_message_sent']:.2f} | {b['client_acks_per_delivery']:.3f} |")
    for mode, pts in r["points"].items():
        extra = [p for p in pts if "requested_offered" not in p]
        if extra:
            lines.append("")
            lines.append(f"Bisections, {mode}: " + "; ".join(
                f"{offered(p):,.0f}/s p50 / p99 {fmt_point(p, ' ms')}" for p in extra) + ".")
    mem = r["idle_memory"]
    lines += [
        "",
        f"Memory at rest: {mem['connections']:,} idle connections to one document, each set on a fresh "
        "host, plain and sessions alternating; growth of the host's resident memory while they are open, "
        "per connection.",
        "",
        "| clients | KiB per idle connection (each run) | mean |",
        "|---|---|---:|",
    ]
    for session, label in ((False, "plain"), (True, "sessions")):
        runs = [x for x in mem["runs"] if x["session"] == session]
        each = ", ".join(f"{x['kib_per_connection']:.2f}" for x in runs)
        mean = mem["session_kib_per_connection" if session else "plain_kib_per_connection"]
        lines.append(f"| {label} | {each} | {mean:.2f} |")
    lines += [
        "",
        f"A session at rest costs {mem['kib_per_session_at_rest']:.2f} KiB more than a plain connection. "
        + ("Count checked in every run: every socket open, every session socket got a new session's hello, "
           "distinct ids, and /stats counted them all."
           if mem["count_verified"] else "COUNT NOT VERIFIED in some run: see sessions.json."),
        "",
        f"Measured {r['date']} on {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}; host pinned to "
        f"core 0, load generator to core 1. Took {r['took_seconds']:.0f} s.",
    ]
    all_points = [p for pts in r["points"].values() for p in pts]
    gen = [p["generator_cpu_share"] for p in all_points if not p.get("generator_saturated")]
    if gen:
        lines.append(f"The generator used at most {max(gen):.0%} of its core at any point reported here.")
    steal = [p["server_core_steal_share"] for p in all_points]
    if steal:
        lines.append(f"The hypervisor took at most {max(steal):.0%} of the host's core at any point reported here.")
    return "\n".join(lines) + "\n"


def main(quick=False, loads=None, seconds=None):
    started = time.time()
    loads = loads or (QUICK_OFFERED if quick else OFFERED)
    seconds = seconds or (2 if quick else 4)
    plugins_dir = plugins_dir_default()
    r = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "seconds": seconds, "loads": loads}
    print("== wasmroom, relay with plain and session clients", flush=True)
    peer = Peer("wasmroom", plugins_dir)
    try:
        points = sweep_both(peer, loads, seconds)
        for mode, extra in MODES.items():
            refine(peer, points[mode], seconds, extra)
    finally:
        peer.stop()
    r["points"] = points
    r["modes"] = {}
    for mode, pts in points.items():
        best, lower = ceiling(pts)
        m = {"ceiling": best, "ceiling_is_lower_bound": lower, "sweep": pts}
        m["deliveries_per_server_cpu_sec"] = efficiency(m)
        r["modes"][mode] = {k: v for k, v in m.items() if k != "sweep"}
        print(f"  {mode}: ceiling {best:,.0f}{' (lower bound)' if lower else ''}, "
              f"{m['deliveries_per_server_cpu_sec']:,.0f} deliveries per server CPU-second", flush=True)
    r["bytes_added"] = {str(load): bytes_added(p, s) for load, p, s in paired(points)}
    idle = 2_000 if quick else IDLE
    print(f"== wasmroom, {idle:,} idle connections, plain and sessions", flush=True)
    r["idle_memory"] = idle_memory(plugins_dir, idle, 1 if quick else IDLE_ROUNDS)
    r["took_seconds"] = time.time() - started
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sessions.json").write_text(json.dumps(r, indent=2))
    (RESULTS / "sessions.md").write_text(table(r))
    print((RESULTS / "sessions.md").read_text())


def report():
    """results/sessions.md again from sessions.json (`--only sessions --report-only`)."""
    r = json.loads((RESULTS / "sessions.json").read_text())
    (RESULTS / "sessions.md").write_text(table(r))
    print((RESULTS / "sessions.md").read_text())
