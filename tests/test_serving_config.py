"""Serving configuration files and TF Serving's JSON tensor rules, without a running server.

Every committed file under serving/ is parsed with TF Serving's own messages: ModelServerConfig from
tensorflow-serving-api, BatchingParameters and MonitoringConfig declared at run time
(serving-protocol.md §3.4).
"""

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from conftest import ROOT
from kerascnn.serving import config as cfg
from kerascnn.serving.errors import ServingError
from kerascnn.serving.manager import _aspired
from kerascnn.serving.tensors import TensorInfo, format_response, parse_json, request_inputs, \
    shortest_float32

SERVING = ROOT / "serving"


# --- committed files ---------------------------------------------------------------------------

def test_models_config_parses_with_model_server_config():
    text = (SERVING / "models.config.template").read_text()
    parsed = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    assert parsed.WhichOneof("config") == "model_config_list"
    for model in parsed.model_config_list.config:  # entries the export step added, if any
        assert model.base_path == f"/models/{model.name}"
        assert model.model_platform == "tensorflow"


def test_batching_parameters_parse_with_declared_message():
    params = cfg.load_batching_parameters(SERVING / "batching_parameters.txt")
    assert type(params).DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
    assert (params.max_batch_size.value, params.batch_timeout_micros.value,
            params.max_enqueued_batches.value, params.num_batch_threads.value) == (16, 0, 100, 2)
    assert params.HasField("batch_timeout_micros")  # set explicitly, not left to the default
    options = cfg.batching_options(params)
    assert options.max_batch_size == 16 and options.thread_pool_name == "batch_threads"


def test_monitoring_config_parses_with_declared_message():
    monitoring = cfg.load_monitoring_config(SERVING / "monitoring.config")
    assert type(monitoring).DESCRIPTOR.full_name == "tensorflow.serving.MonitoringConfig"
    assert monitoring.prometheus_config.enable is True
    assert cfg.metrics_path(monitoring) == "/monitoring/prometheus/metrics"


def test_docker_compose_runs_pinned_tf_serving_with_the_files():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((SERVING / "docker-compose.yml").read_text())
    service = compose["services"]["tfserving"]
    image, tag = service["image"].split(":")
    assert image == "tensorflow/serving" and tag[0].isdigit()  # pinned, never "latest"
    import tensorflow as tf
    assert tuple(map(int, tag.split(".")[:2])) >= tuple(map(int, tf.__version__.split(".")[:2])), \
        "the server must be at least as new as the TensorFlow that exports"
    assert {p.rsplit(":", 1)[1] for p in service["ports"]} == {"8500", "8501"}
    mounts = dict(v.rsplit(":", 1)[0].split(":") for v in service["volumes"])
    assert mounts["../export"] == "/models" and mounts["./"] == "/config"
    flags = dict(f.lstrip("-").split("=", 1) for f in service["command"])
    assert flags["enable_batching"] == "true"
    for flag in ("batching_parameters_file", "monitoring_config_file"):  # static, in serving/
        assert (SERVING / Path(flags[flag]).relative_to("/config")).is_file(), flag
    # the generated model config lives with the exported models (export/models.config)
    assert flags["model_config_file"] == "/models/models.config"


# --- parse errors --------------------------------------------------------------------------------

def test_bare_scalar_in_batching_parameters_is_rejected():
    with pytest.raises(cfg.ConfigError, match=r'Expected "\{"'):
        cfg.parse_batching_parameters("max_batch_size: 32")


@pytest.mark.parametrize("text, match", [
    ('model_config_list { config { name: "a" basepath: "/models/a" } }', "no field named"),
    ('model_config_list { config { name: "a" } }', "no base_path"),
    ('model_config_list { config { name: "a" base_path: "/m/a" model_platform: "onnx" } }',
     "only \"tensorflow\""),
    ('model_config_list { config { name: "a" base_path: "/m/a" } config { name: "a" base_path: "/m/b" } }',
     "listed twice"),
])
def test_invalid_model_configs_name_the_problem(text, match):
    with pytest.raises(cfg.ConfigError, match=match):
        cfg.parse_model_server_config(text)


def test_allowed_batch_sizes_must_end_at_max_batch_size():
    params = cfg.parse_batching_parameters(
        "max_batch_size { value: 32 } allowed_batch_sizes: 8 allowed_batch_sizes: 16 "
        "allowed_batch_sizes: 32")
    assert cfg.batching_options(params).allowed_batch_sizes == (8, 16, 32)
    with pytest.raises(cfg.ConfigError, match="must equal max_batch_size"):
        cfg.parse_batching_parameters("max_batch_size { value: 32 } allowed_batch_sizes: 16")


