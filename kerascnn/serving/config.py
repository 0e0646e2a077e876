"""TF Serving's configuration files, parsed with TF Serving's own protobuf messages.

* ``models.config``: ``tensorflow.serving.ModelServerConfig`` in text format, from the
  ``tensorflow-serving-api`` wheel (``model_server_config_pb2``).
* ``batching_parameters.txt``: ``tensorflow.serving.BatchingParameters``
  (``servables/tensorflow/session_bundle_config.proto``) and ``monitoring.config``:
  ``tensorflow.serving.MonitoringConfig`` (``config/monitoring_config.proto``). The wheel ships
  neither, so both messages are declared here at run time from the upstream field list
  (serving-protocol.md §3.4). Text format is matched by field name and type, so a typo or a bare
  scalar where a wrapper is expected (``max_batch_size: 32``) fails exactly as in the server.

Base paths: ``export/models.config`` (written by the export step) names container paths
(``/models/NAME``), which docker-compose mounts from the repository's ``export/``. The local server maps the ``/models``
prefix to ``--model-base-dir`` (default ``export``) and resolves relative base paths against the
config file's folder (:func:`resolve_base_path`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import (descriptor_pb2, descriptor_pool, message_factory, text_format,
                            wrappers_pb2)
from tensorflow_serving.config import model_server_config_pb2

from ..files import atomic_write

__all__ = ["ConfigError", "CONTAINER_MODEL_ROOT", "DEFAULT_METRICS_PATH", "BatchingParameters",
           "MonitoringConfig", "BatchingOptions", "load_model_server_config",
           "parse_model_server_config",
           "model_configs", "upsert_model_config", "resolve_base_path", "load_batching_parameters",
           "parse_batching_parameters", "batching_options", "load_monitoring_config",
           "parse_monitoring_config", "metrics_path"]

#: Where docker-compose mounts the repository's ``export/`` folder inside the TF Serving container.
CONTAINER_MODEL_ROOT = "/models"
#: TF Serving's Prometheus path when ``prometheus_config.path`` is empty (prometheus_exporter.cc).
DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"


class ConfigError(ValueError):
    """A configuration file that cannot be read or parsed; the message names file and fix."""


# --- runtime declaration of the two messages the pip wheel lacks ----------------------------------

_F = descriptor_pb2.FieldDescriptorProto


def _declare_messages():
    """Declare BatchingParameters and MonitoringConfig in a private descriptor pool.

    Field names, numbers and types follow the upstream .proto files (session_bundle_config.proto,
    monitoring_config.proto); a private pool keeps them from clashing with a future wheel that ships
    the real modules.
    """
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)

    batching = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"])
    msg = batching.message_type.add(name="BatchingParameters")
    for name, number, wrapper in [
            ("max_batch_size", 1, "Int64Value"), ("batch_timeout_micros", 2, "Int64Value"),
            ("max_enqueued_batches", 3, "Int64Value"), ("num_batch_threads", 4, "Int64Value"),
            ("thread_pool_name", 5, "StringValue"),
            ("enable_large_batch_splitting", 9, "BoolValue"),
            ("max_execution_batch_size", 10, "Int64Value")]:
        msg.field.add(name=name, number=number, label=_F.LABEL_OPTIONAL, type=_F.TYPE_MESSAGE,
                      type_name=f".google.protobuf.{wrapper}")
    msg.field.add(name="allowed_batch_sizes", number=6, label=_F.LABEL_REPEATED, type=_F.TYPE_INT64)
    msg.field.add(name="pad_variable_length_inputs", number=7, label=_F.LABEL_OPTIONAL,
                  type=_F.TYPE_BOOL)
    pool.Add(batching)

    monitoring = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto", package="tensorflow.serving",
        syntax="proto3")
    prom = monitoring.message_type.add(name="PrometheusConfig")
    prom.field.add(name="enable", number=1, label=_F.LABEL_OPTIONAL, type=_F.TYPE_BOOL)
    prom.field.add(name="path", number=2, label=_F.LABEL_OPTIONAL, type=_F.TYPE_STRING)
    mon = monitoring.message_type.add(name="MonitoringConfig")
    mon.field.add(name="prometheus_config", number=1, label=_F.LABEL_OPTIONAL, type=_F.TYPE_MESSAGE,
                  type_name=".tensorflow.serving.PrometheusConfig")
    pool.Add(monitoring)

    get = message_factory.GetMessageClass
    return (get(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")),
            get(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")))


BatchingParameters, MonitoringConfig = _declare_messages()


# --- reading -------------------------------------------------------------------------------------

def _read(path, flag: str, committed: str) -> str:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; pass an existing file to {flag} (the "
                          f"repository's is serving/{committed})")
    return path.read_text(encoding="utf-8")


def _parse(text: str, message, path, what: str):
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as exc:
        hint = ""
        if 'Expected "{"' in str(exc):
            hint = ("; scalar fields are wrapper messages here: write "
                    "`max_batch_size { value: 32 }`, not `max_batch_size: 32`")
        raise ConfigError(f"{path}: not a valid {what} ({type(message).DESCRIPTOR.full_name} text "
                          f"format): {exc}{hint}") from None


def parse_model_server_config(text: str, path="models.config"):
    """Parse ``ModelServerConfig`` text and check what TF Serving would reject at load time."""
    config = _parse(text, model_server_config_pb2.ModelServerConfig(), path, "model config")
    if config.WhichOneof("config") == "custom_model_config":
        raise ConfigError(f"{path}: custom_model_config is not supported; use model_config_list")
    seen = set()
    for model in config.model_config_list.config:
        if not model.name:
            raise ConfigError(f"{path}: a model entry has no name; add name: \"...\"")
        if model.name in seen:
            raise ConfigError(f"{path}: model {model.name!r} is listed twice; keep one entry")
        seen.add(model.name)
        if not model.base_path:
            raise ConfigError(f"{path}: model {model.name!r} has no base_path; add base_path: "
                              f"\"{CONTAINER_MODEL_ROOT}/{model.name}\"")
        if model.model_platform not in ("", "tensorflow"):
            raise ConfigError(f"{path}: model {model.name!r} has model_platform "
                              f"{model.model_platform!r}; only \"tensorflow\" (SavedModel) is "
                              "served")
        policy = model.model_version_policy
        if policy.WhichOneof("policy_choice") == "specific" and not policy.specific.versions:
            raise ConfigError(f"{path}: model {model.name!r} has a specific version policy with no "
                              f"versions; add versions: N")
    return config


def load_model_server_config(path):
    """Read and parse a ``models.config`` file."""
    return parse_model_server_config(_read(path, "--model-config", "models.config"), path)


def model_configs(config) -> list:
    """The ``ModelConfig`` entries of a parsed ``ModelServerConfig`` (empty when none)."""
    return list(config.model_config_list.config)


def resolve_base_path(base_path: str, config_path, model_base_dir=None) -> Path:
    """Map a config ``base_path`` to a local folder.

    ``/models/NAME`` (the docker-compose mount of ``export/``) becomes ``model_base_dir/NAME``
    when a ``model_base_dir`` is given; other absolute paths are used as they are; relative paths
    are resolved against the folder of the config file, as a config usually moves with its models.
    """
    root = CONTAINER_MODEL_ROOT.rstrip("/") + "/"
    if model_base_dir is not None and (base_path + "/").startswith(root):
        return Path(model_base_dir) / base_path[len(root):]
    path = Path(base_path)
    return path if path.is_absolute() else Path(config_path).resolve().parent / path


# --- writing -------------------------------------------------------------------------------------

def _leading_comments(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if not line.lstrip().startswith("#") and line.strip():
            break
        lines.append(line)
    return "\n".join(lines).rstrip() + "\n" if any(l.strip() for l in lines) else ""


#: The static, commented template of models.config; a new models.config starts with its comments.
_TEMPLATE = Path(__file__).resolve().parents[2] / "serving" / "models.config.template"


def upsert_model_config(config_path, name: str, base_path: str | None = None, *,
                        version_policy=None, version_labels: dict | None = None):
    """Add model ``name`` to ``models.config``, or update its ``base_path``; return its ModelConfig.

    ``base_path`` defaults to ``/models/NAME``, the docker-compose mount of ``export/NAME``. An
    existing entry keeps its version policy and labels unless ``version_policy`` (a
    ``ServableVersionPolicy`` or one of ``"latest"``, ``"all"``, ``[versions...]``) or
    ``version_labels`` are given. The file is parsed and re-serialised with the real
    ModelServerConfig message (a leading comment block is kept) and replaced atomically.
    """
    if not name or "/" in name or ":" in name:
        raise ConfigError(f"model name {name!r} cannot be served: it must be non-empty and contain "
                          "no '/' or ':' (TF Serving's URL pattern is [^/:]+)")
    config_path = Path(config_path)
    text = config_path.read_text(encoding="utf-8") if config_path.exists() else \
        _leading_comments(_TEMPLATE.read_text(encoding="utf-8")) if _TEMPLATE.is_file() else ""
    config = parse_model_server_config(text, config_path)
    config.model_config_list.SetInParent()
    entry = next((m for m in config.model_config_list.config if m.name == name), None)
    if entry is None:
        entry = config.model_config_list.config.add(name=name)
    entry.base_path = base_path or f"{CONTAINER_MODEL_ROOT}/{name}"
    entry.model_platform = "tensorflow"
    if version_policy is not None:
        entry.model_version_policy.CopyFrom(_version_policy(version_policy))
    if version_labels is not None:
        entry.ClearField("version_labels")
        entry.version_labels.update({str(k): int(v) for k, v in version_labels.items()})
    body = _leading_comments(text) + text_format.MessageToString(config)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(config_path, body)
    return entry


def _version_policy(policy):
    from tensorflow_serving.config import file_system_storage_path_source_pb2 as fs
    message = fs.FileSystemStoragePathSourceConfig.ServableVersionPolicy()
    if isinstance(policy, type(message)):
        return policy
    if policy == "latest":
        message.latest.num_versions = 1
    elif policy == "all":
        message.all.SetInParent()
    elif isinstance(policy, (list, tuple)) and policy:
        message.specific.versions.extend(int(v) for v in policy)
    else:
        raise ConfigError(f"version_policy must be 'latest', 'all' or a list of versions, got "
                          f"{policy!r}")
    return message


# --- batching and monitoring ---------------------------------------------------------------------

def parse_batching_parameters(text: str, path="batching_parameters.txt"):
    params = _parse(text, BatchingParameters(), path, "batching parameters file")
    batching_options(params, path)  # rejects what the server would reject
    return params


def load_batching_parameters(path):
    text = _read(path, "--batching-parameters", "batching_parameters.txt")
    return parse_batching_parameters(text, path)


@dataclass(frozen=True)
class BatchingOptions:
    """BatchingParameters with TF Serving's defaults (``BasicBatchScheduler::Options``)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1
    thread_pool_name: str = "batch_threads"
    allowed_batch_sizes: tuple = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int | None = None


