"""A detector's parts copied from another detector's weights and kept fixed in training."""

import pytest
import torch

from detkit.models import RoIHeadSettings, RPNSettings, build_faster_rcnn
from detkit.models.parts import PARTS, freeze_parts, load_parts, part_module

RPN = RPNSettings(anchor_sizes=(16, 32, 64, 128, 256), pre_nms_top_n_train=100,
                  post_nms_top_n_train=50)
HEAD = RoIHeadSettings(batch_size_per_image=32, representation_size=32)


def detector(seed, **kwargs):
    torch.manual_seed(seed)
    settings = {"backbone_width": 8, "fpn_channels": 16, "norm": "group", **kwargs}
    return build_faster_rcnn(3, rpn=RPN, roi_head=HEAD, **settings)


def part_state(model, part):
    return {k: v.clone() for k, v in part_module(model, part).state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def batch(seed=0, size=64):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, size, size, generator=g) for _ in range(2)]
    boxes = torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 10.0, 60.0, 50.0]])
    targets = [{"boxes_xyxy": boxes, "labels": torch.tensor([1, 3])} for _ in images]
    return images, targets


def test_load_parts_copies_exactly_the_named_parts():
    donor, model = detector(0), detector(1)
    before = {part: part_state(model, part) for part in PARTS}
    assert not same(before["backbone"], part_state(donor, "backbone"))  # different seeds
    load_parts(model, donor.state_dict(), ["backbone", "fpn", "rpn"], source="donor")
    for part in ("backbone", "fpn", "rpn"):
        assert same(part_state(model, part), part_state(donor, part)), part
    assert same(part_state(model, "roi_heads"), before["roi_heads"])  # left as built


def test_load_parts_refuses_weights_of_another_shape_and_loads_nothing():
    donor, model = detector(0, fpn_channels=32), detector(1)
    before = part_state(model, "backbone")
    with pytest.raises(ValueError) as error:
        load_parts(model, donor.state_dict(), ["backbone", "fpn"], source="donor.ckpt")
    message = str(error.value)
    assert message.startswith("donor.ckpt does not fit this model's backbone, fpn: fpn: other "
                              "shapes: ")
    assert "inner_blocks.0.0.weight (32, 8, 1, 1) (here (16, 8, 1, 1))" in message
    assert "backbone:" not in message.split("fpn:", 2)[2]  # the backbone itself fits
    assert same(part_state(model, "backbone"), before)  # nothing loaded, not even what fit
    with pytest.raises(ValueError, match="rpn: 6 tensors missing"):
        load_parts(model, {"backbone.x": torch.zeros(1)}, ["rpn"], source="a file")
    with pytest.raises(ValueError, match="parts entry must be 'backbone', 'fpn', 'rpn' or "
                                         "'roi_heads', got 'head'"):
        load_parts(model, donor.state_dict(), ["head"], source="donor")


def test_frozen_parts_do_not_change_in_training_and_the_rest_does():
    model = detector(0)
    freeze_parts(model, ["backbone", "fpn", "rpn"])
    assert model.frozen_parts == ("backbone", "fpn", "rpn")
    frozen = {part: part_state(model, part) for part in ("backbone", "fpn", "rpn")}
    head = part_state(model, "roi_heads")
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.requires_grad for p in part_module(model, "roi_heads").parameters())
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    model.train()
    for step in range(2):
        losses = model(*batch(step))
        sum(losses.values()).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert not losses["loss_objectness"].requires_grad  # the RPN's losses reach no weight
    for part, state in frozen.items():
        assert same(part_state(model, part), state), part
    assert not same(part_state(model, "roi_heads"), head)


def test_a_frozen_batchnorm_keeps_its_statistics():
    model = detector(0, norm="bn")
    freeze_parts(model, ["backbone"])
    model.train()
    assert not model.backbone.body.body.bn1.training  # frozen: eval mode in train()
    assert model.backbone.body.fpn.training and model.roi_heads.training
    before = part_state(model, "backbone")
    with torch.no_grad():
        model(*batch())
    assert same(part_state(model, "backbone"), before)  # running mean/var unchanged
    with pytest.raises(ValueError, match="freeze names a part twice"):
        freeze_parts(model, ["rpn", "rpn"])
