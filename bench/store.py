"""The PostgreSQL store's benchmarks (issue 16), run by `python3 bench/run.py --only store`.

Starts its own PostgreSQL (Debian's server binaries, `initdb` into a temporary directory,
run as the unprivileged user `wasmroom-pg` when this runs as root, its own free port,
PostgreSQL's default durability settings: fsync and synchronous commit on) pinned to the
generator's core, and measures:

  cold       cold opens with the file store and with the PostgreSQL store, same run
  relay      deliveries per server CPU-second at one moderate relay load, both stores
             (alternating, so that drift on the shared machine hits both alike)
  checkpoint 10,000 chat documents on one host, each changed about once a second,
             checkpoint every 5 s: saves per second, the oldest save of any document
             (PostgreSQL's own saved_at), statements per second and PostgreSQL's CPU
  takeover   1,000 documents held by host A, kill -9 A, their clients open them on host B
             (retrying): time from the kill to each document served, for several lease TTLs

Writes results/store.json, results/store.md and results/takeover.png.
"""

import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from run import (BENCH, CLIENTS, DOCS, GENERATOR_CPU, RESULTS, ROOT, Peer, cpu_seconds, free_port,
                 http_get, loadgen, machine, relay_point)

# PostgreSQL shares the generator's core: the server under test keeps core 0 to itself.
PG_CPU = GENERATOR_CPU
PG_USER = "wasmroom-pg"
CHECKPOINT_SECS = 5
# The relay load both stores carry for the efficiency comparison (offered deliveries/s),
# measured this many times per store.
RELAY_LOAD, RELAY_REPEATS = 72_000, 3
TTLS_MS = (2_000, 5_000, 10_000)


def is_root():
    return os.geteuid() == 0