def batching_options(params=None, path="batching_parameters.txt") -> BatchingOptions:
    """Defaults plus the fields set in ``params``; rejects what the server rejects."""
    values = {}
    if params is not None:
        for field in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                      "num_batch_threads", "thread_pool_name", "enable_large_batch_splitting",
                      "max_execution_batch_size"):
            if params.HasField(field):
                values[field] = getattr(params, field).value
        values["allowed_batch_sizes"] = tuple(params.allowed_batch_sizes)
        values["pad_variable_length_inputs"] = params.pad_variable_length_inputs
    options = BatchingOptions(**values)
    for field in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
        if getattr(options, field) < 1:
            raise ConfigError(f"{path}: {field} must be at least 1, got {getattr(options, field)}")
    if options.batch_timeout_micros < 0:
        raise ConfigError(f"{path}: batch_timeout_micros must be >= 0")
    sizes = options.allowed_batch_sizes
    if sizes:
        if any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] < 1:
            raise ConfigError(f"{path}: allowed_batch_sizes must be positive and increasing, got "
                              f"{list(sizes)}")
        if sizes[-1] != options.max_batch_size:
            raise ConfigError(f"{path}: the last allowed_batch_sizes entry ({sizes[-1]}) must "
                              f"equal max_batch_size ({options.max_batch_size})")
    if options.pad_variable_length_inputs:
        raise ConfigError(f"{path}: pad_variable_length_inputs is not supported by the local "
                          "server (the zoo's inputs have fixed sizes); remove it")
    return options


def parse_monitoring_config(text: str, path="monitoring.config"):
    return _parse(text, MonitoringConfig(), path, "monitoring config")


def load_monitoring_config(path):
    return parse_monitoring_config(_read(path, "--monitoring-config", "monitoring.config"), path)


def metrics_path(monitoring) -> str | None:
    """The Prometheus path a MonitoringConfig enables, or None when it is off."""
    if monitoring is None or not monitoring.prometheus_config.enable:
        return None
    path = monitoring.prometheus_config.path or DEFAULT_METRICS_PATH
    return path if path.startswith("/") else "/" + path
