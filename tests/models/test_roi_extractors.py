from collections import OrderedDict

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

from detkit import ops
from detkit.models import EXTRACTORS, build_roi_extractor
from detkit.models.roi_extractors import FPN_LEVELS, BinLayout, RoIAlignExtractor, RoIExtractor
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


def rois_of(boxes):
    return torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1)
                      for i, b in enumerate(boxes)])


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
    ours = RoIAlignExtractor(in_channels=8)(feats, boxes, SIZES)
    tv_feats = OrderedDict((str(i), feats[f"p{i + 2}"]) for i in range(4))
    reference = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)(tv_feats, boxes, [(64, 96)] * 2)
    torch.testing.assert_close(ours, reference)


def test_level_mapping_routes_rois():
    feats = make_features(channels=4)
    boxes = [torch.tensor([[0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 120.0, 120.0]]), torch.zeros(0, 4)]
    out = RoIAlignExtractor(in_channels=4)(feats, boxes, SIZES)
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
    rois = rois_of(boxes)
    torch.testing.assert_close(out, ops.roi_align(feats["p3"], rois, 7, 1 / 8, 2))


@pytest.mark.parametrize("fusion", ["sum", "max", "concat"])
def test_pyramid_fusion(fusion):
    feats = make_features(channels=4)
    boxes = make_boxes(counts=(3, 2))
    extractor = build_roi_extractor("pyramid_fusion", in_channels=4, fusion=fusion)
    out = extractor(feats, boxes, SIZES)
    rois = rois_of(boxes)
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
    plain = RoIAlignExtractor(in_channels=4, aligned=True)(feats, boxes, SIZES)
    deform = build_roi_extractor("deform_roi_pool", in_channels=4, offset_fc_channels=32)
    torch.testing.assert_close(deform(feats, boxes, SIZES), plain)
    layout = deform.bin_layout(feats, boxes)
    assert layout.before.shape == (10, 7, 7, 4) and layout.mask is None
    torch.testing.assert_close(layout.after, layout.before)  # zero-initialised offsets
    mdeform = build_roi_extractor("mdeform_roi_pool", in_channels=4, offset_fc_channels=32)
    torch.testing.assert_close(mdeform(feats, boxes, SIZES), 0.5 * plain)  # sigmoid(0) = 0.5
    layout = mdeform.bin_layout(feats, boxes)
    torch.testing.assert_close(layout.mask, torch.full((10, 7, 7), 0.5))
    # after moving the last offset layer, the pooled features change and so do the bins
    with torch.no_grad():
        deform.offset_fc[-1].bias.fill_(0.5)
    assert not torch.allclose(deform(feats, boxes, SIZES), plain)
    layout = deform.bin_layout(feats, boxes)
    width = (layout.before[..., 2] - layout.before[..., 0]) * 7  # RoI width, per bin
    torch.testing.assert_close(layout.after[..., 0] - layout.before[..., 0], 0.1 * width * 0.5)


def test_deform_psroi_extractor_starts_as_plain_ps_pooling():
    feats = make_features(channels=4)
    boxes = make_boxes(counts=(6, 4))
    extractor = build_roi_extractor("deform_psroi_pool", in_channels=4, output_size=3,
                                    ps_channels=2)
    pooled = extractor(feats, boxes, SIZES)
    layout = extractor.bin_layout(feats, boxes)
    assert layout.before.shape == (10, 3, 3, 4)
    torch.testing.assert_close(layout.after, layout.before)
    rois = rois_of(boxes)
    levels = ops.map_levels(rois, 2, 5)
    for k in range(10):
        lv = int(levels[k])
        thin = extractor.thin(feats[f"p{lv}"])
        direct = ops.deform_psroi_pool(thin, rois[k : k + 1], output_dim=2, group_size=3,
                                       pooled_size=3, spatial_scale=2.0**-lv, sample_per_part=2)
        torch.testing.assert_close(pooled[k : k + 1], direct)


def test_deform_psroi_bins_move_with_their_part_cell():
    feats = make_features(channels=4)
    boxes = make_boxes(counts=(3, 2))
    extractor = build_roi_extractor("deform_psroi_pool", in_channels=4, featmap_names=["p3"],
                                    output_size=4, part_size=2, trans_std=0.2)
    with torch.no_grad():
        extractor.offset_conv.bias.copy_(torch.linspace(-1.0, 1.0, 8))
    layout = extractor.bin_layout(feats, boxes)
    rois = rois_of(boxes)
    (offset,) = extractor.level_offsets(feats["p3"], rois, 1 / 8)  # Tensor[5, 2, 2, 2]
    assert offset.abs().sum() > 0
    size = (rois[:, 3:] - rois[:, 1:3])[:, :, None, None]  # (w, h) per RoI
    cell = torch.tensor([0, 0, 1, 1])  # bins 0, 1 read part cell 0; bins 2, 3 part cell 1
    expected = (0.2 * size * offset[:, :, cell][:, :, :, cell]).permute(0, 2, 3, 1)
    torch.testing.assert_close(layout.after[..., :2] - layout.before[..., :2], expected)
    torch.testing.assert_close(layout.after[..., 2:] - layout.before[..., 2:], expected)


