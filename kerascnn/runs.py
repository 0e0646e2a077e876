"""A training run as a typed record: the one reader and writer of a run directory's files.

``train.py`` writes a run directory; export, predict, report, visualize and serving read it, all
through :class:`RunDir` and :class:`RunConfig`::

    RUN_DIR/config.json     RunConfig: what was trained, on what, how, and its EvalTransform
    RUN_DIR/metrics.json    the validation results (a plain dict: top-1, top-k, per class ...)
    RUN_DIR/history.csv     one row per epoch
    RUN_DIR/model.keras     the inference model (uint8 `image` -> `predictions`)

Run directories written before the evaluation transform was recorded still read: the transform
is then derived from the dataset and the recipe's augmentation, as training computed it.
Shipped weights (:mod:`kerascnn.weights`) carry the same record in their manifest.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import UserError
from .files import atomic_path, write_json
from .transforms import EvalTransform

__all__ = ["RunConfig", "RunDir", "CONFIG_FILE", "METRICS_FILE", "HISTORY_FILE", "MODEL_FILE",
           "STATUS_FINISHED", "STATUS_FAILED"]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
MODEL_FILE = "model.keras"
FAILED_FILE = "failed.json"
STATUS_FINISHED = "finished"
STATUS_FAILED = "failed"


@dataclass
class RunConfig:
    """``config.json``: the network and its build arguments, the data, the recipe, the
    evaluation transform and the versions. Keys this version does not know are kept in
    ``extra`` and written back unchanged."""

    arch: str
    num_classes: int
    class_names: list[str]
    input_shape: tuple[int, int, int]
    preprocessing: dict | str | None = None
    model_options: dict = field(default_factory=dict)
    dataset: str | None = None
    recipe: dict = field(default_factory=dict)
    seed: int = 0
    epochs: int | None = None
    batch_size: int | None = None
    versions: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    eval_transform: EvalTransform | None = None
    #: train.py --weights: the source network (spec, kind, arch, input shape, classifier layer);
    #: None for a run trained from scratch (and every run written before transfer learning)
    weights: dict | None = None
    #: the phases of a transfer run in order (name, first_epoch, epochs, lr, what trains); []
    #: for a one-phase run
    phases: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.input_shape = tuple(int(d) for d in self.input_shape)
        if self.eval_transform is None:
            self.eval_transform = self._derived_transform()

    # ---------------------------------------------------------------------------- (de)serialise
    @classmethod
    def from_dict(cls, record: dict) -> "RunConfig":
        """From ``config.json``, or a shipped-weights manifest (``model``, ``data_name``,
        ``augment`` at the top: the manifests of the first releases)."""
        record = dict(record)
        if "arch" not in record and "model" in record:  # a weights manifest
            record["arch"] = record.pop("model")
            data = dict(record.get("split") or {})
            data.setdefault("name", record.get("data_name"))
            record.setdefault("data", data)
            record.setdefault("seed", data.get("seed") or 0)
            if record.get("augment") and isinstance(record.get("recipe"), dict):
                record["recipe"] = {"augment": record["augment"], **record["recipe"]}
        missing = [k for k in ("arch", "num_classes", "input_shape") if k not in record]
        if missing:
            raise UserError(f"the run record lacks {', '.join(missing)}: it is not a config.json "
                            f"written by train.py")
        known = {f.name for f in fields(cls)} - {"extra", "eval_transform"}
        transform = record.get("eval_transform")
        names = record.get("class_names") or [str(i) for i in range(int(record["num_classes"]))]
        values = {k: record[k] for k in known if k in record and record[k] is not None}
        values["class_names"] = [str(n) for n in names]
        extra = {k: v for k, v in record.items() if k not in known and k != "eval_transform"}
        return cls(**values, extra=extra,
                   eval_transform=EvalTransform.from_dict(transform, record["input_shape"])
                   if isinstance(transform, dict) else None)

    def to_dict(self) -> dict:
        record = {f.name: getattr(self, f.name) for f in fields(self)
                  if f.name not in ("extra", "eval_transform")}
        record["input_shape"] = list(self.input_shape)
        record["eval_transform"] = self.eval_transform.to_dict()
        return {**record, **self.extra}

    # ---------------------------------------------------------------------------- derived facts
    @property
    def augment(self) -> str | None:
        return self.recipe.get("augment") or self.extra.get("augment")

    @property
    def style(self) -> str:
        return self.eval_transform.style

    def _derived_transform(self) -> EvalTransform:
        """Runs written before ``eval_transform`` was recorded: training's own computation from
        the dataset (glyphs or photos) and the recipe's augmentation."""
        style = self.data.get("style") or self.extra.get("style")
        if style not in ("glyphs", "photos"):
            style = _style_of_spec(self.dataset, self.data.get("name"))
        height, width, channels = self.input_shape
        square = EvalTransform.for_training(style, max(height, width), self.augment or "",
                                            channels)
        return EvalTransform(style, square.resize, (height, width), channels)

    def matches(self, other: "RunConfig") -> str | None:
        """The first key a resumed run must share with the interrupted one and does not."""
        for key in ("arch", "dataset", "num_classes", "class_names", "input_shape", "weights",
                    "phases"):
            if getattr(self, key) != getattr(other, key):
                return key
        return None


