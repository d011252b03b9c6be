"""Datasets and models: shapes, normalisation, clear errors; every registered model smoke-tested."""

from __future__ import annotations

import math

import pytest
import torch

from fedcl.data import ImageData, list_datasets, load_dataset
from fedcl.errors import ConfigError, DataError
from fedcl.models import create_model, list_models


def test_digits_split_is_fixed_and_stratified(digits: ImageData) -> None:
    assert digits.image_shape == (1, 8, 8)
    assert digits.train_images.shape[0] + digits.test_images.shape[0] == 1797
    counts = digits.class_counts()
    assert len(counts) == 10 and min(counts) >= 130
    # normalised with the training mean/std
    assert abs(float(digits.train_images.mean())) < 1e-4
    assert abs(float(digits.train_images.std()) - 1) < 1e-2
    again = load_dataset("digits")
    assert torch.equal(again.test_labels, digits.test_labels)
    assert torch.allclose(digits.denormalize(digits.train_images).max(), torch.tensor(1.0))


def test_mnist_from_shared_data(mnist: ImageData) -> None:
    assert mnist.image_shape == (1, 28, 28)
    assert mnist.train_images.shape[0] == 6000 and mnist.test_images.shape[0] == 10000
    assert mnist.num_classes == 10


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="valid: .*digits.*mnist"):
        load_dataset("imagenet-1m")


@pytest.mark.parametrize("name", [n for n in list_datasets() if n != "digits"])
def test_missing_root_names_expected_files(name: str, tmp_path) -> None:
    with pytest.raises(DataError, match="expected .*data.root"):
        load_dataset(name, tmp_path)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_every_model_forward_and_embed(name: str, shape: tuple[int, int, int]) -> None:
    kwargs = {"width": 16} if name in ("convnet", "mlp", "resnet18") else {}
    net = create_model(name, shape, 7, **kwargs)
    x = torch.randn(3, *shape)
    assert net(x).shape == (3, 7)
    emb = net.embed(x)
    assert emb.ndim == 2 and emb.shape[0] == 3
    assert net.classifier(emb).shape == (3, 7)


def test_convnet_first_padding_builds_the_reference_network() -> None:
    # the DC/DSA/DM/MTT/IDC reference code pads grey 28 px inputs by 3 (32 px): 128 x 4 x 4 features
    ref = create_model("convnet", (1, 28, 28), 10, first_padding=3)
    assert ref.feature_dim == 2048 and ref.classifier.in_features == 2048
    assert ref(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert create_model("convnet", (1, 28, 28), 10).feature_dim == 1152  # the default keeps the size


def test_convnet_depth_follows_image_size() -> None:
    small = create_model("convnet", (1, 8, 8), 10)
    large = create_model("convnet", (1, 28, 28), 10)
    assert small.feature_dim == 128 * 2 * 2  # 2 blocks: 8 -> 4 -> 2
    assert large.feature_dim == 128 * 3 * 3  # 3 blocks: 28 -> 14 -> 7 -> 3


def test_unknown_model_and_norm() -> None:
    with pytest.raises(ConfigError, match="valid: .*convnet"):
        create_model("vgg99", (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="unknown norm"):
        create_model("convnet", (1, 8, 8), 10, norm="weird")


def test_predict_accuracy_and_class_accuracy_agree() -> None:
    from fedcl.train import accuracy, class_accuracy, predict

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.randn(50, 1, 2, 2)
    y = torch.tensor([0] * 20 + [1] * 30)  # class 2 has no examples
    pred = predict(net, x, batch_size=7)  # batches of 7 cover all 50 images once
    assert pred.shape == (50,) and pred.dtype == torch.long
    per = class_accuracy(pred, y, 3)
    assert per[0] == int((pred[:20] == 0).sum()) / 20 and per[1] == int((pred[20:] == 1).sum()) / 30
    assert math.isnan(per[2])
    assert accuracy(net, x, y) == pytest.approx((20 * per[0] + 30 * per[1]) / 50)
    assert net.training  # predict restores the mode it found


def test_predict_and_train_take_auto_and_move_the_model() -> None:
    """``device="auto"`` (the configs' default) resolves like everywhere else, and the model goes
    to the device the batches go to (the ServerApp evaluates a CPU-built model on ``device``)."""
    from fedcl.train import predict, train_model

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.randn(20, 1, 2, 2), torch.randint(0, 3, (20,))
    train_model(net, x, y, epochs=1, device="auto")
    assert predict(net, x, device="auto").shape == (20,)
    if torch.cuda.is_available():
        net.cpu()
        assert predict(net, x, device="cuda").device.type == "cpu"  # predictions come back to the CPU
        assert next(net.parameters()).device.type == "cuda"
