"""500 concurrent held requests on loopback: all answered, memory bounded."""

from __future__ import annotations

import asyncio
import resource
import tracemalloc

import aiohttp

from scaler.activator.proxy import ActivatorConfig
from tests.activator.model_server import ModelServerEmulator, running_activator, until
from tests.builders import make_policy

HELD = 500
MEMORY_BOUND = 100 * 1024 * 1024  # generous: the measured peak is a few MiB


def raise_fd_limit(needed: int) -> None:
    """Lift the soft file-descriptor limit (client, proxy and server sockets: ~3 per request)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


async def test_500_held_requests_are_all_answered_with_bounded_memory() -> None:
    """500 requests held at once: every one is forwarded and answered once the model loads,
    and the traced allocation peak (client, proxy and emulator together) stays under 100 MiB."""
    raise_fd_limit(4 * HELD + 256)
    policy = make_policy("tinyllama", coldStart={"seconds": 60, "overdueFactor": 1.0})
    tracemalloc.start()
    try:
        async with (
            ModelServerEmulator(load_seconds=None) as server,
            running_activator(
                [policy],
                upstreams={"tinyllama": server.url},
                config=ActivatorConfig(queue_size=HELD, probe_interval_s=0.05),
            ) as (activator, url),
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
        ):
            baseline, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            target = url.with_path("/tinyllama/v1/completions")

            async def one(i: int) -> int:
                async with session.post(target, data=f'{{"prompt": "{i}"}}'.encode()) as r:
                    await r.read()
                    return r.status

            tasks = [asyncio.create_task(one(i)) for i in range(HELD)]
            gate = activator.gates["tinyllama"]
            await until(lambda: gate.pending == HELD, timeout_s=30, what=f"{HELD} held")
            await server.finish_loading()
            statuses = await asyncio.gather(*tasks)
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert statuses == [200] * HELD
    assert len(server.received) == HELD
    assert peak - baseline < MEMORY_BOUND, f"peak {(peak - baseline) / 2**20:.1f} MiB"
