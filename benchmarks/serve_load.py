"""`ddnn serve` under load: does a latency target keep its promise where a fixed net cannot?

For a trained DDNN run (--run DIR, default runs/demo; its switchable ONNX file is exported first if
missing) it starts three servers in turn on a free loopback port, each `ddnn serve` in its own
process with --threads model threads:

- full: every request at the full net (depth 0);
- smallest: every request at the depth with the fewest MACs;
- adaptive: `--p99-ms TARGET`, the depth per batch chosen from the measured latency and the queue.

It first measures the full server's capacity (closed loop: --concurrency clients, each sending its
next request when the last one is answered, for --capacity-s seconds) and its latency when idle
(one client). Each server then gets open-loop Poisson
arrivals at 0.5x, 1x, 2x and 4x that capacity, --level-s seconds per level (at most --max-requests
requests), the full server first: the adaptive target defaults to 1.5x the p99 the full server
kept at 0.5x, a target the full net meets when the load is light. Each request is sent at its scheduled time whether or not earlier ones have been answered,
and its latency counts from that time, so a server that falls behind is charged the wait. Requests
are real test images of the run as PNG bytes (one image per request). Reported per server and load:
throughput, p50/p99 latency as the client sees it, the p99 of the server's own time (its
latency histogram in /metrics, handler start to answer: what the policy plans on; a bucket bound),
how late the client itself sent (p99 of send time - scheduled time: where it is large, the client,
not the server, fell behind), requests lost (non-200 or no answer within --timeout-s), the depth mix
of the answers and their expected accuracy: each depth's test top-1 of the served checkpoint
(best.pt, from the run's results.json) weighted by that mix.

Loopback only, bounded in requests and time (a full run: about 2-4 minutes). The client is aiohttp
on uvloop: httpx's client spent about 2.7 ms of CPU per request here, 5x aiohttp's, and capped the
offered load before the server did. Client and server share the machine, so its cores and whatever
else runs on it are part of the measurement: quote the load average printed with the table.

Prints Markdown and writes serve_load.json into --out (default the run folder).
Usage: python benchmarks/serve_load.py [--run DIR] [--threads 1] [--p99-ms X] [--level-s 4] [--quick]
"""

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import urllib.request

import aiohttp

from ddnn import run_files, runtime
from ddnn.deploy.serve.server import switchable_of_run

FACTORS = (0.5, 1.0, 2.0, 4.0)


def cpu_name() -> str:
    with contextlib.suppress(OSError, StopIteration):
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    return "unknown CPU"


def test_pngs(folder: Path, count: int = 256) -> list[bytes]:
    from PIL import Image

    from ddnn.deploy.run import open_run

    images = open_run(folder).load_data().test.images[:count].numpy()
    out = []
    for x in images:
        buffer = io.BytesIO()
        Image.fromarray(x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


class Server:
    """`ddnn serve FILE --port P ARGS` in its own process; up once /health answers; stop() sends SIGTERM."""

    def __init__(self, path: Path, threads: int, *args: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/predict"
        self.proc = subprocess.Popen([sys.executable, "-m", "ddnn", "serve", str(path), "--port", str(self.port),
                                      "--threads", str(threads), *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}: {self.proc.stdout.read()}")
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            if time.monotonic() > deadline:
                self.proc.kill()
                raise SystemExit("server did not come up in 60 s")
            time.sleep(0.2)

    def latency_buckets(self) -> dict[float, float]:
        """The server's own latency histogram (GET /metrics): bucket upper bound in s -> cumulative count."""
        text = urllib.request.urlopen(self.url.replace("/predict", "/metrics"), timeout=10).read().decode()
        found = re.findall(r'^ddnn_request_latency_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M)
        return {float(le): float(n) for le, n in found}

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=60)
        return self.proc.returncode


async def _post(session, url: str, body: bytes, timeout: float) -> tuple[bool, str | None]:
    try:
        async with session.post(url, data=body, headers={"content-type": "image/png"},
                                timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            answer = await r.json()
            return r.status == 200, answer.get("depth", {}).get("name")
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        return False, None


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))


async def closed_loop(url: str, pngs: list[bytes], clients: int, seconds: float, timeout: float) -> dict:
    """`clients` clients, each sending its next request when the last is answered, for `seconds`."""
    latencies: list[float] = []
    lost = 0
    async with _session() as session:
        end = time.perf_counter() + seconds

        async def client(k: int) -> None:
            nonlocal lost
            i = k
            while time.perf_counter() < end:
                start = time.perf_counter()
                ok, _ = await _post(session, url, pngs[i % len(pngs)], timeout)
                latencies.append(time.perf_counter() - start)
                lost += not ok
                i += clients

        start = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(clients)))
        wall = time.perf_counter() - start
    return {"requests": len(latencies), "lost": lost, "per_s": (len(latencies) - lost) / wall,
            "p50_ms": statistics.median(latencies) * 1e3}


