"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-Based Learning Applied to Document
Recognition", Proc. IEEE 86(11), section II-B and Fig. 2).

Two variants of one network, 32x32x1 -> C1 6@28x28 -> S2 6@14x14 -> C3 16@10x10 -> S4 16@5x5 ->
C5 120 -> F6 84 -> 10 outputs:

* ``variant="modern"`` (default): the textbook re-implementation, 61,706 parameters at 10 classes.
  C3 sees all six S2 maps, S2/S4 are plain average pools, tanh, and a softmax classifier.
* ``variant="1998"``: the paper's network, exactly 60,000 trainable parameters: C3's partial
  connection table (Table I), trainable subsampling (S2/S4), the scaled tanh of Appendix A and the
  Euclidean RBF output layer with fixed +1/-1 codes drawn as 7x12 bitmaps of the digits.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from ..layers import avg_pool, check_spatial, classifier, conv, image_input
from ..catalog import register

__all__ = ["lenet5", "scaled_tanh", "FanInUniform", "Subsampling", "PartialConv2D",
           "EuclideanRBF", "C3_TABLE", "DIGIT_BITMAPS", "PAPER_PREPROCESSING"]

PAPER = ('LeCun, Bottou, Bengio & Haffner (1998), "Gradient-Based Learning Applied to Document '
         'Recognition", Proc. IEEE 86(11):2278-2324')

#: The paper's input scaling (section II-B): background (white, 0) -> -0.1 and foreground
#: (255) -> 1.175, so the inputs have mean ~0 and variance ~1 on MNIST.
PAPER_PREPROCESSING = {"scale": 1.275 / 255, "offset": -0.1}

#: Table I: the S2 maps each C3 map is connected to. "Break the symmetry": six maps see 3
#: contiguous maps, six see 4 contiguous, three see 4 discontinuous and one sees all six.
C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)

#: The RBF centres: each digit drawn on a 7x12 bitmap ('#' = +1, '.' = -1), as in Fig. 3 of the
#: paper (which draws the printable ASCII set; these are its ten digits).
DIGIT_BITMAPS = """
..###.. ...#... .#####. .#####. ....##. ####### ..####. ####### .#####. .#####.
.#...#. ..##... #.....# #.....# ...#.#. #...... .#..... ......# #.....# #.....#
#.....# .#.#... ......# ......# ..#..#. #...... #...... ......# #.....# #.....#
#.....# ...#... ......# ......# .#...#. #...... #...... .....#. #.....# #.....#
#.....# ...#... .....#. ......# #....#. ######. ######. .....#. .#...#. #.....#
#.....# ...#... ....#.. ..####. #....#. ......# #.....# ....#.. ..###.. #.....#
#.....# ...#... ...#... ......# ####### ......# #.....# ....#.. .#...#. .######
#.....# ...#... ..#.... ......# .....#. ......# #.....# ...#... #.....# ......#
#.....# ...#... .#..... ......# .....#. ......# #.....# ...#... #.....# ......#
#.....# ...#... #...... ......# .....#. ......# #.....# ..#.... #.....# ......#
.#...#. ...#... #...... #.....# .....#. #.....# #.....# ..#.... #.....# .....#.
..###.. .#####. ####### .#####. .....#. .#####. .#####. ..#.... .#####. .####..
"""


def rbf_codes(num_classes: int, dim: int = 84) -> np.ndarray:
    """The fixed RBF centres, shape ``(dim, num_classes)``: the digit bitmaps for classes 0-9, then
    +1/-1 codes drawn at random with a fixed seed (the paper's suggested alternative)."""
    rows = [line.split() for line in DIGIT_BITMAPS.strip().splitlines()]
    digits = np.array([[c == "#" for row in rows for c in row[d]] for d in range(10)], "float32")
    codes = (2 * digits - 1).T[:dim, :num_classes]
    if num_classes > 10 or dim != 84:
        extra = np.random.RandomState(1998).choice([-1.0, 1.0], size=(dim, num_classes))
        extra[: codes.shape[0], : codes.shape[1]] = codes
        codes = extra.astype("float32")
    return codes


@keras.saving.register_keras_serializable(package="kerascnn")
def scaled_tanh(x):
    """The squashing function of Appendix A: ``f(a) = 1.7159 tanh(2a/3)``, so ``f(+-1) = +-1``."""
    return 1.7159 * ops.tanh(x * (2.0 / 3.0))


@keras.saving.register_keras_serializable(package="kerascnn")
class FanInUniform(keras.initializers.Initializer):
    """Section II-B: weights uniform in ``[-2.4/F, 2.4/F]`` with ``F`` the unit's fan-in, which
    keeps the weighted sums in the operating range of the sigmoid."""

    def __init__(self, scale: float = 2.4, fan_in: int | None = None, seed=None):
        self.scale, self.fan_in, self.seed = scale, fan_in, seed

    def __call__(self, shape, dtype=None):
        fan_in = self.fan_in or int(np.prod(shape[:-1]))
        limit = self.scale / fan_in
        return keras.random.uniform(shape, -limit, limit, dtype=dtype, seed=self.seed)

    def get_config(self):
        return {"scale": self.scale, "fan_in": self.fan_in, "seed": self.seed}