def test_missing_config_file_names_the_flag(tmp_path):
    with pytest.raises(cfg.ConfigError, match="--model-config"):
        cfg.load_model_server_config(tmp_path / "nope.config")


# --- upsert (the export step's hook) ---------------------------------------------------------------

def test_upsert_adds_then_updates_an_entry_keeping_policy_labels_and_comments(tmp_path):
    path = tmp_path / "models.config"
    shutil.copy(SERVING / "models.config.template", path)
    cfg.upsert_model_config(path, "lenet5")
    cfg.upsert_model_config(path, "resnet20", version_policy=[1, 2],
                            version_labels={"stable": 1, "canary": 2})
    cfg.upsert_model_config(path, "resnet20", "/models/resnet20_v2")  # update: policy/labels kept
    text = path.read_text()
    assert text.startswith("# TF Serving ModelServerConfig")
    parsed = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    models = {m.name: m for m in parsed.model_config_list.config}
    assert list(models) == ["lenet5", "resnet20"]
    assert models["lenet5"].base_path == "/models/lenet5"
    assert models["resnet20"].base_path == "/models/resnet20_v2"
    assert list(models["resnet20"].model_version_policy.specific.versions) == [1, 2]
    assert dict(models["resnet20"].version_labels) == {"stable": 1, "canary": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.config"]  # no temporaries left


def test_upsert_rejects_names_tf_serving_cannot_route(tmp_path):
    with pytest.raises(cfg.ConfigError, match="no '/' or ':'"):
        cfg.upsert_model_config(tmp_path / "models.config", "a:b")


def test_base_paths_map_the_compose_mount_and_the_config_folder(tmp_path):
    config = tmp_path / "serving" / "models.config"
    assert cfg.resolve_base_path("/models/lenet5", config, "export") == Path("export/lenet5")
    assert cfg.resolve_base_path("/srv/m/lenet5", config, "export") == Path("/srv/m/lenet5")
    assert cfg.resolve_base_path("../export/x", config, "export") == \
        tmp_path.resolve() / "serving" / "../export/x"


@pytest.mark.parametrize("policy, expected", [
    ("", {5}), ("latest { num_versions: 2 }", {4, 5}), ("all {}", {1, 4, 5}),
    ("specific { versions: 1 versions: 3 }", {1}),
])
def test_version_policies_pick_tf_servings_versions(policy, expected):
    from tensorflow_serving.config import file_system_storage_path_source_pb2 as fs
    message = text_format.Parse(policy, fs.FileSystemStoragePathSourceConfig.ServableVersionPolicy())
    assert _aspired(message, {1, 4, 5}) == expected


# --- JSON tensors (serving-protocol.md §1.2, §1.3) --------------------------------------------------

IMAGE = TensorInfo("image", np.dtype(np.uint8), "uint8", (-1, 2, 2, 1))
FLOATS = TensorInfo("x", np.dtype(np.float32), "float", (-1, 3))
BYTES = TensorInfo("image_bytes", np.dtype(object), "string", (-1,))


def _invalid(doc, inputs, match):
    with pytest.raises(ServingError, match=match) as info:
        request_inputs(doc, inputs)
    assert info.value.http_status == 400


def test_row_and_columnar_formats_give_the_same_batch():
    pixels = [[[[0], [255]], [[7], [9]]], [[[1], [2]], [[3], [4]]]]
    rows, is_rows = request_inputs({"instances": pixels}, {"image": IMAGE})
    named, _ = request_inputs({"instances": [{"image": p} for p in pixels]}, {"image": IMAGE})
    cols, is_cols = request_inputs({"inputs": {"image": pixels}}, {"image": IMAGE})
    bare, _ = request_inputs({"inputs": pixels}, {"image": IMAGE})
    assert is_rows and not is_cols
    for arrays in (rows, named, cols, bare):
        assert arrays["image"].dtype == np.uint8 and arrays["image"].shape == (2, 2, 2, 1)
        np.testing.assert_array_equal(arrays["image"], np.array(pixels, np.uint8))


def test_b64_is_decoded_for_string_inputs_and_floats_take_integers():
    data = bytes(range(256))
    out, _ = request_inputs({"instances": [{"b64": base64.b64encode(data).decode()}, "plain"]},
                            {"image_bytes": BYTES})
    assert out["image_bytes"].tolist() == [data, b"plain"]
    out, _ = request_inputs({"instances": [[1, 2.5, 3]]}, {"x": FLOATS})
    assert out["x"].dtype == np.float32 and out["x"].tolist() == [[1.0, 2.5, 3.0]]


@pytest.mark.parametrize("doc, inputs, match", [
    ({"instances": [[1, "x", 3]]}, {"x": FLOATS}, "Type: String is not of expected type: float"),
    ({"instances": [[[[1.5], [2]], [[3], [4]]]]}, {"image": IMAGE}, "not of expected type: uint8"),
    ({"instances": [[[[300], [2]], [[3], [4]]]]}, {"image": IMAGE}, "out of range for type: uint8"),
    ({"instances": [{"b64": "AAAA"}]}, {"x": FLOATS}, "Type: Object is not of expected type: float"),
    ({"instances": [{"b64": "-_-_"}]}, {"image_bytes": BYTES}, "Unable to base64 decode"),
    ({"instances": [[1, 2, 3], [1, 2]]}, {"x": FLOATS}, "Expecting shape"),
    ({"instances": []}, {"x": FLOATS}, "No values in 'instances' array"),
    ({"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}, {"x": FLOATS}, "only one of 'inputs' or 'instances'"),
    ({"signature_name": "x"}, {"x": FLOATS}, "Missing 'inputs' or 'instances' key"),
    ({"inputs": {"y": [[1, 2, 3]]}}, {"x": FLOATS}, "Missing named input: x in 'inputs' object."),
    ({"instances": [[1, 2, 3]]}, {"x": FLOATS, "image": IMAGE}, "instances is a plain list"),
])
def test_bad_tensors_fail_with_tf_servings_messages(doc, inputs, match):
    _invalid(doc, inputs, match)


@pytest.mark.parametrize("body, match", [
    (b"", "JSON Parse error: The document is empty"),
    (b"{nope", "JSON Parse error"),
    (b"[1, 2]", "Is not object"),
])
def test_malformed_json(body, match):
    with pytest.raises(ServingError, match=match):
        parse_json(body)


def test_responses_follow_row_and_columnar_rules():
    probs = np.array([[0.2, 0.8], [1e-30, 1.0]], np.float32)
    one = json.loads(format_response({"probabilities": probs}, rows=True))
    assert one == {"predictions": [[0.2, 0.8], [1e-30, 1.0]]}  # name dropped, shortest floats
    two = json.loads(format_response({"probabilities": probs,
                                      "top_k_classes": np.array([[b"cat"], [b"dog"]], object),
                                      "thumb_bytes": np.array([b"\x00\x01", b"\xff"], object)},
                                     rows=True))
    assert two["predictions"][1] == {"probabilities": [1e-30, 1.0], "top_k_classes": ["dog"],
                                     "thumb_bytes": {"b64": "/w=="}}
    cols = json.loads(format_response({"probabilities": probs}, rows=False))
    assert cols == {"outputs": [[0.2, 0.8], [1e-30, 1.0]]}


def test_tensor_protos_round_trip_with_tensorflows_encoding():
    import tensorflow as tf
    from kerascnn.serving.grpc_service import from_tensor_proto, to_tensor_proto
    for array in (np.float32([[0.25, -1.5]]), np.arange(6, dtype=np.int32).reshape(2, 3),
                  np.zeros((2, 4, 4, 1), np.uint8), np.array([[b"cat", b"\xff"]], object)):
        mine = to_tensor_proto(array)
        assert mine.dtype == tf.make_tensor_proto(array).dtype
        for proto in (mine, tf.make_tensor_proto(array)):
            back = from_tensor_proto(proto)
            assert back.dtype == array.dtype and back.shape == array.shape
            assert back.tolist() == array.tolist() == tf.make_ndarray(mine).tolist()


def test_shortest_float32_round_trips_and_keeps_non_finite_values():
    x = np.random.default_rng(0).standard_normal(10_000).astype(np.float32) ** 5
    x[:3] = [np.nan, np.inf, 0.0]
    y = shortest_float32(x)
    np.testing.assert_array_equal(y.astype(np.float32)[3:], x[3:])
    assert np.isnan(y[0]) and y[1] == np.inf
    assert json.dumps(shortest_float32(np.float32([0.1, 0.2, 1 / 3])).tolist()) == \
        "[0.1, 0.2, 0.333333343]"
