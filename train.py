"""Train a network of the zoo on real data, per its paper's recipe.

    python train.py --arch googlenet                       # a few-minute demo on the bundled sample
    python train.py --arch lenet5 --dataset idx:../shared/data/mnist
    python train.py --arch resnet20 --dataset folder:../shared/data/cifar10 --epochs 30
    python train.py --evaluate runs/lenet5-mnist            # top-1/top-5/per-class of a trained run
    python train.py --list                                  # networks and dataset forms
    python train.py --arch resnet20 --backend jax           # the same recipe on JAX (or torch)

The logic lives in :mod:`kerascnn.training`; this file only parses the command line.
"""

import argparse
import os
import sys

BACKENDS = ("tensorflow", "jax", "torch")


def _select_backend(argv) -> None:
    """Keras reads KERAS_BACKEND once, when it is first imported (importing TensorFlow imports it
    too), so ``--backend`` is applied before kerascnn.training is imported."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--backend", choices=BACKENDS)
    backend = pre.parse_known_args(argv)[0].backend
    if backend is None:
        return
    if "keras" in sys.modules:
        import keras
        if keras.backend.backend() != backend:
            raise SystemExit(f"train.py: error: --backend {backend}: Keras is already running on "
                             f"{keras.backend.backend()} in this process; run train.py in a new "
                             f"process (or set KERAS_BACKEND={backend} before importing keras)")
    os.environ["KERAS_BACKEND"] = backend


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(map(str, argv))
    _select_backend(argv)
    from kerascnn.cli import run_reporting_errors
    from kerascnn.training import add_arguments, run

    parser = argparse.ArgumentParser(prog="train.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--backend", choices=BACKENDS,
                        help="Keras backend (default: $KERAS_BACKEND or tensorflow); the same "
                             "recipes and tf.data input on each; --strategy needs tensorflow")
    args = parser.parse_args(argv)
    if not (args.arch or args.list or args.evaluate):
        parser.error("--arch NAME is required (or --list, or --evaluate RUN_DIR)")
    import keras
    if keras.backend.backend() != "tensorflow" and args.strategy not in (None, "none"):
        parser.error(f"--strategy {args.strategy} is tf.distribute and needs the tensorflow "
                     f"backend (this run uses {keras.backend.backend()})")
    return run_reporting_errors(run, args)


if __name__ == "__main__":
    sys.exit(main())
