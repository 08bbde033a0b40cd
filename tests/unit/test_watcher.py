"""A live stream's queue (``server/watch.Watcher``): bounded, and ending it wakes the stream."""

from __future__ import annotations

import asyncio

from l2pop.server.watch import Watcher


def test_a_full_queue_ends_the_stream_instead_of_growing() -> None:
    async def run() -> list[str | None]:
        watcher = Watcher(limit=2)
        for message in ("a", "b", "c"):
            watcher.put(message)
        watcher.put("d")  # ignored once dropped
        return [watcher.queue.get_nowait() for _ in range(watcher.queue.qsize())]

    assert asyncio.run(run()) == [None]


def test_ending_wakes_a_stream_waiting_for_its_next_message() -> None:
    async def run() -> str | None:
        watcher = Watcher()
        waiting = asyncio.create_task(watcher.queue.get())
        await asyncio.sleep(0)
        watcher.end()
        return await asyncio.wait_for(waiting, 1.0)

    assert asyncio.run(run()) is None
