from __future__ import annotations

import pytest
import torch
import torchvision

from emotorch.training.models import count_parameters, create_model, list_models, model_options

NAMES = [m.name for m in list_models()]


def test_registry_has_the_seed_and_transfer_models():
    assert {"baseline", "emonet", "vgg16", "vgg19", "resnet50", "densenet121"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_forward_every_model(name):
    model = create_model(name, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 48, 48))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert count_parameters(model) > 0


def test_unknown_model_and_option_suggest_the_closest():
    with pytest.raises(ValueError, match="did you mean 'emonet'"):
        create_model("emonett")
    with pytest.raises(ValueError, match="did you mean 'width'"):
        create_model("emonet", widht=8)
    with pytest.raises(ValueError, match="from scratch"):
        create_model("baseline", pretrained="x.pt")


def test_transfer_input_size_option():
    assert model_options("vgg19")["input_size"] == 48
    model = create_model("resnet50", input_size=64).eval()
    seen = []
    model.backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    model(torch.randn(1, 1, 48, 48))
    assert seen == [torch.Size([1, 3, 64, 64])]


def test_pretrained_weights_come_from_a_local_file(tmp_path):
    reference = torchvision.models.densenet121(weights=None)
    path = tmp_path / "densenet121-imagenet.pth"
    torch.save(reference.state_dict(), path)
    model = create_model("densenet121", pretrained=path)
    torch.testing.assert_close(model.backbone[0].conv0.weight, reference.features.conv0.weight)
    torch.testing.assert_close(
        model.backbone[0].denseblock4.denselayer16.conv2.weight,
        reference.features.denseblock4.denselayer16.conv2.weight,
    )


def test_pretrained_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(create_model("baseline").state_dict(), path)
    with pytest.raises(ValueError, match="do not fit vgg16"):
        create_model("vgg16", pretrained=path)
    with pytest.raises(ValueError, match="does not exist"):
        create_model("vgg16", pretrained=tmp_path / "missing.pth")
