"""Train a network of the zoo on real data, per its paper's recipe.

    python train.py --arch googlenet                       # a few-minute demo on the bundled sample
    python train.py --arch lenet5 --dataset idx:../shared/data/mnist
    python train.py --arch resnet20 --dataset folder:../shared/data/cifar10/train --recipe budget
    python train.py --weights resnet20:cifar10 --freeze-epochs 5 --fine-tune-epochs 35  # transfer
    python train.py --evaluate runs/lenet5-mnist            # top-1/top-5/per-class of a trained run
    python train.py --list                                  # networks, recipes and dataset forms
    python train.py --arch resnet20 --backend jax           # the same recipe on JAX (or torch)

The same command as ``python -m kerascnn train``: this file only hands it the arguments; the
logic lives in :mod:`kerascnn.training`.
"""

import sys


def main(argv=None) -> int:
    from kerascnn.cli import main as kerascnn_main
    argv = sys.argv[1:] if argv is None else list(map(str, argv))
    return kerascnn_main(["train", *argv], prog="train.py")


if __name__ == "__main__":
    sys.exit(main())
