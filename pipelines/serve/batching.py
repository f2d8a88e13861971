"""Greedy batching for the model worker: a run takes every photo waiting, and nothing ever waits for company.

BentoML's adaptive batching (``batchable=True``) holds a request while it predicts that waiting for more
will pay; measured here it held a lone photo five to six times its compute time after a burst
(``benchmarks/results/serving_speed.json``, ``p50_ms_c1_after_burst``), and batching saves no CPU per photo
on these graphs. :class:`GreedyBatcher` runs the model as soon as it is free: a lone photo runs at once,
and the photos that arrive while a run is under way form the next run (at most ``max_size`` photos). A
photo that has waited longer than ``max_wait_s`` when its turn comes is refused with :class:`Overloaded`
(the service answers 503 with Retry-After) instead of being answered too late.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class Overloaded(RuntimeError):
    """The photo waited longer than the batcher's ``max_wait_s``: shed."""


class GreedyBatcher:
    """``await submit(photos)`` -> ``run(all photos waiting)``'s rows for ``photos``, runs one at a time.

    ``run`` takes an array of photos stacked on axis 0 and returns one result per photo; it runs on a thread of
    its own, so the event loop keeps accepting requests meanwhile. Use from one event loop.
    """

    def __init__(self, run: Callable[[np.ndarray], Sequence], max_size: int, max_wait_s: float):
        self.run, self.max_size, self.max_wait_s = run, max(1, int(max_size)), float(max_wait_s)
        self.waiting: deque[tuple[np.ndarray, asyncio.Future, float]] = deque()
        self.worker: asyncio.Task | None = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="batch")
        self.runs: list[int] = []              # photos per run (the last 1000), for tests and benchmarks

    async def submit(self, photos: np.ndarray) -> list:
        if len(photos) == 0:
            return []
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((photos, future, time.monotonic()))
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self._drain())
        return await future

    def _next(self) -> list[tuple[np.ndarray, asyncio.Future, float]]:
        """The requests of the next run: the oldest first, then as many as fit in ``max_size`` photos; the ones
        that waited too long are refused on the way."""
        taken, size, now = [], 0, time.monotonic()
        while self.waiting and (not taken or size + len(self.waiting[0][0]) <= self.max_size):
            photos, future, since = self.waiting.popleft()
            if future.cancelled():
                continue
            if now - since > self.max_wait_s:
                future.set_exception(Overloaded(f"waited {now - since:.1f} s for the models (limit {self.max_wait_s:g} s)"))
                continue
            taken.append((photos, future, since))
            size += len(photos)
        return taken

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self.waiting:
            taken = self._next()
            if not taken:
                continue
            batch = taken[0][0] if len(taken) == 1 else np.concatenate([p for p, _, _ in taken])
            self.runs = [*self.runs[-999:], len(batch)]
            try:
                rows = await loop.run_in_executor(self.executor, self.run, batch)
            except Exception as exc:                         # every request of the run gets the error
                for _, future, _ in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for photos, future, _ in taken:
                if not future.done():
                    future.set_result(list(rows[start:start + len(photos)]))
                start += len(photos)
