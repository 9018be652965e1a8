import pytest
import torch
from torchvision.ops.poolers import LevelMapper

from detkit.ops import map_levels


def test_hand_computed_levels():
    # FPN eq. (1): 224 -> k0 = 4; halving the side drops a level; clamped to [2, 5]
    sides = torch.tensor([224.0, 112.0, 111.0, 448.0, 56.0, 10.0, 2000.0, 0.0])
    boxes = torch.stack([torch.zeros(8), torch.zeros(8), sides, sides], dim=1)
    assert map_levels(boxes, 2, 5).tolist() == [4, 3, 2, 5, 2, 2, 5, 2]
    # sqrt(area): a 112 x 448 box has the scale of 224
    assert map_levels(torch.tensor([[0.0, 0.0, 112.0, 448.0]]), 2, 5).tolist() == [4]


def test_matches_torchvision_level_mapper():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(500, 2, generator=g) * 800
    wh = torch.exp(torch.rand(500, 2, generator=g) * 7)
    boxes = torch.cat([xy, xy + wh], dim=1)
    mapper = LevelMapper(k_min=2, k_max=5)
    expected = mapper([boxes]) + 2  # torchvision returns levels relative to k_min
    assert torch.equal(map_levels(boxes, 2, 5), expected)
    rois = torch.cat([torch.zeros(500, 1), boxes], dim=1)
    assert torch.equal(map_levels(rois, 2, 5), expected)


def test_bad_input():
    with pytest.raises(ValueError, match="boxes_xyxy"):
        map_levels(torch.zeros(3, 3), 2, 5)
    with pytest.raises(ValueError, match="min_level"):
        map_levels(torch.zeros(3, 4), 5, 2)
