"""Transfer learning in train.py (issue 14, item 4): the shipped resnet20:cifar10 onto real photos
(the bundled Imagenette sample at 32x32) for 1+1 epochs, lenet5:mnist onto real MNIST digits for
a kill in each phase and the resumes, and the errors a user can fix."""

import json
import shutil

import numpy as np
import pytest

from conftest import ROOT, mnist_subset, train_main

keras = pytest.importorskip("keras")
import kerascnn  # noqa: E402
from kerascnn import registry, training  # noqa: E402
from kerascnn.errors import UserError  # noqa: E402
from kerascnn.runs import RunDir  # noqa: E402
from kerascnn.training import transfer  # noqa: E402
from kerascnn.weights import WeightsError, manifest  # noqa: E402

SAMPLE = ROOT / "kerascnn" / "samples" / "imagenette5"
BASE_CONVS = ("conv1_conv", "conv2_block1_1_conv", "conv4_block3_2_conv")
BASE_BNS = ("conv1_bn", "conv3_block2_2_bn", "conv4_block3_2_bn")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """20 train and 4 validation photos per class of the bundled sample (5 classes)."""
    root = tmp_path_factory.mktemp("photos")
    for split, count in (("train", 20), ("val", 4)):
        for folder in sorted((SAMPLE / split).iterdir()):
            (root / split / folder.name).mkdir(parents=True)
            for image in sorted(folder.glob("*.jpg"))[:count]:
                shutil.copy(image, root / split / folder.name / image.name)
    return root


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The first 600 real MNIST digits of classes 0-4 as IDX files (10% held out)."""
    return mnist_subset(tmp_path_factory.mktemp("digits"), 600, classes=range(5))


def source_weights(name, tag):
    model = kerascnn.get_model(name, weights=tag)
    return {layer.name: [np.array(w) for w in layer.get_weights()] for layer in model.layers}


class Snapshot(keras.callbacks.Callback):
    """The model's weights at the end of each epoch, by layer name."""

    def __init__(self):
        super().__init__()
        self.epochs = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[epoch] = {layer.name: [np.array(w) for w in layer.get_weights()]
                              for layer in self.model.layers}


@pytest.fixture(scope="module")
def resnet_run(photos, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "resnet20-transfer"
    snapshot = Snapshot()
    metrics = training.train(training.TrainConfig(
        arch=None, weights="resnet20:cifar10", dataset=f"folder:{photos}", batch_size=25,
        freeze_epochs=1, fine_tune_epochs=1, run_dir=str(run_dir), verbose=0),
        callbacks=[snapshot])
    return run_dir, metrics, snapshot.epochs


def test_freeze_phase_trains_only_the_new_head(resnet_run):
    _, _, epochs = resnet_run
    source, frozen = source_weights("resnet20", "cifar10"), epochs[0]
    for name in BASE_CONVS:  # the base's weights, exactly the shipped ones
        np.testing.assert_array_equal(frozen[name][0], source[name][0])
    for name in BASE_BNS:  # gamma, beta and the moving statistics: BN in inference mode
        for kept, shipped in zip(frozen[name], source[name]):
            np.testing.assert_array_equal(kept, shipped)
    assert frozen["fc"][0].shape == (64, 5) and source["fc"][0].shape == (64, 10)
    assert np.abs(frozen["fc"][0]).sum() > 0


def test_fine_tune_phase_changes_the_base_but_not_frozen_batch_norm(resnet_run):
    run_dir, _, epochs = resnet_run
    source = source_weights("resnet20", "cifar10")
    model = registry.load_model(run_dir / "model.keras")
    for name in BASE_CONVS:
        tuned = model.get_layer(name).get_weights()[0]
        assert not np.array_equal(tuned, source[name][0]), name
        assert not np.array_equal(tuned, epochs[0][name][0]), name  # moved in epoch 2
    for name in BASE_BNS:  # --fine-tune-bn frozen (the default) keeps them
        for kept, shipped in zip(model.get_layer(name).get_weights(), source[name]):
            np.testing.assert_array_equal(kept, shipped)
    # the run as the source of another: its frozen batch norm is saved so, the rebuild unfreezes
    assert not model.get_layer("conv1_bn").trainable
    rebuilt = transfer.plan(training.TrainConfig(arch=None, weights=str(run_dir))).build(
        3, (32, 32, 3))
    assert all(layer.trainable for layer in rebuilt.layers)
    np.testing.assert_array_equal(rebuilt.get_layer("conv1_conv").get_weights()[0],
                                  model.get_layer("conv1_conv").get_weights()[0])


def test_transfer_run_records_its_source_and_phases(resnet_run):
    run_dir, metrics, _ = resnet_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["arch"] == "resnet20" and config["num_classes"] == 5
    assert config["input_shape"] == [32, 32, 3]  # the weights' resolution
    assert config["preprocessing"] == manifest("resnet20", "cifar10")["preprocessing"]
    assert config["weights"] == {"spec": "resnet20:cifar10", "kind": "weights",
                                 "arch": "resnet20", "path": None, "input_shape": [32, 32, 3],
                                 "classifier": "fc"}
    freeze, tune = config["phases"]
    assert (freeze["name"], freeze["first_epoch"], freeze["epochs"]) == ("freeze", 0, 1)
    assert (tune["name"], tune["first_epoch"], tune["epochs"]) == ("fine_tune", 1, 1)
    assert freeze["lr"] == pytest.approx(0.1) and tune["lr"] == pytest.approx(0.01)
    assert tune["unfreeze"] == "all" and tune["batch_norm"] == "frozen"
    assert config["epochs"] == 2 and metrics["epochs"] == 2
    rows = RunDir(run_dir).read_history()
    assert [(int(r["epoch"]), float(r["phase"])) for r in rows] == [(0, 1), (1, 2)]

    model = registry.load_model(run_dir / "model.keras")  # what export and serving read
    assert model.input.dtype == "uint8" and model.layers[-1].name == "predictions"
    _, batches, _ = RunDir(run_dir).validation_data(batch_size=20)  # the run's transform
    x, y = next(iter(batches))
    probs = keras.ops.convert_to_numpy(model(x))
    assert x.dtype == "uint8" and probs.shape == (20, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)


class Kill(Exception):
    pass


class KillAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch, begun):
        super().__init__()
        self.epoch, self.begun = epoch, begun

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Kill(epoch)
        self.begun.append(epoch)


