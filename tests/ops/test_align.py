"""roi_align, ps_roi_align and deform_roi_pool: parity with torchvision, with the scalar reference,
gradients, dtypes, routing and bad input."""

import pytest
import torch
import torchvision.ops
from torch.autograd import gradcheck

from detkit import ops
from tests.conftest import DEVICES
from tests.ops import reference


def make_rois(k, batch, image_hw, min_side=1.0, seed=0, dtype=torch.float64):
    """Random RoIs in image pixels; about a third cross the image border."""
    g = torch.Generator().manual_seed(seed)
    h, w = image_hw
    size = torch.rand(k, 2, generator=g, dtype=dtype) * torch.tensor([w, h], dtype=dtype) * 0.7
    size = size + min_side
    centre = torch.rand(k, 2, generator=g, dtype=dtype) * torch.tensor([w, h], dtype=dtype) * 1.2
    centre = centre - 0.1 * torch.tensor([w, h], dtype=dtype)
    index = torch.randint(0, batch, (k, 1), generator=g).to(dtype)
    return torch.cat([index, centre - size / 2, centre + size / 2], dim=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 2, 3])
def test_roi_align_matches_torchvision(device, aligned, sampling_ratio):
    x = torch.randn(2, 5, 13, 17, dtype=torch.float64, device=device, requires_grad=True)
    rois = make_rois(40, 2, (52, 68)).to(device)
    ours = ops.roi_align(x, rois, (4, 3), 0.25, sampling_ratio, aligned, backend="detkit")
    ref = torchvision.ops.roi_align(x, rois, (4, 3), 0.25, sampling_ratio, aligned)
    torch.testing.assert_close(ours, ref)
    grad = torch.randn_like(ref)
    (g_ours,) = torch.autograd.grad(ours, x, grad)
    (g_ref,) = torch.autograd.grad(ref, x, grad)
    torch.testing.assert_close(g_ours, g_ref)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_ps_roi_align_matches_torchvision(device, sampling_ratio):
    x = torch.randn(2, 3 * 12, 11, 9, dtype=torch.float64, device=device, requires_grad=True)
    rois = make_rois(30, 2, (44, 36), seed=1).to(device)
    ours = ops.ps_roi_align(x, rois, (4, 3), 0.25, sampling_ratio, backend="detkit")
    ref = torchvision.ops.ps_roi_align(x, rois, (4, 3), 0.25, sampling_ratio)
    torch.testing.assert_close(ours, ref)
    grad = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(ours, x, grad)[0],
                               torch.autograd.grad(ref, x, grad)[0])


@pytest.mark.parametrize("device", DEVICES)
def test_backends_agree_and_list_rois_are_accepted(device):
    x = torch.randn(2, 4, 10, 10, device=device)
    boxes = [torch.tensor([[1.0, 2.0, 30.0, 25.0]], device=device),
             torch.tensor([[0.0, 0.0, 39.0, 39.0], [5.0, 5.0, 9.0, 9.0]], device=device)]
    a = ops.roi_align(x, boxes, 3, 0.25, 2, True, backend="detkit")
    b = ops.roi_align(x, boxes, 3, 0.25, 2, True, backend="torchvision")
    c = torchvision.ops.roi_align(x, boxes, 3, 0.25, 2, True)
    torch.testing.assert_close(a, c)
    torch.testing.assert_close(b, c)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_deform_roi_pool_without_offsets_is_aligned_roi_align(device, sampling_ratio):
    x = torch.randn(2, 6, 12, 15, dtype=torch.float64, device=device)
    rois = make_rois(50, 2, (48, 60), seed=2).to(device)  # inside and across the border
    ref = torchvision.ops.roi_align(x, rois, (3, 4), 0.25, sampling_ratio, True)
    for offset in (None, torch.zeros(50, 2, 3, 4, dtype=torch.float64, device=device)):
        out = ops.deform_roi_pool(x, rois, offset, output_size=(3, 4), spatial_scale=0.25,
                                  sampling_ratio=sampling_ratio)
        torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_deform_roi_pool_matches_scalar_reference(sampling_ratio):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64, generator=g)
    rois = make_rois(12, 2, (36, 44), seed=3)
    offset = torch.randn(12, 2, 3, 3, dtype=torch.float64, generator=g) * 2.0  # far past borders
    mask = torch.rand(12, 1, 3, 3, dtype=torch.float64, generator=g)
    for off, msk in ((offset, None), (offset, mask), (None, mask)):
        out = ops.deform_roi_pool(x, rois, off, msk, output_size=3, spatial_scale=0.25,
                                  sampling_ratio=sampling_ratio, gamma=0.1)
        ref = reference.deform_roi_pool(x, rois, off, msk, 3, 3, 0.25, sampling_ratio, 0.1)
        torch.testing.assert_close(out, ref)


