"""The run report: ``RUN_DIR/report.html``, one page that shows what a training run did.

Every training run writes it (``python -m kerascnn visualize report RUN_DIR`` writes it again)::

    RUN_DIR/report.html                    the page; it links the PNGs beside it
    RUN_DIR/training_curves.png            loss, top-1 and learning rate per epoch
    RUN_DIR/validation_predictions.png     validation images, predicted and true labels, mistakes
                                           first (the most confident mistakes first)
    RUN_DIR/confusion_matrix.png           rows: true class, columns: predicted
    RUN_DIR/architecture.png               the volume W x H x D after each layer or block
    RUN_DIR/gradcam_mistakes.png           Grad-CAM of the predicted class on the most confident
                                           mistakes (kerascnn.explain; at most GRADCAM_IMAGES)

and the page adds the headline metrics, the per-class accuracy, the model's layer table from
``kerascnn inspect`` and the recipe. Plots come from :mod:`kerascnn.plots`, the table from
:mod:`kerascnn.inspect`, the validation images from :mod:`kerascnn.data` (the run's own dataset
spec and validation transform, as ``train.py --evaluate`` reads them). Files are written to a
temporary name and renamed.
"""

from __future__ import annotations

import datetime
import html
import json
import warnings
from pathlib import Path

import numpy as np

from . import plots
from .errors import UserError

__all__ = ["REPORT_FILE", "PREDICTIONS_FILE", "ARCHITECTURE_FILE", "GRADCAM_FILE", "GRID_IMAGES",
           "PREDICT_LIMIT", "GRADCAM_IMAGES", "write_report", "write_report_or_warn",
           "validation_predictions", "mistakes_first", "model_table_html"]

REPORT_FILE = "report.html"
PREDICTIONS_FILE = "validation_predictions.png"
ARCHITECTURE_FILE = "architecture.png"
GRADCAM_FILE = "gradcam_mistakes.png"
#: Validation images drawn in the grid, and how many are predicted to find the mistakes among.
GRID_IMAGES = 32
PREDICT_LIMIT = 512
#: Most confident mistakes shown with Grad-CAM (one gradient pass over this many images).
GRADCAM_IMAGES = 8


class ReportWarning(UserWarning):
    """The report could not be written; the run itself is complete."""


# --------------------------------------------------------------------------------------------
# Validation predictions


def validation_predictions(model, batches, limit: int = PREDICT_LIMIT):
    """``(images, labels, probabilities)`` of the first ``limit`` images of a batched
    ``(uint8 image, label)`` dataset, predicted by ``model``."""
    images, labels, probs = [], [], []
    seen = 0
    for x, y in batches:
        x = np.asarray(x)[: limit - seen]
        images.append(x)
        labels.append(np.asarray(y)[: len(x)])
        probs.append(np.asarray(model.predict_on_batch(x), np.float64))
        seen += len(x)
        if seen >= limit:
            break
    if not images:
        return np.zeros((0,)), np.zeros((0,), np.int64), np.zeros((0, 0))
    return np.concatenate(images), np.concatenate(labels).astype(np.int64), np.concatenate(probs)


def mistakes_first(labels, probabilities) -> np.ndarray:
    """Indices ordering the images for the grid: the mistakes, most confident first, then the
    correct predictions, least confident first (the ones nearest to being mistakes). The grid
    shows the first :data:`GRID_IMAGES`, keeping its last quarter for correct predictions."""
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    right = np.flatnonzero(predicted == labels)
    return np.concatenate([wrong[np.argsort(-confidence[wrong], kind="stable")],
                           right[np.argsort(confidence[right], kind="stable")]]).astype(np.int64)


# --------------------------------------------------------------------------------------------
# HTML


def _e(value) -> str:
    return html.escape(str(value))


_NUM = ' class="num"'


def model_table_html(model) -> str:
    """The lecture's layer table of ``model`` (:func:`kerascnn.inspect.layer_table`) as HTML,
    with the totals line and the table's notes."""
    from . import inspect

    rows = inspect.layer_table(model)
    totals = inspect.table_totals(rows, model)
    numeric = {"F", "S", "P", "K", "weights", "biases", "MACs"}
    head = "".join(f'<th{_NUM if c in numeric else ""}>{_e(c)}</th>' for c in inspect.COLUMNS)
    body = []
    for row in rows:
        cells = []
        for key, value in row.cells().items():
            text = f"{value:,}" if isinstance(value, int) and key != "K" else str(value)
            cells.append(f'<td{_NUM if key in numeric else ""}>{_e(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    total = (f'<tr class="total"><td>total</td>{"<td></td>" * 7}<td{_NUM}>{totals.weights:,}'
             f"</td><td{_NUM}>{totals.biases:,}</td><td{_NUM}>{totals.macs:,}</td></tr>")
    notes = "".join(f"<li>{_e(n)}</li>" for n in inspect._notes(rows))
    return (f'<table class="layers"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}'
            f"{total}</tbody></table><p>{_e(totals.line())}</p><ul class=\"notes\">{notes}</ul>")


