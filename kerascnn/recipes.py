"""The papers' training recipes: each network's defaults for ``train.py``.

A :class:`Recipe` is data: optimizer, learning rate and its schedule, weight decay, batch size,
epochs, dropout and auxiliary-loss weights, each with the paper it comes from. Every value can be
overridden (``recipe.replace(lr=0.05)``) and the run records the recipe it actually used.

**Weight decay** is applied as the papers' SGD did: an L2 penalty on the convolution and dense
*kernels* added to the loss (``wd/2 * ||w||^2``, whose gradient is the ``wd * w`` term of the
papers' update rule, e.g. AlexNet section 5), never on biases or batch-norm parameters (Caffe's
``decay_mult: 0``). Keras' optimizer ``weight_decay`` is the decoupled form (Loshchilov & Hutter
2019), which differs from the papers' rule once momentum or Adam is involved, so it is not used.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

__all__ = ["Recipe", "RECIPES", "BUDGET_RECIPES", "VARIANTS", "recipe_for", "learning_rate_at",
           "SCHEDULES", "OPTIMIZERS"]

OPTIMIZERS = ("sgd", "adam")

#: schedule name -> what it does (``schedule_args`` holds its numbers).
SCHEDULES = {
    "constant": "the initial learning rate throughout",
    "plateau": "divide by `factor` when the validation accuracy stops improving for `patience` "
               "epochs (ReduceLROnPlateau)",
    "steps": "divide by 10 at the given `fractions` of training (CIFAR ResNets: 50% and 75%)",
    "exponential": "multiply by `rate` every `every` epochs (GoogLeNet: 0.96 every 8)",
    "ladder": "multiply by `factors[i]` from epoch `epochs[i]` on (LeNet-5's decreasing schedule)",
    "cosine": "every step: linear warm-up over `warmup_epochs`, then cosine decay to zero "
              "(keras.optimizers.schedules.CosineDecay)",
}

#: ``--recipe`` choices: the paper's (the default, exact) and the budget alternative.
VARIANTS = {
    "paper": "the paper's recipe, exact (the default)",
    "budget": "the paper's network trained in far fewer epochs with what later work found "
              "(cosine decay to zero after a warm-up, Nesterov momentum, label smoothing); "
              "only where a budget recipe is written down (CIFAR ResNets)",
}


@dataclass(frozen=True)
class Recipe:
    """How a network was trained in its paper (values the paper leaves open say where they come
    from in ``notes``). ``lr`` is for ``batch_size`` unless ``lr_batch`` is set, in which case the
    learning rate is ``lr * batch_size / lr_batch`` (the linear scaling rule, ResNet family)."""

    name: str
    paper: str
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 90
    schedule: str = "plateau"
    schedule_args: dict = field(default_factory=dict)
    warmup_epochs: int = 0
    warmup_lr: float | None = None
    lr_batch: int | None = None
    dropout: float | None = None
    aux_loss_weight: float | None = None
    model_options: dict = field(default_factory=dict)
    augment: str = "auto"
    preprocessing: dict | None = None
    notes: str = ""
    variant: str = "paper"

    def replace(self, **changes) -> "Recipe":
        """A copy with ``changes`` applied (``None`` values are ignored); validates the result."""
        changes = {k: v for k, v in changes.items() if v is not None}
        recipe = dataclasses.replace(self, **changes)
        recipe.validate()
        return recipe

    def validate(self) -> None:
        from .errors import UserError
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {self.optimizer!r}; use one of "
                            f"{', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule {self.schedule!r}; use one of "
                            f"{', '.join(SCHEDULES)}")
        for key in ("lr", "batch_size", "epochs"):
            value = getattr(self, key)
            if isinstance(value, bool) or not value > 0:
                raise UserError(f"--{key.replace('_', '-')} must be positive, got {value!r}")
        if not self.weight_decay >= 0:
            raise UserError(f"--weight-decay must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"label smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if not 0 <= self.momentum < 1:
            raise UserError(f"momentum must be in [0, 1), got {self.momentum!r}")

    def effective_lr(self) -> float:
        """The initial learning rate after the batch-size scaling rule."""
        return self.lr * self.batch_size / self.lr_batch if self.lr_batch else self.lr

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["effective_lr"] = self.effective_lr()
        d["weight_decay_mode"] = "l2_loss_on_kernels"
        return d


def learning_rate_at(recipe: Recipe, epoch: int, epochs: int | None = None) -> float:
    """The scheduled learning rate of ``epoch`` (0-based) for the per-epoch schedules.

    ``plateau`` is driven by validation results, not by the epoch: this returns its initial value.
    """
    epochs = epochs or recipe.epochs
    base = recipe.effective_lr()
    if recipe.schedule == "cosine":  # the per-step schedule, read at the epoch's start
        if epoch < recipe.warmup_epochs:
            return base * epoch / recipe.warmup_epochs
        span = max(1, epochs - recipe.warmup_epochs)
        return base * 0.5 * (1 + math.cos(math.pi * (epoch - recipe.warmup_epochs) / span))
    if epoch < recipe.warmup_epochs:
        return recipe.warmup_lr if recipe.warmup_lr is not None else base
    args = recipe.schedule_args
    if recipe.schedule == "steps":
        drops = sum(epoch >= math.floor(f * epochs) for f in args.get("fractions", (0.5, 0.75)))
        return base * args.get("factor", 0.1) ** drops
    if recipe.schedule == "exponential":
        return base * args.get("rate", 0.96) ** (epoch // args.get("every", 8))
    if recipe.schedule == "ladder":
        factor = 1.0
        for start, f in zip(args["epochs"], args["factors"]):
            if epoch >= start:
                factor = f
        return base * factor
    return base


_ALEXNET = ("Krizhevsky, Sutskever & Hinton 2012, section 5: SGD, batch 128, momentum 0.9, "
            "weight decay 0.0005, lr 0.01 divided by 10 when the validation error stopped "
            "improving (three times in ~90 epochs), dropout 0.5 in fc6/fc7")

#: One recipe per family; ``recipe_for`` picks it by the network's registry family.
RECIPES = {
    "lenet": Recipe(
        name="lenet5", paper="LeCun et al. 1998, section II-B and Appendix C", lr=0.01,
        momentum=0.9, batch_size=32, epochs=20, schedule="ladder",
        schedule_args={"epochs": [2, 5, 8, 12], "factors": [0.4, 0.2, 0.1, 0.02]},
        augment="none",
        notes="The paper trains 20 passes with stochastic diagonal Levenberg-Marquardt and a "
              "global rate of 0.0005 for 2 passes, 0.0002 for 3, 0.0001 for 3, 0.00005 for 4, then "
              "0.00001; this keeps its 20 passes and the shape of that ladder (1, 0.4, 0.2, 0.1, "
              "0.02) on SGD with momentum 0.9 and mini-batches of 32. No distortions (0.95% test "
              "error)."),
    "alexnet": Recipe(
        name="alexnet", paper=_ALEXNET, lr=0.01, weight_decay=5e-4, batch_size=128, epochs=90,
        schedule="plateau", schedule_args={"factor": 0.1, "patience": 5}, dropout=0.5,
        notes="Plateau patience (5 epochs) is ours: the paper divided the rate by hand."),
    "zfnet": Recipe(
        name="zfnet", paper="Zeiler & Fergus 2013, section 3: SGD, batch 128, lr 0.01 annealed by "
        "hand, momentum 0.9, 70 epochs, dropout 0.5 in layers 6 and 7", lr=0.01,
        weight_decay=5e-4, batch_size=128, epochs=70, schedule="plateau",
        schedule_args={"factor": 0.1, "patience": 5}, dropout=0.5,
        notes="Weight decay 5e-4 as AlexNet, whose setup ZFNet follows; patience 5 is ours."),
    "vgg": Recipe(
        name="vgg", paper="Simonyan & Zisserman 2014, section 3.1: mini-batch SGD, batch 256, "
        "momentum 0.9, weight decay 5e-4, dropout 0.5 on fc1/fc2, lr 0.01 divided by 10 when the "
        "validation accuracy stopped improving (3 times, 74 epochs)", lr=0.01, weight_decay=5e-4,
        batch_size=256, epochs=74, schedule="plateau",
        schedule_args={"factor": 0.1, "patience": 5}, dropout=0.5,
        notes="Plateau patience (5 epochs) is ours. The paper initialised the deeper nets from "
              "net A; training here starts from scratch (Glorot init, as the paper's note says "
              "works)."),
    "googlenet": Recipe(
        name="googlenet", paper="Szegedy et al. 2014, section 6: asynchronous SGD with momentum "
        "0.9, learning rate decreased by 4% every 8 epochs; section 5: auxiliary losses weighted "
        "0.3, dropout 0.4 (0.7 in the auxiliary heads)", lr=0.01, weight_decay=2e-4, batch_size=32,
        epochs=60, schedule="exponential", schedule_args={"rate": 0.96, "every": 8},
        dropout=0.4, aux_loss_weight=0.3, model_options={"aux_logits": True},
        notes="The paper gives no initial rate, weight decay, batch or length: lr 0.01, weight "
              "decay 2e-4, batch 32 and ~60 epochs are Caffe's bvlc_googlenet quick_solver (the "
              "reference reproduction)."),
    "resnet": Recipe(
        name="resnet", paper="He et al. 2015, section 3.4: SGD, batch 256, lr 0.1 divided by 10 "
        "when the error plateaus, up to 60e4 iterations, weight decay 1e-4, momentum 0.9, no "
        "dropout, BN after every convolution, He initialisation", lr=0.1, lr_batch=256,
        weight_decay=1e-4, batch_size=256, epochs=120, schedule="plateau",
        schedule_args={"factor": 0.1, "patience": 5},
        notes="lr = 0.1 x batch/256 (the linear scaling rule, Goyal et al. 2017) so other batch "
              "sizes keep the paper's per-image rate; 60e4 iterations of 256 ~ 120 epochs; plateau "
              "patience 5 is ours. BN and He init are built into the network."),
    "resnet_cifar": Recipe(
        name="resnet_cifar", paper="He et al. 2015, section 4.2: SGD, batch 128, lr 0.1 divided by "
        "10 at 32k and 48k iterations, stop at 64k, weight decay 1e-4, momentum 0.9, 4-pixel pad "
        "+ 32x32 random crop + horizontal flip", lr=0.1, weight_decay=1e-4, batch_size=128,
        epochs=182, schedule="steps", schedule_args={"fractions": [0.5, 0.75], "factor": 0.1},
        augment="pad_crop_flip",
        notes="64k iterations of 128 on a 45k/5k split ~ 182 epochs; the drops at 32k/48k are 50% "
              "and 75% of training."),
}

#: Budget recipes: the paper's network, far fewer epochs. Each choice and its source:
#:
#: * cosine decay of the rate to zero, per step (Loshchilov & Hutter 2017, SGDR; the schedule of
#:   chenyaofo/pytorch-cifar-models' ResNet-20, 92.56% in 200 epochs): the rate keeps falling to the
#:   last step, so a short run still ends annealed, which step drops at 50%/75% do not give;
#: * a linear warm-up from 0 over the first epoch (Goyal et al. 2017, section 2.2): the large
#:   initial rate does not blow up the freshly initialised batch norms;
#: * Nesterov momentum 0.9 (Sutskever et al. 2013), as chenyaofo's recipe;
#: * label smoothing 0.1 (Szegedy et al. 2016, section 7; Mueller et al. 2019): a calibrated,
#:   regularised target that helps most when training is short;
#: * weight decay 5e-4 (chenyaofo's recipe; 1e-4 in the paper): with few epochs the stronger L2
#:   keeps the effective learning rate of the BN-scaled kernels high (van Laarhoven 2017).
#:
#: The network, batch, augmentation and initial rate stay the paper's.
BUDGET_RECIPES = {
    "resnet_cifar": dataclasses.replace(
        RECIPES["resnet_cifar"], variant="budget", epochs=30, schedule="cosine", schedule_args={},
        warmup_epochs=1, nesterov=True, label_smoothing=0.1, weight_decay=5e-4,
        paper=RECIPES["resnet_cifar"].paper + "; budget variant (see kerascnn.recipes)",
        notes="Budget recipe: cosine to zero per step after 1 warm-up epoch, Nesterov, label "
              "smoothing 0.1, weight decay 5e-4 (sources in kerascnn/recipes.py); 30 epochs by "
              "default."),
}

#: ResNet-110 (and 1202): "we use 0.01 to warm up the training until the training error is below
#: 80% (about 400 iterations), and then go back to 0.1" (He et al. 2015, section 4.2).
_WARMUP = {"resnet110", "resnet1202"}


def recipe_for(name: str, variant: str = "paper") -> Recipe:
    """The recipe of the registered network ``name`` (chosen by its family); ``variant="budget"``
    picks the family's budget recipe where one is written down."""
    from .errors import UserError
    from .models.lenet import PAPER_PREPROCESSING
    from .registry import model_info
    info = model_info(name)
    if variant not in VARIANTS:
        raise UserError(f"unknown --recipe {variant!r}; use one of {', '.join(VARIANTS)}")
    if variant == "budget":
        if info.family not in BUDGET_RECIPES:
            raise UserError(f"no budget recipe for {info.name} (family {info.family}); budget "
                            f"recipes exist for: {', '.join(BUDGET_RECIPES)} networks; use "
                            f"--recipe paper")
        return dataclasses.replace(BUDGET_RECIPES[info.family], name=info.name)
    recipe = RECIPES[info.family]
    if info.name in _WARMUP:
        recipe = dataclasses.replace(recipe, warmup_epochs=1, warmup_lr=0.01)
    if info.name == "lenet5_1998":
        recipe = dataclasses.replace(recipe, preprocessing=PAPER_PREPROCESSING,
                                     notes=recipe.notes + " Inputs scaled as the paper's "
                                     "section II-B (background -0.1, ink 1.175).")
    return dataclasses.replace(recipe, name=info.name)
