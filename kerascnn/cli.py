"""``python -m kerascnn COMMAND``: one thin entry point over the library's commands.

Each command lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``--help`` is fast.
Errors the user can fix (bad names, paths, sizes) print one clear line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import UserError  # noqa: F401  (re-exported: kerascnn.cli.UserError still works)

#: command -> (module, one-line help, example, README section)
COMMANDS = {
    "train": ("kerascnn.training", "train a network on real data with its paper's recipe (as train.py)",
              "python -m kerascnn train --arch resnet20 --dataset "
              "folder:../shared/data/cifar10/train --recipe budget", "Training on real data"),
    "inspect": ("kerascnn.inspect", "print the lecture-style layer table of a model",
                "python -m kerascnn inspect googlenet", "The lecture's arithmetic"),
    "export": ("kerascnn.export", "export a trained model to SavedModel and ONNX (TF Serving layout)",
               "python -m kerascnn export runs/googlenet-sample --name googlenet", "Export"),
    "predict": ("kerascnn.predict", "top-5 predictions of an exported model for image files",
                "python -m kerascnn predict resnet20:cifar10 photos/", "Export"),
    "serve": ("kerascnn.serving.server", "TF Serving-compatible REST and gRPC server",
              "python -m kerascnn serve --model-config export/models.config", "Serving"),
    "visualize": ("kerascnn.visualize",
                  "kernels, filters, feature maps, architectures, occlusion, Grad-CAM, top patches",
                  "python -m kerascnn visualize architecture resnet50", "See what the networks do"),
}


def main(argv=None, *, prog: str | None = None) -> int:
    """``python -m kerascnn COMMAND ...``; ``prog`` names the program in usage lines (train.py
    is this function with ``train`` in front of its arguments)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    from .backend import start_quietly, verbose_requested
    verbose = verbose_requested(argv)
    argv = [a for a in argv if a != "--verbose"]
    parser = argparse.ArgumentParser(
        prog="python -m kerascnn", description=__doc__.splitlines()[0],
        epilog="Each command has --help with an example; README.md has a section per command. "
               "--verbose (or KERASCNN_VERBOSE=1) shows TensorFlow's own start-up logs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text, _, _) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints help or the "invalid choice" error
        return 2
    prog = prog or f"python -m kerascnn {argv[0]}"
    if argv[0] == "train":  # before the command's module imports Keras
        from .backend import select_backend
        select_backend(argv[1:], prog)
    start_quietly(verbose)  # TensorFlow's C++ start-up lines, unless --verbose
    module_name, help_text, example, section = COMMANDS[argv[0]]
    module = importlib.import_module(module_name)
    command = argparse.ArgumentParser(
        prog=prog, description=help_text, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"example:\n  {example.replace('python -m kerascnn train', f'python {prog}' if prog.endswith('.py') else prog)}\n\n"
               f"README.md, section \"{section}\"")
    module.add_arguments(command)
    args = command.parse_args(argv[1:])
    return run_reporting_errors(module.run, args)


def run_reporting_errors(fn, *args) -> int:
    """Run ``fn``; turn errors the user can fix into one line on stderr and exit code 2."""
    from .arithmetic import SizeError
    from .registry import UnknownModelError
    try:
        return int(fn(*args) or 0)
    except (UserError, SizeError, UnknownModelError, FileNotFoundError, NotADirectoryError,
            PermissionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