def test_deform_roi_pool_hand_computed():
    # 1x1x4x4 map with value 10*y + x. RoI (0, 0)-(4, 4) in pixels, scale 1, aligned: roi_start
    # -0.5, size 4, one bin, one sample at the centre (1.5, 1.5) -> 10*1.5 + 1.5 = 16.5.
    x = (10 * torch.arange(4.0)[:, None] + torch.arange(4.0)[None, :]).view(1, 1, 4, 4)
    rois = torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]])
    out = ops.deform_roi_pool(x, rois, output_size=1, sampling_ratio=1)
    assert out.item() == pytest.approx(16.5)
    # offset (0.25, -0.25) with gamma 1 moves the sample by (+1, -1) -> (y=0.5, x=2.5) -> 7.5
    offset = torch.tensor([0.25, -0.25]).view(1, 2, 1, 1)
    out = ops.deform_roi_pool(x, rois, offset, output_size=1, sampling_ratio=1, gamma=1.0)
    assert out.item() == pytest.approx(7.5)
    # mask 0.5 halves it; an offset moving the sample beyond x = W (4) gives 0
    out = ops.deform_roi_pool(x, rois, offset, torch.full((1, 1, 1, 1), 0.5), output_size=1,
                              sampling_ratio=1, gamma=1.0)
    assert out.item() == pytest.approx(3.75)
    far = torch.tensor([0.7, 0.0]).view(1, 2, 1, 1)  # x = 1.5 + 2.8 = 4.3 > 4
    assert ops.deform_roi_pool(x, rois, far, output_size=1, sampling_ratio=1, gamma=1.0).item() == 0
    # x = 3.7 is between the last column and W: both corners are the last column -> 10*1.5 + 3
    edge = torch.tensor([0.55, 0.0]).view(1, 2, 1, 1)
    out = ops.deform_roi_pool(x, rois, edge, output_size=1, sampling_ratio=1, gamma=1.0)
    assert out.item() == pytest.approx(18.0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_deform_roi_pool_gradcheck(device, sampling_ratio):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, generator=g).to(device).requires_grad_()
    rois = make_rois(6, 2, (24, 28), min_side=4.0, seed=4).to(device)  # some cross the border
    offset = (torch.randn(6, 2, 2, 2, dtype=torch.float64, generator=g)).to(device)
    offset.requires_grad_()
    mask = torch.rand(6, 1, 2, 2, dtype=torch.float64, generator=g).to(device).requires_grad_()

    def fn(x, offset, mask):
        return ops.deform_roi_pool(x, rois, offset, mask, output_size=2, spatial_scale=0.25,
                                   sampling_ratio=sampling_ratio, gamma=0.3)

    assert gradcheck(fn, (x, offset, mask), eps=1e-6, atol=1e-5)
    # the offset gradient is not trivially zero
    out = fn(x, offset, mask)
    (g_off,) = torch.autograd.grad(out.sum(), offset)
    assert g_off.abs().sum() > 0


@pytest.mark.parametrize("device", DEVICES)
def test_roi_align_and_ps_roi_align_gradcheck(device):
    x = torch.randn(1, 8, 5, 6, dtype=torch.float64, device=device, requires_grad=True)
    rois = make_rois(5, 1, (20, 24), min_side=3.0, seed=5).to(device)
    assert gradcheck(lambda x: ops.roi_align(x, rois, 2, 0.25, 0, True, backend="detkit"), (x,))
    assert gradcheck(lambda x: ops.ps_roi_align(x, rois, 2, 0.25, 2, backend="detkit"), (x,))


