"""service.batcher.MicroBatcher: grouping, limits, errors."""

import asyncio

import pytest

from service.batcher import MicroBatcher


def run_batches(max_size: int, max_wait_s: float, n: int, fail_on: int | None = None) -> tuple[list, list[list[int]]]:
    batches: list[list[int]] = []

    def double(items: list[int]) -> list[int]:
        batches.append(items)
        if fail_on in items:
            raise ValueError(f"bad item {fail_on}")
        return [2 * item for item in items]

    async def main() -> list:
        batcher: MicroBatcher[int, int] = MicroBatcher(double, max_size, max_wait_s)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in range(n)), return_exceptions=True)
        finally:
            await batcher.stop()

    return asyncio.run(main()), batches


def test_concurrent_items_share_batches_up_to_the_limit() -> None:
    results, batches = run_batches(max_size=4, max_wait_s=0.05, n=10)
    assert results == [2 * i for i in range(10)]
    assert [len(batch) for batch in batches] == [4, 4, 2]


def test_batch_size_one_means_no_batching() -> None:
    results, batches = run_batches(max_size=1, max_wait_s=0.05, n=3)
    assert results == [0, 2, 4] and batches == [[0], [1], [2]]


def test_a_failing_batch_fails_its_callers_only() -> None:
    results, _ = run_batches(max_size=2, max_wait_s=0.05, n=4, fail_on=3)
    assert results[:2] == [0, 2]
    assert all(isinstance(r, ValueError) for r in results[2:])


def test_submit_needs_a_started_batcher() -> None:
    async def main() -> None:
        await MicroBatcher(lambda items: items, 2, 0.0).submit(1)

    with pytest.raises(RuntimeError, match="start"):
        asyncio.run(main())
