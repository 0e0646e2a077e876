"""``python -m kerascnn train`` and ``train.py`` (the same command): the command line of training."""

from __future__ import annotations

from .. import data as data_lib
from ..backend import BACKENDS
from ..errors import UserError
from ..recipes import BUDGET_RECIPES, VARIANTS, recipe_for
from .evaluation import evaluate
from .lifecycle import SAMPLE_MAX_SIZE, TrainConfig, train
from .multiworker import STRATEGIES

__all__ = ["list_text", "add_arguments", "run"]


def list_text() -> str:
    """What ``train.py --list`` prints: the networks with their recipes, and the dataset forms."""
    from ..registry import list_models, model_info
    lines = ["architectures (paper input, smallest input, recipe):"]
    for name in list_models():
        info = model_info(name)
        r = recipe_for(name)
        shape = "x".join(map(str, info.input_shape))
        lines.append(f"  {name:<16} {shape:<12} min {info.min_size:<4} {r.optimizer} lr "
                     f"{r.effective_lr():g}, wd {r.weight_decay:g}, batch {r.batch_size}, "
                     f"{r.epochs} epochs, {r.schedule}")
    lines.append("")
    lines.append("recipes (--recipe NAME):")
    for variant, text in VARIANTS.items():
        lines.append(f"  {variant:<8} {text}")
    for family, r in BUDGET_RECIPES.items():
        lines.append(f"  budget for {family}: {r.optimizer} lr {r.effective_lr():g} "
                     f"{'nesterov ' if r.nesterov else ''}, wd {r.weight_decay:g}, label smoothing "
                     f"{r.label_smoothing:g}, {r.epochs} epochs, {r.schedule} after "
                     f"{r.warmup_epochs} warm-up epoch(s)")
    lines.append("")
    lines.append("datasets (--dataset SPEC):")
    for form, text in data_lib.SPEC_FORMS.items():
        lines.append(f"  {form:<20} {text}")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    parser.add_argument("--arch", help="network to train (see --list)")
    parser.add_argument("--dataset", metavar="SPEC",
                        help="sample (default), tfds:NAME[/CONFIG], folder:PATH or idx:PATH")
    parser.add_argument("--data-dir", help="TFDS data directory holding prepared datasets")
    parser.add_argument("--val-split", type=float, default=0.1,
                        help="held-out fraction per class when the data has no validation split")
    parser.add_argument("--epochs", type=int, help="default: the paper's (6 on the sample)")
    parser.add_argument("--batch-size", type=int, help="global batch size (default: the paper's)")
    parser.add_argument("--image-size", type=int,
                        help=f"square input size (default: the paper's; at most {SAMPLE_MAX_SIZE} "
                             f"on the sample)")
    parser.add_argument("--lr", type=float, help="initial learning rate (default: the paper's)")
    parser.add_argument("--optimizer", choices=["sgd", "adam"], help="default: the paper's (sgd)")
    parser.add_argument("--weight-decay", type=float,
                        help="L2 on conv/dense kernels added to the loss (0 turns it off)")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="bfloat16 compute on CPU, float16 on GPU (weights stay float32)")
    parser.add_argument("--recipe", choices=list(VARIANTS), default="paper",
                        help="paper (default: the paper's recipe, exact) or budget (far fewer "
                             "epochs; CIFAR ResNets; see --list)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="none",
                        help="tf.distribute strategy (multiworker reads TF_CONFIG)")
    transfer = parser.add_argument_group(
        "transfer learning", "start from trained weights with a new classifier: a freeze phase "
        "(the base frozen, batch norm in inference mode, the head trained), then an optional "
        "fine-tune phase; e.g. train.py --weights resnet20:cifar10 --dataset folder:PHOTOS "
        "--freeze-epochs 5 --fine-tune-epochs 20 --unfreeze conv4")
    transfer.add_argument("--weights", metavar="SOURCE",
                          help="imagenet[:PUBLISHER] or a publisher's .h5/.pth (with --arch), "
                               "shipped MODEL:TAG, a RUN_DIR or a PATH.keras; --arch may be left "
                               "out where the source names it")
    transfer.add_argument("--freeze-epochs", type=int, metavar="N",
                          help="epochs training only the new classifier (default "
                               "5 with --weights)")
    transfer.add_argument("--fine-tune-epochs", type=int, metavar="M",
                          help="epochs after it with the base unfrozen (default 0)")
    transfer.add_argument("--fine-tune-lr", type=float, metavar="LR",
                          help="learning rate of the fine-tune phase (default: a tenth of --lr)")
    transfer.add_argument("--unfreeze", metavar="all|PREFIX,...",
                          help="what the fine-tune phase trains: all (default) or the layers "
                               "whose names start with these stage prefixes (conv4,conv5)")
    transfer.add_argument("--fine-tune-bn", choices=["frozen", "train"],
                          help="batch norm when fine-tuning: frozen (default: inference mode, "
                               "as the Keras guide advises) or train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", help="run directory (default: runs/ARCH-DATASET)")
    parser.add_argument("--evaluate", metavar="RUN_DIR",
                        help="evaluate a trained run (on --dataset if given) instead of training")
    parser.add_argument("--flip", action="store_true",
                        help="with --evaluate: also report top-1 with test-time flip averaging "
                             "(beside the plain figure)")
    parser.add_argument("--list", action="store_true", help="list architectures and dataset forms")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="Keras backend (default: $KERAS_BACKEND or tensorflow); the same "
                             "recipes and tf.data input on each; --strategy needs tensorflow")


