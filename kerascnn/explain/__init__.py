"""What a network looks at: occlusion, Grad-CAM and the image patches that excite a feature map.

* :func:`occlusion`: Zeiler & Fergus (2013), section 4.2 and Fig. 7. A grey square slides over the
  image; the map is the drop in the class's probability with the square over each pixel.
* :func:`grad_cam`: Selvaraju et al. (2017), "Grad-CAM: Visual Explanations from Deep Networks via
  Gradient-based Localization", ICCV, eq. 1-2: the feature maps of a convolutional layer weighted
  by the spatial mean of the class score's gradient, rectified.
* :func:`top_patches`: Zeiler & Fergus (2013), Fig. 2: for each feature map of a layer, the image
  patches of a dataset that excite it most, cut out by the layer's receptive field
  (:func:`kerascnn.receptive_fields.receptive_fields`).

The models are the zoo's: uint8 images ``[N, H, W, C]`` in (the scaling is inside the model, see
:func:`kerascnn.layers.image_input`), probabilities out of the float32 softmax layer
``predictions``; float-input models work as well. The model computations use ``keras.ops`` only,
so everything runs on the TensorFlow, JAX and PyTorch backends; the one backend-specific piece is
the gradient (:func:`gradient`), since ``keras.ops`` has no gradient op. NumPy does the
bookkeeping. Maps are float32 NumPy arrays ``[N, H, W]`` on the input's pixel grid.
"""

from .maps import (default_cam_layer, field_interpolation, grad_cam, gradient,  # noqa: F401
                   occlusion, predict_proba)
from .patches import TopPatches, top_patches  # noqa: F401

__all__ = ["occlusion", "grad_cam", "top_patches", "TopPatches", "gradient", "predict_proba",
           "default_cam_layer", "field_interpolation"]
