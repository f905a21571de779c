"""Side-by-side benchmark: the gateway against nginx, a naive aiohttp proxy and aiohttp's
cheapest answer, in one run, on one machine, driven by wrk, targets interleaved round by round.

    python loadtests/bench.py [--rounds 5] [--duration 5] [--connections 32] [--workers 1]
                              [--keys 1000] [--access-log] [--only gateway,nginx]
                              [--flood CONNECTIONS] [--no-pin] [--profile FILE]

Targets (all against the same upstream, nginx with one worker answering a small JSON body):
  direct   the upstream itself, no proxy (the ceiling)
  nginx    nginx as a key-checking reverse proxy (map on Authorization, 401 otherwise, header
           stripped, X-Account-Id injected, upstream keep-alive)
  naive    loadtests/naive_proxy.py: aiohttp server + ClientSession + dict of key hashes
  gateway  `gateway serve` with its real SQLite store and a minted key
  hello    loadtests/hello_server.py: aiohttp answering 401 (the cheapest aiohttp answer)
  llhello  loadtests/llhello_server.py: aiohttp's low-level server (no Application) answering
           401: the floor any data plane on aiohttp stands on
  reject   the gateway answering a well-formed (valid checksum) but unknown key
Not a CI test: it prints a table and the ratios the performance goals are stated in.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ADMIN_TOKEN = "bench-admin-token-0123456789"
SECRET_KEY = "YmVuY2gtc2VjcmV0LWtleS0wMTIzNDU2Nzg5YWJjZGU="  # base64 of 32 bytes
UPSTREAM_BODY = '{"ok":true,"service":"upstream","items":[1,2,3]}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return time.monotonic() - start
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def find_or_install(tool: str, package: str) -> str | None:
    path = shutil.which(tool) or (
        f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None
    )
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {package} with apt-get ...", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", package], check=False, capture_output=True
        )
        return shutil.which(tool) or (
            f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None
        )
    return None


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children_rss_mb(pid: int) -> list[float]:
    out = []
    for child in Path("/proc").glob("[0-9]*"):
        try:
            stat = (child / "stat").read_text().split()
        except OSError:
            continue
        if int(stat[3]) == pid:
            out.append(rss_mb(int(child.name)))
    return out


@dataclass
class Result:
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)

    def median(self, name: str) -> float:
        values = getattr(self, name)
        return statistics.median(values) if values else float("nan")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(text: str) -> tuple[float, float, float, int]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", text)
        return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")

    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(x) for x in m.groups())
    return rps, pct("50"), pct("99"), errors


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: dict[
            str, tuple[str, str | None, int]
        ] = {}  # target -> (url, auth, expected status)
        self.notes: list[str] = []
        self.admin_ports: dict[str, int] = {}
        cpus = os.cpu_count() or 1
        self.pin = args.pin and cpus >= 2 and shutil.which("taskset") is not None
        # the system under test gets CPU 0; wrk and the upstream share the rest
        self.target_cpus = "0" if self.pin else None
        self.load_cpus = f"1-{cpus - 1}" if self.pin else None
        if self.pin and args.workers > 1:
            self.target_cpus = f"0-{cpus - 1}"

    # -- processes -----------------------------------------------------------------------------

    def spawn(
        self, cmd: list[str], cpus: str | None, env: dict[str, str] | None = None, log: str = "x"
    ) -> subprocess.Popen[bytes]:
        if cpus:
            cmd = ["taskset", "-c", cpus, *cmd]
        out = open(self.tmp / f"{log}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def nginx_conf(self, name: str, workers: int, body: str) -> Path:
        conf = self.tmp / f"{name}.conf"
        conf.write_text(
            f"""worker_processes {workers};
