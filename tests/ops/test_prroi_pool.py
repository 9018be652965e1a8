"""prroi_pool: the PreciseRoIPooling semantics (closed-form scalar reference, hand-computed values),
gradients to features and RoI coordinates, and bad input."""

import pytest
import torch
from torch.autograd import gradcheck

from detkit import ops
from tests.conftest import DEVICES
from tests.ops import reference
from tests.ops.test_align import make_rois

LINEAR = (10 * torch.arange(4.0)[:, None] + torch.arange(4.0)[None, :]).view(1, 1, 4, 4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scale, output_size", [(0.25, (3, 2)), (1.0, (2, 2)), (0.5, (1, 3))])
def test_matches_scalar_reference(device, scale, output_size):
    g = torch.Generator().manual_seed(30)
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64, generator=g)
    # inside, across the border, sub-pixel and degenerate (x2 < x1: zero area) RoIs
    rois = make_rois(10, 2, (7 / scale, 9 / scale), min_side=0.2, seed=30)
    rois = torch.cat([rois, torch.tensor([[1.0, 8.0, 4.0, 3.0, 9.0], [0.0, 2.0, 2.0, 2.0, 5.0]],
                                         dtype=torch.float64)])
    out = ops.prroi_pool(x.to(device), rois.to(device), output_size, scale)
    ref = reference.prroi_pool(x, rois, *output_size, scale)
    torch.testing.assert_close(out.cpu(), ref)
    assert (out[-2:] == 0).all()  # zero-area bins give 0


def test_hand_computed():
    # The interpolant of a linear map is the map itself, and the mean of a linear function over
    # a rectangle is its value at the centre: bin [1, 2] x [1, 2] -> 10 * 1.5 + 1.5 = 16.5.
    rois = torch.tensor([[0.0, 1.0, 1.0, 2.0, 2.0]])
    assert ops.prroi_pool(LINEAR, rois, 1).item() == pytest.approx(16.5)
    # spatial_scale multiplies the corners with no half-pixel shift: (2, 2)-(4, 4) at 0.5
    assert ops.prroi_pool(LINEAR, rois * torch.tensor([1, 2, 2, 2, 2]), 1, 0.5).item() == 16.5
    # 2x2 bins over [0, 2] x [0, 2]: centres (0.5, 0.5), (0.5, 1.5), (1.5, 0.5), (1.5, 1.5)
    out = ops.prroi_pool(LINEAR, torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0]]), 2)
    torch.testing.assert_close(out.view(2, 2), torch.tensor([[5.5, 6.5], [15.5, 16.5]]))
    # a constant map of 1: over the border cell [-1, 0] the interpolant falls off from 1 to 0
    # (mean 0.5), and beyond -1 it is 0; [-2, 0] in x averages 0.25
    ones = torch.ones(1, 1, 4, 4)
    assert ops.prroi_pool(ones, torch.tensor([[0.0, -1.0, 1.0, 0.0, 2.0]]), 1).item() == 0.5
    assert ops.prroi_pool(ones, torch.tensor([[0.0, -2.0, 1.0, 0.0, 2.0]]), 1).item() == 0.25
    assert ops.prroi_pool(ones, torch.tensor([[0.0, 4.0, 4.0, 6.0, 6.0]]), 1).item() == 0.0


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_features_and_coordinates(device):
    g = torch.Generator().manual_seed(31)
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, generator=g).to(device).requires_grad_()
    rois = make_rois(4, 2, (20, 24), min_side=3.0, seed=31).to(device)
    batch, coords = rois[:, :1], rois[:, 1:].clone().requires_grad_()

    def fn(x, coords):
        return ops.prroi_pool(x, torch.cat([batch, coords], dim=1), (2, 3), 0.25)

    assert gradcheck(fn, (x, coords), eps=1e-6, atol=1e-6)
    (g_coords,) = torch.autograd.grad(fn(x, coords).sum(), coords)
    assert (g_coords.abs().sum(dim=1) > 0).all()  # every RoI's coordinates get a gradient


def test_coordinate_gradient_of_a_ramp():
    # f = 10 * y + x; a 1x1 bin [x1, x2] x [y1, y2] averages 10 * (y1 + y2) / 2 + (x1 + x2) / 2,
    # so d/dx1 = d/dx2 = 0.5 and d/dy1 = d/dy2 = 5 while the box stays inside the map.
    rois = torch.tensor([[0.0, 0.3, 0.6, 2.2, 2.9]], requires_grad=True)
    ops.prroi_pool(LINEAR, rois, 1).sum().backward()
    torch.testing.assert_close(rois.grad, torch.tensor([[0.0, 0.5, 5.0, 0.5, 5.0]]))


