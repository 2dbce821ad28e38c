#!/usr/bin/env python3
"""Scale benchmark: the server's cost from 1,000 to 1,000,000 file records.

For each database (SQLite, the embedded default; PostgreSQL, started here in a folder of its
own) and each size (1,000 and 1,000,000 records, all owned by one user, of which up to 100,000
are real 4 KiB files on disk in the server's fanned-out layout), it builds the data directly
(the server's own migrations make the schema; the rows are bulk-inserted), starts the release
server pinned to core 0 and reports:

  download   4 KiB downloads by record (/files/{id}/download, API token) of a random file per
             request, wrk on core 1 at c=1 and c=64: req/s, p50/p99, server CPU per request —
             among the first 1,000 files (the same working set at every size: what the size of
             the database costs) and among all files on disk (what a larger working set costs);
             nginx-static serves the same files in the same rounds, so that what any server
             pays for a larger working set (the kernel's caches) is told apart from ours
  first page the owner's first page of files, `/api/files` and the web page `/`: median and
             p90 of 30 requests, one at a time
  ls         `private-storage ls --owner bench`: time to the first line, to the end, peak RSS
  folders    the most entries in one folder of the storage

  bench/scale.sh           1 k and 1 M records, SQLite and PostgreSQL, 3 rounds of 10 s
  bench/scale.sh --quick   the same, 1 round of 3 s
  bench/scale.sh --smoke   1 k and 20 k records, SQLite only, 1 s (proves the harness works)

Results go to bench/results/scale.{md,json}.
"""
import argparse
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the download benchmark's helpers: ports, CPU, wrk)

REPO = bench.REPO
EXE = os.path.join(bench.RELEASE, "private-storage")
FILE_SIZE = 4096
# The working set downloads pick from at every size.
HOT = 1_000
MONTH = "2026/12"


def cli(data, env, *args, stdin=None):
    return subprocess.run([EXE, "--data-dir", data, *args], env=env, input=stdin, check=True, text=True, capture_output=True).stdout


def ids(n, seed):
    rng = random.Random(seed)
    return [f"{rng.getrandbits(80):020x}" for _ in range(n)]


