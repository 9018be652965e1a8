from collections import OrderedDict

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

from detkit import ops
from detkit.models import EXTRACTORS, build_roi_extractor
from detkit.models.roi_extractors import LevelMappedRoIAlign
from tests.conftest import DEVICES


def make_features(device="cpu", channels=16, size=(64, 96), batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = OrderedDict()
    for level in range(2, 7):
        stride = 2**level
        shape = (batch, channels, size[0] // stride, size[1] // stride)
        feats[f"p{level}"] = torch.randn(shape, generator=g).to(device)
    return feats


def make_boxes(device="cpu", counts=(7, 5), size=(64, 96), seed=0):
    g = torch.Generator().manual_seed(seed)
    boxes = []
    for n in counts:
        xy = torch.rand(n, 2, generator=g) * torch.tensor([size[1], size[0]]) * 0.8
        wh = torch.exp(torch.rand(n, 2, generator=g) * 4.0) + 2.0  # 3 px .. 57 px: all levels
        boxes.append(torch.cat([xy, xy + wh], dim=1).to(device))
    return boxes


SIZES = [(64, 96), (60, 90)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(EXTRACTORS))
def test_every_extractor_pools_and_backpropagates(device, name):
    feats = make_features(device)
    for f in feats.values():
        f.requires_grad_()
    extractor = build_roi_extractor(name, in_channels=16).to(device)
    boxes = make_boxes(device)
    out = extractor(feats, boxes, SIZES)
    assert out.shape[0] == 12
    assert out[0].numel() == extractor.out_features
    if extractor.output_size is not None:
        assert out.shape[1:] == (extractor.out_channels, *extractor.output_size)
    out.square().sum().backward()
    assert any(f.grad is not None and f.grad.abs().sum() > 0 for f in feats.values())
    for param_name, param in extractor.named_parameters():
        assert param.grad is not None, param_name
    empty = extractor(feats, [boxes[0][:0], boxes[1][:0]], SIZES)
    assert empty.shape == (0, *out.shape[1:])


def test_roi_align_extractor_equals_torchvision_multiscale_roi_align():
    feats = make_features(channels=8)
    boxes = make_boxes(counts=(30, 20))
    ours = LevelMappedRoIAlign(in_channels=8)(feats, boxes, SIZES)
    tv_feats = OrderedDict((str(i), feats[f"p{i + 2}"]) for i in range(4))
    reference = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)(tv_feats, boxes, [(64, 96)] * 2)
    torch.testing.assert_close(ours, reference)


def test_level_mapping_routes_rois():
    feats = make_features(channels=4)
    boxes = [torch.tensor([[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 120.0, 120.0]]), torch.zeros(0, 4)]
    out = LevelMappedRoIAlign(in_channels=4)(feats, boxes, SIZES)
    rois = torch.cat([torch.zeros(2, 1), boxes[0]], dim=1)
    levels = ops.map_levels(rois, 2, 5).tolist()
    assert levels == [2, 3]  # 4 + log2(20 / 224) = 0.5 -> clamped to 2; 4 + log2(120 / 224) = 3.1
    for k, level in enumerate(levels):
        direct = ops.roi_align(feats[f"p{level}"], rois[k : k + 1], 7, 2.0**-level, 2)
        torch.testing.assert_close(out[k : k + 1], direct)


def test_single_level_pools_everything_from_one_map():
    feats = make_features(channels=4)
    boxes = make_boxes(counts=(4, 3))
    out = build_roi_extractor("roi_align_single", in_channels=4, featmap_name="p3")(
        feats, boxes, SIZES)
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1)
                      for i, b in enumerate(boxes)])
    torch.testing.assert_close(out, ops.roi_align(feats["p3"], rois, 7, 1 / 8, 2))


