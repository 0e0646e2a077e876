"""Training on real data: ``model.fit`` with the papers' recipes, a run directory, evaluation.

One module per concern, in the order a run goes through them:

- :mod:`.lifecycle`: :func:`train`, a run from its plan to its files, top to bottom;
- :mod:`.compiling`: loss, optimizer and schedule, the papers' weight decay, mixed precision;
- :mod:`.callbacks`: checkpoints, history, schedules, backup, in the order that keeps a kill
  harmless;
- :mod:`.evaluation`: top-1/top-k/per-class accuracy, :func:`evaluate` of a finished run;
- :mod:`.multiworker`: tf.distribute strategies and the Keras-internal patches they need, alone;
- :mod:`.cli`: the ``train`` command (``train.py`` and ``python -m kerascnn train``).
"""

from .cli import add_arguments, list_text, run
from .compiling import add_weight_decay, cpu_has_bfloat16, mixed_policy
from .evaluation import evaluate, evaluate_model
from .lifecycle import SAMPLE_EPOCHS, SAMPLE_MAX_SIZE, TrainConfig, default_run_dir, train
from .multiworker import STRATEGIES

__all__ = ["TrainConfig", "train", "evaluate", "evaluate_model", "add_arguments", "run",
           "list_text", "default_run_dir", "add_weight_decay", "mixed_policy", "cpu_has_bfloat16",
           "SAMPLE_EPOCHS", "SAMPLE_MAX_SIZE", "STRATEGIES"]