def build(data, env, records, on_disk, database):
    """The schema (through the server), one user with a token, `records` rows of which the
    first `on_disk` are real files. Returns (token, the ids of files on disk, their keys)."""
    cli(data, env, "user", "add", "bench", "--password-stdin", stdin="bench password\n")
    token = cli(data, env, "token", "create", "bench").strip()
    owner = query(database, data, "SELECT id FROM users WHERE username = 'bench'")[0][0]
    root = os.path.join(data, "media")
    all_ids = ids(records, records)
    body = os.urandom(FILE_SIZE)
    rows = []
    keys = []
    for n, file_id in enumerate(all_ids):
        key = f"files/{MONTH}/{owner}/{file_id[:2]}/{file_id}/f{n}.pdf"
        if n < on_disk:
            keys.append(key)
            path = os.path.join(root, key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(body)
        rows.append((file_id, owner, key, f"f{n}.pdf", FILE_SIZE, "application/octet-stream", "0" * 64, 1_700_000_000 + n, "clean"))
    insert(database, data, rows)
    return token, all_ids[:on_disk], keys


def insert(database, data, rows):
    sql = "INSERT INTO files (id, owner_id, object_key, name, size, content_type, sha256, created, scan) VALUES "
    # What the server keeps beside each user (its writes do it in their transactions).
    counters = "UPDATE users SET used_bytes = (SELECT COALESCE(SUM(size), 0) FROM files WHERE owner_id = users.id), used_files = (SELECT COUNT(*) FROM files WHERE owner_id = users.id)"
    if database == "sqlite":
        db = sqlite3.connect(os.path.join(data, "private-storage.db"))
        db.executemany(sql + "(?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.execute(counters)
        db.commit()
        db.execute("ANALYZE")
        db.close()
    else:
        copy = "COPY files (id, owner_id, object_key, name, size, content_type, sha256, created, scan) FROM STDIN"
        text = "".join("\t".join(str(v) for v in row) + "\n" for row in rows)
        subprocess.run(["psql", "-q", database, "-c", copy], input=text, text=True, check=True)
        subprocess.run(["psql", "-q", database, "-c", counters], check=True)
        subprocess.run(["psql", "-q", database, "-c", "VACUUM ANALYZE files"], check=True)


def query(database, data, sql):
    if database == "sqlite":
        db = sqlite3.connect(os.path.join(data, "private-storage.db"))
        rows = db.execute(sql).fetchall()
        db.close()
        return rows
    out = subprocess.run(["psql", "-qAt", database, "-c", sql], text=True, check=True, capture_output=True).stdout
    return [line.split("|") for line in out.splitlines()]


class Postgres:
    """A PostgreSQL server in a folder of its own (as the `postgres` user when run as root)."""

    def __init__(self, work):
        versions = sorted(os.listdir("/usr/lib/postgresql"))
        self.bin = f"/usr/lib/postgresql/{versions[-1]}/bin"
        self.dir = os.path.join(work, "pg")
        os.makedirs(self.dir)
        if os.geteuid() == 0:
            os.chmod(work, 0o755)  # the `postgres` user must reach its folder
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = os.path.join(self.dir, "data")
        self.port = bench.free_port()
        self.as_pg("initdb", "-D", self.data, "-A", "trust", "-U", "ps", "--no-sync")
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=256MB"
        self.as_pg("pg_ctl", "-D", self.data, "-o", options, "-l", os.path.join(self.dir, "log"), "-w", "start")

    def as_pg(self, program, *args):
        cmd = [os.path.join(self.bin, program), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

    def database(self, name):
        url = f"postgres://ps@127.0.0.1:{self.port}/postgres"
        subprocess.run(["psql", "-q", url, "-c", f"CREATE DATABASE {name}"], check=True)
        return f"postgres://ps@127.0.0.1:{self.port}/{name}"

    def stop(self):
        self.as_pg("pg_ctl", "-D", self.data, "-m", "immediate", "stop")


def serve(data, env):
    port = bench.free_port()
    proc = subprocess.Popen(["taskset", "-c", bench.SERVER_CORE, EXE, "--data-dir", data, "serve", "--bind", f"127.0.0.1:{port}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench.wait_port(port, proc)
    return proc, f"127.0.0.1:{port}"


def timed_gets(addr, path, token, count):
    import http.client
    host, port = addr.split(":")
    conn = http.client.HTTPConnection(host, int(port))
    times = []
    for i in range(count + 3):
        start = time.perf_counter()
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        reply = conn.getresponse()
        body = reply.read()
        if reply.status != 200:
            raise SystemExit(f"{path}: {reply.status} {body[:200]!r}")
        if i >= 3:  # the first few warm the connection and the caches
            times.append((time.perf_counter() - start) * 1000)
    conn.close()
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[int(len(times) * 0.9) - 1], "bytes": len(body)}


def ls(data, env):
    start = time.perf_counter()
    proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", EXE, "--data-dir", data, "ls", "--owner", "bench"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = None
    lines = 0
    for _ in proc.stdout:
        if first is None:
            first = (time.perf_counter() - start) * 1000
        lines += 1
    total = (time.perf_counter() - start) * 1000
    err = proc.stderr.read()
    proc.wait()
    rss_kib = int(err.strip().splitlines()[-1])
    return {"first_line_ms": first, "total_ms": total, "lines": lines, "peak_rss_mib": rss_kib / 1024}


def widest_folder(root):
    most, where = 0, ""
    for folder, dirs, files in os.walk(root):
        n = len(dirs) + len(files)
        if n > most:
            most, where = n, os.path.relpath(folder, root)
    return most, where


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--database", choices=["sqlite", "postgres"], help="only this one")
    args = ap.parse_args()
    rounds = 1 if args.quick or args.smoke else 3
    seconds = 1 if args.smoke else 3 if args.quick else 10
    sizes = [1_000, 20_000] if args.smoke else [1_000, 1_000_000]
    databases = ["sqlite"] if args.smoke else ["sqlite", "postgres"]
    if args.database:
        databases = [args.database]
    on_disk_max = 2_000 if args.smoke else 100_000
    bench.ensure_tools()
    bench.build_server()
    work = tempfile.mkdtemp(prefix="ps-scale-")
    pg = None
    results = []
    try:
        for database in databases:
            if database == "postgres":
                pg = Postgres(work)
            for records in sizes:
                data = os.path.join(work, f"{database}-{records}")
                os.makedirs(data)
                env = {k: v for k, v in os.environ.items() if not k.startswith("PRIVATE_STORAGE_")}
                env["RUST_LOG"] = "warn"
                url = "sqlite"
                if pg:
                    url = pg.database(f"scale_{records}")
                    env["PRIVATE_STORAGE_DATABASE_URL"] = url
                started = time.time()
                token, on_disk, keys = build(data, env, records, min(records, on_disk_max), url)
                print(f"{database} {records:>9} records, {len(on_disk)} files on disk: built in {time.time() - started:.0f} s", flush=True)
                proc, addr = serve(data, env)
                # nginx-static over the server's own folder (the X-Accel front's upstream, which
                # start_nginx also configures, is never asked here: the discard port will do).
                nginx, static, _, _ = bench.start_nginx(work, os.path.join(data, "media"), "127.0.0.1:9")
                try:
                    row = {"database": database, "records": records, "on_disk": len(on_disk), "downloads": []}
                    for touched in sorted({min(HOT, len(on_disk)), len(on_disk)}):
                        scripts = {
                            "server": lua(work, "server", [f"/files/{i}/download" for i in on_disk[:touched]]),
                            "nginx": lua(work, "nginx", [f"/private-media/{k}" for k in keys[:touched]]),
                        }
                        for conns in (1, 64):
                            runs = {"server": [], "nginx": []}
                            for _ in range(rounds):
                                for target, (pid, where) in {"nginx": (nginx.pid, static), "server": (proc.pid, addr)}.items():
                                    before = bench.cpu_seconds([pid])
                                    res = wrk_script(where, scripts[target], conns, seconds, token)
                                    res["cpu_us"] = (bench.cpu_seconds([pid]) - before) / max(res["requests"], 1) * 1e6
                                    runs[target].append(res)
                            result = {"files": touched, "conns": conns}
                            for target, results_ in runs.items():
                                result[target] = sorted(results_, key=lambda r: r["rps"])[len(results_) // 2]
                            row["downloads"].append(result)
                            ours, theirs = result["server"], result["nginx"]
                            print(f"  download {touched:>6} files c={conns:<3} server {ours['rps']:7.0f} req/s {ours['cpu_us']:5.1f} µs/req"
                                  f" | nginx {theirs['rps']:7.0f} req/s {theirs['cpu_us']:5.1f} µs/req | server p99 {ours['p99_ms']:.2f} ms", flush=True)
                    row["api_page"] = timed_gets(addr, "/api/files", token, 30)
                    row["web_page"] = timed_gets(addr, "/", token, 30)
                    for what in ("api_page", "web_page"):
                        print(f"  first page {what:9} median {row[what]['median_ms']:.2f} ms  p90 {row[what]['p90_ms']:.2f} ms", flush=True)
                finally:
                    proc.terminate()
                    proc.wait()
                    nginx.terminate()
                    nginx.wait()
                row["ls"] = ls(data, env)
                print(f"  ls: first line {row['ls']['first_line_ms']:.0f} ms, all {row['ls']['lines']} in {row['ls']['total_ms']:.0f} ms, peak RSS {row['ls']['peak_rss_mib']:.1f} MiB", flush=True)
                row["widest_folder"], where = widest_folder(os.path.join(data, "media"))
                print(f"  widest folder: {row['widest_folder']} entries ({where})", flush=True)
                results.append(row)
                shutil.rmtree(data, ignore_errors=True)
            if pg:
                pg.stop()
                pg = None
        report(results, args)
    finally:
        if pg:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def lua(work, name, paths):
    """A wrk script asking for a random one of `paths` per request."""
    script = os.path.join(work, f"{name}.lua")
    with open(script, "w") as f:
        f.write("local paths = {" + ",".join(f'"{p}"' for p in paths) + "}\n")
        f.write("request = function() return wrk.format(nil, paths[math.random(#paths)]) end\n")
    return script


def wrk_script(addr, script, conns, seconds, token):
    out = bench.run(["taskset", "-c", bench.CLIENT_CORE, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", script, "-H", f"Authorization: Bearer {token}", f"http://{addr}/"])
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise SystemExit(f"{bad.group(1)} failed responses\n{out}")
    lat = {p: float(v) * bench.UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50_ms": lat.get("50"),
        "p99_ms": lat.get("99"),
    }


def report(results, args):
    lines = [
        f"# bench/scale.sh{' --quick' if args.quick else ' --smoke' if args.smoke else ''} — {time.strftime('%Y-%m-%d')}",
        "",
        "Downloads (4 KiB by record, a random file of the working set per request; nginx-static serves the same files in the same rounds):",
        "",
        "| database | records (on disk) | working set | c=1 server / nginx | c=64 server / nginx | ratio c=64 | CPU/req c=64 server / nginx | server − nginx | server p99 c=64 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for many in (d for d in r["downloads"] if d["conns"] == 64):
            one = next(d for d in r["downloads"] if d["conns"] == 1 and d["files"] == many["files"])
            lines.append(
                f"| {r['database']} | {r['records']:,} ({r['on_disk']:,}) | {many['files']:,} files "
                f"| {one['server']['rps']:,.0f} / {one['nginx']['rps']:,.0f} req/s "
                f"| {many['server']['rps']:,.0f} / {many['nginx']['rps']:,.0f} req/s "
                f"| {many['server']['rps'] / many['nginx']['rps']:.2f}× "
                f"| {many['server']['cpu_us']:.1f} / {many['nginx']['cpu_us']:.1f} µs "
                f"| {many['server']['cpu_us'] - many['nginx']['cpu_us']:.1f} µs "
                f"| {many['server']['p99_ms']:.2f} ms |"
            )
    lines += [
        "",
        "| database | records (on disk) | first page `/api/files` | first page `/` | `ls` first line / all / RSS | widest folder |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['database']} | {r['records']:,} ({r['on_disk']:,}) "
            f"| {r['api_page']['median_ms']:.2f} ms (p90 {r['api_page']['p90_ms']:.2f}) "
            f"| {r['web_page']['median_ms']:.2f} ms (p90 {r['web_page']['p90_ms']:.2f}) "
            f"| {r['ls']['first_line_ms']:.0f} ms / {r['ls']['total_ms']:,.0f} ms / {r['ls']['peak_rss_mib']:.1f} MiB "
            f"| {r['widest_folder']:,} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    out = os.path.join(REPO, "bench", "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "scale.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "scale.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
