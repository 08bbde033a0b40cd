"""Process-level tuning shared by the server and the agents."""

from __future__ import annotations

import asyncio
import gc


async def keep_heap_frozen(interval: float = 30.0) -> None:
    """Every ``interval`` s, move surviving objects out of the cyclic collector's sight.

    The server's hub and a swarm of simulated agents hold hundreds of thousands of
    long-lived objects (ports, table entries). Full collections would rescan all of them,
    in pauses of 100 ms and more under churn. Frozen objects are still freed by reference
    counting when they die; only reference cycles among them would outlive their use, and
    these structures (dataclasses, dicts, sets of strings) have none.
    """
    while True:
        gc.freeze()
        await asyncio.sleep(interval)