def pg_binaries():
    """Debian's server binaries, newest version first; None when PostgreSQL is missing."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    return found[-1].parent if found else None


def available():
    return pg_binaries() is not None


def as_pg_user(cmd):
    """PostgreSQL refuses to run as root: run its tools as an unprivileged user then."""
    return ["runuser", "-u", PG_USER, "--", *map(str, cmd)] if is_root() else list(map(str, cmd))


class Postgres:
    """A throwaway PostgreSQL cluster with a `wasmroom` database, pinned to PG_CPU."""

    def __init__(self):
        self.bin = pg_binaries()
        if self.bin is None:
            raise SystemExit("PostgreSQL's server is not installed (apt-get install postgresql)")
        self.dir = Path(tempfile.mkdtemp(prefix="wasmroom-bench-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgres://wasmroom@127.0.0.1:{self.port}/wasmroom"
        if is_root():
            self._prepare_service_user()
        subprocess.run(as_pg_user([self.bin / "initdb", "-D", self.data, "-A", "trust", "-U", "wasmroom",
                                   "-E", "UTF8"]), check=True, capture_output=True)
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        subprocess.run(["taskset", "-c", PG_CPU, *as_pg_user([self.bin / "pg_ctl", "start", "-w", "-D", self.data,
                                                              "-l", self.dir / "postgres.log", "-o", options])],
                       check=True, capture_output=True, stdin=subprocess.DEVNULL)
        subprocess.run([self.bin / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "wasmroom",
                        "wasmroom"], check=True)

    def _prepare_service_user(self):
        if subprocess.run(["id", PG_USER], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
                           check=True)
        self.data.mkdir()
        shutil.chown(self.dir, PG_USER)
        shutil.chown(self.data, PG_USER)
        self.dir.chmod(0o755)

    def sql(self, query):
        """One query through psql; its unaligned rows, each a list of fields."""
        out = subprocess.run([self.bin / "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "wasmroom",
                              "-d", "wasmroom", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", query],
                             check=True, capture_output=True, text=True).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def settings(self):
        rows = self.sql("SELECT name, setting FROM pg_settings WHERE name IN "
                        "('server_version', 'fsync', 'synchronous_commit', 'shared_buffers', 'max_wal_size')")
        return dict(rows)

    def cpu_seconds(self):
        """CPU of the whole server: the postmaster, every live process it forked, and
        (through the postmaster's cutime/cstime) those that ended."""
        master = int((self.data / "postmaster.pid").read_text().split()[0])
        total = 0.0
        for pid in [master, *children(master)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile: counted in the postmaster's cutime from now on
            ticks = int(fields[11]) + int(fields[12])
            if pid == master:
                ticks += int(fields[13]) + int(fields[14])
            total += ticks / os.sysconf("SC_CLK_TCK")
        return total

    def counters(self):
        """PostgreSQL's own counts: transactions of the database, rows of the documents table."""
        (xact, rollback), = self.sql("SELECT xact_commit, xact_rollback FROM pg_stat_database "
                                     "WHERE datname = 'wasmroom'")
        rows = self.sql("SELECT coalesce(sum(n_tup_upd), 0), coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables "
                        "WHERE schemaname = 'wasmroom' AND relname = 'documents'")
        updated, inserted = rows[0] if rows else (0, 0)
        return {"transactions": int(xact) + int(rollback), "rows_updated": int(updated), "rows_inserted": int(inserted),
                "cpu_seconds": self.cpu_seconds(), "at": time.time()}

    def stop(self):
        """Stops the server; its log (checkpoints, autovacuum) stays in results/tmp/."""
        subprocess.run(as_pg_user([self.bin / "pg_ctl", "stop", "-w", "-m", "fast", "-D", self.data]),
                       capture_output=True, stdin=subprocess.DEVNULL)
        (RESULTS / "tmp").mkdir(parents=True, exist_ok=True)
        shutil.copy(self.dir / "postgres.log", RESULTS / "tmp" / "postgres.log")
        shutil.rmtree(self.dir, ignore_errors=True)


def children(pid):
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def host_config(ttl_ms=10_000, journal=False):
    """The bench's wasmroom.toml with the store's lease TTL (and chat in journal mode)."""
    fd, name = tempfile.mkstemp(prefix="wasmroom-store-", suffix=".toml")
    os.close(fd)
    path = Path(name)
    chat = '\n[plugin.chat]\ndurability = "journal"\n' if journal else ""
    path.write_text((BENCH / "wasmroom.toml").read_text() + f"\n[store]\nlease_ttl_ms = {ttl_ms}\n{chat}")
    return path


class Host(Peer):
    """A wasmroom host with the file store (its own data directory) or the PostgreSQL store."""

    def __init__(self, pg=None, plugin="relay", bind="127.0.0.1", ttl_ms=10_000, journal=False):
        self.data = tempfile.mkdtemp(prefix="wasmroom-bench-data-")
        self.config = host_config(ttl_ms, journal)
        extra = ["--data", self.data, "--checkpoint", str(CHECKPOINT_SECS)]
        if pg:
            extra += ["--store", pg.url]
        super().__init__("wasmroom", ROOT / "plugins", extra=extra, config=self.config, bind=bind, plugin=plugin)

    def metrics(self):
        """The process's counters from /metrics: name -> {labels: value}."""
        _, body = http_get(self.port, "/metrics", host=self.host)
        out = {}
        for line in body.decode().splitlines():
            if not line or line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            name, _, labels = series.partition("{")
            try:
                out.setdefault(name, {})[labels.rstrip("}")] = float(value)
            except ValueError:
                pass
        return out

    def stop(self):
        super().stop()
        self.cleanup()

    def kill(self):
        """kill -9: no save, no release; the leases lapse only when the TTL runs out."""
        self.proc.kill()
        self.proc.wait()
        self.cleanup()

    def cleanup(self):
        shutil.rmtree(self.data, ignore_errors=True)
        self.config.unlink(missing_ok=True)


def total(metrics, name, match=""):
    return sum(v for labels, v in metrics.get(name, {}).items() if match in labels)


def with_generator_share(run):
    """Runs `run()` (which waits for one generator process) and adds that process's CPU
    share over its wall time, from the children's rusage: `cold` does not report it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    result = run()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    result["generator_cpu_share"] = cpu / (time.time() - started)
    return result


def cold_and_relay(pg, count):
    """Cold opens and deliveries per server CPU-second, file store against PostgreSQL,
    both hosts up at once and measured in turn."""
    hosts = {"file": Host(), "postgres": Host(pg)}
    out = {name: {"relay_points": []} for name in hosts}
    try:
        for name, host in hosts.items():
            out[name]["cold"] = with_generator_share(lambda: loadgen(host.url, "cold", "--count", str(count)))
            print(f"  {name:8} cold open p50 {out[name]['cold']['p50_ms']:.3f} ms "
                  f"p99 {out[name]['cold']['p99_ms']:.3f} ms", flush=True)
        for _ in range(RELAY_REPEATS):
            for name, host in hosts.items():
                host.name = f"{name} store"
                out[name]["relay_points"].append(relay_point(host, RELAY_LOAD, 4))
    finally:
        for host in hosts.values():
            host.stop()
    for r in out.values():
        pts = r["relay_points"]
        busy = sum(p["server_cpu_seconds"] for p in pts)
        r["deliveries_per_server_cpu_sec"] = sum(p["delivered"] for p in pts) / busy if busy else 0
        r["relay_ratio"] = min(p["ratio"] for p in pts)
        r["relay_p99_ms"] = max(p["p99_ms"] for p in pts)
        r["relay_generator_cpu_share"] = max(p["generator_cpu_share"] for p in pts)
    return out


def stop_generator(gen):
    """A generator left running by a failed measurement would load the next one."""
    if gen is not None and gen.poll() is None:
        gen.kill()
        gen.wait()


def wait_for(what, check, timeout):
    deadline = time.time() + timeout
    while not check():
        if time.time() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout} s")
        time.sleep(0.5)


def save_ages(pg):
    """(documents never saved, seconds since the oldest save) over the chat documents,
    by PostgreSQL's clock: a host that falls behind lets this grow past the checkpoint."""
    (never, oldest), = pg.sql("SELECT count(*) FILTER (WHERE saved_at IS NULL), "
                              "coalesce(extract(epoch FROM now() - min(saved_at)), 0) "
                              "FROM wasmroom.documents WHERE plugin = 'chat' AND doc LIKE 'bench-%'")
    return int(never), float(oldest)


def checkpoints(pg, docs, window):
    """`docs` chat documents, one client each sending a 100-byte line about once a second
    (the chat keeps its last 100 lines, so every line changes the snapshot), checkpoint
    every CHECKPOINT_SECS. Once every document has been saved with its lines, counts over
    `window` seconds what the host wrote and what PostgreSQL did and spent."""
    host = Host(pg, plugin="chat")
    # Every document goes from clean to dirty within the first second of sending, and those
    # whose last save is over CHECKPOINT_SECS old all save at once: a start-up burst the
    # window must not include.
    warmup = 12 * CHECKPOINT_SECS
    gen = None
    try:
        gen = subprocess.Popen(
            [str(c) for c in ["taskset", "-c", GENERATOR_CPU, ROOT / "target" / "release" / "loadgen", "--url",
                              host.url, "run", "--docs", docs, "--clients", 1, "--size", 100, "--rate", 1,
                              "--seconds", warmup + window + 2, "--server-pid", host.proc.pid]],
            stdout=subprocess.PIPE, text=True)
        # The generator connects every client first (one after another), then sends.
        wait_for("the first chat line", lambda: total(host.metrics(), "wasmroom_messages_received_total") > 0,
                 timeout=600)
        time.sleep(warmup)
        m0, p0, s0 = host.metrics(), pg.counters(), cpu_seconds(host.proc.pid)
        ages = []
        while time.time() < p0["at"] + window:
            ages.append(save_ages(pg))
            time.sleep(1)
        m1, p1, s1 = host.metrics(), pg.counters(), cpu_seconds(host.proc.pid)
        run = json.loads(gen.communicate()[0].strip().splitlines()[-1])
    finally:
        stop_generator(gen)
        host.stop()
    secs = p1["at"] - p0["at"]
    rate = lambda a, b: (b - a) / secs  # noqa: E731
    # A save's time from the lane's request to its answer (queue for the writer included),
    # and one save statement's round trip: together they show where a save waits.
    save_s = mean_over(m0, m1, "wasmroom_snapshot_save_seconds")
    statement_s = mean_over(m0, m1, "wasmroom_store_round_trip_seconds", 'op="save"')
    statements = {
        labels: rate(m0.get("wasmroom_store_round_trips_total", {}).get(labels, 0), v)
        for labels, v in m1.get("wasmroom_store_round_trips_total", {}).items()
    }
    r = {
        "documents": docs,
        "window_seconds": round(secs, 1),
        "saves_per_sec": rate(total(m0, "wasmroom_snapshot_saves_total"), total(m1, "wasmroom_snapshot_saves_total")),
        "save_failures": total(m1, "wasmroom_snapshot_save_failures_total") - total(m0, "wasmroom_snapshot_save_failures_total"),
        # A document that stays dirty is saved CHECKPOINT_SECS after its last save.
        "expected_saves_per_sec": docs / CHECKPOINT_SECS,
        "rows_updated_per_sec": rate(p0["rows_updated"], p1["rows_updated"]),
        "pg_transactions_per_sec": rate(p0["transactions"], p1["transactions"]),
        "host_statements_per_sec": sum(statements.values()),
        "host_statements_by_kind": statements,
        "save_ms_avg": save_s * 1000,
        "save_statement_ms_avg": statement_s * 1000,
        "save_statement_ms_max_bucket": slowest_bucket(m0, m1, "wasmroom_store_round_trip_seconds", 'op="save"') * 1000,
        # Share of the window the (one) save writer had a statement in flight.
        "writer_busy_share": rate(0, statement_s * sum(statements.values()) * secs),
        "pg_cpu_share": rate(p0["cpu_seconds"], p1["cpu_seconds"]),
        "server_cpu_share": rate(s0, s1),
        "never_saved_max": max(n for n, _ in ages),
        "oldest_save_max_seconds": max(a for _, a in ages),
        "oldest_save_p50_seconds": sorted(a for _, a in ages)[len(ages) // 2],
        "snapshot_bytes_avg": float(pg.sql("SELECT coalesce(avg(size), 0) FROM wasmroom.documents "
                                           "WHERE plugin = 'chat'")[0][0]),
        "messages_sent": run["sent"],
        "generator_cpu_share": run["generator_cpu_share"],
        "connect_p99_ms": run["connect_p99_ms"],
        "oldest_save_seconds_each_second": [round(a, 2) for _, a in ages],
    }
    shown = {k: v for k, v in r.items() if k not in ("host_statements_by_kind", "oldest_save_seconds_each_second")}
    print(f"  {json.dumps(shown)}", flush=True)
    return r


def mean_over(m0, m1, histogram, match=""):
    """Mean of a histogram's observations between two /metrics readings (0 without any)."""
    count = total(m1, histogram + "_count", match) - total(m0, histogram + "_count", match)
    spent = total(m1, histogram + "_sum", match) - total(m0, histogram + "_sum", match)
    return spent / count if count else 0.0


def slowest_bucket(m0, m1, histogram, match=""):
    """Upper bound of the slowest observation between two readings: the lowest bucket
    bound that holds all of them (inf if some were above every bound)."""
    count = total(m1, histogram + "_count", match) - total(m0, histogram + "_count", match)
    bounds = {}
    for labels, v in m1.get(histogram + "_bucket", {}).items():
        if match in labels:
            le = float(labels.split('le="')[1].split('"')[0])
            bounds[le] = bounds.get(le, 0) + v - m0.get(histogram + "_bucket", {}).get(labels, 0)
    return min((le for le, n in bounds.items() if n >= count), default=float("inf"))


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def takeover(pg, ttl_ms, docs):
    """Host A holds `docs` chat documents (a client each) and has checkpointed them; kill -9
    A; the clients open their documents on host B, retrying every 100 ms. Returns the time
    from the kill to each document served on B."""
    a = Host(pg, plugin="chat", bind="127.0.0.1", ttl_ms=ttl_ms)
    b = Host(pg, plugin="chat", bind="127.0.0.2", ttl_ms=ttl_ms)
    gen = None
    try:
        gen = subprocess.Popen(
            [str(c) for c in ["taskset", "-c", GENERATOR_CPU, ROOT / "target" / "release" / "loadgen",
                              "--url", a.url, "takeover", "--docs", docs, "--to", b.url, "--retry-ms", 100]],
            stdout=subprocess.PIPE, text=True)
        ready = gen.stdout.readline().split()
        if ready[:1] != ["READY"]:
            raise RuntimeError(f"takeover generator: {ready}")
        # Every document saved once, so that B opens each from a snapshot.
        time.sleep(CHECKPOINT_SECS + 1.5)
        killed_ms = time.time() * 1000
        a.kill()
        out = json.loads(gen.communicate(timeout=300)[0].strip().splitlines()[-1])
        taken = total(b.metrics(), "wasmroom_leases_taken_total")
    finally:
        stop_generator(gen)
        a.stop()  # already gone unless something failed before the kill
        b.stop()
    times = [(t - killed_ms) / 1000 for t in out["served_unix_ms"]]
    r = {
        "ttl_seconds": ttl_ms / 1000,
        "documents": docs,
        "taken_by_b": taken,
        "first_s": min(times),
        "p50_s": percentile(times, 0.50),
        "p99_s": percentile(times, 0.99),
        "max_s": max(times),
        "attempts_avg": sum(out["attempts"]) / len(out["attempts"]),
        "generator_cpu_share": out["generator_cpu_share"],
        "times_s": times,
    }
    print(f"  TTL {ttl_ms / 1000:g} s: first {r['first_s']:.2f} s, p50 {r['p50_s']:.2f} s, p99 {r['p99_s']:.2f} s, "
          f"max {r['max_s']:.2f} s; {r['attempts_avg']:.1f} attempts per document; "
          f"generator CPU {r['generator_cpu_share']:.0%}", flush=True)
    return r


def plot(takeovers, path):
    """Each TTL's takeover times as a distribution (left) and p50/p99/max against the TTL
    (right), with the window the heartbeat allows: a lease lapses between 2/3 TTL (killed
    just before a heartbeat) and TTL (just after) after the kill."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, vs) = plt.subplots(1, 2, figsize=(11, 4.5))
    for t in takeovers:
        times = sorted(t["times_s"])
        cdf.plot(times, [(i + 1) / len(times) for i in range(len(times))], label=f"TTL {t['ttl_seconds']:g} s")
    cdf.set_xlabel("seconds from kill -9 to the document served on host B")
    cdf.set_ylabel(f"share of the {takeovers[0]['documents']:,} documents")
    cdf.grid(True, alpha=0.3)
    cdf.legend()
    ttls = [t["ttl_seconds"] for t in takeovers]
    for key, marker in (("p50_s", "o"), ("p99_s", "s"), ("max_s", "^")):
        vs.plot(ttls, [t[key] for t in takeovers], marker=marker, label=key[:-2])
    vs.fill_between(ttls, [2 * x / 3 for x in ttls], ttls, color="grey", alpha=0.2,
                    label="lease lapses (2/3 TTL to TTL)")
    vs.set_xlabel("lease TTL (s)")
    vs.set_ylabel("takeover time (s)")
    vs.grid(True, alpha=0.3)
    vs.legend()
    fig.suptitle(f"Takeover after kill -9, {takeovers[0]['documents']:,} documents (chat), one client each", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results):
    m, pg = results["machine"], results["postgres"]
    c = results["stores"]
    lines = [
        "| store | cold open p50 / p99 | deliveries per server CPU-second "
        f"({RELAY_LOAD // 1000}k offered, {RELAY_REPEATS} points) | relay p99 (worst point) |",
        "|---|---:|---:|---:|",
    ]
    for name, r in c.items():
        lines.append(f"| {name} | {r['cold']['p50_ms']:.2f} / {r['cold']['p99_ms']:.2f} ms | "
                     f"{r['deliveries_per_server_cpu_sec']:,.0f} | {r['relay_p99_ms']:.2f} ms |")
    k = results["checkpoint"]
    lines += [
        "",
        f"| {k['documents']:,} chat documents, a line per document per second, checkpoint every {CHECKPOINT_SECS} s "
        f"({k['window_seconds']:.0f} s window) | |",
        "|---|---:|",
        f"| snapshots saved per second (host) | {k['saves_per_sec']:,.0f} (each document every "
        f"{k['documents'] / max(k['saves_per_sec'], 1):.1f} s on average: the checkpoint, then the next housekeeping "
        "tick, then the queue) |",
        f"| rows written per second (PostgreSQL) | {k['rows_updated_per_sec']:,.0f} |",
        "| oldest save of any document (PostgreSQL's saved_at, sampled every second), median / worst | "
        f"{k['oldest_save_p50_seconds']:.2f} / {k['oldest_save_max_seconds']:.2f} s |",
        f"| save failures; documents never saved | {k['save_failures']:.0f}; {k['never_saved_max']} |",
        f"| statements per second: the host's round trips (saves per statement); PostgreSQL's transactions | "
        f"{k['host_statements_per_sec']:,.0f} ({k['saves_per_sec'] / max(k['host_statements_per_sec'], 1):.1f}); "
        f"{k['pg_transactions_per_sec']:,.0f} |",
        f"| a save, lane's request to answer; one save statement's round trip (average) | "
        f"{k['save_ms_avg']:,.0f} ms; {k['save_statement_ms_avg']:,.1f} ms (slowest ≤ "
        f"{k['save_statement_ms_max_bucket']:,.0f} ms) |",
        f"| share of the time the save writer had a statement in flight | {k['writer_busy_share']:.0%} |",
        f"| PostgreSQL CPU (share of one core) | {k['pg_cpu_share']:.0%} |",
        f"| wasmroom CPU (share of one core) | {k['server_cpu_share']:.0%} |",
        f"| average snapshot | {k['snapshot_bytes_avg'] / 1024:.1f} KiB |",
        "",
        "| lease TTL | takeover after kill -9: first / p50 / p99 / last | attempts per document |",
        "|---:|---:|---:|",
    ]
    for t in results["takeover"]:
        lines.append(f"| {t['ttl_seconds']:g} s | {t['first_s']:.2f} / {t['p50_s']:.2f} / {t['p99_s']:.2f} / "
                     f"{t['max_s']:.2f} s | {t['attempts_avg']:.1f} |")
    gen = [r["cold"]["generator_cpu_share"] for r in c.values()]
    gen += [r["relay_generator_cpu_share"] for r in c.values()]
    gen += [k["generator_cpu_share"]] + [t["generator_cpu_share"] for t in results["takeover"]]
    lines += [
        "",
        f"Measured {results['date']} on {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}; PostgreSQL "
        f"{pg['server_version']} on loopback (fsync {pg['fsync']}, synchronous_commit {pg['synchronous_commit']}, "
        f"shared_buffers {int(pg['shared_buffers']) * 8 // 1024} MiB), pinned to core {PG_CPU} with the load "
        f"generator; wasmroom (one lane) on core 0. Relay load: {DOCS} documents x {CLIENTS} clients, 100-byte "
        f"messages. Takeover: {results['takeover'][0]['documents']:,} documents with a client each on host A "
        "(127.0.0.1), kill -9, the clients reconnect to host B (127.0.0.2) every 100 ms until served. "
        f"The load generator used at most {max(gen):.0%} of its core in any of these.",
        f"Took {results['seconds']:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def main(quick=False):
    """Runs every store measurement on one PostgreSQL and writes results/store.*."""
    started = time.time()
    RESULTS.mkdir(parents=True, exist_ok=True)
    pg = Postgres()
    try:
        results = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "postgres": pg.settings()}
        print("== store: cold open and relay, file vs PostgreSQL", flush=True)
        results["stores"] = cold_and_relay(pg, 200 if quick else 1000)
        print("== store: checkpoints of many changing documents", flush=True)
        results["checkpoint"] = checkpoints(pg, 2000 if quick else 10_000, 10 if quick else 120)
        print("== store: takeover after kill -9", flush=True)
        results["takeover"] = [takeover(pg, ttl, 200 if quick else 1000) for ttl in TTLS_MS]
    finally:
        pg.stop()
    results["seconds"] = time.time() - started
    (RESULTS / "store.json").write_text(json.dumps(results, indent=2))
    (RESULTS / "store.md").write_text(table(results))
    plot(results["takeover"], RESULTS / "takeover.png")
    print((RESULTS / "store.md").read_text())
