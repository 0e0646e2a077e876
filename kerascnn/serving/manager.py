"""Loaded models: SavedModel versions, TF Serving's version policies, hot reload.

Like TF Serving's file-system source (serving-protocol.md §3.1, §4.1), every model's ``base_path``
is scanned for integer-named version folders every ``file_system_poll_seconds``; the version
policy (``latest {num_versions}`` by default, ``all``, ``specific {versions}``) picks the versions
to serve. New versions are loaded (and warmed up) *before* old ones are unloaded, so a swap never
leaves a model without a version; requests already holding the old version finish on it. A version
that fails to load is reported (state END with the error) and retried once its files change, while
the previous version keeps serving.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from . import config as cfg
from .errors import ServingError, invalid, not_found
from .tensors import TensorInfo

__all__ = ["Signature", "Servable", "ModelManager", "VersionStatus"]

log = logging.getLogger("kerascnn.serving")

_CODES = {code.value[0]: code for code in grpc.StatusCode}
PREDICT_METHOD = "tensorflow/serving/predict"


def _tensor_info(alias, proto) -> TensorInfo:
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2
    dtype = tf.dtypes.as_dtype(proto.dtype)
    np_dtype = np.dtype(object) if dtype == tf.string else np.dtype(dtype.as_numpy_dtype)
    dims = proto.tensor_shape.dim
    shape = None if proto.tensor_shape.unknown_rank else tuple(d.size for d in dims)
    return TensorInfo(alias, np_dtype, types_pb2.DataType.Name(proto.dtype)[3:].lower(), shape)


@dataclass
class Signature:
    """One callable SignatureDef of a loaded version."""

    key: str
    method_name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    fn: object = field(repr=False)

    def check(self, inputs: dict[str, np.ndarray]) -> None:
        """Reject what cannot be fed: missing or extra names, wrong dtypes, wrong shapes."""
        if set(inputs) != set(self.inputs):
            sent, wanted = set(inputs), set(self.inputs)
            raise invalid(f"input size does not match signature: {len(sent)}!={len(wanted)} "
                          f"len({{{','.join(sorted(sent))}}}) != "
                          f"len({{{','.join(sorted(wanted))}}}). "
                          f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                          f"Missing but required: {{{','.join(sorted(wanted - sent))}}}.")
        for i, (name, info) in enumerate(sorted(self.inputs.items())):
            arr = inputs[name]
            if arr.dtype != info.dtype:
                got = _dtype_name(arr.dtype)
                raise invalid(f"Expects arg[{i}] ('{name}') to be {info.dtype_name} but {got} is "
                              "provided")
            problem = info.check_shape(arr.shape)
            if problem:
                raise invalid(problem)

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf
        try:
            result = self.fn(**{name: tf.constant(value) for name, value in inputs.items()})
        except tf.errors.OpError as exc:
            raise ServingError(_CODES.get(exc.error_code, grpc.StatusCode.UNKNOWN),
                               _op_message(exc.message)) from None
        except (TypeError, ValueError) as exc:  # binding the arguments failed
            raise invalid(str(exc).split("\n")[0]) from None
        return {name: value.numpy() for name, value in result.items()}

    def batch_size(self, inputs: dict[str, np.ndarray]) -> int | None:
        """Common dimension 0 of the inputs, or None when they cannot be batched together."""
        sizes = {arr.shape[0] if arr.ndim else None for arr in inputs.values()}
        return sizes.pop() if len(sizes) == 1 else None


def _dtype_name(dtype: np.dtype) -> str:
    """TensorFlow's spelling of a NumPy dtype (``float``, ``uint8``, ``string``)."""
    if dtype == object or dtype.kind in "SU":
        return "string"
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2
    try:
        return types_pb2.DataType.Name(tf.dtypes.as_dtype(dtype).as_datatype_enum)[3:].lower()
    except TypeError:
        return dtype.name


def _op_message(message: str) -> str:
    """A kernel error as TF Serving's session reports it, without TF2's eager call-site preamble."""
    skip = ("Graph execution error", "Detected at node", "<stack traces", "  ")
    lines = [line for line in message.splitlines() if line.strip() and not line.startswith(skip)]
    return re.sub(r"\s*\[Op:[^\]]*\]$", "", "\n".join(lines)) or message