def test_bin_layout_regular_grid():
    boxes = torch.tensor([[8.0, 4.0, 38.0, 64.0]])
    layout = BinLayout.from_offsets(boxes, torch.zeros(1, 2, 3, 3), 0.1)
    torch.testing.assert_close(layout.before[0, 0, 0], torch.tensor([8.0, 4.0, 18.0, 24.0]))
    torch.testing.assert_close(layout.before[0, 2, 1], torch.tensor([18.0, 44.0, 28.0, 64.0]))


def test_only_extractors_that_override_bin_layout_move_bins():
    movers = {name for name, cls in EXTRACTORS.items() if cls.moves_bins}
    assert movers == {"deform_roi_pool", "mdeform_roi_pool", "deform_psroi_pool"}
    feats = make_features(channels=4)
    boxes = make_boxes(counts=(2, 1))
    extractor = build_roi_extractor("psroi_align", in_channels=4)
    assert not extractor.moves_bins and extractor.bin_layout(feats, boxes) is None


class _PoolLevelOnly(RoIExtractor):
    """A level-mapped extractor that says only how it pools one level."""

    def pool_level(self, feature, rois, scale):
        return ops.roi_align(feature, rois, self.output_size, scale, 2)


def test_base_class_maps_levels_for_a_subclass_with_only_pool_level():
    feats = make_features(channels=4)
    boxes = make_boxes(counts=(5, 4))
    ours = _PoolLevelOnly(in_channels=4)
    assert ours.featmap_names == FPN_LEVELS and ours.out_features == 4 * 7 * 7
    torch.testing.assert_close(ours(feats, boxes, SIZES),
                               RoIAlignExtractor(in_channels=4)(feats, boxes, SIZES))
    assert not _PoolLevelOnly.moves_bins


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: roi_align_single, roi_pool, roi_align, "):
        build_roi_extractor("roi_warp", in_channels=8)


def test_bad_settings():
    with pytest.raises(ValueError, match="fusion"):
        build_roi_extractor("pyramid_fusion", in_channels=8, fusion="mean")
    with pytest.raises(ValueError, match="pyramid levels"):
        build_roi_extractor("roi_align", in_channels=8, featmap_names=["0", "1"])
    with pytest.raises(TypeError):
        build_roi_extractor("roi_align", in_channels=8, not_an_option=1)
    with pytest.raises(ValueError, match="in_channels must be positive"):
        build_roi_extractor("roi_pool", in_channels=0)
    with pytest.raises(ValueError, match="output_size must be positive"):
        build_roi_extractor("psroi_align", in_channels=8, output_size=0)


def per_level_reference(feats, boxes, pool):
    """Each RoI pooled by ``pool(feature, rois, scale)`` from the level FPN eq. (1) assigns."""
    rois = rois_of(boxes)
    levels = ops.map_levels(rois, 2, 5)
    return torch.cat([pool(feats[f"p{int(lv)}"], rois[k : k + 1], 2.0 ** -int(lv))
                      for k, lv in enumerate(levels)])


def test_prroi_pool_extractor_equals_the_op_per_level():
    feats = make_features(channels=4)
    boxes = make_boxes(counts=(6, 5))
    out = build_roi_extractor("prroi_pool", in_channels=4, output_size=5)(feats, boxes, SIZES)
    expected = per_level_reference(feats, boxes, lambda f, r, s: ops.prroi_pool(f, r, 5, s))
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, build_roi_extractor("roi_align", in_channels=4, output_size=5)(
        feats, boxes, SIZES))


def _align(mode):
    return lambda f, r, s: ops.roi_align(f, r, 7, s, 2, False, mode=mode)