@pytest.mark.parametrize("device", DEVICES)
def test_empty_rois(device):
    x = torch.randn(2, 4, 8, 8, device=device, requires_grad=True)
    empty = torch.zeros(0, 5, device=device)
    for out in (
        ops.roi_align(x, empty, (3, 2), backend="detkit"),
        ops.roi_align(x, [torch.zeros(0, 4, device=device)] * 2, (3, 2)),
        ops.deform_roi_pool(x, empty, torch.zeros(0, 2, 3, 2, device=device),
                            torch.zeros(0, 1, 3, 2, device=device), output_size=(3, 2)),
        ops.ps_roi_align(x[:, :], empty, (2, 1), backend="detkit"),
        ops.roi_pool(x, empty, (3, 2)),
    ):
        assert out.shape[0] == 0 and out.shape[2:] == ((3, 2) if out.shape[1] == 4 else (2, 1))
        out.sum().backward()  # an empty result still backpropagates (zeros)
    assert x.grad is not None and x.grad.abs().sum() == 0


@pytest.mark.parametrize("device", DEVICES)
def test_batch_index_routing(device):
    x = torch.randn(3, 4, 9, 9, device=device)
    rois = torch.tensor([[2.0, 1.0, 1.0, 20.0, 30.0], [0.0, 4.0, 3.0, 33.0, 12.0]], device=device)
    offset = torch.randn(2, 2, 3, 3, device=device) * 0.2
    out = ops.deform_roi_pool(x, rois, offset, output_size=3, spatial_scale=0.25)
    for k, b in enumerate((2, 0)):
        single = rois[k : k + 1].clone()
        single[:, 0] = 0
        alone = ops.deform_roi_pool(x[b : b + 1], single, offset[k : k + 1], output_size=3,
                                    spatial_scale=0.25)
        torch.testing.assert_close(out[k : k + 1], alone)
    # the list form assigns image i to list entry i
    listed = ops.roi_align(x, [rois[1:, 1:], torch.zeros(0, 4, device=device), rois[:1, 1:]], 3,
                           0.25, 0, True)
    torch.testing.assert_close(listed, ops.roi_align(x, rois.flip(0), 3, 0.25, 0, True))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_low_precision(device, dtype):
    if device == "cpu" and dtype == torch.float16 and not hasattr(torch, "autocast"):
        pytest.skip("no autocast")
    g = torch.Generator().manual_seed(6)
    x32 = torch.randn(2, 8, 10, 10, generator=g).to(device)
    rois = make_rois(20, 2, (40, 40), seed=6, dtype=torch.float32).to(device)
    offset32 = torch.randn(20, 2, 3, 3, generator=g).to(device) * 0.3
    x = x32.to(dtype).requires_grad_()
    offset = offset32.to(dtype).requires_grad_()
    with torch.autocast(device_type=device, dtype=dtype):
        out = ops.deform_roi_pool(x, rois, offset, output_size=3, spatial_scale=0.25)
        ps = ops.deform_psroi_pool(x[:, :2 * 4], rois, offset[:, :, :2, :2], output_dim=2,
                                   group_size=2, pooled_size=3, part_size=2, spatial_scale=0.25,
                                   trans_std=0.1)
    assert out.dtype == dtype and ps.dtype == dtype
    # float32 accumulation: the result is the float32 op on the rounded inputs, rounded once
    ref = ops.deform_roi_pool(x.detach().float(), rois, offset.detach().float(), output_size=3,
                              spatial_scale=0.25)
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), atol=0, rtol=0)
    out.float().sum().backward()
    assert x.grad.dtype == dtype and offset.grad.dtype == dtype
    assert torch.isfinite(offset.grad.float()).all()


