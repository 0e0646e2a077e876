"""Server-side dynamic batching, as TF Serving's shared batch scheduler does it.

Requests for the same version and signature wait in one queue; ``num_batch_threads`` threads
shared by all queues each take a batch of up to ``max_batch_size`` examples once the queue holds
that many or its oldest request has waited ``batch_timeout_micros`` (0: as soon as a thread is
free, so batches form from what queued while the threads were busy). A batch is concatenated along
dimension 0, padded up to the next ``allowed_batch_sizes`` entry with copies of its first example,
run once, and split back per request. A queue holding ``max_enqueued_batches`` full batches
rejects new requests (UNAVAILABLE); a request larger than ``max_batch_size`` is rejected unless
``enable_large_batch_splitting`` splits it (tensorflow_serving/batching/README.md).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from concurrent.futures import Future

import grpc
import numpy as np

from .config import BatchingOptions
from .errors import ServingError, invalid

__all__ = ["BatchScheduler", "BatchQueue"]


class _Task:
    __slots__ = ("inputs", "size", "future", "enqueued")

    def __init__(self, inputs, size):
        self.inputs, self.size = inputs, size
        self.future = Future()
        self.enqueued = time.monotonic()


class BatchQueue:
    """The queue of one (version, signature); ``run`` maps a dict of batched inputs to outputs."""

    def __init__(self, scheduler: "BatchScheduler", run):
        self._scheduler, self._run = scheduler, run
        self._tasks: deque[_Task] = deque()
        self.pending = 0  # examples waiting

    def submit(self, inputs: dict[str, np.ndarray], size: int) -> Future:
        """Enqueue one request of ``size`` examples; the future resolves to its outputs."""
        return self._scheduler._submit(self, inputs, size)


class BatchScheduler:
    """The shared pool of batch threads (``thread_pool_name``) and the queues it serves."""

    def __init__(self, options: BatchingOptions, metrics=None):
        self.options = options
        self.metrics = metrics
        self._timeout = options.batch_timeout_micros / 1e6
        self._cond = threading.Condition()
        self._ready: list[BatchQueue] = []   # queues with waiting tasks
        self._closed = False
        self._threads = [threading.Thread(target=self._work, daemon=True,
                                          name=f"{options.thread_pool_name}-{i}")
                         for i in range(options.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def queue(self, run) -> BatchQueue:
        return BatchQueue(self, run)

    def close(self, timeout: float = 30.0) -> None:
        """Finish every queued request, then stop the threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    # --- submission --------------------------------------------------------------------------

    def _submit(self, queue: BatchQueue, inputs, size) -> Future:
        opts = self.options
        if size > opts.max_batch_size:
            if not opts.enable_large_batch_splitting:
                raise invalid(f"Task size {size} is larger than maximum input batch size "
                              f"{opts.max_batch_size}; send at most {opts.max_batch_size} examples "
                              "per request or set enable_large_batch_splitting")
            return self._submit_split(queue, inputs, size)
        with self._cond:
            if self._closed:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "The server is shutting down")
            if queue.pending + size > opts.max_enqueued_batches * opts.max_batch_size:
                raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                   "The batch scheduling queue to which this task was submitted "
                                   "is full")
            task = _Task(inputs, size)
            queue._tasks.append(task)
            queue.pending += size
            if queue not in self._ready:
                self._ready.append(queue)
            self._cond.notify()
        return task.future

    def _submit_split(self, queue, inputs, size) -> Future:
        chunk = self.options.max_execution_batch_size or self.options.max_batch_size
        chunk = min(chunk, self.options.max_batch_size)
        parts = [self._submit(queue, {k: v[i:i + chunk] for k, v in inputs.items()},
                              min(chunk, size - i)) for i in range(0, size, chunk)]
        whole = Future()
        lock, done = threading.Lock(), []

        def gather(_):
            with lock:
                done.append(1)
                if len(done) < len(parts):
                    return
            errors = [p.exception() for p in parts if p.exception() is not None]
            if errors:
                whole.set_exception(errors[0])
                return
            outs = [p.result() for p in parts]
            whole.set_result({k: np.concatenate([o[k] for o in outs]) for k in outs[0]})

        for part in parts:
            part.add_done_callback(gather)
        return whole

    # --- batch threads -----------------------------------------------------------------------

    def _next_batch(self):
        """Under the lock: (queue, tasks) ready to run, or (None, seconds to wait)."""
        now = time.monotonic()
        wait = None
        for queue in sorted(self._ready, key=lambda q: q._tasks[0].enqueued):
            oldest = queue._tasks[0].enqueued
            if (queue.pending >= self.options.max_batch_size or self._closed
                    or now - oldest >= self._timeout):
                tasks, total = [], 0
                while queue._tasks and total + queue._tasks[0].size <= self.options.max_batch_size:
                    task = queue._tasks.popleft()
                    queue.pending -= task.size
                    if task.future.set_running_or_notify_cancel():  # False: the caller gave up
                        tasks.append(task)
                        total += task.size
                if not queue._tasks:
                    self._ready.remove(queue)
                if not tasks:  # all cancelled: look again, this queue may hold more
                    return self._next_batch()
                return queue, tasks
            left = oldest + self._timeout - now
            wait = left if wait is None else min(wait, left)
        return None, wait

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    queue, tasks = self._next_batch()
                    if queue is not None:
                        break
                    if self._closed and not self._ready:
                        return
                    self._cond.wait(timeout=tasks)
                if self._ready:
                    self._cond.notify()  # another queue may be ready for another thread
            self._process(queue, tasks)

    def _process(self, queue: BatchQueue, tasks: list[_Task]) -> None:
        started = time.monotonic()
        total = sum(t.size for t in tasks)
        sizes = self.options.allowed_batch_sizes
        target = sizes[bisect.bisect_left(sizes, total)] if sizes else total
        try:
            names = list(tasks[0].inputs)
            if len(tasks) == 1 and target == total:
                batched = tasks[0].inputs
            else:
                batched = {k: np.concatenate([t.inputs[k] for t in tasks]) for k in names}
                if target > total:
                    batched = {k: np.concatenate([v, np.repeat(v[:1], target - total, axis=0)])
                               for k, v in batched.items()}
            outputs = queue._run(batched)
            for name, value in outputs.items():
                if np.ndim(value) == 0 or value.shape[0] != target:
                    raise ServingError(grpc.StatusCode.INTERNAL,
                                       f"Batched output tensor '{name}' has 0th dimension "
                                       f"{np.shape(value)[:1]}, not the batch size {target}")
        except BaseException as exc:  # noqa: BLE001 (every waiting request gets an answer)
            if len(tasks) > 1 and isinstance(exc, ServingError) \
                    and exc.code == grpc.StatusCode.INVALID_ARGUMENT:
                # One bad request (say, bytes that are no image) must not fail the others that
                # shared its batch: run each alone, so only the culprit gets the error.
                for task in tasks:
                    self._process(queue, [task])
                return
            for task in tasks:
                task.future.set_exception(exc)
            return
        if self.metrics is not None:
            self.metrics.batch(self.options.thread_pool_name, total, target - total,
                               [started - t.enqueued for t in tasks])
        start = 0
        for task in tasks:
            task.future.set_result({k: v[start:start + task.size] for k, v in outputs.items()})
            start += task.size
