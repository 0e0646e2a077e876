"""Train a network of the zoo on real data, per its paper's recipe.

    python train.py --arch googlenet                       # a few-minute demo on the bundled sample
    python train.py --arch lenet5 --dataset idx:../shared/data/mnist
    python train.py --arch resnet20 --dataset folder:../shared/data/cifar10 --epochs 30
    python train.py --evaluate runs/lenet5-mnist            # top-1/top-5/per-class of a trained run
    python train.py --list                                  # networks and dataset forms

The logic lives in :mod:`kerascnn.training`; this file only parses the command line.
"""

import argparse
import sys

from kerascnn.cli import run_reporting_errors
from kerascnn.training import add_arguments, run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="train.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not (args.arch or args.list or args.evaluate):
        parser.error("--arch NAME is required (or --list, or --evaluate RUN_DIR)")
    return run_reporting_errors(run, args)


if __name__ == "__main__":
    sys.exit(main())
