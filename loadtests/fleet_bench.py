"""Fleet benchmark: the gateway on PostgreSQL against the gateway on SQLite, in one run.

    python loadtests/fleet_bench.py [--rounds 3] [--duration 5] [--revocations 200]
                                    [--keys 1000000]

1. Proxy throughput: both gateways in front of the same nginx upstream, wrk rounds interleaved,
   medians and the ratio PostgreSQL / SQLite (goal: within 5 %).
2. Propagation: a second instance on the same database; --revocations times "mint a key, revoke
   it through instance A": the revoke call's latency, which includes waiting until B confirmed
   (X-Gateway-Propagation: confirmed=2/2), p50 and p99 (goal p99 < 50 ms on loopback).
3. Start-up with --keys keys in PostgreSQL (goal < 15 s for 1,000,000).

Uses a throwaway PostgreSQL cluster (tests/pgcluster.py: Debian's initdb/pg_ctl), nginx and wrk
(installed with apt-get when missing, as bench.py does). Not a CI test; it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests"), str(ROOT)]

import bench  # noqa: E402
from pgcluster import PgCluster  # noqa: E402


def admin_call(port: int, method: str, path: str, body: dict[str, object] | None = None):  # type: ignore[no-untyped-def]
    import json

    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body or {}).encode(),
        method=method,
        headers={
            "Authorization": f"Bearer {bench.ADMIN_TOKEN}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read()), resp.headers.get("X-Gateway-Propagation")


async def seed(url: str, n: int) -> None:
    """n keys for 1,000 accounts, straight into a migrated database (COPY)."""
    import asyncpg

    from gateway.store.postgres import PostgresStore

    store = PostgresStore(url)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(url)
    try:
        now = int(time.time() * 1e6)
        await conn.copy_records_to_table(
            "accounts",
            records=[(f"acct_{i}", f"seed {i}", "active", now, now) for i in range(1000)],
            columns=["id", "name", "status", "created_at", "updated_at"],
        )
        batch = 50_000
        for start in range(0, n, batch):
            await conn.copy_records_to_table(
                "api_keys",
                records=list(bench.seed_rows(start, min(n, start + batch), now)),
                columns=list(bench.SEED_COLUMNS),
            )
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--revocations", type=int, default=200)
    parser.add_argument("--keys", type=int, default=1_000_000, help="for the start-up figure")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    args = parser.parse_args()
    args.workers, args.access_log, args.profile = 1, False, None
    nginx = bench.find_or_install("nginx", "nginx-light")
    wrk = bench.find_or_install("wrk", "wrk")
    if nginx is None or wrk is None:
        print("cannot run: nginx and wrk are needed (apt-get install nginx-light wrk)")
        return 1
    run = bench.Bench(argparse.Namespace(**{**vars(args), "keys": 1000}))
    cluster = PgCluster()
    try:
        cluster.start()
        fleet_db = asyncio.run(cluster.create_database("fleet"))
        upstream = run.start_upstream(nginx)
        sqlite_url, sqlite_key, _, _ = run.start_gateway(upstream, name="sqlite")
        pg_url, pg_key, _, _ = run.start_gateway(upstream, fleet_db, name="postgres")
        results = {"sqlite": bench.Result(), "postgres": bench.Result()}
        targets = {"sqlite": (sqlite_url, sqlite_key), "postgres": (pg_url, pg_key)}
        for r in range(args.rounds):
            for name, (url, key) in targets.items():
                rps, _p50, p99, errors = run.wrk(wrk, url, key, args.duration, args.connections)
                assert errors == 0, (name, errors)
                results[name].rps.append(rps)
                results[name].p99.append(p99)
            print(
                f"  round {r + 1}: " + "  ".join(f"{n} {results[n].rps[-1]:,.0f}" for n in targets),
                flush=True,
            )
        s, p = results["sqlite"].median("rps"), results["postgres"].median("rps")
        print(
            f"proxy req/s (median): sqlite {s:,.0f}  postgres {p:,.0f}  "
            f"postgres/sqlite {p / s:.3f} (goal >= 0.95)"
        )

        # Propagation with two instances on the database.
        run.start_gateway(upstream, fleet_db, name="postgres-b", account_id="acct_b")
        a = run.admin_ports["postgres"]
        latencies = []
        for _ in range(args.revocations):
            key, _ = admin_call(a, "POST", "/admin/v1/keys", {"account_id": "acct_bench"})
            started = time.perf_counter()
            _, header = admin_call(a, "POST", f"/admin/v1/keys/{key['id']}/revoke")
            latencies.append((time.perf_counter() - started) * 1000)
            assert header is not None
            assert header.startswith("confirmed=2/2;"), header
        q = statistics.quantiles(latencies, n=100)
        print(
            f"revocation confirmed by both instances: p50 {statistics.median(latencies):.1f} ms"
            f"  p99 {q[98]:.1f} ms  max {max(latencies):.1f} ms  over {len(latencies)}"
            " (goal p99 < 50 ms)"
        )

        # Start-up with many keys.
        big = asyncio.run(cluster.create_database("big"))
        started = time.monotonic()
        asyncio.run(seed(big, args.keys))
        print(f"seeded {args.keys:,} keys into PostgreSQL in {time.monotonic() - started:.1f}s")
        run.start_gateway(upstream, big, name="postgres-big", account_id="acct_big")
        for note in run.notes:
            print("note:", note)
    finally:
        run.close()
        cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