def test_mixed_pool_gate_mixes_avg_and_max_per_channel():
    feats = make_features(channels=4)
    boxes = make_boxes(counts=(6, 5))
    avg = per_level_reference(feats, boxes, _align("avg"))
    peak = per_level_reference(feats, boxes, _align("max"))
    assert (peak >= avg - 1e-6).all() and not torch.allclose(peak, avg)
    extractor = build_roi_extractor("mixed_pool", in_channels=4)
    torch.testing.assert_close(extractor(feats, boxes, SIZES), 0.5 * (avg + peak))  # sigmoid(0)
    with torch.no_grad():
        extractor.gate_logit.copy_(torch.tensor([float("inf"), -float("inf"), 0.0, 2.0]))
    out = extractor(feats, boxes, SIZES)
    torch.testing.assert_close(out[:, 0], peak[:, 0])  # gate 1: max pooling
    torch.testing.assert_close(out[:, 1], avg[:, 1])  # gate 0: average pooling (= roi_align)
    a = torch.sigmoid(torch.tensor(2.0))
    torch.testing.assert_close(out[:, 3], a * peak[:, 3] + (1 - a) * avg[:, 3])
    torch.testing.assert_close(avg, RoIAlignExtractor(in_channels=4)(feats, boxes, SIZES))


def test_mixed_pool_concat_stacks_avg_then_max():
    feats = make_features(channels=4)
    boxes = make_boxes(counts=(3, 2))
    extractor = build_roi_extractor("mixed_pool", in_channels=4, mode="concat")
    assert extractor.out_channels == 8 and extractor.out_features == 8 * 49
    assert not list(extractor.parameters())
    out = extractor(feats, boxes, SIZES)
    torch.testing.assert_close(out[:, :4], per_level_reference(feats, boxes, _align("avg")))
    torch.testing.assert_close(out[:, 4:], per_level_reference(feats, boxes, _align("max")))


ATTENTION_OPTIONS = [(True, True), (True, False), (False, True), (False, False)]


@pytest.mark.parametrize(("channel", "spatial"), ATTENTION_OPTIONS)
def test_attention_pool_starts_at_half_per_branch(channel, spatial):
    feats = make_features(channels=32)
    boxes = make_boxes(counts=(4, 3))
    plain = RoIAlignExtractor(in_channels=32)(feats, boxes, SIZES)
    extractor = build_roi_extractor("attention_pool", in_channels=32, channel=channel,
                                    spatial=spatial)
    assert (extractor.channel_attention is not None) == channel
    assert (extractor.spatial_attention is not None) == spatial
    out = extractor(feats, boxes, SIZES)
    factor = 0.5 ** (channel + spatial)  # each zero-initialised branch gives sigmoid(0) = 0.5
    torch.testing.assert_close(out, factor * plain, rtol=0, atol=0)  # exact, also with both off
    if not channel and not spatial:
        assert not list(extractor.parameters())


@pytest.mark.parametrize(("channel", "spatial"), ATTENTION_OPTIONS[:3])
def test_attention_pool_weights_follow_se_and_cbam(channel, spatial):
    feats = make_features(channels=32)
    boxes = make_boxes(counts=(4, 3))
    torch.manual_seed(0)
    extractor = build_roi_extractor("attention_pool", in_channels=32, channel=channel,
                                    spatial=spatial, reduction=8)
    with torch.no_grad():
        for param in extractor.parameters():
            param.normal_()
    x = RoIAlignExtractor(in_channels=32)(feats, boxes, SIZES)
    if channel:
        first, _, last = extractor.channel_attention
        assert first.out_features == 4  # 32 // reduction
        squeeze = x.mean(dim=(2, 3))
        x = x * torch.sigmoid(last(torch.relu(first(squeeze))))[:, :, None, None]
    if spatial:
        conv = extractor.spatial_attention
        assert conv.kernel_size == (3, 3)
        maps = torch.stack([x.mean(1), x.amax(1)], dim=1)
        x = x * torch.sigmoid(torch.nn.functional.conv2d(maps, conv.weight, conv.bias, padding=1))
    out = extractor(feats, boxes, SIZES)
    torch.testing.assert_close(out, x)
    # once the gates are away from zero, every parameter gets a nonzero gradient
    out.square().sum().backward()
    for param_name, param in extractor.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, param_name


def test_mixed_pool_gate_gets_a_gradient():
    feats = make_features(channels=4)
    extractor = build_roi_extractor("mixed_pool", in_channels=4)
    extractor(feats, make_boxes(counts=(3, 2)), SIZES).sum().backward()
    assert (extractor.gate_logit.grad.abs() > 0).all()


def test_bad_settings_of_the_gated_extractors():
    with pytest.raises(ValueError, match="mode must be 'gate' or 'concat'"):
        build_roi_extractor("mixed_pool", in_channels=8, mode="max")
    with pytest.raises(ValueError, match="reduction"):
        build_roi_extractor("attention_pool", in_channels=8, reduction=0)
    with pytest.raises(ValueError, match="spatial_kernel"):
        build_roi_extractor("attention_pool", in_channels=8, spatial_kernel=4)
    with pytest.raises(TypeError):
        build_roi_extractor("prroi_pool", in_channels=8, sampling_ratio=2)
