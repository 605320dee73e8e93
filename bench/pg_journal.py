"""Journal mode on the PostgreSQL store (issue 30), run by `python3 bench/run.py --only pgjournal`.

One PostgreSQL (store.Postgres: its own cluster, default durability, pinned to the
generator's core) and one wasmroom host (one lane, core 0) serving `chat` with
`durability = "journal"`, then `"checkpoint"` in the same run, at the same load:

  1,000 documents x 2 clients, a 100-byte line per client per second: every line is
        relayed to the other client, whose delivery latency includes the journal commit
  10,000 documents x 1 writer, a line per document per second: the host's journal load
        at scale (20,000 sockets would pass the machine's 20,000 open files per process)

For each: journal commits and records per second, a commit's mean time, PostgreSQL's and
the host's CPU, journal rows left in the table (checkpoints delete what they cover), and
the generator's delivery latency and CPU share. Writes results/pg-journal.{json,md}.
"""

import json
import subprocess
import time

from run import GENERATOR_CPU, RESULTS, ROOT, cpu_seconds, machine
from store import CHECKPOINT_SECS, PG_CPU, Host, Postgres, mean_over, stop_generator, total, wait_for

WARMUP = 4 * CHECKPOINT_SECS
LOADS = ((1_000, 2), (10_000, 1))


def point(pg, docs, clients, mode, window):
    host = Host(pg, plugin="chat", journal=mode == "journal")
    gen = None
    try:
        gen = subprocess.Popen(
            [str(c) for c in ["taskset", "-c", GENERATOR_CPU, ROOT / "target" / "release" / "loadgen", "--url",
                              host.url, "run", "--docs", docs, "--clients", clients, "--size", 100, "--rate", 1,
                              "--seconds", WARMUP + window + 2, "--server-pid", host.proc.pid]],
            stdout=subprocess.PIPE, text=True)
        wait_for("the first chat line", lambda: total(host.metrics(), "wasmroom_messages_received_total") > 0,
                 timeout=600)
        time.sleep(WARMUP)
        m0, p0, s0 = host.metrics(), pg.counters(), cpu_seconds(host.proc.pid)
        time.sleep(window)
        m1, p1, s1 = host.metrics(), pg.counters(), cpu_seconds(host.proc.pid)
        rows = int(pg.sql("SELECT count(*) FROM wasmroom.journal")[0][0])
        run = json.loads(gen.communicate()[0].strip().splitlines()[-1])
    finally:
        stop_generator(gen)
        host.stop()
    secs = p1["at"] - p0["at"]
    rate = lambda a, b: (b - a) / secs  # noqa: E731
    r = {
        "documents": docs,
        "clients": clients,
        "mode": mode,
        "window_seconds": round(secs, 1),
        "messages_per_sec": rate(total(m0, "wasmroom_messages_received_total"),
                                 total(m1, "wasmroom_messages_received_total")),
        "commits_per_sec": rate(total(m0, "wasmroom_journal_commits_total", 'outcome="ok"'),
                                total(m1, "wasmroom_journal_commits_total", 'outcome="ok"')),
        "failed_commits": total(m1, "wasmroom_journal_commits_total", 'outcome="failed"'),
        "records_per_sec": rate(total(m0, "wasmroom_journal_records_total"), total(m1, "wasmroom_journal_records_total")),
        "commit_ms_avg": mean_over(m0, m1, "wasmroom_journal_commit_seconds") * 1000,
        "pg_transactions_per_sec": rate(p0["transactions"], p1["transactions"]),
        "pg_cpu_share": rate(p0["cpu_seconds"], p1["cpu_seconds"]),
        "server_cpu_share": rate(s0, s1),
        "journal_rows_at_end": rows,
        "delivery_ratio": run["ratio"] if clients > 1 else None,
        "generator_cpu_share": run["generator_cpu_share"],
    }
    print(f"  {json.dumps(r)}", flush=True)
    return r


def table(results):
    m, pg = results["machine"], results["postgres"]
    lines = [
        "| documents x clients | mode | lines/s | deliveries (ratio) | commits/s (records/s) | commit, mean "
        "| PostgreSQL CPU | wasmroom CPU | journal rows at the end |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["points"]:
        # The generator times only its own numbered frames; the chat wraps each line in
        # JSON, so no delivery latency here: the commit's mean is what an output waits.
        latency = f"{r['delivery_ratio']:.3f}" if r["delivery_ratio"] is not None else "(writers only)"
        commits = (f"{r['commits_per_sec']:,.0f} ({r['records_per_sec']:,.0f})" if r["mode"] == "journal" else "-")
        commit_ms = f"{r['commit_ms_avg']:.2f} ms" if r["mode"] == "journal" else "-"
        lines.append(f"| {r['documents']:,} x {r['clients']} | {r['mode']} | {r['messages_per_sec']:,.0f} | {latency} "
                     f"| {commits} | {commit_ms} | {r['pg_cpu_share']:.0%} | {r['server_cpu_share']:.0%} "
                     f"| {r['journal_rows_at_end']:,} |")
    gen = max(r["generator_cpu_share"] for r in results["points"])
    lines += [
        "",
        f"Measured {results['date']} on {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}; PostgreSQL "
        f"{pg['server_version']} on loopback (fsync {pg['fsync']}, synchronous_commit {pg['synchronous_commit']}), "
        f"pinned to core {PG_CPU} with the load generator; wasmroom (one lane) on core 0, chat, checkpoint every "
        f"{CHECKPOINT_SECS} s, {WARMUP} s warm-up, then the window. A line per client per second, 100 bytes; "
        "with two clients each line is relayed to the other (deliveries over lines sent). "
        f"The load generator used at most {gen:.0%} of its core.",
        f"Took {results['seconds']:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def main(quick=False):
    started = time.time()
    RESULTS.mkdir(parents=True, exist_ok=True)
    pg = Postgres()
    try:
        results = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "postgres": pg.settings(), "points": []}
        for docs, clients in LOADS:
            if quick:
                docs //= 10
            for mode in ("journal", "checkpoint"):
                print(f"== PostgreSQL journal: {docs} documents x {clients}, {mode}", flush=True)
                results["points"].append(point(pg, docs, clients, mode, 10 if quick else 40))
                pg.sql("DELETE FROM wasmroom.documents; DELETE FROM wasmroom.journal")
    finally:
        pg.stop()
    results["seconds"] = time.time() - started
    (RESULTS / "pg-journal.json").write_text(json.dumps(results, indent=2))
    (RESULTS / "pg-journal.md").write_text(table(results))
    print((RESULTS / "pg-journal.md").read_text())
