"""Export a trained model for TF Serving: a versioned SavedModel with named signatures, plus ONNX.

``python -m kerascnn export RUN_DIR|MODEL.keras --name NAME`` writes ``export/NAME/VERSION/``, the
layout TF Serving watches (``base_path/<integer version>/``, serving-protocol.md §4.1), and
registers NAME in ``export/models.config`` (beside the models, where ``serve`` and the
docker-compose file read it). The package, one module per concern:

- :mod:`.source`: what is exported (the run's inference model, class names, run record) and the
  images the parity checks run on;
- :mod:`.savedmodel`: the ``serving_default`` (uint8 pixels) and ``serving_bytes`` (JPEG/PNG)
  signatures, fitting images by the run's evaluation transform;
- :mod:`.onnx`: ``model.onnx`` by tf2onnx (opset 17) with its memory workaround, and the parity
  check in onnxruntime (the export fails unless it agrees with Keras within 1e-4);
- :mod:`.quantize`: ``model.int8.onnx`` (``--quantize int8``): onnxruntime's static quantization,
  calibrated on the run's training images and gated on its validation top-1;
- :mod:`.card`: ``assets/model_card.json``;
- this module: the order of the steps, version folders and the command line.

A version is written into a dot-named temporary directory beside it and renamed into place, so TF
Serving (which ignores non-integer names) never sees half a version, and a failed export leaves
nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

from ..errors import ExportError, UserError
from ..files import write_json
from ..inference import inference_model
from ..sources import versions
from ..transforms import EvalTransform, decode_image, load_images
from .card import CLASS_NAMES_FILE, MODEL_CARD_FILE, model_card
from .onnx import ONNX_FILE, ONNX_OPSET, convert_to_onnx, onnx_parity
from .quantize import (CALIBRATION_IMAGES, INT8_FILE, INT8_TOLERANCE_POINTS, QUANTIZE_CHOICES,
                       quantize_export)
from .savedmodel import OUTPUTS, SIGNATURES, TOP_K, savedmodel_parity, write_savedmodel
from .source import ExportSource, load_source, sample_images, servable_model

__all__ = ["export_model", "load_source", "servable_model", "inference_model", "sample_images",
           "write_savedmodel", "savedmodel_parity", "convert_to_onnx", "onnx_parity",
           "next_version", "model_card", "decode_image", "load_images", "EvalTransform",
           "ExportError", "ExportSource", "FORMATS", "ONNX_OPSET", "ONNX_FILE",
           "PARITY_TOLERANCE", "TOP_K", "SIGNATURES", "OUTPUTS", "CLASS_NAMES_FILE",
           "MODEL_CARD_FILE", "MODELS_CONFIG_FILE", "INT8_FILE"]

FORMATS = ("savedmodel", "onnx")
PARITY_TOLERANCE = 1e-4     # max |p_onnx - p_keras| over the sample images
#: TF Serving's ModelServerConfig of the exported models, kept in the export directory.
MODELS_CONFIG_FILE = "models.config"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TMP_PREFIX = ".tmp-"


# --------------------------------------------------------------------------- versions

def next_version(export_dir, name: str) -> int:
    """The next free version number of ``export_dir/name`` (1 for a new model)."""
    found = versions(Path(export_dir) / name)
    return max(found) + 1 if found else 1


def _temporary_name(version: int) -> str:
    """``.tmp-VERSION-HOST-PID-RANDOM``: who is writing it, so that debris can be recognised."""
    return f"{_TMP_PREFIX}{version}-{_host()}-{os.getpid()}-{secrets.token_hex(4)}"


def _host() -> str:
    import socket
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname()) or "host"


def _remove_stale_temporaries(base: Path) -> None:
    """Delete temporary directories of exports on this host whose process died (killed)."""
    if not base.is_dir():
        return
    pattern = re.compile(rf"{re.escape(_TMP_PREFIX)}\d+-{re.escape(_host())}-(\d+)-[0-9a-f]+$")
    for path in base.glob(f"{_TMP_PREFIX}*"):
        match = pattern.match(path.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True



# --------------------------------------------------------------------------- export

def _check_arguments(name, version, formats, tolerance, quantize=None,
                     calibration_images=CALIBRATION_IMAGES,
                     int8_tolerance=INT8_TOLERANCE_POINTS) -> tuple:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ExportError(f"invalid model name {name!r}: use letters, digits, '_', '-' and '.', "
                          f"starting with a letter or digit (it becomes a TF Serving model name "
                          f"and a directory)")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or version < 1):
        raise ExportError(f"--version must be a positive integer (TF Serving reads version "
                          f"directories as integers), got {version!r}")
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = tuple(dict.fromkeys(f.lower() for f in formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"unknown export format {', '.join(unknown) or '(none)'}; choose from "
                          f"{', '.join(FORMATS)} (comma separated)")
    if not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1):
        raise ExportError(f"--tolerance must be a probability difference between 0 and 1, got "
                          f"{tolerance!r}")
    if quantize is not None:
        if quantize not in QUANTIZE_CHOICES:
            raise ExportError(f"--quantize {quantize!r} is not supported; choose "
                              f"{', '.join(QUANTIZE_CHOICES)}")
        if "onnx" not in formats:
            raise ExportError("--quantize int8 quantizes the ONNX export; include onnx in "
                              "--formats (the default savedmodel,onnx does)")
        if (isinstance(calibration_images, bool) or not isinstance(calibration_images, int)
                or calibration_images < 1):
            raise ExportError(f"--calibration-images must be a positive number of images, got "
                              f"{calibration_images!r}")
        if not (isinstance(int8_tolerance, (int, float)) and 0 <= int8_tolerance < 100):
            raise ExportError(f"--int8-tolerance is in top-1 percentage points, between 0 and "
                              f"100; got {int8_tolerance!r}")
    return formats


def export_model(source, name: str, export_dir="export", version: int | None = None,
                 formats=FORMATS, *, class_names=None, images=None,
                 tolerance: float = PARITY_TOLERANCE, quantize: str | None = None,
                 calibration_images: int = CALIBRATION_IMAGES,
                 int8_tolerance: float = INT8_TOLERANCE_POINTS) -> Path:
    """Export a run directory or ``.keras`` file to ``export_dir/name/version``; returns that path.

    ``version`` defaults to the next free one; an existing version is never overwritten. ``images``
    (a uint8 batch or image files) are what the parity checks run on (see :func:`sample_images`).
    Raises :class:`ExportError` with nothing written when the source is missing or corrupt, or when
    a check fails (the ONNX parity error gives the measured difference). ``quantize="int8"`` adds
    ``model.int8.onnx`` (:mod:`.quantize`): ``calibration_images`` of the run's training split
    calibrate it and its validation top-1 must be within ``int8_tolerance`` points of the float's.
    """
    formats = _check_arguments(name, version, formats, tolerance, quantize, calibration_images,
                               int8_tolerance)
    if isinstance(source, ExportSource):  # a model in memory (tests, benchmarks)
        src = dataclasses.replace(source, model=servable_model(source.model))
    else:
        src = load_source(source, class_names)
    batch, origin = sample_images(src, images)

    base = Path(export_dir) / name
    _remove_stale_temporaries(base)
    version = next_version(export_dir, name) if version is None else version
    target = base / str(version)
    if target.exists():
        raise ExportError(f"{target} already exists and is never overwritten; pick another "
                          f"--version or leave it out for the next free one "
                          f"({next_version(export_dir, name)})")
    created = [d for d in (base, *base.parents) if not d.exists()]  # removed again on failure
    try:
        base.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ExportError(f"{base} exists but is not a directory; choose another --name or "
                          f"--export-dir") from None
    tmp = base / _temporary_name(version)
    checks = {"images": len(batch), "image_source": origin, "tolerance": tolerance}
    on_images = f"on {len(batch)} images ({origin})"
    try:
        with tempfile.TemporaryDirectory() as scratch:
            names_file = Path(scratch) / CLASS_NAMES_FILE
            names_file.write_text("\n".join(src.class_names) + "\n", encoding="utf-8")
            if "savedmodel" in formats:
                write_savedmodel(src.model, tmp, names_file, src.transform)
                diff = savedmodel_parity(tmp, src.model, batch)
                checks["savedmodel_max_abs_diff"] = diff
                if not diff <= tolerance:
                    raise ExportError(f"the SavedModel's serving_default differs from Keras by "
                                      f"{diff:.3g} (> {tolerance:g}) {on_images}")
            (tmp / "assets").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(names_file, tmp / "assets" / CLASS_NAMES_FILE)
        if "onnx" in formats:
            proto = convert_to_onnx(src.model)
            diff = onnx_parity(proto, src.model, batch)
            checks["onnx_max_abs_diff"] = diff
            if not diff <= tolerance:
                raise ExportError(f"ONNX parity failed: onnxruntime and Keras differ by up to "
                                  f"{diff:.3g} (max abs difference of probabilities; tolerance "
                                  f"{tolerance:g}) {on_images}; nothing was exported. Export "
                                  f"with --formats savedmodel to skip ONNX")
            (tmp / ONNX_FILE).write_bytes(proto.SerializeToString())
            if quantize:
                int8 = quantize_export(proto, src.run_dir, calibration_images=calibration_images,
                                       tolerance_points=int8_tolerance)
                checks["int8"] = int8.card()
                (tmp / INT8_FILE).write_bytes(int8.proto.SerializeToString())
        write_json(tmp / "assets" / MODEL_CARD_FILE,
                    model_card(src, name, version, formats, checks))
        try:
            os.rename(tmp, target)  # atomic on one filesystem: the version appears complete
        except OSError:
            raise ExportError(f"{target} appeared while exporting (another export of {name}?); "
                              f"run the export again for the next free version") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for directory in created:
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
        raise
    return target


# --------------------------------------------------------------------------- CLI

def add_arguments(parser) -> None:
    parser.add_argument("source", metavar="RUN_DIR|MODEL.keras",
                        help="a run directory written by train.py, or a .keras model file")
    parser.add_argument("--name", required=True,
                        help="model name: the directory under --export-dir and TF Serving's name")
    parser.add_argument("--export-dir", default="export", help="base directory (default: export)")
    parser.add_argument("--version", type=int, default=None,
                        help="version number (default: the next free one); never overwritten")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help="comma-separated subset of savedmodel,onnx (default: both)")
    parser.add_argument("--class-names", default=None, metavar="FILE",
                        help="one class name per line (default: class_names in config.json)")
    parser.add_argument("--images", nargs="+", default=None, metavar="IMAGE",
                        help="JPEG/PNG files or folders for the parity checks (default: the run's "
                             "dataset, else synthetic images)")
    parser.add_argument("--tolerance", type=float, default=PARITY_TOLERANCE,
                        help="max abs difference of probabilities allowed (default "
                             f"{PARITY_TOLERANCE:g})")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, default=None,
                        help="also write model.int8.onnx (onnxruntime static quantization: int8 "
                             "per-channel weights, uint8 activations), calibrated on the run's "
                             "training images; the export fails if its validation top-1 drops "
                             "more than --int8-tolerance points")
    parser.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES, metavar="N",
                        help=f"training images (a seeded sample) that calibrate the int8 model "
                             f"(default {CALIBRATION_IMAGES})")
    parser.add_argument("--int8-tolerance", type=float, default=INT8_TOLERANCE_POINTS,
                        metavar="POINTS", help=f"largest top-1 drop allowed for int8, in "
                                               f"percentage points (default "
                                               f"{INT8_TOLERANCE_POINTS:g})")
    parser.add_argument("--model-config", default=None, metavar="FILE",
                        help="TF Serving models.config to add NAME to, with base_path "
                             "/models/NAME (default: EXPORT_DIR/models.config, which serve and "
                             "docker-compose read; '' skips)")


def run(args) -> int:
    target = export_model(args.source, args.name, args.export_dir, args.version, args.formats,
                          class_names=args.class_names, images=args.images,
                          tolerance=args.tolerance, quantize=args.quantize,
                          calibration_images=args.calibration_images,
                          int8_tolerance=args.int8_tolerance)
    card = json.loads((target / "assets" / MODEL_CARD_FILE).read_text(encoding="utf-8"))
    checks = card["checks"]
    print(f"exported {card['architecture']} to {target}")
    for key in ("savedmodel", "onnx"):
        if f"{key}_max_abs_diff" in checks:
            print(f"  {key:<10} max |p - p_keras| = {checks[f'{key}_max_abs_diff']:.2e} "
                  f"on {checks['images']} images ({checks['image_source']})")
    if card.get("quantization"):
        q = card["quantization"]
        print(f"  int8       {INT8_FILE}: validation top-1 {q['validation_top1_int8']:.2%} "
              f"(float {q['validation_top1_float']:.2%}, {q['top1_change_points']:+.2f} points) "
              f"on {q['validation_images']} images; calibrated on {q['calibration']['images']} "
              f"training images")
    config = args.model_config
    if config is None:  # beside the exported models: never a tracked file of the repository
        config = str(Path(args.export_dir) / MODELS_CONFIG_FILE)
    if config:
        from ..serving.config import ConfigError, upsert_model_config
        try:
            entry = upsert_model_config(config, args.name)
        except ConfigError as exc:
            raise UserError(f"exported to {target}, but {config} was not updated: {exc}") from None
        print(f"  registered {args.name} in {config} (base_path {entry.base_path})")
    # --- end serving ---
