"""deform_psroi_pool: the Deformable ConvNets semantics, gradients and bad input."""

import pytest
import torch
from torch.autograd import gradcheck

from detkit import ops
from tests.conftest import DEVICES
from tests.ops import reference
from tests.ops.test_align import make_rois

CASES = [
    # output_dim, group_size, pooled_size, part_size, sample_per_part, num_classes
    (2, 3, 3, None, 2, 1),
    (3, 2, 4, 2, 3, 1),  # group and part grids coarser than the output grid
    (4, 3, 3, 3, 4, 2),  # class-specific offsets
    (2, 1, 3, None, 2, 1),  # group_size 1: DCN's deformable RoI pooling
]


@pytest.mark.parametrize("output_dim, group, pooled, part, spp, classes", CASES)
@pytest.mark.parametrize("with_offset", [False, True])
def test_matches_scalar_reference(output_dim, group, pooled, part, spp, classes, with_offset):
    g = torch.Generator().manual_seed(10)
    x = torch.randn(2, output_dim * group * group, 9, 8, dtype=torch.float64, generator=g)
    rois = make_rois(8, 2, (36, 32), seed=10)  # some cross the border: skipped samples
    part_size = part or pooled
    offset = None
    if with_offset:
        offset = torch.randn(8, 2 * classes, part_size, part_size, dtype=torch.float64,
                             generator=g) * 3.0
    for scale in (0.25, 1.0):
        out = ops.deform_psroi_pool(x, rois, offset, output_dim=output_dim, group_size=group,
                                    pooled_size=pooled, spatial_scale=scale, part_size=part,
                                    sample_per_part=spp, trans_std=0.1)
        ref = reference.deform_psroi_pool(x, rois, offset, output_dim, group, pooled, scale, part,
                                          spp, 0.1)
        torch.testing.assert_close(out, ref)


def test_hand_computed():
    # One channel, 4x4 map with value 10*y + x, group 1, one bin, one sample, scale 1.
    # RoI (0.4, 0.6, 2.5, 1.5): rounded (0, 1, 3, 2) (2.5 rounds away from zero), start
    # (-0.5, 0.5), end (3.5, 2.5); the sample sits at the bin start (no half step): x = -0.5,
    # y = 0.5, inside [-0.5, 3.5], clamped to x = 0 -> 10*0.5 + 0 = 5.
    x = (10 * torch.arange(4.0)[:, None] + torch.arange(4.0)[None, :]).view(1, 1, 4, 4)
    rois = torch.tensor([[0.0, 0.4, 0.6, 2.5, 1.5]])
    kwargs = {"output_dim": 1, "group_size": 1, "pooled_size": 1, "sample_per_part": 1}
    assert ops.deform_psroi_pool(x, rois, **kwargs).item() == pytest.approx(5.0)
    # offset (0.25, 0.5) * trans_std 1 * roi size (4, 2) moves the sample by (1, 1): x=0.5, y=1.5
    offset = torch.tensor([0.25, 0.5]).view(1, 2, 1, 1)
    out = ops.deform_psroi_pool(x, rois, offset, trans_std=1.0, **kwargs)
    assert out.item() == pytest.approx(15.5)
    # moved to x = -0.75: outside [-0.5, 3.5], skipped and not counted -> nothing counted -> 0
    offset = torch.tensor([-0.0625, 0.0]).view(1, 2, 1, 1)
    assert ops.deform_psroi_pool(x, rois, offset, trans_std=1.0, **kwargs).item() == 0.0
    # two samples per axis: x in {-0.5 -> 0, 1.5}, y in {0.5, 1.5}: mean of 5, 6.5, 15, 16.5
    kwargs["sample_per_part"] = 2
    assert ops.deform_psroi_pool(x, rois, **kwargs).item() == pytest.approx(10.75)


def test_skipped_samples_are_not_counted():
    # A RoI partly outside the map: the mean is over the samples inside only (bin (0, 0) has one
    # of 16), unlike RoIAlign, so a constant map pools to the constant in every bin.
    x = torch.full((1, 4, 6, 6), 3.0)
    rois = torch.tensor([[0.0, -3.0, -3.0, 5.0, 5.0]])
    out = ops.deform_psroi_pool(x, rois, output_dim=1, group_size=2, pooled_size=2,
                                sample_per_part=4)
    torch.testing.assert_close(out, torch.full((1, 1, 2, 2), 3.0))


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 2 * 4, 6, 7, dtype=torch.float64, generator=g).to(device)
    x.requires_grad_()
    rois = make_rois(5, 2, (16, 18), min_side=4.0, seed=11).to(device)
    offset = torch.randn(5, 4, 2, 2, dtype=torch.float64, generator=g).to(device)
    offset.requires_grad_()

    def fn(x, offset):
        return ops.deform_psroi_pool(x, rois, offset, output_dim=2, group_size=2, pooled_size=3,
                                     part_size=2, spatial_scale=0.37, sample_per_part=2,
                                     trans_std=0.2)

    assert gradcheck(fn, (x, offset), eps=1e-6, atol=1e-5)
    (g_off,) = torch.autograd.grad(fn(x, offset).sum(), offset)
    assert g_off.abs().sum() > 0