class Servable:
    """One loaded version of a model: its SavedModel and signatures."""

    def __init__(self, name: str, version: int, path: Path, *, warmup: bool = True):
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2
        from tensorflow_serving.apis import get_model_metadata_pb2

        self.name, self.version, self.path = name, version, Path(path)
        saved = saved_model_pb2.SavedModel()
        saved.ParseFromString((self.path / "saved_model.pb").read_bytes())
        graphs = [g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags]
        if not graphs:
            raise ValueError(f"{self.path} has no MetaGraph tagged 'serve'")
        #: every SignatureDef, as GetModelMetadata reports them (``__saved_model_init_op`` included)
        self.signature_def_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in graphs[0].signature_def.items():
            self.signature_def_map.signature_def[key].CopyFrom(sig)
        self._loaded = tf.saved_model.load(str(self.path), tags=["serve"])
        self.signatures = {}
        for key, sig in graphs[0].signature_def.items():
            if key in self._loaded.signatures:
                self.signatures[key] = Signature(
                    key, sig.method_name,
                    {a: _tensor_info(a, t) for a, t in sig.inputs.items()},
                    {a: _tensor_info(a, t) for a, t in sig.outputs.items()},
                    self._loaded.signatures[key])
        #: batching queues, one per signature, created by the serving core on first use
        self.queues = {}
        if warmup:
            self.warmup()

    def warmup(self) -> None:
        """Run every numeric signature once on zeros, so the first request pays no tracing."""
        for sig in self.signatures.values():
            infos = list(sig.inputs.values())
            if not infos or any(i.is_string or i.shape is None or -1 in i.shape[1:] or not i.shape
                                for i in infos):
                continue
            sig({i.alias: np.zeros((1,) + tuple(i.shape[1:]), i.dtype) for i in infos})


@dataclass
class VersionStatus:
    """A version's state as GetModelStatus reports it."""

    version: int
    state: str = "START"            # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""
    servable: Servable | None = field(default=None, repr=False)
    stamp: tuple = ()               # files of a failed version, to retry once they change


@dataclass
class _Model:
    config: object                  # tensorflow.serving.ModelConfig
    base: Path
    versions: dict[int, VersionStatus] = field(default_factory=dict)
    warned: bool = False