@pytest.mark.parametrize("fusion", ["sum", "max", "concat"])
def test_pyramid_fusion(fusion):
    feats = make_features(channels=4)
    boxes = make_boxes(counts=(3, 2))
    extractor = build_roi_extractor("pyramid_fusion", in_channels=4, fusion=fusion)
    out = extractor(feats, boxes, SIZES)
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1)
                      for i, b in enumerate(boxes)])
    per_level = torch.stack([ops.roi_align(feats[f"p{lv}"], rois, 7, 2.0**-lv, 2, True)
                             for lv in range(2, 6)])
    if fusion == "sum":
        torch.testing.assert_close(out, per_level.sum(0))
    elif fusion == "max":
        torch.testing.assert_close(out, per_level.amax(0))
    else:
        assert out.shape == (5, 4, 7, 7)


def test_spp_concatenates_grids():
    feats = make_features(channels=4)
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 40.0]]), torch.zeros(0, 4)]
    out = build_roi_extractor("spp", in_channels=4, grids=(1, 2))(feats, boxes, SIZES)
    assert out.shape == (1, 4 * (1 + 4))
    rois = torch.tensor([[0.0, 8.0, 8.0, 40.0, 40.0]])
    level = int(ops.map_levels(rois, 2, 5))
    f = feats[f"p{level}"]
    expected = torch.cat([ops.roi_pool(f, rois, 1, 2.0**-level).flatten(1),
                          ops.roi_pool(f, rois, 2, 2.0**-level).flatten(1)], 1)
    torch.testing.assert_close(out, expected)


def test_deformable_extractors_start_as_plain_pooling():
    feats = make_features(channels=4)
    boxes = make_boxes(counts=(6, 4))
    plain = LevelMappedRoIAlign(in_channels=4, aligned=True)(feats, boxes, SIZES)
    deform = build_roi_extractor("deform_roi_pool", in_channels=4, offset_fc_channels=32)
    pooled, offset, mask = deform.forward_with_offsets(feats, boxes)
    torch.testing.assert_close(pooled, plain)
    assert mask is None and offset.abs().sum() == 0
    mdeform = build_roi_extractor("mdeform_roi_pool", in_channels=4, offset_fc_channels=32)
    pooled, offset, mask = mdeform.forward_with_offsets(feats, boxes)
    torch.testing.assert_close(pooled, 0.5 * plain)  # sigmoid(0) = 0.5 everywhere
    torch.testing.assert_close(mask, torch.full_like(mask, 0.5))
    # after moving the last offset layer, the pooled features change
    with torch.no_grad():
        deform.offset_fc[-1].bias.fill_(0.5)
    assert not torch.allclose(deform(feats, boxes, SIZES), plain)


def test_deform_psroi_extractor_starts_as_plain_ps_pooling():
    feats = make_features(channels=4)
    boxes = make_boxes(counts=(6, 4))
    extractor = build_roi_extractor("deform_psroi_pool", in_channels=4, output_size=3,
                                    ps_channels=2)
    pooled, offset, _ = extractor.forward_with_offsets(feats, boxes)
    assert offset.shape == (10, 2, 3, 3) and offset.abs().sum() == 0
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1)
                      for i, b in enumerate(boxes)])
    levels = ops.map_levels(rois, 2, 5)
    for k in range(10):
        lv = int(levels[k])
        thin = extractor.thin(feats[f"p{lv}"])
        direct = ops.deform_psroi_pool(thin, rois[k : k + 1], output_dim=2, group_size=3,
                                       pooled_size=3, spatial_scale=2.0**-lv, sample_per_part=2)
        torch.testing.assert_close(pooled[k : k + 1], direct)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: roi_align, roi_align_single, roi_pool"):
        build_roi_extractor("roi_warp", in_channels=8)


def test_bad_settings():
    with pytest.raises(ValueError, match="fusion"):
        build_roi_extractor("pyramid_fusion", in_channels=8, fusion="mean")
    with pytest.raises(ValueError, match="pyramid levels"):
        build_roi_extractor("roi_align", in_channels=8, featmap_names=["0", "1"])
    with pytest.raises(TypeError):
        build_roi_extractor("roi_align", in_channels=8, not_an_option=1)