async def open_loop(url: str, pngs: list[bytes], rate: float, count: int, timeout: float, seed: int) -> dict:
    """`count` requests at Poisson arrival times of `rate` per second, each timed from its scheduled send."""
    rng = random.Random(seed)
    results: list[tuple[float, bool, str | None]] = []
    late: list[float] = []  # how long after its scheduled time each request left the client
    async with _session() as session:
        start = time.perf_counter()

        async def one(i: int, at: float) -> None:
            late.append(time.perf_counter() - at)
            ok, depth = await _post(session, url, pngs[i % len(pngs)], timeout)
            results.append((time.perf_counter() - at, ok, depth))

        tasks, at = [], start
        for i in range(count):
            at += rng.expovariate(rate)
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, at)))
        sent = time.perf_counter() - start
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - start
    ok = [r for r in results if r[1]]
    latencies = sorted(r[0] for r in ok) or [float("nan")]
    mix: dict[str, int] = {}
    for _, _, depth in ok:
        mix[depth] = mix.get(depth, 0) + 1
    return {"requests": count, "offered_per_s": count / sent, "throughput_per_s": len(ok) / wall,
            "p50_ms": latencies[len(latencies) // 2] * 1e3,
            "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1e3,
            "client_late_p99_ms": sorted(late)[min(len(late) - 1, int(0.99 * len(late)))] * 1e3,
            "lost": count - len(ok), "mix": {k: v / len(ok) for k, v in sorted(mix.items())}}


def server_p99_ms(before: dict[float, float], after: dict[float, float]) -> float:
    """The bucket bound under which 99 % of the requests between two scrapes stayed, in the server's own
    time (handler start to answer): what the policy plans on, without the socket and the client."""
    counts = {le: after[le] - before.get(le, 0.0) for le in after}
    total = counts[float("inf")]
    return next((le * 1e3 for le in sorted(counts) if counts[le] >= 0.99 * total), float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo", help="a trained DDNN run folder (default runs/demo)")
    parser.add_argument("--out", help="where serve_load.json goes (default: the run folder)")
    parser.add_argument("--threads", type=int, default=1, help="model threads of each server (default 1)")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--p99-ms", type=float, help="the adaptive server's target (default: 1.5x the full server's "
                        "p99 at 0.5x load)")
    parser.add_argument("--concurrency", type=int, default=16, help="clients of the capacity run")
    parser.add_argument("--capacity-s", type=float, default=4.0)
    parser.add_argument("--level-s", type=float, default=4.0, help="seconds of arrivals per load level")
    parser.add_argument("--max-requests", type=int, default=6000, help="most requests per load level")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="a request unanswered this long is lost")
    parser.add_argument("--quick", action="store_true", help="1 s per level, at most 300 requests: checks the script")
    args = parser.parse_args()
    if args.quick:
        args.capacity_s, args.level_s, args.max_requests = 1.0, 1.0, 300
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    folder = Path(args.run)
    path = switchable_of_run(folder, "best")
    model = runtime.load(path, calibrate=False)
    nets = run_files.read_json(folder / run_files.RESULTS, "the run has not finished")["nets"]
    top1 = {d.name: nets[d.name]["best_top1"] for d in model.depths}
    full, smallest = model.depths[0], min(model.depths, key=lambda d: d.macs)
    pngs = test_pngs(folder)
    load_before = os.getloadavg()

    common = ["--max-batch", str(args.max_batch)]
    server = Server(path, args.threads, "--depth", str(full.index), *common)
    try:
        asyncio.run(closed_loop(server.url, pngs, args.concurrency, 1.0, args.timeout_s))  # warm-up
        capacity = asyncio.run(closed_loop(server.url, pngs, args.concurrency, args.capacity_s, args.timeout_s))
        idle = asyncio.run(closed_loop(server.url, pngs, 1, min(args.capacity_s, 2.0), args.timeout_s))
    finally:
        server.stop()
    print(f"{cpu_name()}, {os.cpu_count()} cores, load average {load_before[0]:.1f} before; {path}; model threads "
          f"{args.threads}, batches of up to {args.max_batch}")
    print(f"full net ({full.name}) capacity: {capacity['per_s']:.0f} requests/s with {args.concurrency} clients "
          f"({capacity['lost']} lost); idle p50 {idle['p50_ms']:.2f} ms", flush=True)

    target = args.p99_ms
    servers = {"full": ["--depth", str(full.index)], "smallest": ["--depth", str(smallest.index)], "adaptive": None}
    rows = []
    for name, policy_args in servers.items():
        if policy_args is None:
            target = target or round(1.5 * rows[0]["p99_ms"], 1)  # rows[0]: the full server at 0.5x
            print(f"  adaptive target: p99 <= {target:g} ms", flush=True)
            policy_args = ["--p99-ms", str(target)]
        server = Server(path, args.threads, *policy_args, *common)
        try:
            asyncio.run(closed_loop(server.url, pngs, args.concurrency, 1.0, args.timeout_s))  # warm-up
            for k, factor in enumerate(FACTORS):
                rate = factor * capacity["per_s"]
                count = max(1, min(args.max_requests, round(rate * args.level_s)))
                before = server.latency_buckets()
                r = asyncio.run(open_loop(server.url, pngs, rate, count, args.timeout_s, seed=k))
                r.update(server=name, factor=factor, accuracy=sum(top1[d] * f for d, f in r["mix"].items()),
                         server_p99_ms=server_p99_ms(before, server.latency_buckets()))
                rows.append(r)
                print(f"  {name} at {factor:g}x: {r['throughput_per_s']:.0f}/s, p99 {r['p99_ms']:.1f} ms, "
                      f"lost {r['lost']}", flush=True)
        finally:
            code = server.stop()
        rows[-1]["exit_code"] = code
    load_after = os.getloadavg()

    print(f"\n| server | load | offered req/s | requests | throughput req/s | p50 ms | p99 ms | p99 <= {target:g} ms | "
          "server p99 ms | client late p99 ms | lost | depth mix | expected top-1 % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mix = ", ".join(f"{d} {f:.0%}" for d, f in sorted(r["mix"].items(), key=lambda kv: -kv[1]))
        print(f"| {r['server']} | {r['factor']:g}x | {r['offered_per_s']:.0f} | {r['requests']} | "
              f"{r['throughput_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{'yes' if r['p99_ms'] <= target else 'no'} | <= {r['server_p99_ms']:g} | {r['client_late_p99_ms']:.1f} | {r['lost']} | {mix} | {r['accuracy']:.2f} |")
    print(f"\nper-depth test top-1 % (best.pt): " + ", ".join(f"{d} {v:.2f}" for d, v in top1.items())
          + f"; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    report = {"machine": cpu_name(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "file": str(path), "threads": args.threads, "max_batch": args.max_batch, "capacity": capacity,
              "idle": idle, "target_ms": target, "top1": top1, "load_average": [load_before[0], load_after[0]],
              "rows": rows, "args": vars(args)}
    out = Path(args.out) if args.out else folder
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_load.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {out / 'serve_load.json'}")


if __name__ == "__main__":
    main()