@keras.saving.register_keras_serializable(package="kerascnn")
class Subsampling(layers.Layer):
    """S2/S4 (section II-B): the sum of each non-overlapping ``pool x pool`` block times one
    trainable coefficient, plus one trainable bias, per map (2 parameters per map)."""

    def __init__(self, pool_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = pool_size

    def build(self, input_shape):
        maps = input_shape[-1]
        self.coefficient = self.add_weight(
            shape=(maps,), initializer=FanInUniform(fan_in=self.pool_size ** 2), name="coefficient")
        self.bias = self.add_weight(shape=(maps,), initializer="zeros", name="bias")

    def call(self, x):
        p = self.pool_size
        block_sum = ops.average_pool(x, p, strides=p, padding="valid") * (p * p)
        return block_sum * self.coefficient + self.bias

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        p = self.pool_size
        return n, None if h is None else h // p, None if w is None else w // p, c

    def lecture_arithmetic(self, input_shape, output_shape) -> dict:
        """The row ``kerascnn.inspect`` shows: an F x F / F pool with 1 coefficient + 1 bias a map."""
        maps = input_shape[-1]
        return dict(kernel=(self.pool_size,) * 2, strides=(self.pool_size,) * 2,
                    padding=((0, 0), (0, 0)), weights=maps, biases=maps)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


@keras.saving.register_keras_serializable(package="kerascnn")
class PartialConv2D(layers.Layer):
    """A valid convolution whose output map ``j`` sees only the input maps ``table[j]`` (C3,
    Table I).

    Only the table's connections have weights: one ``k x k`` filter per (input map, output map)
    pair, stored as a depthwise kernel over the gathered input maps and summed per output map, plus
    one bias per output map. For C3: (6x3 + 6x4 + 3x4 + 1x6) x 25 + 16 = 1,516 parameters.
    Initialised by the paper's rule with each output map's own fan-in (75, 100 or 150).
    """

    def __init__(self, table, kernel_size: int = 5, **kwargs):
        super().__init__(**kwargs)
        self.table = tuple(tuple(int(i) for i in row) for row in table)
        self.kernel_size = kernel_size

    def build(self, input_shape):
        k, maps = self.kernel_size, input_shape[-1]
        if maps is not None and max(max(row) for row in self.table) >= maps:
            raise ValueError(f"{self.name}: the connection table refers to input map "
                             f"{max(max(r) for r in self.table)} but the input has {maps} maps")
        self._sources = [i for row in self.table for i in row]
        # (connections, output maps) 0/1 matrix that sums each output map's filtered inputs
        summing = np.zeros((len(self._sources), len(self.table)), "float32")
        limits = np.zeros((len(self._sources), 1), "float32")
        start = 0
        for j, row in enumerate(self.table):
            summing[start:start + len(row), j] = 1.0
            limits[start:start + len(row)] = 2.4 / (k * k * len(row))
            start += len(row)
        self._summing = summing

        def paper_init(shape, dtype=None):
            return keras.random.uniform(shape, -1.0, 1.0, dtype=dtype) * limits

        self.kernel = self.add_weight(shape=(k, k, len(self._sources), 1), initializer=paper_init,
                                      name="kernel")
        self.bias = self.add_weight(shape=(len(self.table),), initializer="zeros", name="bias")

    def call(self, x):
        x = ops.take(x, self._sources, axis=-1)
        filtered = ops.depthwise_conv(x, self.kernel, strides=1, padding="valid")
        summing = ops.convert_to_tensor(self._summing, dtype=filtered.dtype)
        return ops.matmul(filtered, summing) + self.bias

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        k = self.kernel_size
        return (n, None if h is None else h - k + 1, None if w is None else w - k + 1,
                len(self.table))

    def lecture_arithmetic(self, input_shape, output_shape) -> dict:
        """The row ``kerascnn.inspect`` shows: F x F / 1 over the table's connections only."""
        k, connections = self.kernel_size, len(self._sources)
        h2, w2, maps = output_shape
        return dict(kernel=(k, k), strides=(1, 1), padding=((0, 0), (0, 0)), filters=maps,
                    weights=k * k * connections, biases=maps, macs=h2 * w2 * k * k * connections)

    def get_config(self):
        return {**super().get_config(), "table": [list(r) for r in self.table],
                "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="kerascnn")
class EuclideanRBF(layers.Layer):
    """The output layer (section II-B, eq. 7): ``y_i = sum_j (x_j - w_ij)^2``, the squared distance
    of F6's 84 units to class ``i``'s fixed centre (see :func:`rbf_codes`). Not trainable: the
    paper keeps the codes fixed. The smaller ``y_i`` the better the match."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        codes = rbf_codes(self.units, input_shape[-1])
        self.centres = self.add_weight(shape=codes.shape, initializer=lambda shape, dtype=None:
                                       ops.convert_to_tensor(codes, dtype=dtype),
                                       trainable=False, name="centres")

    def call(self, x):
        return ops.sum(ops.square(ops.expand_dims(x, -1) - self.centres), axis=1)

    def compute_output_shape(self, input_shape):
        return input_shape[0], self.units

    def lecture_arithmetic(self, input_shape, output_shape) -> dict:
        """The row ``kerascnn.inspect`` shows: no trainable weights (the centres are fixed) and one
        squared difference accumulated per (input, class) pair."""
        return dict(filters=self.units, macs=input_shape[-1] * self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


VARIANTS = ("modern", "1998")


def lenet5(num_classes: int = 10, input_shape=(32, 32, 1), preprocessing=None, name: str = "lenet5",
           *, variant: str = "modern", activation=None, classifier_activation="softmax"):
    """LeNet-5 (LeCun et al. 1998, Fig. 2).

    ``variant="modern"``: C1 6@5x5, S2 avg-pool 2x2, C3 16@5x5 (all S2 maps), S4 avg-pool, C5
    120@5x5, F6 Dense 84, output Dense: 61,706 parameters at 32x32x1 and 10 classes; Glorot init.

    ``variant="1998"``: the paper's network, 60,000 trainable parameters (C1 156, S2 12, C3 1,516,
    S4 32, C5 48,120, F6 10,164): trainable subsampling, C3's Table I connections, the squashing
    ``1.7159 tanh(2a/3)`` after every layer up to F6, the paper's fan-in uniform initialisation
    and the Euclidean RBF outputs ``y`` with fixed codes. Probabilities are ``softmax(-y)``: the
    paper's MAP criterion (eq. 9) is the cross-entropy of this softmax plus a constant "rubbish"
    class, so training with cross-entropy on it is close to the paper's. Without a classifier
    activation the model outputs ``-y`` (logits: larger is better). The paper's input scaling is
    ``preprocessing=PAPER_PREPROCESSING``.

    C5 is a 5x5 convolution, as in the paper: a larger input gives C5 maps larger than 1x1, which
    F6 sees flattened. ``activation`` overrides the squashing function (default "tanh" for the
    modern variant, :func:`scaled_tanh` for 1998).
    """
    if variant not in VARIANTS:
        raise ValueError(f"lenet5 variant must be one of {VARIANTS}, got {variant!r}")
    paper = variant == "1998"
    act = activation or (scaled_tanh if paper else "tanh")
    init = FanInUniform if paper else (lambda: "glorot_uniform")
    inputs, x = image_input(input_shape, preprocessing)

    x = conv(x, 6, 5, name="c1", activation=act, kernel_initializer=init())
    if paper:
        x = _subsampling(x, "s2", act)
        check_spatial(x, 5, 1, 0, layer="c3")
        x = PartialConv2D(C3_TABLE, 5, name="c3")(x)
        x = layers.Activation(act, name=f"c3_{_act_name(act)}")(x)
        x = _subsampling(x, "s4", act)
    else:
        x = avg_pool(x, 2, name="s2")
        x = conv(x, 16, 5, name="c3", activation=act)
        x = avg_pool(x, 2, name="s4")
    x = conv(x, 120, 5, name="c5", activation=act, kernel_initializer=init())
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(84, kernel_initializer=init(), name="f6")(x)
    x = layers.Activation(act, name=f"f6_{_act_name(act)}")(x)
    if paper:
        x = EuclideanRBF(num_classes, name="rbf")(x)
        x = layers.Rescaling(-1.0, name="output")(x)  # -y: the best class has the largest output
        outputs = layers.Activation(classifier_activation or "linear", dtype="float32",
                                    name="predictions")(x)
    else:
        outputs = classifier(x, num_classes, name="output", activation=classifier_activation)
    return keras.Model(inputs, outputs, name=name)


def _subsampling(x, name, act):
    check_spatial(x, 2, 2, 0, layer=name)
    x = Subsampling(2, name=name)(x)
    return layers.Activation(act, name=f"{name}_{_act_name(act)}")(x)


def _act_name(act):
    return act if isinstance(act, str) else getattr(act, "__name__", "act")


register("lenet5", lenet5, family="lenet", input_shape=(32, 32, 1), min_size=32, paper=PAPER,
         description="LeNet-5 as re-implemented today: full C3, average pooling, tanh, softmax "
                     "(61,706 parameters at 10 classes); variant='1998' builds the paper's")
register("lenet5_1998", lenet5, family="lenet", input_shape=(32, 32, 1), min_size=32, paper=PAPER,
         description="the paper's LeNet-5: C3 connection table, trainable subsampling, scaled "
                     "tanh, fixed RBF outputs (60,000 trainable parameters)", variant="1998")
