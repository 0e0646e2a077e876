"""kerascnn: the classic convolutional networks of the lecture, exact to the papers.

>>> import kerascnn
>>> kerascnn.list_models("resnet*")[:3]
['resnet18', 'resnet20', 'resnet32']
>>> model = kerascnn.get_model("lenet5", num_classes=10)
"""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out

from .arithmetic import SizeError, output_size  # noqa: E402
from .registry import (ModelInfo, UnknownModelError, get_model, list_models,  # noqa: E402
                       model_info)

__version__ = "0.1.0"
__all__ = ["get_model", "list_models", "model_info", "ModelInfo", "SizeError",
           "UnknownModelError", "output_size", "__version__"]
