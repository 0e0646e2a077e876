"""What the REST and gRPC front ends share: look-ups, signature checks, batched or direct runs."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from .batching import BatchScheduler
from .config import BatchingOptions
from .errors import failed_precondition, invalid
from .limits import ServingLimits
from .manager import PREDICT_METHOD, ModelManager, Servable, Signature
from .metrics import ServingMetrics

__all__ = ["ServingCore"]

_PREDICT_METHODS = {PREDICT_METHOD, "tensorflow/serving/classify", "tensorflow/serving/regress"}


class ServingCore:
    """Predict, metadata and status over a :class:`ModelManager`, with optional batching.

    ``limits`` (:class:`~.limits.ServingLimits`) are what both front ends enforce.
    """

    def __init__(self, manager: ModelManager, *, batching: BatchingOptions | None = None,
                 metrics: ServingMetrics | None = None, workers: int | None = None,
                 limits: ServingLimits | None = None):
        self.manager = manager
        self.metrics = metrics
        self.limits = limits if limits is not None else ServingLimits()
        #: runs request parsing, response formatting and unbatched model calls off the event loop
        self.executor = ThreadPoolExecutor(max_workers=workers or 32, thread_name_prefix="serving")
        self.scheduler = BatchScheduler(batching, metrics) if batching is not None else None

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        return self.manager.resolve(name, version, label)

    @staticmethod
    def signature(servable: Servable, key: str, *, api: str = "rest") -> Signature:
        sig = servable.signatures.get(key or "serving_default")
        if sig is None:
            if api == "rest":
                raise invalid(f'Serving signature name: "{key}" not found in signature def')
            raise failed_precondition(f'Serving signature key "{key}" not found.')
        if sig.method_name not in _PREDICT_METHODS:
            raise failed_precondition(f"Expected prediction signature method_name to be one of "
                                      f"{sorted(_PREDICT_METHODS)}. Was: {sig.method_name}")
        return sig

    async def predict(self, servable: Servable, sig: Signature, inputs) -> dict:
        """Run ``sig`` on ``inputs`` (validated first), through the batch queue when batching."""
        self.limits.check_batch(inputs)
        sig.check(inputs)
        if any(arr.dtype == object for arr in inputs.values()):  # encoded images: read headers
            await self.in_thread(self.limits.check_images, inputs)
        size = sig.batch_size(inputs)
        if self.scheduler is not None and size:
            queue = servable.queues.get(sig.key)
            if queue is None:
                queue = servable.queues.setdefault(
                    sig.key, self.scheduler.queue(self._timed(servable, sig)))
            return await asyncio.wrap_future(queue.submit(inputs, size))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._timed(servable, sig), inputs)

    def _timed(self, servable: Servable, sig: Signature):
        metrics = self.metrics

        def run(inputs):
            started = time.perf_counter()
            outputs = sig(inputs)
            if metrics is not None:
                metrics.runtime(servable.name, "Predict", time.perf_counter() - started)
            return outputs
        return run

    async def in_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def observe(self, model: str, api: str, entrypoint: str, status: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.request(model, api, entrypoint, status, time.perf_counter() - started)

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()
        self.executor.shutdown(wait=True)


def model_status_response(statuses):
    """``GetModelStatusResponse`` for a list of :class:`~.manager.VersionStatus`."""
    from tensorflow_serving.apis import get_model_status_pb2
    state = get_model_status_pb2.ModelVersionStatus.State
    response = get_model_status_pb2.GetModelStatusResponse()
    for s in statuses:
        entry = response.model_version_status.add(version=s.version, state=state.Value(s.state))
        entry.status.error_code = s.error_code.value[0]  # set explicitly, or it is left out
        entry.status.error_message = s.error_message
    return response


def model_metadata_response(servable: Servable):
    """``GetModelMetadataResponse`` with ``signature_def``, the only field TF Serving fills."""
    from tensorflow_serving.apis import get_model_metadata_pb2
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.metadata["signature_def"].Pack(servable.signature_def_map)
    return response