def run(args) -> int:
    if args.list:
        print(list_text())
        return 0
    if args.evaluate:
        report = evaluate(args.evaluate, args.dataset, data_dir=args.data_dir,
                          batch_size=args.batch_size or 128, flip=args.flip)
        print(f"{report['run_dir']} on {report['dataset']} ({report['split']}, {report['images']} "
              f"images): top-1 {report['top1']:.2%}, "
              + (f"top-{report['top5_k']} {report['top5']:.2%}, " if report["top5_k"] else "")
              + f"loss {report['loss']:.4f}"
              + (f"; with flip averaging top-1 {report['top1_flip']:.2%}" if args.flip else ""))
        width = max(len(n) for n in report["per_class_accuracy"])
        for name, acc in report["per_class_accuracy"].items():
            print(f"  {name:<{width}}  {'-' if acc is None else f'{acc:.2%}'}")
        print(f"saved {report['saved']}")
        return 0
    if not args.arch and not args.weights:
        raise UserError("--arch NAME is required (or --weights SOURCE, --list, or --evaluate "
                        "RUN_DIR; see --list for the networks)")
    import keras
    if keras.backend.backend() != "tensorflow" and args.strategy not in (None, "none"):
        raise UserError(f"--strategy {args.strategy} is tf.distribute and needs the tensorflow "
                        f"backend (this run uses {keras.backend.backend()})")
    cfg = TrainConfig(arch=args.arch, dataset=args.dataset, data_dir=args.data_dir,
                      val_split=args.val_split, epochs=args.epochs, batch_size=args.batch_size,
                      image_size=args.image_size, lr=args.lr, optimizer=args.optimizer,
                      weight_decay=args.weight_decay, mixed_precision=args.mixed_precision,
                      recipe=args.recipe, seed=args.seed, run_dir=args.run_dir,
                      strategy=args.strategy, weights=args.weights,
                      freeze_epochs=args.freeze_epochs, fine_tune_epochs=args.fine_tune_epochs,
                      fine_tune_lr=args.fine_tune_lr, unfreeze=args.unfreeze,
                      fine_tune_bn=args.fine_tune_bn)
    metrics = train(cfg)
    from ..runs import RunDir
    print(next_steps(metrics["run_dir"], RunDir(metrics["run_dir"]).read_config().arch))
    return 0


def next_steps(run_dir, arch: str) -> str:
    """What a finished run made, and the commands that work on it next (copy-pasteable)."""
    import shlex
    from pathlib import Path

    from ..registry import model_info
    run, name = Path(run_dir), model_info(arch).name
    q = shlex.quote
    sample = Path(__file__).resolve().parents[1] / "samples" / "imagenette5" / "val"
    image = next((p for p in sorted(sample.rglob("*.jpg"))[:1]), None)
    if image is None:
        image = "IMAGE.jpg"
    elif image.is_relative_to(Path.cwd()):
        image = str(image.relative_to(Path.cwd()))
    commands = [
        (f"python train.py --evaluate {q(str(run))}", "evaluate it again"),
        (f"python -m kerascnn export {q(str(run))} --name {name}",
         f"SavedModel + ONNX -> export/{name}/VERSION"),
        ("python -m kerascnn serve", "serve export/models.config: REST :8501, gRPC :8500"),
        (f"python -m kerascnn predict export/{name} {q(image)}", "top-5 of a photo"),
    ]
    width = max(len(c) for c, _ in commands)
    return "\n".join([f"made {run}/: report.html (open it in a browser), model.keras, "
                      f"metrics.json, history.csv, checkpoints/", "next:",
                      *(f"  {c:<{width}}  # {why}" for c, why in commands)])
