"""Greedy batching (pipelines/serve/batching.py): a lone photo runs at once, photos arriving during a run share
the next one (at most max_size), each request gets its own rows back, late photos are shed, errors reach all."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from pipelines.serve.batching import GreedyBatcher, Overloaded


class Model:
    """Returns each photo's id (its first pixel) after ``seconds``; records the photos of every run."""

    def __init__(self, seconds: float = 0.05, fail_on: int | None = None):
        self.seconds, self.fail_on, self.calls, self.threads = seconds, fail_on, [], set()

    def __call__(self, photos: np.ndarray) -> list[int]:
        self.threads.add(threading.current_thread().name)
        self.calls.append([int(p[0, 0]) for p in photos])
        time.sleep(self.seconds)
        if self.fail_on is not None and self.fail_on in self.calls[-1]:
            raise ValueError("bad photo")
        return [int(p[0, 0]) for p in photos]


def photos(*ids: int) -> np.ndarray:
    return np.stack([np.full((2, 2), i, dtype=np.int64) for i in ids])


def test_a_lone_photo_runs_at_once_and_later_arrivals_share_the_next_run():
    model = Model(0.2)

    async def scenario():
        batcher = GreedyBatcher(model, max_size=4, max_wait_s=10)
        start = time.monotonic()
        first = asyncio.create_task(batcher.submit(photos(1)))
        await asyncio.sleep(0.05)                          # the first run is under way
        rest = [asyncio.create_task(batcher.submit(photos(i))) for i in (2, 3)]
        pair = asyncio.create_task(batcher.submit(photos(4, 5)))
        more = asyncio.create_task(batcher.submit(photos(6)))
        got = [await first, *[await r for r in rest], await pair, await more]
        return got, time.monotonic() - start, batcher.runs

    got, elapsed, runs = asyncio.run(scenario())
    assert got == [[1], [2], [3], [4, 5], [6]]            # each request its own rows, in order
    assert model.calls == [[1], [2, 3, 4, 5], [6]]        # 1 alone; the 4 that fit in max_size; the one left over
    assert runs == [1, 4, 1] and elapsed < 0.2 * 3 + 0.3  # no run waited for company
    assert model.threads and all(t.startswith("batch") for t in model.threads)   # off the event loop


def test_a_photo_that_waited_too_long_is_shed_and_an_error_reaches_every_request_of_its_run():
    model = Model(0.3)

    async def shed():
        batcher = GreedyBatcher(model, max_size=8, max_wait_s=0.1)
        first = asyncio.create_task(batcher.submit(photos(1)))
        await asyncio.sleep(0.02)
        late = asyncio.create_task(batcher.submit(photos(2)))        # waits 0.28 s > 0.1 s for the first run
        assert await first == [1]
        with pytest.raises(Overloaded, match="limit 0.1 s"):
            await late
        assert await batcher.submit(photos(3)) == [3]                # the batcher carries on
        return model.calls

    assert asyncio.run(shed()) == [[1], [3]]

    failing = Model(0.1, fail_on=7)

    async def error():
        batcher = GreedyBatcher(failing, max_size=8, max_wait_s=10)
        first = asyncio.create_task(batcher.submit(photos(1)))
        await asyncio.sleep(0.02)
        a, b = (asyncio.create_task(batcher.submit(photos(i))) for i in (7, 8))
        results = await asyncio.gather(first, a, b, return_exceptions=True)
        return results, await batcher.submit(photos(9))

    results, after = asyncio.run(error())
    assert results[0] == [1] and all(isinstance(r, ValueError) for r in results[1:]) and after == [9]
    assert asyncio.run(GreedyBatcher(failing, 4, 1).submit(np.zeros((0, 2, 2)))) == []