daemon off;
pid {self.tmp}/{name}.pid;
error_log {self.tmp}/{name}.err warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {self.tmp}/{name}-body;
  proxy_temp_path {self.tmp}/{name}-proxy;
  fastcgi_temp_path {self.tmp}/{name}-fcgi;
  uwsgi_temp_path {self.tmp}/{name}-uwsgi;
  scgi_temp_path {self.tmp}/{name}-scgi;
  keepalive_requests 1000000;
{body}
}}
"""
        )
        return conf

    def start_upstream(self, nginx: str) -> str:
        port = free_port()
        conf = self.nginx_conf(
            "upstream",
            1,
            f"""  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{ default_type application/json; return 200 '{UPSTREAM_BODY}'; }}
  }}""",
        )
        proc = self.spawn([nginx, "-c", str(conf)], self.load_cpus, log="upstream")
        wait_port(port, proc=proc)
        return f"http://127.0.0.1:{port}"

    def start_nginx_proxy(self, nginx: str, upstream: str, key: str, account: str) -> str:
        port = free_port()
        conf = self.nginx_conf(
            "nginx",
            self.args.workers,
            f"""  map_hash_bucket_size 256;
  map $http_authorization $account_id {{ default ""; "Bearer {key}" "{account}"; }}
  upstream app {{ server {upstream.removeprefix("http://")}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{
      if ($account_id = "") {{ return 401 "Unauthorized"; }}
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "";
      proxy_set_header X-Account-Id $account_id;
      proxy_pass http://app;
    }}
  }}""",
        )
        proc = self.spawn([nginx, "-c", str(conf)], self.target_cpus, log="nginx")
        wait_port(port, proc=proc)
        return f"http://127.0.0.1:{port}"

    def start_gateway(
        self,
        upstream: str,
        store_url: str | None = None,
        name: str = "gateway",
        account_id: str = "acct_bench",
    ) -> tuple[str, str, str, str]:
        """`gateway serve` on a SQLite file seeded with --keys keys, or on `store_url`."""
        port, admin_port = free_port(), free_port()
        db = self.tmp / f"{name}.db"
        config = self.tmp / f"{name}.toml"
        level = "info" if self.args.access_log else "warning"
        config.write_text(
            f"""[server]