def _style_of_spec(spec, name) -> str:
    from . import data

    try:
        kind, value = data.parse_spec(spec)
    except UserError:
        kind, value = "", ""
    if kind == "idx":
        return "glyphs"
    if not name:
        name = value.split("/")[0] if kind == "tfds" else \
            data.dataset_name(Path(value)) if kind == "folder" else ""
    return data.style_of(name or "")




# --------------------------------------------------------------------------------------------
# The directory


@dataclass(frozen=True)
class RunDir:
    """A run directory and its files; every read and write of them goes through here."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def history_file(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def is_finished(self) -> bool:
        """Training, evaluation and files done (metrics.json is written last)."""
        return self.metrics_file.is_file()

    @classmethod
    def is_run(cls, path) -> bool:
        path = Path(path)
        return path.is_dir() and (path / MODEL_FILE).is_file()

    # ---------------------------------------------------------------------------- config.json
    def has_config(self) -> bool:
        return self.config_file.is_file()

    def read_config(self) -> RunConfig:
        return RunConfig.from_dict(_read_json(self.config_file))

    def write_config(self, config: RunConfig) -> None:
        write_json(self.config_file, config.to_dict())

    # ---------------------------------------------------------------------------- metrics.json
    def read_metrics(self) -> dict:
        return _read_json(self.metrics_file) if self.metrics_file.is_file() else {}

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.metrics_file, metrics)

    def mark_failed(self, reason: str, **details) -> None:
        """Record that training failed (``failed.json``); the run is not finished."""
        write_json(self.path / FAILED_FILE, {"status": STATUS_FAILED, "reason": reason, **details})

    # ---------------------------------------------------------------------------- history.csv
    def read_history(self) -> list[dict]:
        """The epochs' rows (strings, as the CSV holds them); [] before the first epoch."""
        if not self.history_file.is_file():
            return []
        with self.history_file.open(newline="") as f:
            return list(csv.DictReader(f))

    def trim_history(self, before_epoch: int | None = None) -> None:
        """Keep one row per epoch (the last written), dropping epochs >= ``before_epoch`` (a
        resumed run writes those again)."""
        rows = self.read_history()
        if not rows:
            return
        by_epoch = {}
        for row in rows:
            epoch = int(float(row["epoch"]))
            if before_epoch is None or epoch < before_epoch:
                by_epoch[epoch] = row
        with atomic_path(self.history_file) as tmp:
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
                writer.writeheader()
                writer.writerows(by_epoch[e] for e in sorted(by_epoch))

    def training_seconds(self) -> float | None:
        """Wall time of all epochs, over every session of a resumed run."""
        rows = self.read_history()
        if not rows:
            return None
        return round(sum(float(r.get("epoch_time_s") or 0) for r in rows), 1)

    # ---------------------------------------------------------------------------- validation data
    def validation_data(self, dataset: str | None = None, *, data_dir: str | None = None,
                        batch_size: int = 64, verbose: bool = False):
        """The run's validation split as training held it out, batched through the run's
        evaluation transform: ``(loaded Dataset, tf.data batches, label map or None)``.

        ``dataset`` (a spec) evaluates on another dataset's validation split instead; its classes
        are matched to the run's by name (the label map turns its labels into the run's).
        """
        import numpy as np

        config = self.read_config()
        spec = dataset or config.dataset
        ds = self._load(spec, data_dir, verbose)
        label_map = None
        if dataset is not None and dataset != config.dataset:
            index = {n: i for i, n in enumerate(config.class_names)}
            unknown = [n for n in ds.class_names if n not in index]
            if unknown:
                names = config.class_names
                raise UserError(f"{spec} has classes the run does not know: "
                                f"{', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''} "
                                f"(the run's classes: {', '.join(names[:8])}"
                                f"{' ...' if len(names) > 8 else ''})")
            label_map = np.array([index[n] for n in ds.class_names], np.int64)
        return ds, self._evaluation_batches(ds, ds.val, batch_size), label_map

    def calibration_images(self, count: int, *, seed: int = 0, data_dir: str | None = None,
                           verbose: bool = False):
        """``count`` images of the run's *training* split, a uniform sample seeded by ``seed``,
        as uint8 ``[N, H, W, C]`` through the run's evaluation transform (never augmented): what
        int8 calibration sees (``export --quantize int8``). Fewer when the split is smaller."""
        import numpy as np
        import tensorflow as tf

        from .data.base import Split

        config = self.read_config()
        ds = self._load(config.dataset, data_dir, verbose)
        chosen = np.random.default_rng(seed).permutation(ds.train.count)[:count]
        keep = tf.constant(np.isin(np.arange(ds.train.count), chosen))
        sampled = ds.train.dataset.enumerate().filter(lambda i, _: keep[i]).map(lambda i, x: x)
        split = Split(sampled, len(chosen), f"{ds.train.source} (calibration sample)")
        images = [np.asarray(x) for x, _ in self._evaluation_batches(ds, split, 64,
                                                                       cache=False)]
        return np.concatenate(images) if images else np.zeros((0, *config.input_shape), np.uint8)

    def _load(self, spec: str, data_dir: str | None, verbose: bool):
        """The dataset ``spec`` split as the run's training split it (fraction and seed)."""
        from . import data

        config = self.read_config()
        return data.load(spec, data_dir=data_dir or config.data.get("data_dir"),
                         val_split=config.data.get("val_split") or 0.1, seed=config.seed,
                         channels=config.input_shape[-1], verbose=verbose)

    def _evaluation_batches(self, ds, split, batch_size: int, cache: bool = True):
        """``split`` of the loaded dataset ``ds`` batched through the run's evaluation transform."""
        from . import data

        config = self.read_config()
        h, _, c = config.input_shape
        augment = data.augmentation_for(ds, h, config.augment or "auto")
        return data.pipeline(split, image_size=h, channels=c, style=ds.style, training=False,
                             augment=augment, batch_size=batch_size, native_size=ds.native_size,
                             cache=cache)


def _read_json(path: Path) -> dict:
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: pass a run directory written by "
                        f"`train.py --run-dir DIR`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}; it should be the JSON file that train.py "
                        f"writes into the run directory") from None
    if not isinstance(record, dict):
        raise UserError(f"{path} must hold a JSON object, found {type(record).__name__}")
    return record
