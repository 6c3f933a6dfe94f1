"""Micro-batching: requests that arrive within a few milliseconds share one model call.

One worker takes the first waiting request, gathers more for up to ``window`` seconds (or
``max_batch``), runs the batch in a thread and hands each caller its own result. While a batch
runs, new requests queue up, so batches grow with load and so does throughput. When a batch
fails, each of its inputs runs again alone, so an input that breaks the model fails only its
own request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Group :meth:`submit` calls into calls of ``fn(list of inputs) -> list of results``."""

    def __init__(
        self,
        fn: Callable[[list[T]], list[R]],
        *,
        window: float = 0.003,
        max_batch: int = 16,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.fn, self.window, self.max_batch, self.on_batch = fn, window, max_batch, on_batch
        self._queue: asyncio.Queue[tuple[T, asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, item: T) -> tuple[R, int, float]:
        """The result for ``item``, the size of the batch it ran in and that batch's seconds."""
        if self._queue is None:
            raise RuntimeError("the batcher has not been started")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _gather(self) -> list[tuple[T, asyncio.Future]]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.window
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())  # arrived while the last batch ran
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [(item, fut) for item, fut in batch if not fut.cancelled()]  # callers that left are skipped

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            start = loop.time()
            try:
                results = await asyncio.to_thread(self.fn, [item for item, _ in batch])
            except Exception as e:
                if len(batch) > 1:  # one bad input must not fail the others: run each alone
                    await asyncio.gather(*(self._run_alone(item, fut) for item, fut in batch))
                elif not batch[0][1].done():
                    batch[0][1].set_exception(e)
                continue
            seconds = loop.time() - start
            if self.on_batch is not None:
                self.on_batch(len(batch), seconds)
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result((result, len(batch), seconds))

    async def _run_alone(self, item: T, fut: asyncio.Future) -> None:
        """Run one input of a failed batch by itself; its caller gets its own result or its own error."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            [result] = await asyncio.to_thread(self.fn, [item])
        except Exception as e:
            if not fut.done():
                fut.set_exception(e)
            return
        seconds = loop.time() - start
        if self.on_batch is not None:
            self.on_batch(1, seconds)
        if not fut.done():
            fut.set_result((result, 1, seconds))