host = "127.0.0.1"
port = {port}
workers = {self.args.workers}
[log]
level = "{level}"
[upstream]
url = "{upstream}"
[admin]
host = "127.0.0.1"
port = {admin_port}
token_env = "BENCH_ADMIN_TOKEN"
[store]
url = "{store_url or f"sqlite:///{db}"}"
[webhooks]
secret_key_env = "BENCH_SECRET_KEY"
"""
        )
        env = dict(os.environ, BENCH_ADMIN_TOKEN=ADMIN_TOKEN, BENCH_SECRET_KEY=SECRET_KEY)
        if self.args.keys and store_url is None:
            started = time.monotonic()
            seed_keys(db, self.args.keys)
            self.notes.append(
                f"seeded {self.args.keys:,} keys in {time.monotonic() - started:.1f}s"
            )
        started = time.monotonic()
        profile = ["-m", "cProfile", "-o", self.args.profile] if self.args.profile else []
        proc = self.spawn(
            [sys.executable, *profile, "-m", "gateway", "serve", "--config", str(config)],
            self.target_cpus,
            env,
            name,
        )
        wait_port(port, timeout=120, proc=proc)
        wait_port(admin_port, timeout=120, proc=proc)
        ready = time.monotonic() - started
        self.admin_ports[name] = admin_port
        account = self.admin(
            admin_port, "POST", "/admin/v1/accounts", {"name": "bench", "id": account_id}
        )
        key = account["production_key"]["key"]
        rss = [rss_mb(proc.pid), *children_rss_mb(proc.pid)]
        self.gateway_pid = proc.pid
        stored = f"{self.args.keys:,} stored" if store_url is None else "the store's"
        self.notes.append(
            f"{name} ready in {ready:.2f}s with {stored} keys; "
            f"RSS {', '.join(f'{r:.0f}' for r in rss)} MB (supervisor/workers)"
        )
        unknown = unknown_key(key)
        return f"http://127.0.0.1:{port}", key, unknown, account["id"]

    def admin(self, port: int, method: str, path: str, body: dict[str, object]) -> dict:  # type: ignore[type-arg]
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}",
            data=json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def start_python(self, script: str, *argv: str) -> str:
        port = free_port()
        proc = self.spawn(
            [sys.executable, str(HERE / script), str(port), *argv], self.target_cpus, log=script
        )
        wait_port(port, proc=proc)
        return f"http://127.0.0.1:{port}"

    # -- load --------------------------------------------------------------------------------

    def wrk(
        self, wrk: str, url: str, auth: str | None, duration: float, connections: int
    ) -> tuple[float, float, float, int]:
        cmd = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
        if auth:
            cmd += ["-H", f"Authorization: Bearer {auth}"]
        cmd.append(url + "/api/items?limit=10")
        if self.load_cpus:
            cmd = ["taskset", "-c", self.load_cpus, *cmd]
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration + 60, check=True
        ).stdout
        return parse_wrk(out)


def unknown_key(real: str) -> str:
    sys.path.insert(0, str(ROOT))
    from gateway.keys import checksum

    body = real[:8] + "Q" * 82
    return body + checksum(body)


SEED_COLUMNS = (
    "id", "account_id", "name", "key_hash", "key_prefix", "key_last4", "scopes", "is_test",
    "created_at", "updated_at",
)  # fmt: skip


def seed_rows(start: int, stop: int, now: int) -> Iterator[tuple[object, ...]]:
    """Keys start..stop for 1,000 accounts (acct_0..acct_999): random hashes, no plaintext."""
    for i in range(start, stop):
        yield (
            str(uuid.UUID(bytes=os.urandom(16), version=4)),
            f"acct_{i % 1000}",
            f"seed-{i}",
            os.urandom(32),
            "sk_live_Seed",
            "Seed",
            '["runtime:all"]',
            0,
            now,
            now,
        )


def seed_keys(db: Path, n: int) -> None:
    """n keys for 1,000 accounts, written straight into a migrated store (hashes only)."""
    import asyncio

    sys.path.insert(0, str(ROOT))
    from gateway.store.sqlite import SQLiteStore

    async def migrate() -> None:
        store = SQLiteStore(db)
        await store.open()
        await store.close()

    asyncio.run(migrate())
    now = int(time.time() * 1e6)
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO accounts (id, name, status, created_at, updated_at) VALUES (?, ?, 'active', ?, ?)",
            [(f"acct_{i}", f"seed {i}", now, now) for i in range(1000)],
        )

        conn.executemany(
            "INSERT INTO api_keys (id, account_id, name, key_hash, key_prefix, key_last4, scopes,"
            " is_test, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            seed_rows(0, n, now),
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="gateway and nginx workers")
    parser.add_argument(
        "--keys", type=int, default=1000, help="keys seeded into the gateway's store"
    )
    parser.add_argument(
        "--access-log", action="store_true", help="gateway logs every request (log.level=info)"
    )
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="do not pin processes to CPUs"
    )
    parser.add_argument("--only", help="comma-separated subset of targets")
    parser.add_argument(
        "--flood",
        type=int,
        default=0,
        metavar="CONNECTIONS",
        help="also measure valid gateway traffic while a second wrk floods random well-formed "
        "unknown keys over this many connections",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="run the gateway under cProfile and write its stats to FILE when it stops "
        "(read them with: python -m pstats FILE)",
    )
    args = parser.parse_args()

    nginx = find_or_install("nginx", "nginx-light")
    wrk = find_or_install("wrk", "wrk")
    if wrk is None:
        print("cannot run: wrk is not installed and could not be installed (apt-get install wrk)")
        return 1
    bench = Bench(args)
    try:
        if nginx is None:
            print(
                "cannot run: nginx is not installed and could not be installed (apt-get install nginx-light)"
            )
            return 1
        upstream = bench.start_upstream(nginx)
        gateway_url, key, unknown, account = bench.start_gateway(upstream)
        keys_file = bench.tmp / "keys.txt"
        keys_file.write_text(f"{key} {account}\n")
        wanted = set(args.only.split(",")) if args.only else None
        targets: dict[str, tuple[str, str | None]] = {}

        def want(name: str) -> bool:
            return wanted is None or name in wanted

        if want("direct"):
            targets["direct"] = (upstream, None)
        if want("nginx"):
            targets["nginx"] = (bench.start_nginx_proxy(nginx, upstream, key, account), key)
        if want("naive"):
            try:
                targets["naive"] = (
                    bench.start_python("naive_proxy.py", upstream, str(keys_file)),
                    key,
                )
            except RuntimeError as exc:
                bench.notes.append(f"naive proxy could not start: {exc}")
        if want("gateway"):
            targets["gateway"] = (gateway_url, key)
        if want("hello"):
            targets["hello"] = (bench.start_python("hello_server.py"), None)
        if want("llhello"):
            targets["llhello"] = (bench.start_python("llhello_server.py"), None)
        if want("reject"):
            targets["reject"] = (gateway_url, unknown)
        for name, (url, auth) in targets.items():  # sanity: each answers as it should
            expected = 401 if name in ("hello", "llhello", "reject") else 200
            req = urllib.request.Request(
                url + "/api/items", headers={"Authorization": f"Bearer {auth}"} if auth else {}
            )
            try:
                status = urllib.request.urlopen(req, timeout=5).status
            except urllib.error.HTTPError as exc:
                status = exc.code
            if status != expected:
                raise RuntimeError(f"{name} answered {status}, expected {expected}")
        results = {name: Result() for name in targets}
        pinned = (
            f"target on CPU {bench.target_cpus}, wrk+upstream on CPU {bench.load_cpus}"
            if bench.pin
            else "not pinned"
        )
        print(
            f"{len(targets)} targets, {args.rounds} rounds x {args.duration:g}s, {args.connections} connections, "
            f"workers={args.workers}, {pinned}",
            flush=True,
        )
        for r in range(args.rounds):
            for name, (url, auth) in targets.items():
                rps, p50, p99, errors = bench.wrk(wrk, url, auth, args.duration, args.connections)
                res = results[name]
                res.rps.append(rps)
                res.p50.append(p50)
                res.p99.append(p99)
                res.errors.append(errors if name not in ("hello", "llhello", "reject") else 0)
            print(
                f"  round {r + 1}: " + "  ".join(f"{n} {results[n].rps[-1]:,.0f}" for n in targets),
                flush=True,
            )
        if args.flood and "gateway" in targets:
            flood_report(bench, wrk, gateway_url, key, args)
        if "gateway" in targets:
            rss = [rss_mb(bench.gateway_pid), *children_rss_mb(bench.gateway_pid)]
            bench.notes.append(
                "gateway RSS after the run: " + ", ".join(f"{r:.0f}" for r in rss) + " MB"
            )
        report(results, bench.notes)
    finally:
        bench.close()
    return 0


def flood_report(bench: Bench, wrk: str, url: str, key: str, args: argparse.Namespace) -> None:
    """Valid traffic alone, then the same valid traffic during a flood of random unknown keys."""
    keys = [unknown_key_random() for _ in range(10000)]
    script = bench.tmp / "flood.lua"
    script.write_text(
        "keys = {" + ",".join(f'"{k}"' for k in keys) + "}\n"
        "i = 0\n"
        "request = function()\n"
        "  i = i + 1\n"
        '  return wrk.format("GET", "/api/items", {["Authorization"] = "Bearer " .. keys[(i % #keys) + 1]})\n'
        "end\n"
    )
    duration = max(1, round(args.duration))
    flood_cmd = [wrk, "-t1", f"-c{args.flood}", f"-d{duration + 2}s", "-s", str(script), url]
    if bench.load_cpus:
        flood_cmd = ["taskset", "-c", bench.load_cpus, *flood_cmd]
    alone, flooded, flood_rps = Result(), Result(), []
    for _ in range(args.rounds):
        rps, p50, p99, _ = bench.wrk(wrk, url, key, duration, args.connections)
        alone.rps.append(rps), alone.p50.append(p50), alone.p99.append(p99)
        flood = subprocess.Popen(flood_cmd, stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        rps, p50, p99, _ = bench.wrk(wrk, url, key, duration, args.connections)
        flooded.rps.append(rps), flooded.p50.append(p50), flooded.p99.append(p99)
        out, _ = flood.communicate(timeout=duration + 30)
        flood_rps.append(parse_wrk(out)[0])
    print()
    print(
        f"flood: {args.flood} connections of random well-formed unknown keys ({statistics.median(flood_rps):,.0f} rejected/s)"
    )
    print(
        f"  valid alone    {alone.median('rps'):10,.0f} req/s  p50 {alone.median('p50'):.2f} ms  p99 {alone.median('p99'):.2f} ms"
    )
    print(
        f"  valid + flood  {flooded.median('rps'):10,.0f} req/s  p50 {flooded.median('p50'):.2f} ms  p99 {flooded.median('p99'):.2f} ms"
    )
    print(
        f"  latency ratio  p50 {flooded.median('p50') / alone.median('p50'):.2f}x  p99 {flooded.median('p99') / alone.median('p99'):.2f}x   (target <= 2)"
    )


def unknown_key_random() -> str:
    from gateway.keys import BASE62, checksum

    body = "sk_live_" + "".join(BASE62[b % 62] for b in os.urandom(82))
    return body + checksum(body)


def report(results: dict[str, Result], notes: list[str]) -> None:
    print()
    print(f"{'target':8s} {'req/s':>10s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>7s}")
    for name, res in results.items():
        print(
            f"{name:8s} {res.median('rps'):10,.0f} {res.median('p50'):8.2f} {res.median('p99'):8.2f} {sum(res.errors):7d}"
        )
    print()

    def ratio(a: str, b: str, what: str = "rps") -> str:
        if a in results and b in results:
            return f"{results[a].median(what) / results[b].median(what):.2f}"
        return "n/a"

    print(f"gateway/nginx  {ratio('gateway', 'nginx')}   (target >= 0.40)")
    print(f"gateway/naive  {ratio('gateway', 'naive')}   (target >= 2.5)")
    print(f"reject/hello   {ratio('reject', 'hello')}   (target >= 0.90)")
    print(f"gateway/llhello  {ratio('gateway', 'llhello')}   (target >= 0.60)")
    print(f"reject/llhello   {ratio('reject', 'llhello')}   (target >= 0.90)")
    print(f"p99 gateway/nginx  {ratio('gateway', 'nginx', 'p99')}   (target <= 3)")
    print(f"naive/nginx    {ratio('naive', 'nginx')}")
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    sys.exit(main())
