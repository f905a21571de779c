"""Streaming through the gateway: a 1 GB download and a 1 GB upload with the gateway's resident
memory sampled throughout, and the time to the first SSE event, direct versus through it.

    python loadtests/stream_bench.py [--size-mb 1024] [--sse-samples 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import aiohttp
from aiohttp import web

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import ADMIN_TOKEN, free_port, rss_mb, wait_port  # noqa: E402

CHUNK = 256 * 1024


def upstream_app() -> web.Application:
    block = b"d" * CHUNK

    async def download(request: web.Request) -> web.StreamResponse:
        size = int(request.query["size"])
        resp = web.StreamResponse()
        resp.content_length = size
        await resp.prepare(request)
        sent = 0
        while sent < size:
            n = min(CHUNK, size - sent)
            await resp.write(block[:n])
            sent += n
        return resp

    async def upload(request: web.Request) -> web.Response:
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
        return web.json_response({"received": size})

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: first\n\n")
        await asyncio.sleep(0.05)
        await resp.write(b"data: done\n\n")
        return resp

    app = web.Application(client_max_size=1 << 40)
    app.router.add_get("/download", download)
    app.router.add_post("/upload", upload)
    app.router.add_get("/sse", sse)
    return app


class Sampler:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def run(args: argparse.Namespace) -> None:
    runner = web.AppRunner(upstream_app(), access_log=None)
    await runner.setup()
    up_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", up_port).start()
    tmp = Path(tempfile.mkdtemp(prefix="gateway-stream-"))
    port, admin_port = free_port(), free_port()
    config = tmp / "gw.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n[log]\nlevel = "warning"\n'
        f'[upstream]\nurl = "http://127.0.0.1:{up_port}"\n'
        f'[admin]\nport = {admin_port}\ntoken_env = "BENCH_ADMIN_TOKEN"\n'
        f'[store]\nurl = "sqlite:///{tmp / "gw.db"}"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        env=dict(os.environ, BENCH_ADMIN_TOKEN=ADMIN_TOKEN),
    )
    try:
        wait_port(port, proc=proc)
        wait_port(admin_port, proc=proc)
        req = urllib.request.Request(
            f"http://127.0.0.1:{admin_port}/admin/v1/accounts",
            data=json.dumps({"name": "stream"}).encode(),
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
        )
        key = json.loads(urllib.request.urlopen(req).read())["production_key"]["key"]
        auth = {"Authorization": f"Bearer {key}"}
        direct, gateway = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{port}"
        size = args.size_mb * 1024 * 1024
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.get(gateway + "/download?size=1048576", headers=auth) as resp:
                await resp.read()
            base = rss_mb(proc.pid)
            for label, url in (("direct", direct), ("gateway", gateway)):
                started = time.monotonic()
                got = 0
                with Sampler(proc.pid) as rss:
                    async with session.get(url + f"/download?size={size}", headers=auth) as resp:
                        async for chunk in resp.content.iter_chunked(CHUNK):
                            got += len(chunk)
                secs = time.monotonic() - started
                assert got == size
                grow = (
                    f"; gateway RSS {base:.0f} -> peak {rss.peak:.0f} MB (+{rss.peak - base:.0f})"
                    if label == "gateway"
                    else ""
                )
                print(
                    f"download {args.size_mb} MB {label:8s} {size / secs / 1e6:8.0f} MB/s{grow}",
                    flush=True,
                )
            block = b"u" * CHUNK

            async def body():  # type: ignore[no-untyped-def]
                for _ in range(size // CHUNK):
                    yield block

            for label, url in (("direct", direct), ("gateway", gateway)):
                base = rss_mb(proc.pid)
                started = time.monotonic()
                with Sampler(proc.pid) as rss:
                    async with session.post(url + "/upload", data=body(), headers=auth) as resp:
                        received = (await resp.json())["received"]
                secs = time.monotonic() - started
                assert received == size, received
                grow = (
                    f"; gateway RSS {base:.0f} -> peak {rss.peak:.0f} MB (+{rss.peak - base:.0f})"
                    if label == "gateway"
                    else ""
                )
                print(
                    f"upload   {args.size_mb} MB {label:8s} {size / secs / 1e6:8.0f} MB/s{grow}",
                    flush=True,
                )
            ttfb: dict[str, list[float]] = {"direct": [], "gateway": []}
            for _ in range(args.sse_samples):
                for label, url in (("direct", direct), ("gateway", gateway)):
                    started = time.perf_counter()
                    async with session.get(url + "/sse", headers=auth) as resp:
                        await resp.content.readuntil(b"\n\n")
                        ttfb[label].append((time.perf_counter() - started) * 1000)
                        await resp.read()
            d, g = statistics.median(ttfb["direct"]), statistics.median(ttfb["gateway"])
            print(
                f"SSE first event: direct {d:.2f} ms, gateway {g:.2f} ms, difference {g - d:.2f} ms (median of {args.sse_samples})"
            )
    finally:
        proc.terminate()
        proc.wait(20)
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--sse-samples", type=int, default=50)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