def _key_values(pairs) -> str:
    rows = []
    for key, value in pairs:
        if isinstance(value, (dict, list, tuple)):
            value = json.dumps(value)
        rows.append(f"<tr><th>{_e(key)}</th><td>{_e('' if value is None else value)}</td></tr>")
    return f'<table class="kv">{"".join(rows)}</table>'


def _percent(value) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _figure(file: str, caption: str, run_dir: Path) -> str:
    if not (run_dir / file).is_file():
        return f"<p class=\"missing\">{_e(caption)}: not available ({_e(file)} is missing).</p>"
    return (f'<figure><a href="{_e(file)}"><img src="{_e(file)}" alt="{_e(caption)}"></a>'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em;
                                   margin-top: 1.8em; }
.sub { color: #666; margin-top: 0; }
.metrics { display: flex; gap: 1.5em; flex-wrap: wrap; margin: 1em 0; }
.metric { background: #f5f7fa; border-radius: 6px; padding: 0.6em 1em; min-width: 8em; }
.metric b { display: block; font-size: 1.5em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 0.25em 0.6em; text-align: left;
         vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.layers { font-family: ui-monospace, Menlo, Consolas, monospace; }
tr.total td { font-weight: bold; border-top: 2px solid #999; }
table.kv th { color: #555; font-weight: 600; white-space: nowrap; }
.notes { color: #666; font-size: 0.85em; } .missing { color: #a00; }
"""


# --------------------------------------------------------------------------------------------
# The report


def write_report(run_dir, *, model=None, val_data=None, metrics: dict | None = None,
                 config=None) -> Path:
    """Write ``RUN_DIR/report.html`` and the PNGs it shows; returns the page's path.

    ``model`` (the inference model), ``val_data`` (batched uint8 validation images and labels),
    ``metrics`` and ``config`` (a :class:`kerascnn.runs.RunConfig`) default to what the run
    directory holds; training passes its own
    so nothing is loaded twice. Without the run's dataset on this machine the page says so in place
    of the validation grid.
    """
    from . import inspect
    from .architecture import architecture_volumes
    from .files import atomic_path
    from .runs import RunDir

    run = RunDir(run_dir)
    run_dir = run.path
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a run directory (train one with train.py --arch NAME "
                        f"--run-dir DIR)")
    if config is None:
        if not run.has_config():
            raise UserError(f"{run_dir} has no config.json: it is not a run directory written by "
                            f"train.py")
        config = run.read_config()
    if metrics is None:
        if not run.is_finished:
            raise UserError(f"{run_dir} has no metrics.json: the run has not finished (re-run its "
                            f"training command to finish it)")
        metrics = run.read_metrics()
    if model is None:
        model = inspect.resolve_model(run_dir)
    class_names = list(config.class_names)

    # the PNGs: training's own two (drawn again only if missing), then the report's
    if not (run_dir / "training_curves.png").is_file() and (run_dir / "history.csv").is_file():
        plots.training_curves(run_dir / "history.csv", run_dir / "training_curves.png")
    if not (run_dir / "confusion_matrix.png").is_file() and metrics.get("confusion_matrix"):
        plots.confusion_matrix(np.asarray(metrics["confusion_matrix"]), class_names,
                               run_dir / "confusion_matrix.png",
                               title=f"validation top-1 {metrics.get('val_top1', 0):.1%}")
    grid_note, predicted = _predictions_png(run, model, val_data, config, class_names)
    cam_note = _gradcam_png(run_dir, model, predicted, class_names)
    volumes = architecture_volumes(model)
    plots.save_figure(plots.architecture_figure(
        volumes, title=f"{config.arch}: the volume W×H×D after each layer or "
                       f"block ({volumes[0].shape_text} input)"), run_dir / ARCHITECTURE_FILE)

    page = _page(run_dir, config, metrics, model, grid_note, cam_note)
    path = run_dir / REPORT_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def write_report_or_warn(run_dir, **kwargs) -> Path | None:
    """:func:`write_report`, turning a failure into a warning: the run stays complete, and the
    warning says how to write the report again."""
    try:
        return write_report(run_dir, **kwargs)
    except Exception as exc:  # the report is an extra: never fail a finished training run for it
        warnings.warn(f"could not write {Path(run_dir) / REPORT_FILE} ({type(exc).__name__}: "
                      f"{exc}); write it again with python -m kerascnn visualize report "
                      f"{run_dir}", ReportWarning, stacklevel=2)
        return None


def _predictions_png(run, model, val_data, config, class_names):
    """Draw the validation grid; returns a sentence about it (or why it is missing) and the
    ``(images, labels, probabilities)`` predicted (None without them)."""
    run_dir = run.path
    if val_data is None:
        try:
            val_data = run.validation_data(batch_size=64)[1]
        except Exception as exc:  # the dataset may live on another machine
            (run_dir / PREDICTIONS_FILE).unlink(missing_ok=True)
            return (f"The validation images of {config.dataset} are not readable here "
                    f"({exc})."), None
    images, labels, probs = validation_predictions(model, val_data)
    if not len(images):
        return "The validation split is empty.", None
    predicted = probs.argmax(axis=1)
    wrong = int((predicted != labels).sum())
    order = mistakes_first(labels, probs)
    # mistakes first, but keep the last quarter of the grid for correct predictions, if any
    right = min(len(labels) - wrong, GRID_IMAGES // 4)
    order = np.concatenate([order[:min(wrong, GRID_IMAGES - right)], order[wrong:]])[:GRID_IMAGES]
    names = class_names or [str(i) for i in range(probs.shape[1])]
    fig = plots.predictions_figure(
        images[order], labels[order], predicted[order], probs.max(axis=1)[order], names,
        title=f"validation images: {wrong} of {len(labels)} misclassified; mistakes first (most "
              f"confident first), then correct predictions (least confident first)",
        columns=8)
    plots.save_figure(fig, run_dir / PREDICTIONS_FILE)
    return (f"{len(order)} of the first {len(labels)} validation images; {wrong} of those "
            f"{len(labels)} are misclassified. Red: a mistake, green: correct."), \
        (images, labels, probs)


def _gradcam_png(run_dir: Path, model, predicted, class_names) -> str:
    """Grad-CAM of the predicted class on the :data:`GRADCAM_IMAGES` most confident mistakes;
    returns a sentence about it. Never raises: the page says why the figure is missing."""
    path = run_dir / GRADCAM_FILE
    path.unlink(missing_ok=True)  # never show a previous report's mistakes
    if predicted is None:
        return "No validation images, so no mistakes to explain."
    images, labels, probs = predicted
    wrong = np.flatnonzero(probs.argmax(axis=1) != labels)
    if not len(wrong):
        return f"None of the first {len(labels)} validation images is misclassified."
    chosen = mistakes_first(labels, probs)[:min(len(wrong), GRADCAM_IMAGES)]
    try:
        from .explain import default_cam_layer, grad_cam
        from .explain.figures import heatmap_grid_figure

        layer = default_cam_layer(model)
        pred = probs[chosen].argmax(axis=1)
        maps = grad_cam(model, images[chosen], class_index=pred, layer=layer)
        names = class_names or [str(i) for i in range(probs.shape[1])]
        titles = [f"{plots._short(names[p])} {probs[i, p]:.0%}\ntrue: "
                  f"{plots._short(names[labels[i]])}" for i, p in zip(chosen, pred)]
        fig = heatmap_grid_figure(
            images[chosen], maps, "gradcam", titles, colours=["#c62828"] * len(chosen),
            title=f"Grad-CAM at {layer} of the predicted class: the {len(chosen)} most confident "
                  f"mistakes", columns=4)
        plots.save_figure(fig, path)
    except Exception as exc:  # an explanation is an extra: the report goes on without it
        path.unlink(missing_ok=True)
        return f"Grad-CAM could not be drawn for this model ({type(exc).__name__}: {exc})."
    return (f"Where the network looked (Grad-CAM at layer {layer}, Selvaraju et al. 2017; red: "
            f"most important to the predicted class) on the {len(chosen)} most confident of the "
            f"{len(wrong)} mistakes.")


def _page(run_dir: Path, run_config, metrics: dict, model, grid_note: str,
          cam_note: str = "") -> str:
    config = run_config.to_dict()
    arch = config.get("arch", model.name)
    dataset = config.get("dataset", "?")
    data = config.get("data") or {}
    k = metrics.get("top5_k", 5)  # None: as few classes as k, where top-k cannot fail
    h, w, c = config.get("input_shape", ["?", "?", "?"])
    cards = [("top-1", _percent(metrics.get("val_top1"))),
             *([(f"top-{k}", _percent(metrics.get("val_top5")))] if k else []),
             *([("top-1, flip averaged", _percent(metrics["val_top1_flip"]))]
               if metrics.get("val_top1_flip") is not None else []),
             ("loss", f"{metrics.get('val_loss', float('nan')):.4f}"),
        ("epochs", config.get("epochs", "?")),
        ("training time", f"{metrics.get('wall_time_s', 0):.0f} s"),
        ("images/s", metrics.get("images_per_s", "n/a"))]
    card_html = "".join(f'<div class="metric">{_e(label)}<b>{_e(value)}</b></div>'
                        for label, value in cards)
    per_class = metrics.get("per_class_accuracy") or {}
    per_class_html = _key_values((name, _percent(acc)) for name, acc in per_class.items()) \
        if 0 < len(per_class) <= 100 else ""
    best = ""
    if metrics.get("best_epoch"):
        best_top1 = _percent(metrics.get("best_val_top1"))
        best = (f"<p>Best validation top-1 during training: {best_top1}"
                f" at epoch {_e(metrics['best_epoch'])} (checkpoints/best.keras); the numbers above"
                f" are those of the final model (model.keras).</p>")
    recipe = config.get("recipe") or {}
    run_notes = recipe.get("run_notes") or []
    notes_html = "".join(f"<li>{_e(n)}</li>" for n in run_notes)
    settings = [("architecture", arch), ("dataset", dataset),
                ("classes", f"{config.get('num_classes', len(config.get('class_names', [])))}"),
                ("training images", data.get("train_images")),
                ("validation images", f"{data.get('val_images')} ({data.get('val_source')})"),
                ("input", f"{w}×{h}×{c} uint8, preprocessing inside the model"),
                ("preprocessing", config.get("preprocessing")),
                ("evaluation transform", run_config.eval_transform.describe()),
                ("model options", config.get("model_options")),
                ("epochs", config.get("epochs")), ("batch size", config.get("batch_size")),
                ("seed", config.get("seed")), ("versions", config.get("versions"))]
    cam_figure = _figure(GRADCAM_FILE, "Grad-CAM of the predicted class on the most confident "
                         "mistakes: predicted class, probability and true class above each",
                         run_dir) if (run_dir / GRADCAM_FILE).is_file() else ""
    generated = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(arch)} on {_e(dataset)}: training report</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{_e(arch)} on {_e(dataset)}</h1>
<p class="sub">Run directory {_e(run_dir.resolve())}; report written {_e(generated)} by
kerascnn.</p>
<div class="metrics">{card_html}</div>
<p>Validation: {_e(metrics.get('val_images', data.get('val_images', '?')))} images
({_e(data.get('val_source', 'held out'))}).</p>
{best}
{f'<ul class="notes">{notes_html}</ul>' if notes_html else ''}

<h2>Training curves</h2>
{_figure("training_curves.png", "loss, top-1 accuracy and learning rate per epoch", run_dir)}

<h2>Validation images</h2>
<p>{_e(grid_note)}</p>
{_figure(PREDICTIONS_FILE, "predicted class (probability) and true class", run_dir)}

<h2>What the network looked at</h2>
<p>{_e(cam_note)}</p>
{cam_figure}

<h2>Confusion matrix</h2>
{_figure("confusion_matrix.png", "rows: true class, columns: predicted class", run_dir)}
{f'<h3>Per-class accuracy</h3>{per_class_html}' if per_class_html else ''}

<h2>Architecture</h2>
{_figure(ARCHITECTURE_FILE, "the volume W×H×D after each layer or block", run_dir)}

<h2>Model</h2>
<p>The lecture's size arithmetic for every layer (<code>python -m kerascnn inspect
{_e(run_dir)}</code>): F kernel, S stride, P padding, K filters or units; volumes are
W×H×D.</p>
{model_table_html(model)}

<h2>Recipe</h2>
{_key_values(recipe.items())}

<h2>Settings</h2>
{_key_values(settings)}
</body>
</html>
"""