@pytest.mark.parametrize("device", DEVICES)
def test_nan_rois_give_zeros_and_do_not_poison_others(device):
    x = torch.randn(1, 3, 8, 8, device=device, requires_grad=True)
    rois = torch.tensor([[0.0, 2.0, 2.0, 20.0, 20.0], [0.0, float("nan"), 1.0, 9.0, 9.0],
                         [0.0, 4.0, 4.0, 28.0, 18.0]], device=device)
    offset = torch.zeros(3, 2, 2, 2, device=device, requires_grad=True)
    mask = torch.ones(3, 1, 2, 2, device=device, requires_grad=True)
    clean = rois[[0, 2]]
    for sampling_ratio in (0, 2):
        out = ops.deform_roi_pool(x, rois, offset, mask, output_size=2, spatial_scale=0.25,
                                  sampling_ratio=sampling_ratio)
        assert (out[1] == 0).all()
        ref = ops.deform_roi_pool(x, clean, output_size=2, spatial_scale=0.25,
                                  sampling_ratio=sampling_ratio)
        torch.testing.assert_close(out[[0, 2]], ref)
        grads = torch.autograd.grad(out.sum(), (x, offset, mask))
        assert all(torch.isfinite(gr).all() for gr in grads)
        torch.testing.assert_close(
            out[[0, 2]], torchvision.ops.roi_align(x, clean, 2, 0.25, sampling_ratio, True))
    tv_nan = ops.roi_align(x, rois, 2, 0.25, 2, True)
    assert (tv_nan[1] == 0).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rois": torch.zeros(3, 4)}, "rois must be a Tensor\\[K, 5\\]"),
        ({"rois": [torch.zeros(3, 5)]}, "rois\\[0\\] must be a Tensor\\[L, 4\\]"),
        ({"rois": torch.tensor([[2.0, 0, 0, 4, 4]])}, "batch index"),
        ({"rois": torch.tensor([[-1.0, 0, 0, 4, 4]])}, "batch index"),
        ({"rois": torch.tensor([[0.5, 0, 0, 4, 4]])}, "batch index"),
        ({"offset": torch.zeros(1, 2, 3, 2)}, "offset must have shape"),
        ({"offset": torch.zeros(2, 2, 3, 3)}, "offset must have shape"),
        ({"mask": torch.zeros(1, 2, 3, 3)}, "mask must have shape"),
        ({"input": torch.zeros(4, 8, 8)}, "input must be a Tensor\\[N, C, H, W\\]"),
        ({"output_size": 0}, "output_size"),
    ],
)
def test_deform_roi_pool_bad_input(kwargs, match):
    args = {"input": torch.zeros(2, 4, 8, 8), "rois": torch.tensor([[1.0, 0, 0, 4, 4]]),
            "offset": None, "mask": None, "output_size": 3}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ops.deform_roi_pool(args.pop("input"), args.pop("rois"), args.pop("offset"),
                            args.pop("mask"), **args)


def test_roi_align_bad_input():
    x = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match="rois"):
        ops.roi_align(x, torch.zeros(2, 6), 2)
    with pytest.raises(ValueError, match="batch index"):
        ops.roi_align(x, torch.tensor([[1.0, 0, 0, 2, 2]]), 2, backend="torchvision")
    with pytest.raises(ValueError, match="not divisible"):
        ops.ps_roi_align(x, torch.tensor([[0.0, 0, 0, 2, 2]]), 3)
    with pytest.raises(ValueError, match="backend"):
        ops.roi_align(x, torch.tensor([[0.0, 0, 0, 2, 2]]), 2, backend="mmcv")


def test_roi_align_huge_rois_are_chunked(monkeypatch):
    import detkit.ops._sampling as sampling

    monkeypatch.setattr(sampling, "MAX_SAMPLES_PER_CHUNK", 500)
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    rois = make_rois(25, 2, (48, 48), seed=7)
    for sr in (0, 2):
        torch.testing.assert_close(
            ops.roi_align(x, rois, 3, 0.25, sr, True, backend="detkit"),
            torchvision.ops.roi_align(x, rois, 3, 0.25, sr, True))


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_max_matches_scalar_reference(aligned, sampling_ratio):
    g = torch.Generator().manual_seed(40)
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64, generator=g)
    rois = make_rois(12, 2, (36, 44), seed=40)  # some cross the border: 0-valued samples
    out = ops.roi_align(x, rois, (3, 2), 0.25, sampling_ratio, aligned, mode="max")
    ref = reference.roi_align_max(x, rois, 3, 2, 0.25, sampling_ratio, aligned)
    torch.testing.assert_close(out, ref)
    # max >= mean, and equal where a bin has a single sample
    mean = ops.roi_align(x, rois, (3, 2), 0.25, sampling_ratio, aligned)
    assert (out >= mean - 1e-12).all()
    one = ops.roi_align(x, rois, (3, 2), 0.25, 1, aligned, mode="max")
    torch.testing.assert_close(one, ops.roi_align(x, rois, (3, 2), 0.25, 1, aligned))


