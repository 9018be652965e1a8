import pytest
import torch
import torchvision.ops

from detkit import ops
from tests.conftest import DEVICES
from tests.ops.test_align import make_rois


@pytest.mark.parametrize("device", DEVICES)
def test_max_pools_are_torchvision(device):
    x = torch.randn(2, 2 * 9, 10, 12, dtype=torch.float64, device=device, requires_grad=True)
    rois = make_rois(20, 2, (40, 48), seed=20).to(device)
    torch.testing.assert_close(ops.roi_pool(x, rois, 3, 0.25),
                               torchvision.ops.roi_pool(x, rois, 3, 0.25))
    torch.testing.assert_close(ops.ps_roi_pool(x, rois, 3, 0.25),
                               torchvision.ops.ps_roi_pool(x, rois, 3, 0.25))
    out = ops.roi_pool(x, [rois[:5, 1:], rois[5:, 1:]], 3, 0.25)
    assert out.shape == (20, 18, 3, 3)


def test_max_pools_bad_input():
    x = torch.zeros(1, 8, 5, 5)
    with pytest.raises(ValueError, match="batch index"):
        ops.roi_pool(x, torch.tensor([[3.0, 0, 0, 2, 2]]), 2)
    with pytest.raises(ValueError, match="not divisible"):
        ops.ps_roi_pool(x, torch.tensor([[0.0, 0, 0, 2, 2]]), 3)


@pytest.mark.parametrize("device", DEVICES)
def test_torchvision_paths_keep_the_nonfinite_roi_contract(device):
    """Every op that runs a torchvision kernel (roi_pool, ps_roi_pool, and roi_align /
    ps_roi_align with backend="torchvision", the CUDA default) pools a NaN or infinite RoI to
    zeros with finite gradients, and leaves the other RoIs exactly torchvision's (its CUDA
    kernels return NaN for such a RoI)."""
    x = torch.randn(1, 2 * 4, 8, 8, device=device, requires_grad=True)
    rois = torch.tensor([[0.0, 2.0, 2.0, 20.0, 20.0], [0.0, float("nan"), 1.0, 9.0, 9.0],
                         [0.0, 4.0, 4.0, float("inf"), 18.0], [0.0, 4.0, 4.0, 28.0, 18.0]],
                        device=device)
    good = rois[[0, 3]]
    cases = {
        "roi_pool": (lambda r: ops.roi_pool(x, r, 2, 0.25),
                     lambda r: torchvision.ops.roi_pool(x, r, 2, 0.25)),
        "ps_roi_pool": (lambda r: ops.ps_roi_pool(x, r, 2, 0.25),
                        lambda r: torchvision.ops.ps_roi_pool(x, r, 2, 0.25)),
        "roi_align": (lambda r: ops.roi_align(x, r, 2, 0.25, 2, True, backend="torchvision"),
                      lambda r: torchvision.ops.roi_align(x, r, 2, 0.25, 2, True)),
        "ps_roi_align": (lambda r: ops.ps_roi_align(x, r, 2, 0.25, 2, backend="torchvision"),
                         lambda r: torchvision.ops.ps_roi_align(x, r, 2, 0.25, 2)),
    }
    for name, (ours, reference) in cases.items():
        out = ours(rois)
        assert (out[[1, 2]] == 0).all(), name
        torch.testing.assert_close(out[[0, 3]], reference(good), msg=name)
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert torch.isfinite(grad).all(), name