class ModelManager:
    """The models of a ModelServerConfig, kept in line with their version folders."""

    def __init__(self, config, config_path, *, model_base_dir=None, warmup: bool = True,
                 on_load=None):
        self.config_path = Path(config_path)
        self.model_base_dir = model_base_dir
        self.warmup = warmup
        self.on_load = on_load      # called with (servable) after a version becomes AVAILABLE
        self._lock = threading.RLock()        # guards _models
        self._sync_lock = threading.Lock()    # one sync at a time (poll thread, config reload)
        self._models: dict[str, _Model] = {}
        self._stop = threading.Event()
        self._thread = None
        self.set_config(config)

    # --- configuration -----------------------------------------------------------------------

    def set_config(self, config) -> None:
        """Serve exactly the models of ``config``; models no longer listed are unloaded."""
        entries = {m.name: m for m in cfg.model_configs(config)}
        with self._lock:
            for name in list(self._models):
                if name not in entries:
                    for status in self._models.pop(name).versions.values():
                        self._mark_unloaded(status)
                    log.info("model %s removed from the config: unloaded", name)
            for name, entry in entries.items():
                base = cfg.resolve_base_path(entry.base_path, self.config_path, self.model_base_dir)
                model = self._models.get(name)
                if model is None or model.base != base:
                    if model is not None:
                        for status in model.versions.values():
                            self._mark_unloaded(status)
                    self._models[name] = _Model(entry, base)
                else:
                    model.config = entry

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def base_path(self, name: str) -> Path:
        with self._lock:
            return self._models[name].base

    # --- polling -----------------------------------------------------------------------------

    def poll(self) -> None:
        """Scan every model's base path once and load or unload versions as its policy says."""
        with self._sync_lock:
            with self._lock:
                models = list(self._models.items())
            for name, model in models:
                try:
                    self._sync(name, model)
                except Exception:  # a broken folder must not stop the other models
                    log.exception("polling model %s failed", name)

    def start(self, file_system_poll_seconds: float = 1.0, config_poll_seconds: float = 0.0):
        """Poll in a background thread; ``config_poll_seconds`` > 0 also re-reads the config."""
        def loop():
            next_config = time.monotonic() + config_poll_seconds
            while not self._stop.wait(file_system_poll_seconds):
                if config_poll_seconds > 0 and time.monotonic() >= next_config:
                    next_config = time.monotonic() + config_poll_seconds
                    self.reload_config_file()
                self.poll()

        self._thread = threading.Thread(target=loop, name="model-manager", daemon=True)
        self._thread.start()

    def reload_config_file(self) -> None:
        try:
            config = cfg.load_model_server_config(self.config_path)
        except cfg.ConfigError as exc:
            log.error("keeping the current models: %s", exc)
            return
        self.set_config(config)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _sync(self, name: str, model: _Model) -> None:
        found = _scan_versions(model.base)
        if not found and not model.warned:
            model.warned = True
            log.warning("no versions of model %s found under %s (expected %s/<integer version>/"
                        "saved_model.pb; export one with `python -m kerascnn export RUN_DIR --name "
                        "%s`, or point --model-base-dir at the folder mounted as /models)",
                        name, model.base, model.base, name)
        for version, status in list(model.versions.items()):
            if version not in found and status.servable is not None:
                log.info("model %s version %d disappeared from disk: unloading", name, version)
                self._unload(model, status)
        for _ in range(3):  # a failed load drops that version and lets the policy pick again
            failed = {v for v, s in model.versions.items()
                      if s.error_code != grpc.StatusCode.OK and v in found
                      and s.stamp == _stamp(found[v])}
            aspired = _aspired(model.config.model_version_policy, set(found) - failed)
            missing = sorted((v for v in aspired if not self._available(model, v)), reverse=True)
            if not missing:
                break
            for version in missing:
                self._load(name, model, version, found[version])
        for version, status in list(model.versions.items()):
            if status.servable is not None and version not in aspired:
                self._unload(model, status)

    def _available(self, model, version) -> bool:
        status = model.versions.get(version)
        return status is not None and status.servable is not None

    def _load(self, name: str, model: _Model, version: int, path: Path) -> None:
        status = VersionStatus(version, "LOADING")
        with self._lock:
            model.versions[version] = status
        started = time.perf_counter()
        try:
            servable = Servable(name, version, path, warmup=self.warmup)
        except Exception as exc:  # noqa: BLE001 (any load failure is reported the same way)
            with self._lock:
                status.state, status.error_code = "END", grpc.StatusCode.UNKNOWN
                status.error_message = f"Failed to load {path}: {type(exc).__name__}: {exc}"
                status.stamp = _stamp(path)
            log.error("model %s version %d failed to load: %s", name, version, exc)
            return
        with self._lock:
            status.servable, status.state = servable, "AVAILABLE"
        log.info("model %s version %d available (%.1f s) from %s", name, version,
                 time.perf_counter() - started, path)
        if self.on_load is not None:
            self.on_load(servable)

    def _unload(self, model: _Model, status: VersionStatus) -> None:
        with self._lock:
            status.state = "UNLOADING"
            self._mark_unloaded(status)
        log.info("model %s version %d unloaded", model.config.name, status.version)

    @staticmethod
    def _mark_unloaded(status: VersionStatus) -> None:
        # Requests that already hold the servable finish on it; it is freed with the last one.
        status.servable, status.state = None, "END"

    # --- lookups -----------------------------------------------------------------------------

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request names, with TF Serving's errors (serving-protocol.md §1.5)."""
        with self._lock:
            model = self._models.get(name)
            if label is not None:
                labels = dict(model.config.version_labels) if model else {}
                if label not in labels:
                    raise invalid(f"Unrecognized servable version label: {label}")
                version = labels[label]
            if version is None:
                loaded = [s for s in model.versions.values() if s.servable] if model else []
                if not loaded:
                    raise not_found(f"Servable not found for request: Latest({name})")
                return max(loaded, key=lambda s: s.version).servable
            status = model.versions.get(version) if model else None
            if status is None or status.servable is None:
                raise not_found(f"Servable not found for request: Specific({name}, {version})")
            return status.servable

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """Version states, newest first, as GetModelStatus lists them."""
        with self._lock:
            model = self._models.get(name)
            versions = dict(model.versions) if model else {}
        if version is not None:
            if version not in versions:
                raise not_found(f"Could not find version {version} of model {name}")
            return [versions[version]]
        if not versions:
            raise not_found(f"Could not find any versions of model {name}")
        return [versions[v] for v in sorted(versions, reverse=True)]

    def servables(self) -> list[Servable]:
        with self._lock:
            return [s.servable for m in self._models.values() for s in m.versions.values()
                    if s.servable is not None]


def _scan_versions(base: Path) -> dict[int, Path]:
    """Integer-named version folders that hold a SavedModel (``absl::SimpleAtoi`` names)."""
    from ..sources import SAVED_MODEL_FILE, versions
    try:
        return versions(base, require=SAVED_MODEL_FILE)
    except (FileNotFoundError, NotADirectoryError):
        return {}


def _stamp(path: Path) -> tuple:
    items = []
    for root, _, files in os.walk(path):
        for f in files:
            try:
                st = os.stat(os.path.join(root, f))
            except OSError:
                continue
            items.append((os.path.relpath(os.path.join(root, f), path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(items))


def _aspired(policy, versions: set[int]) -> set[int]:
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return set(versions)
    if choice == "specific":
        return set(policy.specific.versions) & versions
    n = policy.latest.num_versions if choice == "latest" else 1
    return set(sorted(versions)[-max(n, 1):])