def test_roi_align_max_hand_computed_and_ties():
    # 4x4 map 10*y + x, RoI (0, 0)-(4, 4), one bin, 2x2 samples at y, x in {1, 3}: max 33
    x = (10 * torch.arange(4.0)[:, None] + torch.arange(4.0)[None, :]).view(1, 1, 4, 4)
    x.requires_grad_()
    rois = torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]])
    out = ops.roi_align(x, rois, 1, 1.0, 2, mode="max")
    assert out.item() == 33.0
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad[0, 0, 3, 3] == 1.0 and grad.sum() == 1.0
    # a constant map: every sample ties; the gradient goes to the first sample only (mmcv)
    ones = torch.ones(1, 1, 4, 4, requires_grad=True)
    (grad,) = torch.autograd.grad(ops.roi_align(ones, rois, 1, 1.0, 2, mode="max").sum(), ones)
    assert grad[0, 0, 1, 1] == 1.0 and grad.sum() == 1.0
    # a zero-size RoI with aligned=True and adaptive sampling has no samples: 0 (mmcv: -FLT_MAX)
    point = torch.tensor([[0.0, 2.0, 2.0, 2.0, 2.0]])
    assert ops.roi_align(x, point, 2, 1.0, 0, True, mode="max").abs().sum() == 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_max_gradcheck(device, sampling_ratio):
    g = torch.Generator().manual_seed(41)
    x = torch.randn(2, 1, 5, 6, dtype=torch.float64, generator=g).to(device).requires_grad_()
    rois = make_rois(4, 2, (20, 24), min_side=4.0, seed=41).to(device)
    assert gradcheck(lambda x: ops.roi_align(x, rois, 2, 0.25, sampling_ratio, True, mode="max"),
                     (x,))


@pytest.mark.parametrize("device", DEVICES)
def test_roi_align_max_runs_detkit_on_every_device(device):
    x = torch.randn(1, 2, 8, 8, device=device)
    rois = torch.tensor([[0.0, 1.0, 1.0, 20.0, 24.0]], device=device)
    auto = ops.roi_align(x, rois, 2, 0.25, 2, True, mode="max")
    torch.testing.assert_close(auto, ops.roi_align(x, rois, 2, 0.25, 2, True, mode="max",
                                                   backend="detkit"))
    with pytest.raises(ValueError, match="no max mode"):
        ops.roi_align(x, rois, 2, mode="max", backend="torchvision")
    with pytest.raises(ValueError, match="mode must be"):
        ops.roi_align(x, rois, 2, mode="sum")


def _bad_bins(kind, value, rois, bins):
    """offset/mask with one non-finite entry at RoI 1, bin (0, 1)."""
    offset = torch.randn(rois.shape[0], 2, *bins, dtype=torch.float64) * 0.2
    mask = torch.rand(rois.shape[0], 1, *bins, dtype=torch.float64)
    (offset if kind == "offset" else mask)[1, 0, 0, 1] = value
    return offset, mask


