"""Micro-batching: concurrent requests' work items run together, off the event loop.

A worker task takes the first queued item, waits up to `max_wait_s` for more (at most
`max_size`), runs the batch function in a thread and hands each caller its result. One batch
runs at a time, so items queued meanwhile form the next batch: with `max_wait_s = 0` batching
adds no latency and still groups whatever piled up under load.
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

log = logging.getLogger(__name__)


class MicroBatcher(Generic[ItemT, ResultT]):
    """Runs `fn(batch) -> results` (one result per item, same order) over queued items."""

    def __init__(self, fn: Callable[[list[ItemT]], Sequence[ResultT]], max_size: int, max_wait_s: float) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self._fn = fn
        self._max_size = max_size
        self._max_wait_s = max_wait_s
        self._queue: asyncio.Queue[tuple[ItemT, asyncio.Future[ResultT]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker; callers still waiting get a `RuntimeError`."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("the service is shutting down"))

    async def submit(self, item: ItemT) -> ResultT:
        """Queue one item and wait for its result (or the batch function's exception)."""
        if self._worker is None:
            raise RuntimeError("the batcher is not running; call start() first")
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            live = [(item, future) for item, future in batch if not future.done()]
            if not live:
                continue
            try:
                results = await asyncio.to_thread(self._fn, [item for item, _ in live])
            except Exception as exc:
                log.exception("a batch of %d failed", len(live))
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(live, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _collect(self) -> list[tuple[ItemT, asyncio.Future[ResultT]]]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait_s
        while len(batch) < self._max_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch
