"""Pretrained backbones: torchvision's weights from the torch hub cache (never the network here),
local state dicts, and weights that do not fit refused with what to set instead."""

import socket
import urllib.error

import pytest
import torch
from torchvision.models import ResNet18_Weights, resnet18, resnet34

from detkit.models.backbone import backbone_settings, build_backbone, weights_cache_file


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache in tmp_path, and no network: a download attempt fails the way an
    offline machine does, and any socket connection is an error."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    downloads = []

    def no_download(url, dst, *args, **kwargs):
        downloads.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    def no_connect(*args, **kwargs):
        raise AssertionError("a test touched the network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(socket.socket, "connect", no_connect)
    return downloads


@pytest.fixture(scope="module")
def imagenet_like():
    """A random resnet18 state dict with torchvision's keys (BatchNorm statistics included)."""
    torch.manual_seed(0)
    net = resnet18(weights=None)
    with torch.no_grad():
        for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    return net.state_dict()


def test_imagenet_loads_from_the_torch_hub_cache(imagenet_like, offline):
    cache = weights_cache_file(ResNet18_Weights.IMAGENET1K_V1)
    assert cache.parent.parent.parent.name == "torch" and cache.name == "resnet18-f37072fd.pth"
    cache.parent.mkdir(parents=True)
    torch.save(imagenet_like, cache)
    for weights in ("imagenet", "ResNet18_Weights.IMAGENET1K_V1"):
        body = build_backbone("resnet18", weights=weights).body.body
        torch.testing.assert_close(body.layer3[0].conv1.weight,
                                   imagenet_like["layer3.0.conv1.weight"])
        # torchvision's detection recipe with pretrained weights: frozen BN, 3 trainable stages
        torch.testing.assert_close(body.bn1.running_var, imagenet_like["bn1.running_var"])
        assert type(body.bn1).__name__ == "FrozenBatchNorm2d"
        assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
        assert body.layer2[0].conv1.weight.requires_grad
    assert offline == []  # read from the cache, no download tried


def test_offline_and_not_cached_says_where_to_put_the_file(offline):
    cache = weights_cache_file(ResNet18_Weights.IMAGENET1K_V1)
    with pytest.raises(FileNotFoundError) as error:
        build_backbone("resnet18", weights="imagenet")
    message = str(error.value)
    assert f"put it at {cache}" in message and ResNet18_Weights.IMAGENET1K_V1.url in message
    assert "Temporary failure in name resolution" in message
    assert offline == [ResNet18_Weights.IMAGENET1K_V1.url]


def test_weights_names_that_do_not_fit_the_backbone():
    with pytest.raises(ValueError, match="are not resnet18 weights: set backbone='resnet50'"):
        build_backbone("resnet18", weights="ResNet50_Weights.IMAGENET1K_V2")
    with pytest.raises(ValueError, match="no such weights; resnet18 has "
                                         "ResNet18_Weights.IMAGENET1K_V1"):
        build_backbone("resnet18", weights="ResNet18_Weights.IMAGENET1K_V9")
    with pytest.raises(ValueError, match="neither an existing file, 'imagenet', nor"):
        build_backbone("resnet18", weights="resnet18.pth")  # no such file


def test_batchnorm_weights_into_groupnorm_are_refused(imagenet_like, tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(imagenet_like, path)
    with pytest.raises(ValueError, match=r"trained with BatchNorm .*bn1.running_mean.* set "
                                         r"norm='frozen_bn' \(--model.norm frozen_bn"):
        build_backbone("resnet18", norm="group", weights=str(path))


def test_weights_of_another_architecture_name_it(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=r"do not fit backbone 'resnet18': .*tensor\(s\) of the "
                                         r"file are not in the model, e.g. layer1.2.*they look "
                                         r"like resnet34 weights: set backbone='resnet34'"):
        build_backbone("resnet18", weights=str(path))


def test_weights_without_batchnorm_statistics_into_frozen_bn(imagenet_like, tmp_path):
    path = tmp_path / "gn.pth"
    torch.save({k: v for k, v in imagenet_like.items() if "running" not in k}, path)
    with pytest.raises(ValueError, match="no BatchNorm statistics: set norm='group'"):
        build_backbone("resnet18", weights=str(path))


def test_defaults_follow_the_weights_unless_set():
    assert backbone_settings("resnet18", None, None, None) == ("group", 5)
    assert backbone_settings("mobilenet_v3_large", None, None, None) == ("group", 6)
    assert backbone_settings("resnet50", "imagenet", None, None) == ("frozen_bn", 3)
    assert backbone_settings("resnet50", "imagenet", "bn", 5) == ("bn", 5)
    with pytest.raises(ValueError, match=r"trainable_layers must be in \[0, 5\]"):
        build_backbone("resnet18", trainable_layers=6)


@pytest.mark.parametrize("name, width", [("resnet18", 32), ("resnet50", 16)])
def test_narrow_resnet_halves_every_stage(name, width):
    """``width`` scales the stem and every stage alike (C2..C5 = w, 2w, 4w, 8w times the block's
    expansion); the FPN levels and their strides stay those of the standard net."""
    torch.manual_seed(0)
    standard = build_backbone(name, fpn_channels=32)
    narrow = build_backbone(name, fpn_channels=32, width=width)
    expansion = 1 if name == "resnet18" else 4
    stages = [narrow.body.body[f"layer{i}"][-1] for i in range(1, 5)]
    widths = [[m for m in stage.modules() if isinstance(m, torch.nn.Conv2d)][-1].out_channels
              for stage in stages]
    assert widths == [width * 2**i * expansion for i in range(4)]
    assert narrow.strides == standard.strides == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    out = narrow(torch.rand(1, 3, 64, 64))
    assert [tuple(v.shape) for v in out.values()] == [(1, 32, 64 // s, 64 // s)
                                                     for s in narrow.strides.values()]
    ratio = (sum(p.numel() for p in narrow.body.body.parameters())
             / sum(p.numel() for p in standard.body.body.parameters()))
    assert ratio == pytest.approx((width / 64) ** 2, rel=0.05)  # convolutions scale with w²


def test_narrow_resnet_loads_only_weights_of_its_width(imagenet_like, tmp_path):
    """No torchvision weights fit a narrow ResNet; a local state dict of its width (a narrow
    backbone saved from a run) loads, and one of another width names the width to set."""
    path = tmp_path / "r18.pth"
    torch.save(imagenet_like, path)
    with pytest.raises(ValueError, match=r"shape\(s\) differ.* set backbone_width to the "
                                         r"file's \(its conv1 has 64 channels\)"):
        build_backbone("resnet18", norm="frozen_bn", weights=str(path), width=32)
    with pytest.raises(ValueError, match="width 32 needs a ResNet from scratch or from a local"):
        build_backbone("resnet18", weights="imagenet", width=32)
    with pytest.raises(ValueError, match="width 32 needs a ResNet from scratch"):
        build_backbone("mobilenet_v3_large", width=32)
    torch.manual_seed(1)
    trained = build_backbone("resnet18", norm="group", width=32, fpn_channels=16)
    narrow = tmp_path / "narrow.pth"
    torch.save(trained.body.body.state_dict(), narrow)
    torch.manual_seed(2)
    loaded = build_backbone("resnet18", norm="group", weights=str(narrow), width=32,
                            trainable_layers=5, fpn_channels=16)
    for key, value in trained.body.body.state_dict().items():
        assert torch.equal(loaded.body.body.state_dict()[key], value), key
    with pytest.raises(ValueError, match="width must be >= 1"):
        build_backbone("resnet18", width=0)


def test_a_detkit_checkpoint_gives_its_backbone(tmp_path):
    """backbone_weights may name a training checkpoint: its backbone (not the FPN) loads, with
    torchvision's names; a narrow one into the same width."""
    from detkit.engine import DetectionModule

    torch.manual_seed(0)
    module = DetectionModule(3, backbone_width=32, fpn_channels=16, norm="group")
    # what Lightning writes with weights_only-readable hyperparameters beside the state dict
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 0, "global_step": 10, "state_dict": module.state_dict(),
                "hyper_parameters": {"backbone_width": 32}}, path)
    torch.manual_seed(1)
    loaded = build_backbone("resnet18", norm="group", weights=str(path), width=32,
                            trainable_layers=5, fpn_channels=16)
    body = module.model.backbone.body.body.state_dict()
    assert loaded.body.body.state_dict().keys() == body.keys()
    for key, value in body.items():
        assert torch.equal(loaded.body.body.state_dict()[key], value), key
    fpn = module.model.backbone.body.fpn.state_dict()
    assert not all(torch.equal(loaded.body.fpn.state_dict()[k], v) for k, v in fpn.items())
    with pytest.raises(ValueError, match="set backbone_width to the file's"):
        build_backbone("resnet18", norm="group", weights=str(path), width=16)
