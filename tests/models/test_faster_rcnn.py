import pytest
import torch

from detkit.models import EXTRACTORS, RoIHeadSettings, RPNSettings, build_faster_rcnn
from detkit.models.faster_rcnn import batch_images

SMALL_HEAD = RoIHeadSettings(batch_size_per_image=64, representation_size=128)
SMALL_RPN = RPNSettings(anchor_sizes=(16, 32, 64, 128, 256), pre_nms_top_n_train=300,
                        post_nms_top_n_train=150, pre_nms_top_n_test=200, post_nms_top_n_test=100)
SMALL_ARGS = {
    "deform_roi_pool": {"offset_fc_channels": 64},
    "mdeform_roi_pool": {"offset_fc_channels": 64},
}


def tiny_batch():
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(3, 96, 128, generator=g), torch.randn(3, 80, 96, generator=g)]
    # paint the objects so there is something to learn
    targets = [
        {"boxes_xyxy": torch.tensor([[8.0, 16.0, 48.0, 72.0], [60.0, 20.0, 120.0, 90.0]]),
         "labels": torch.tensor([1, 2])},
        {"boxes_xyxy": torch.tensor([[4.0, 4.0, 36.0, 40.0]]), "labels": torch.tensor([3])},
    ]
    for image, target in zip(images, targets, strict=True):
        for box, label in zip(target["boxes_xyxy"].long(), target["labels"], strict=True):
            image[int(label) - 1, box[1] : box[3], box[0] : box[2]] += 3.0
    return images, targets


def small_model(name, **kwargs):
    return build_faster_rcnn(3, backbone="resnet18", roi_extractor=name,
                             roi_extractor_args=SMALL_ARGS.get(name), rpn=SMALL_RPN,
                             roi_head=SMALL_HEAD, **kwargs)


@pytest.mark.parametrize("name", list(EXTRACTORS))
def test_each_extractor_trains_and_predicts(name):
    torch.manual_seed(0)
    model = small_model(name)
    images, targets = tiny_batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    losses = []
    for _ in range(6):
        loss_dict = model(images, targets)
        assert set(loss_dict) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier",
                                  "loss_box_reg"}
        loss = sum(loss_dict.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-2:]) < losses[0]
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == 2
    for out, image in zip(outputs, images, strict=True):
        assert set(out) == {"boxes_xyxy", "scores", "labels", "proposals_xyxy"}
        boxes = out["boxes_xyxy"]
        assert boxes.shape[1] == 4 and out["scores"].shape == out["labels"].shape
        if len(boxes):  # boxes are clipped to the unpadded image
            assert boxes[:, 2].max() <= image.shape[2] and boxes[:, 3].max() <= image.shape[1]
            assert out["labels"].min() >= 1 and out["labels"].max() <= 3
        assert 0 < len(out["proposals_xyxy"]) <= 100


def test_images_without_objects_train():
    model = small_model("roi_align")
    images, targets = tiny_batch()
    targets[1] = {"boxes_xyxy": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())


def test_batch_images_pads_bottom_right():
    batch = batch_images([torch.ones(3, 50, 70), torch.ones(3, 64, 33)], 32)
    assert batch.tensors.shape == (2, 3, 64, 96)
    assert batch.image_sizes == [(50, 70), (64, 33)]
    assert batch.tensors[0, :, :50, :70].eq(1).all() and batch.tensors[0, :, 50:].eq(0).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="valid names"):
        build_faster_rcnn(3, roi_extractor="nope")
    with pytest.raises(ValueError, match="backbone must be 'resnet18', .* got"):
        build_faster_rcnn(3, backbone="vgg16")
    with pytest.raises(ValueError, match="anchor_sizes"):
        build_faster_rcnn(3, rpn=RPNSettings(anchor_sizes=(32, 64)))
    with pytest.raises(ValueError, match="targets are required"):
        small_model("roi_align")([torch.zeros(3, 32, 32)])


def test_backbone_weights_load_from_a_local_file(tmp_path):
    from torchvision.models import resnet18

    reference = resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = build_faster_rcnn(2, backbone="resnet18", norm="frozen_bn",
                              backbone_weights=str(path))
    body = model.backbone.body.body
    torch.testing.assert_close(body.conv1.weight, reference.conv1.weight)
    torch.testing.assert_close(body.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    with pytest.raises(ValueError, match="not in the file"):
        torch.save({"conv1.weight": reference.conv1.weight}, path)
        build_faster_rcnn(2, backbone="resnet18", norm="frozen_bn", backbone_weights=str(path))


def test_the_same_seed_gives_every_extractor_the_same_shared_weights():
    """Runs that differ only in the extractor start from the same weights everywhere else, and
    leave torch's RNG in the same state (the data's seeding follows it)."""
    def build(name):
        torch.manual_seed(3)
        model = build_faster_rcnn(3, fpn_channels=64, roi_extractor=name,
                                  roi_extractor_args=SMALL_ARGS.get(name), rpn=SMALL_RPN,
                                  roi_head=SMALL_HEAD)
        shared = {k: v for k, v in model.state_dict().items()
                  if not k.startswith("roi_heads.box_roi_pool.")}
        return shared, torch.rand(4), model

    reference, after, _ = build("roi_align")
    assert {k.split(".")[0] for k in reference} == {"backbone", "rpn", "roi_heads"}
    for name in ("attention_pool", "deform_roi_pool"):
        shared, draws, model = build(name)
        assert sum(p.numel() for p in model.roi_extractor.parameters()) > 0
        assert shared.keys() == reference.keys()
        different = [k for k in shared if not torch.equal(shared[k], reference[k])]
        assert different == [], f"{name}: {different[:3]}"
        assert torch.equal(draws, after)
    _, _, again = build("deform_roi_pool")
    assert all(torch.equal(a, b) for a, b in zip(model.roi_extractor.state_dict().values(),
                                                 again.roi_extractor.state_dict().values(),
                                                 strict=True))  # its own stream follows the seed
