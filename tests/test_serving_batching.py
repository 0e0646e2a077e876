"""Dynamic batching, deterministically: a slow fake model, one batch thread."""

import threading
import time

import grpc
import numpy as np
import pytest

from kerascnn.serving.batching import BatchScheduler
from kerascnn.serving.config import BatchingOptions
from kerascnn.serving.errors import ServingError


class SlowModel:
    """Doubles its input after a delay and records the batch sizes it saw."""

    def __init__(self, delay=0.05):
        self.delay, self.sizes, self.lock = delay, [], threading.Lock()

    def __call__(self, inputs):
        time.sleep(self.delay)
        with self.lock:
            self.sizes.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2, "n": np.full(len(inputs["x"]), len(inputs["x"]))}


def _scheduler(model, **options):
    scheduler = BatchScheduler(BatchingOptions(**{"num_batch_threads": 1, **options}))
    return scheduler, scheduler.queue(model)


def test_requests_queued_while_the_thread_is_busy_form_one_batch():
    model = SlowModel()
    scheduler, queue = _scheduler(model, max_batch_size=4)
    try:
        futures = [queue.submit({"x": np.array([[0]], np.float32)}, 1)]
        while queue.pending:  # until the thread has taken the first request
            time.sleep(0.001)
        futures += [queue.submit({"x": np.array([[i]], np.float32)}, 1) for i in range(1, 9)]
        results = [f.result(timeout=10) for f in futures]
    finally:
        scheduler.close()
    # The first request runs alone; the 8 that queued meanwhile go in two full batches.
    assert model.sizes == [1, 4, 4]
    assert [r["y"].tolist() for r in results] == [[[2.0 * i]] for i in range(9)]


def test_timeout_waits_for_a_fuller_batch_and_padding_reaches_an_allowed_size():
    model = SlowModel(delay=0)
    scheduler, queue = _scheduler(model, max_batch_size=8, batch_timeout_micros=200_000,
                                  allowed_batch_sizes=(4, 8))
    try:
        futures = [queue.submit({"x": np.array([[i], [i]], np.float32)}, 2) for i in range(3)]
        results = [f.result(timeout=10) for f in futures]
    finally:
        scheduler.close()
    assert model.sizes == [8]                      # 6 examples padded up to 8, one run
    assert [r["n"].tolist() for r in results] == [[8, 8]] * 3
    assert results[2]["y"].tolist() == [[4.0], [4.0]]


def test_oversized_requests_are_rejected_or_split():
    model = SlowModel(delay=0)
    scheduler, queue = _scheduler(model, max_batch_size=4)
    try:
        with pytest.raises(ServingError, match="larger than maximum input batch size 4") as info:
            queue.submit({"x": np.zeros((5, 1), np.float32)}, 5)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        scheduler.close()
    scheduler, queue = _scheduler(model, max_batch_size=4, enable_large_batch_splitting=True)
    try:
        out = queue.submit({"x": np.arange(10, dtype=np.float32)[:, None]}, 10).result(timeout=10)
    finally:
        scheduler.close()
    assert out["y"][:, 0].tolist() == [2.0 * i for i in range(10)]


def test_a_full_queue_answers_unavailable():
    model = SlowModel(delay=0.3)
    scheduler, queue = _scheduler(model, max_batch_size=2, max_enqueued_batches=1)
    try:
        first = queue.submit({"x": np.zeros((2, 1), np.float32)}, 2)
        time.sleep(0.1)                                  # the thread is busy with `first`
        queued = queue.submit({"x": np.zeros((2, 1), np.float32)}, 2)
        with pytest.raises(ServingError, match="queue .* is full") as info:
            queue.submit({"x": np.zeros((1, 1), np.float32)}, 1)
        assert info.value.http_status == 503
        first.result(timeout=10), queued.result(timeout=10)
    finally:
        scheduler.close()


def test_close_finishes_every_queued_request():
    model = SlowModel(delay=0.02)
    scheduler, queue = _scheduler(model, max_batch_size=2)
    futures = [queue.submit({"x": np.zeros((1, 1), np.float32)}, 1) for _ in range(7)]
    scheduler.close()
    assert all(f.done() and f.exception() is None for f in futures)
