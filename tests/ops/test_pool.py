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
