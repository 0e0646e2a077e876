"""``python -m kerascnn.weights``: list the shipped and ImageNet weights, or save one as a run
directory.

    python -m kerascnn.weights list
    python -m kerascnn.weights save resnet50:imagenet shipped/resnet50-imagenet
    python -m kerascnn.weights save resnet20:cifar10 shipped/resnet20-cifar10
    python -m kerascnn export shipped/resnet20-cifar10 --name resnet20
    python -m kerascnn predict export/resnet20 photo.jpg
"""

from __future__ import annotations

import argparse
import sys

from ..cli import run_reporting_errors
from . import WeightsError, available
from .packing import save_run_dir


def _run(args) -> int:
    if args.command == "list":
        for key, meta in available().items():
            print(f"{key:<18} {meta['num_classes']:>3} classes  {'x'.join(map(str, meta['input_shape']))}"
                  f"  val top-1 {meta['val_top1']:.2%}  {meta['epochs']} epochs on "
                  f"{meta['machine']}  ({meta['dataset']})")
        _list_published()
        return 0
    name, sep, tag = args.weights.partition(":")
    if not sep:
        raise WeightsError(f"name the weights as MODEL:TAG (e.g. resnet20:cifar10), got "
                           f"{args.weights!r}")
    print(f"saved {save_run_dir(name, tag, args.directory)} (model.keras, config.json, "
          f"metrics.json): export it with `python -m kerascnn export {args.directory} --name "
          f"{name}`")
    return 0


def _list_published() -> None:
    from . import published

    print("\nImageNet weights: get_model(NETWORK, weights='imagenet') takes the default; "
          "'imagenet:keras' or 'imagenet:torchvision' chooses")
    for e in published.entries():
        default = published.entry(e.network, "imagenet") == e
        cached = "converted, cached" if published.converted_path(e).is_file() else \
            "not cached (downloaded and converted on first use)"
        print(f"{e.network:<12} {e.publisher:<19} {e.source_name:<34} top-1 {e.top1:.1f}%"
              f"{'  default' if default else '         '}  {cached}")
    for publisher, why in published.unavailable().items():
        print(f"({publisher} weights unavailable here: {why})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kerascnn.weights",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the shipped and ImageNet weights with their accuracy")
    save = sub.add_parser("save", help="write MODEL:TAG as a run directory for export/predict")
    save.add_argument("weights", metavar="MODEL:TAG")
    save.add_argument("directory")
    return run_reporting_errors(_run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