@pytest.mark.parametrize("kind", ["offset", "mask"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_non_finite_offset_or_mask_only_zeroes_its_bin(kind, value, sampling_ratio):
    x = torch.randn(2, 3, 8, 9, dtype=torch.float64, requires_grad=True)
    rois = make_rois(4, 2, (32, 36), min_side=4.0, seed=42)
    offset, mask = _bad_bins(kind, value, rois, (2, 3))
    clean_offset, clean_mask = offset.clone(), mask.clone()
    if kind == "offset":
        clean_offset[1, 0, 0, 1] = 0.0
    else:
        clean_mask[1, 0, 0, 1] = 1.0
    kwargs = {"output_size": (2, 3), "spatial_scale": 0.25, "sampling_ratio": sampling_ratio}
    for t in (offset, mask, clean_offset, clean_mask):
        t.requires_grad_()
    out = ops.deform_roi_pool(x, rois, offset, mask, **kwargs)
    clean = ops.deform_roi_pool(x, rois, clean_offset, clean_mask, **kwargs)
    hit = torch.zeros_like(out, dtype=torch.bool)
    hit[1, :, 0, 1] = True
    assert (out[hit] == 0).all() and (clean[hit] != 0).all()
    torch.testing.assert_close(out[~hit], clean[~hit])  # every other bin and RoI is unchanged
    grad_out = torch.randn_like(out).masked_fill(hit, 0.0)
    grads = torch.autograd.grad(out, (x, offset, mask), grad_out)
    assert all(torch.isfinite(gr).all() for gr in grads)
    assert grads[1][1, :, 0, 1].abs().sum() == 0 and grads[2][1, :, 0, 1].abs().sum() == 0
    clean_grads = torch.autograd.grad(clean, (x, clean_offset, clean_mask), grad_out)
    for ours, ref in zip(grads, clean_grads, strict=True):
        torch.testing.assert_close(ours, ref)


def _count_slices(monkeypatch):
    """Record the number of samples of every slice the kernel materialises."""
    import detkit.ops._sampling as sampling

    sizes = []
    original = sampling.SampleLayout.slice

    def recording(self, start, stop, lo, hi):
        sizes.append(stop - start)
        return original(self, start, stop, lo, hi)

    monkeypatch.setattr(sampling.SampleLayout, "slice", recording)
    return sizes


@pytest.mark.parametrize("aligned", [True, False])
def test_huge_adaptive_roi_has_bounded_chunks_and_is_exact(monkeypatch, aligned):
    # A 200-px RoI at scale 1 on a 6x7 map, 2x2 output: 100x100 samples per bin (4e4 in all),
    # where torchvision's answer is cheap. With a 3000-sample limit every bin is split; the
    # limit is what bounds memory for any RoI size (a 20,000-px RoI has 4e8 samples).
    import detkit.ops._sampling as sampling

    x = torch.randn(1, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0.0, -80.0, -50.0, 120.0, 150.0], [0.0, 1.0, 1.0, 5.0, 4.0]],
                        dtype=torch.float64)
    total = 4 * 100 * 100 + 4 * 2 * 2
    monkeypatch.setattr(sampling, "MAX_SAMPLES_PER_CHUNK", 3_000)
    sizes = _count_slices(monkeypatch)
    out = ops.roi_align(x, rois, 2, 1.0, 0, aligned, backend="detkit")
    assert len(sizes) >= total // 3_000 and max(sizes) <= 3_000 and sum(sizes) == total
    ref = torchvision.ops.roi_align(x, rois, 2, 1.0, 0, aligned)
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(ref)
    sizes.clear()
    (g_ours,) = torch.autograd.grad(out, x, grad)
    assert max(sizes) <= 3_000 and sum(sizes) == total  # backward recomputes chunk by chunk
    torch.testing.assert_close(g_ours, torch.autograd.grad(ref, x, grad)[0])


def test_chunked_autograd_saves_no_samples(monkeypatch):
    # What autograd keeps for backward does not grow with the number of samples: only the
    # inputs and per-bin quantities are saved; chunks are recomputed in backward.
    import detkit.ops._sampling as sampling

    monkeypatch.setattr(sampling, "MAX_SAMPLES_PER_CHUNK", 500)
    x = torch.randn(1, 2, 6, 7, requires_grad=True)
    offset = torch.zeros(1, 2, 2, 2, requires_grad=True)

    def saved_numel(side):
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel()
            return t

        rois = torch.tensor([[0.0, 0.0, 0.0, side, side]])
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            ops.deform_roi_pool(x, rois, offset, output_size=2, sampling_ratio=0)
        return total

    small, huge = saved_numel(30.0), saved_numel(160.0)  # 900 vs 25,600 samples
    assert huge == small and huge < 500


@pytest.mark.parametrize("sampling_ratio", [0, 3])
def test_roi_align_max_chunked_equals_unchunked(monkeypatch, sampling_ratio):
    import detkit.ops._sampling as sampling

    g = torch.Generator().manual_seed(43)
    x = torch.randn(2, 4, 9, 10, dtype=torch.float64, generator=g, requires_grad=True)
    rois = make_rois(8, 2, (36, 40), seed=43)
    whole = ops.roi_align(x, rois, 3, 0.25, sampling_ratio, True, mode="max")
    (g_whole,) = torch.autograd.grad(whole.sum(), x)
    monkeypatch.setattr(sampling, "MAX_VALUES_PER_CHUNK", 4 * 7)  # 7 samples: bins split
    chunked = ops.roi_align(x, rois, 3, 0.25, sampling_ratio, True, mode="max")
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(torch.autograd.grad(chunked.sum(), x)[0], g_whole)
