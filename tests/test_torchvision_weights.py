"""torchvision state dicts converted into our networks give torchvision's logits (issue 14).

Opt-in (``pytest -m torchvision``; ``pip install -e ".[torchvision]"``): for every network of
``kerascnn.weights.torchvision.SOURCES``, torchvision's model with random weights (batch norm
statistics and affine randomised too, so the folding is exercised), saved as a ``.pth``, read and
converted into ours; both see the same 224x224 real images, torchvision with its normalisation
(and googlenet's ``transform_input``), ours as raw uint8 with the entry's preprocessing inside.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import kerascnn
from kerascnn.weights import WeightsError
from kerascnn.weights import torchvision as tvw

pytestmark = pytest.mark.torchvision
torch = tv_models = None  # imported by the fixture below: a deselected file never loads torch


@pytest.fixture(scope="module", autouse=True)
def _torch():
    global torch, tv_models
    torch = pytest.importorskip("torch")
    tv_models = pytest.importorskip("torchvision.models")

SAMPLES = Path(kerascnn.__file__).parent / "samples" / "imagenette5" / "val"
#: our registry name -> torchvision's builder name
TORCHVISION_NAMES = {"alexnet_owt": "alexnet", "googlenet": "googlenet"}
TOLERANCE = 1e-4  # max |ours - theirs| relative to max |theirs|
ENTRIES = {entry.network: entry for entry in tvw.SOURCES}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """One validation image per class of the bundled sample, resized 128 -> 224 (uint8 NHWC)."""
    from PIL import Image
    files = [sorted(folder.iterdir())[0] for folder in sorted(SAMPLES.iterdir())]
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR))
                     for f in files])


def _torch_input(images: np.ndarray) -> "torch.Tensor":
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def _torch_model(network: str, images: np.ndarray, **kwargs):
    """torchvision's model with random weights and random batch norm affine; the running
    statistics are those of ``images`` (so the logits still depend on the image), then perturbed
    so that they are no batch's statistics and the epsilon and variance folding count."""
    torch.manual_seed(0)
    name = TORCHVISION_NAMES.get(network, network)
    if name == "googlenet":  # as torchvision builds it for its weights
        kwargs = {"transform_input": True, "aux_logits": False, "init_weights": True, **kwargs}
    model = getattr(tv_models, name)(weights=None, **kwargs)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in norms:
            c = module.num_features
            module.weight.copy_(0.5 + torch.rand(c, generator=generator))
            module.bias.copy_(0.2 * torch.randn(c, generator=generator))
            module.momentum = 1.0  # the next forward pass leaves exactly its batch statistics
        if norms:
            model.train()(_torch_input(images))
        for module in norms:
            c = module.num_features
            module.running_mean.add_(0.1 * module.running_var.sqrt() *
                                     torch.randn(c, generator=generator))
            module.running_var.mul_(0.5 + torch.rand(c, generator=generator))
            module.momentum = 0.1
            module.num_batches_tracked.fill_(7)
    return model.eval()


def _ours(entry, **options):
    return kerascnn.get_model(entry.network, num_classes=1000, preprocessing=entry.preprocessing,
                              classifier_activation="linear", **{**entry.options, **options})


def _relative_error(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.mark.parametrize("network", list(ENTRIES))
def test_converted_logits_match_torchvision(network, images, tmp_path):
    entry = ENTRIES[network]
    model = _torch_model(network, images)
    path = tmp_path / entry.file_name
    torch.save(model.state_dict(), path)
    with torch.no_grad():
        theirs = model(_torch_input(images)).numpy()
    del model
    tensors = tvw.read(path)
    ours_model = _ours(entry)
    tvw.convert(ours_model, tensors, entry)
    ours = ours_model.predict(images, verbose=0)
    error = _relative_error(ours, theirs)
    scale, spread = np.abs(theirs).max(), theirs.std(axis=0).max()
    print(f"{network}: max relative error {error:.2e} (logit scale {scale:.3g}, largest spread "
          f"over the images {spread / scale:.1%} of it)")
    assert spread > 0.01 * scale  # the logits depend on the image: a layout error would show
    assert error < TOLERANCE
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()


def test_googlenet_aux_heads_convert_with_the_adaptive_pool(images, tmp_path):
    # torchvision publishes the (untrained) aux heads; ours places them when aux_logits=True
    entry = ENTRIES["googlenet"]
    model = _torch_model("googlenet", images, aux_logits=True)
    seen = {}
    model.inception4a.register_forward_hook(lambda m, i, o: seen.__setitem__("4a", o))
    model.inception4d.register_forward_hook(lambda m, i, o: seen.__setitem__("4d", o))
    with torch.no_grad():
        main = model(_torch_input(images)).numpy()
        aux = [model.aux1(seen["4a"]).numpy(), model.aux2(seen["4d"]).numpy()]
    path = tmp_path / "googlenet.pth"
    torch.save(model.state_dict(), path)
    ours = _ours(entry, aux_logits=True)
    tvw.convert(ours, tvw.read(path), entry)
    outputs = ours.predict(images, verbose=0)
    for got, want in zip(outputs, [main, *aux]):
        assert _relative_error(got, want) < TOLERANCE


def test_read_names_a_broken_file(tmp_path):
    bad = tmp_path / "resnet18-f37072fd.pth"
    bad.write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="not a readable torchvision state dict"):
        tvw.read(bad)
    with pytest.raises(WeightsError, match="does not exist"):
        tvw.read(tmp_path / "missing.pth")