@pytest.mark.parametrize("device", DEVICES)
def test_empty_and_batch_routing(device):
    x = torch.randn(3, 2 * 9, 7, 7, device=device, requires_grad=True)
    kwargs = {"output_dim": 2, "group_size": 3, "pooled_size": 3, "spatial_scale": 0.5}
    empty = ops.deform_psroi_pool(x, torch.zeros(0, 5, device=device),
                                  torch.zeros(0, 2, 3, 3, device=device), **kwargs)
    assert empty.shape == (0, 2, 3, 3)
    empty.sum().backward()
    rois = torch.tensor([[2.0, 1.0, 1.0, 9.0, 12.0], [1.0, 0.0, 3.0, 13.0, 8.0]], device=device)
    offset = torch.randn(2, 2, 3, 3, device=device)
    out = ops.deform_psroi_pool(x, rois, offset, trans_std=0.1, **kwargs)
    for k, b in enumerate((2, 1)):
        single = rois[k : k + 1].clone()
        single[:, 0] = 0
        alone = ops.deform_psroi_pool(x[b : b + 1], single, offset[k : k + 1], trans_std=0.1,
                                      **kwargs)
        torch.testing.assert_close(out[k : k + 1], alone)


def test_nan_roi_gives_zeros():
    x = torch.randn(1, 4, 6, 6, requires_grad=True)
    rois = torch.tensor([[0.0, 1.0, 1.0, 4.0, 4.0], [0.0, float("nan"), 1.0, 4.0, 4.0]])
    offset = torch.zeros(2, 2, 2, 2, requires_grad=True)
    out = ops.deform_psroi_pool(x, rois, offset, output_dim=1, group_size=2, pooled_size=2,
                                trans_std=0.1)
    assert (out[1] == 0).all() and (out[0] != 0).any()
    grads = torch.autograd.grad(out.sum(), (x, offset))
    assert all(torch.isfinite(gr).all() for gr in grads)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input": torch.zeros(1, 10, 5, 5)}, "not divisible by group_size\\*\\*2"),
        ({"input": torch.zeros(1, 27, 5, 5)}, "output_dim \\* group_size\\*\\*2"),
        ({"offset": torch.zeros(1, 3, 3, 3)}, "offset must have shape"),
        ({"offset": torch.zeros(1, 2, 2, 2)}, "offset must have shape"),
        ({"offset": torch.zeros(2, 2, 3, 3)}, "offset must have shape"),
        ({"offset": torch.zeros(1, 6, 3, 3)}, "must divide output_dim"),
        ({"rois": torch.zeros(1, 4)}, "rois must be a Tensor\\[K, 5\\]"),
        ({"rois": torch.tensor([[1.0, 0, 0, 2, 2]])}, "batch index"),
        ({"group_size": 0}, "group_size"),
    ],
)
def test_bad_input(kwargs, match):
    args = {"input": torch.zeros(1, 2 * 9, 5, 5), "rois": torch.tensor([[0.0, 0, 0, 2, 2]]),
            "offset": None, "output_dim": 2, "group_size": 3, "pooled_size": 3}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ops.deform_psroi_pool(args.pop("input"), args.pop("rois"), args.pop("offset"), **args)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_offset_only_zeroes_its_bins(value):
    x = torch.randn(2, 2 * 4, 7, 7, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0.0, 1.0, 1.0, 20.0, 22.0], [1.0, 2.0, 3.0, 18.0, 14.0]],
                        dtype=torch.float64)
    kwargs = {"output_dim": 2, "group_size": 2, "pooled_size": 2, "spatial_scale": 0.3,
              "trans_std": 0.1}
    clean = torch.randn(2, 2, 2, 2, dtype=torch.float64) * 0.3
    offset = clean.clone()
    offset[1, 1, 0, 1] = value  # the y offset of bin (0, 1) of RoI 1
    offset.requires_grad_()
    out = ops.deform_psroi_pool(x, rois, offset, **kwargs)
    ref = ops.deform_psroi_pool(x, rois, clean, **kwargs)
    hit = torch.zeros_like(out, dtype=torch.bool)
    hit[1, :, 0, 1] = True
    assert (out[hit] == 0).all() and (ref[hit] != 0).all()
    torch.testing.assert_close(out[~hit], ref[~hit])
    grads = torch.autograd.grad(out.sum(), (x, offset))
    assert all(torch.isfinite(gr).all() for gr in grads)