def test_kills_at_the_phase_boundary_and_mid_fine_tune_resume(digits, tmp_path):
    run_dir = tmp_path / "lenet"
    cfg = training.TrainConfig(arch=None, weights="lenet5:mnist", dataset=f"idx:{digits}",
                               batch_size=60, freeze_epochs=1, fine_tune_epochs=2,
                               fine_tune_lr=0.003, run_dir=str(run_dir), verbose=0)
    sessions = [[], [], []]
    with pytest.raises(Kill):  # the freeze phase ends, the fine-tune phase never starts
        training.train(cfg, callbacks=[KillAtEpoch(1, sessions[0])])
    frozen = registry.load_model(run_dir / "checkpoints" / "last.keras").get_weights()
    changed = training.TrainConfig(**{**vars(cfg), "fine_tune_epochs": 3})
    with pytest.raises(UserError, match="interrupted run with a different phases"):
        training.train(changed)
    started = []

    class Start(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            started.append([np.array(w) for w in self.model.get_weights()])

    with pytest.raises(Kill):  # the first fine-tune epoch ends, the second never starts
        training.train(cfg, callbacks=[KillAtEpoch(2, sessions[1]), Start()])
    for restored, saved in zip(started[0], frozen):  # fine-tuning starts from epoch 1's weights
        np.testing.assert_array_equal(restored, saved)
    metrics = training.train(cfg, callbacks=[KillAtEpoch(-1, sessions[2])])
    assert sessions == [[0], [1], [2]]  # no epoch trained twice
    assert metrics["resumed_from_epoch"] == 2 and metrics["epochs"] == 3
    rows = RunDir(run_dir).read_history()
    assert [(int(r["epoch"]), float(r["phase"])) for r in rows] == [(0, 1), (1, 2), (2, 2)]
    assert float(rows[1]["learning_rate"]) == pytest.approx(0.003)
    assert not (run_dir / "checkpoints" / "backup").exists()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["num_classes"] == 5 and config["input_shape"] == [32, 32, 1]
    assert [p["name"] for p in config["phases"]] == ["freeze", "fine_tune"]

    # the finished run, and its model.keras, are sources in turn (arch and preprocessing read
    # from its config.json)
    tuned = registry.load_model(run_dir / "model.keras")
    for spec, kind in ((run_dir, "run"), (run_dir / "model.keras", "keras")):
        plan = transfer.plan(training.TrainConfig(arch=None, weights=str(spec)))
        assert (plan.source.kind, plan.source.arch, plan.source.classifier) == \
            (kind, "lenet5", "output")
        assert plan.source.preprocessing == config["preprocessing"]
        model = plan.build(3, (32, 32, 1))
        assert model.get_layer("output").get_weights()[0].shape == (84, 3)
        np.testing.assert_array_equal(model.get_layer("f6").get_weights()[0],
                                      tuned.get_layer("f6").get_weights()[0])


# ---------------------------------------------------------------------------------------------
# errors: one line, exit code 2


def train_errors(argv, capsys):
    """train.py's exit code and stderr for ``argv``."""
    rc, _, err = train_main(argv, capsys)
    return rc, err


@pytest.mark.parametrize("argv, message", [
    (["--arch", "resnet20", "--freeze-epochs", "2"], "--freeze-epochs needs --weights"),
    (["--weights", "resnet20:cifar10", "--freeze-epochs", "-1"],
     "--freeze-epochs must be 0 or more"),
    (["--weights", "resnet20:cifar10", "--freeze-epochs", "0"], "trains nothing"),
    (["--weights", "resnet20:cifar10", "--epochs", "3"], "--epochs does not apply with --weights"),
    (["--weights", "resnet20:cifar10", "--fine-tune-lr", "0.01"],
     "--fine-tune-lr needs --fine-tune-epochs"),
    (["--weights", "resnet20:cifar10", "--arch", "resnet32"],
     "--arch resnet32 does not match --weights resnet20:cifar10, which is a resnet20"),
    (["--weights", "resnet20:cifar10", "--fine-tune-epochs", "1", "--unfreeze", "conv9"],
     "from: conv1, conv2, conv3, conv4"),
    (["--weights", "resnet20"], "which train.py --weights does not take"),
    (["--weights", "imagenet"], "--weights imagenet needs --arch"),
])
def test_transfer_flags_that_make_no_sense(argv, message, tmp_path, capsys):
    rc, err = train_errors([*argv, "--run-dir", tmp_path / "run"], capsys)
    assert rc == 2 and message in err and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_sources_the_data_cannot_feed(photos, digits, tmp_path, capsys):
    rc, err = train_errors(["--weights", "lenet5:mnist", "--dataset", f"folder:{photos}",
                          "--run-dir", tmp_path / "a"], capsys)
    assert rc == 2 and "takes 1-channel images but the dataset has 3-channel ones" in err
    rc, err = train_errors(["--weights", "lenet5:mnist", "--dataset", f"idx:{digits}",
                          "--image-size", "36", "--run-dir", tmp_path / "b"], capsys)
    assert rc == 2 and "layer f6 needs weights of shape" in err and "--image-size 32" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_imagenet_weights_come_from_get_model(monkeypatch, tmp_path, capsys):
    calls = []

    def offline(name, *args, weights=None, **kwargs):
        calls.append((name, weights))
        raise WeightsError("resnet50.weights.h5 is not in ~/.keras/kerascnn and this machine "
                           "is offline; download it there")
    monkeypatch.setattr(registry, "get_model", offline)
    rc, err = train_errors(["--weights", "imagenet", "--arch", "resnet50", "--run-dir",
                          tmp_path / "run"], capsys)
    assert rc == 2 and "is offline" in err and calls == [("resnet50", "imagenet")]

    cifar = kerascnn.get_model("resnet20", weights="cifar10")  # stands in for ImageNet weights
    monkeypatch.setattr(registry, "get_model", lambda name, **kw: cifar)
    cfg = training.TrainConfig(arch="resnet20", weights="imagenet", fine_tune_epochs=2,
                               unfreeze="conv4")
    plan = transfer.plan(cfg)
    assert (plan.source.kind, plan.source.arch, plan.source.classifier) == \
        ("imagenet", "resnet20", "fc")
    preprocessing = manifest("resnet20", "cifar10")["preprocessing"]  # read from its layers
    assert plan.source.preprocessing["mean"] == pytest.approx(preprocessing["mean"])
    assert plan.source.preprocessing["std"] == pytest.approx(preprocessing["std"])
    assert [p["epochs"] for p in plan.phases] == [transfer.DEFAULT_FREEZE_EPOCHS, 2]
    assert plan.phases[1]["unfreeze"] == ["conv4"]
    model = plan.build(7, (40, 40, 3))  # global pooling: another size works
    assert model.output.shape == (None, 7)
    assert plan.set_phase(model, plan.phases[1]) == 1 + sum(
        1 for layer in model.layers if layer.name.startswith("conv4") and layer.weights
        and not isinstance(layer, keras.layers.BatchNormalization))


def test_help_shows_the_transfer_flags(capsys):
    with pytest.raises(SystemExit):
        train_main(["--help"], capsys)
    out = capsys.readouterr().out
    for flag in ("--weights SOURCE", "--freeze-epochs N", "--fine-tune-epochs M",
                 "--fine-tune-lr LR", "--unfreeze", "--fine-tune-bn",
                 "--weights resnet20:cifar10"):
        assert flag in out, flag
