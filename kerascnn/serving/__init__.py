"""Serving exported models the TF Serving way: its configuration files, REST and gRPC APIs.

``python -m kerascnn serve --model-config export/models.config`` runs
:class:`~kerascnn.serving.server.ModelServer`, a TF Serving-compatible server for the
``export/NAME/VERSION/`` SavedModels (serving-protocol.md §1 to §3); ``serving/client.py`` and
``serving/docker-compose.yml`` (the official ``tensorflow/serving`` image) use the same files.
:func:`~kerascnn.serving.config.upsert_model_config` is how the export step registers a model.
"""

from .config import (ConfigError, load_batching_parameters, load_model_server_config,  # noqa: F401
                     load_monitoring_config, upsert_model_config)

__all__ = ["ConfigError", "load_model_server_config", "load_batching_parameters",
           "load_monitoring_config", "upsert_model_config", "ModelServer"]


def __getattr__(name):
    if name == "ModelServer":  # imported on demand: it pulls in uvicorn, grpc.aio and TensorFlow
        from .server import ModelServer
        return ModelServer
    raise AttributeError(name)
