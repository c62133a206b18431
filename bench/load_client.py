"""The load client: bounded, time-boxed asyncio + httpx, loopback only.

Every loop here has a fixed request count, a fixed concurrency and a deadline, and stops by
itself. Latencies are measured by the client (request sent to response read), in seconds.
"""

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# Loopback only: every base URL this module is given must point here.
LOOPBACK_PREFIXES = ("http://127.0.0.1:", "http://localhost:", "http://[::1]:")
ACCEPTED = (200, 202)
PROBER = Path(__file__).with_name("prober.py")

RequestFactory = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


def require_loopback(base_url: str) -> None:
    if not base_url.startswith(LOOPBACK_PREFIXES):
        raise ValueError(f"the benchmark only sends traffic to loopback addresses, not {base_url}")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: list[float]) -> dict[str, float]:
    """n, p50, p99, max and mean of latencies given in seconds, in milliseconds."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": percentile(values, 50) * 1000,
        "p99_ms": percentile(values, 99) * 1000,
        "max_ms": max(values) * 1000,
        "mean_ms": statistics.fmean(values) * 1000,
    }


@dataclass
class Batch:
    """What one bounded loop of requests saw."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    elapsed: float = 0.0
    timed_out: bool = False

    @property
    def accepted(self) -> int:
        return sum(n for status, n in self.statuses.items() if status in ACCEPTED)

    @property
    def rejected(self) -> int:
        return sum(n for status, n in self.statuses.items() if status not in ACCEPTED) + self.errors


def client(base_url: str, connections: int) -> httpx.AsyncClient:
    require_loopback(base_url)
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(30.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        trust_env=False,  # never through a proxy: loopback only
    )


async def closed_loop(
    base_url: str, request: RequestFactory, *, count: int, concurrency: int, deadline: float
) -> Batch:
    """Send `count` requests, `concurrency` at a time, each started when another finishes.

    Stops early `deadline` seconds from now. A failed request is counted, never retried.
    """
    batch = Batch()
    next_index = 0
    stop_at = time.monotonic() + deadline

    async with client(base_url, concurrency) as http:

        async def worker() -> None:
            nonlocal next_index
            while next_index < count:
                if time.monotonic() > stop_at:
                    batch.timed_out = True
                    return
                index = next_index
                next_index += 1
                started = time.perf_counter()
                try:
                    response = await request(http, index)
                except httpx.HTTPError:
                    batch.errors += 1
                    continue
                batch.latencies.append(time.perf_counter() - started)
                batch.statuses[response.status_code] = batch.statuses.get(response.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        batch.elapsed = time.perf_counter() - started
    return batch


async def wait_for_count(
    count_now: Callable[[], int], target: int, *, timeout: float, interval: float = 0.05
) -> float | None:
    """Poll `count_now` (run in a thread) until it reaches `target`: the time then, or None."""
    stop_at = time.monotonic() + timeout
    while time.monotonic() < stop_at:
        if await asyncio.to_thread(count_now) >= target:
            return time.perf_counter()
        await asyncio.sleep(interval)
    return None


@dataclass
class Probed:
    """Latencies of a probe endpoint sampled while some work ran."""

    latencies: list[float]
    errors: int


async def probe_while(base_url: str, work: Awaitable[object], *, interval: float, path: str = "/health") -> Probed:
    """GET `path` every `interval` seconds, on a connection of its own, until `work` is done.

    The probe is a process of its own (prober.py): in this one, its answers would wait while the
    event loop sends the work's requests, and the client's delay would count as the server's.
    """
    require_loopback(base_url)
    prober = await asyncio.create_subprocess_exec(
        sys.executable, str(PROBER), base_url, path, str(interval),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert prober.stdin is not None and prober.stdout is not None
    try:
        ready = await asyncio.wait_for(prober.stdout.readline(), timeout=30)
        if ready.strip() != b"ready":
            raise RuntimeError(f"the probe of {base_url}{path} did not start: {ready!r}")
        await work
    finally:
        prober.stdin.close()
        output, _ = await asyncio.wait_for(prober.communicate(), timeout=60)
    probed = json.loads(output.decode().strip().splitlines()[-1])
    return Probed(latencies=probed["latencies"], errors=probed["errors"])