def test_rois_without_grad_and_list_rois():
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    boxes = [torch.tensor([[0.5, 1.0, 4.0, 5.0]]), torch.tensor([[1.0, 1.0, 2.0, 3.0]] * 2)]
    listed = ops.prroi_pool(x, boxes, 2)
    rois = ops.boxes_to_rois(boxes)
    torch.testing.assert_close(listed, ops.prroi_pool(x, rois, 2))
    listed.sum().backward()
    assert rois.grad is None and x.grad is not None and x.grad.abs().sum() > 0
    # list entries that require grad get a coordinate gradient through the list form too
    first = boxes[0].clone().requires_grad_()
    ops.prroi_pool(x, [first, boxes[1]], 2).sum().backward()
    assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.parametrize("device", DEVICES)
def test_empty_nan_and_batch_routing(device):
    x = torch.randn(3, 2, 6, 6, device=device, requires_grad=True)
    empty = torch.zeros(0, 5, device=device, requires_grad=True)
    out = ops.prroi_pool(x, empty, (2, 3))
    assert out.shape == (0, 2, 2, 3)
    assert all(gr.abs().sum() == 0 for gr in torch.autograd.grad(out.sum(), (x, empty)))
    rois = torch.tensor([[2.0, 1.0, 1.0, 5.0, 4.0], [0.0, float("nan"), 1.0, 4.0, 4.0],
                         [1.0, 0.0, 2.0, 3.0, 5.5]], device=device, requires_grad=True)
    out = ops.prroi_pool(x, rois, 2)
    assert (out[1] == 0).all()
    for k, b in ((0, 2), (2, 1)):
        single = rois.detach()[k : k + 1].clone()
        single[:, 0] = 0
        torch.testing.assert_close(out[k : k + 1], ops.prroi_pool(x[b : b + 1], single, 2))
    grads = torch.autograd.grad(out.sum(), (x, rois))
    assert all(torch.isfinite(gr).all() for gr in grads)
    assert (grads[1][1] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_accumulates_in_float32(dtype):
    g = torch.Generator().manual_seed(32)
    x = torch.randn(1, 4, 8, 8, generator=g).to(dtype)
    rois = make_rois(6, 1, (8, 8), seed=32, dtype=torch.float32)
    out = ops.prroi_pool(x, rois, 2)
    assert out.dtype == dtype
    ref = ops.prroi_pool(x.float(), rois, 2)
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), atol=0, rtol=0)


def test_bad_input():
    x = torch.zeros(1, 2, 5, 5)
    with pytest.raises(ValueError, match="rois must be a Tensor\\[K, 5\\]"):
        ops.prroi_pool(x, torch.zeros(2, 4), 2)
    with pytest.raises(ValueError, match="batch index"):
        ops.prroi_pool(x, torch.tensor([[1.0, 0, 0, 2, 2]]), 2)
    with pytest.raises(ValueError, match="rois\\[0\\] must be a Tensor\\[L, 4\\]"):
        ops.prroi_pool(x, [torch.zeros(2, 5)], 2)
    with pytest.raises(ValueError, match="output_size"):
        ops.prroi_pool(x, torch.tensor([[0.0, 0, 0, 2, 2]]), (2, 0))
    with pytest.raises(ValueError, match="input must be a Tensor\\[N, C, H, W\\]"):
        ops.prroi_pool(torch.zeros(2, 5, 5), torch.tensor([[0.0, 0, 0, 2, 2]]), 2)


def test_huge_roi_is_chunked_and_exact(monkeypatch):
    import detkit.ops._sampling as sampling

    x = torch.randn(1, 2, 6, 5, dtype=torch.float64)
    rois = torch.tensor([[0.0, -3.0, -2.0, 9.0, 8.5], [0.0, 1.0, 1.0, 2.5, 3.0]],
                        dtype=torch.float64)
    whole = ops.prroi_pool(x, rois, 3)
    monkeypatch.setattr(sampling, "MAX_SAMPLES_PER_CHUNK", 7)  # splits bins over chunks
    torch.testing.assert_close(ops.prroi_pool(x, rois, 3), whole)
    torch.testing.assert_close(whole, reference.prroi_pool(x, rois, 3, 3, 1.0))
