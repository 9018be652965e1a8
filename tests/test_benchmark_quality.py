"""The quality benchmark's torchvision baselines: defaults, and tuned from a detkit config."""

from pathlib import Path

import torch
import yaml

from detkit.benchmarks.quality import build_torchvision_baseline, tuned_settings

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


def test_tuned_baseline_takes_anchors_proposals_rois_and_head_width_from_the_config():
    model = yaml.safe_load(QUICKSTART.read_text())["model"]
    torch.manual_seed(0)
    tuned = build_torchvision_baseline(6, 256, tuned_settings(model))
    default = build_torchvision_baseline(6, 256)
    rpn, head = model["rpn"], model["roi_head"]
    assert tuned.rpn.anchor_generator.sizes == tuple((s,) for s in rpn["anchor_sizes"])
    assert default.rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,), (512,))
    assert tuned.rpn._pre_nms_top_n == {"training": rpn["pre_nms_top_n_train"],
                                        "testing": rpn["pre_nms_top_n_test"]}
    assert tuned.rpn._post_nms_top_n == {"training": rpn["post_nms_top_n_train"],
                                         "testing": rpn["post_nms_top_n_test"]}
    assert default.rpn._pre_nms_top_n == {"training": 2000, "testing": 1000}
    assert tuned.roi_heads.fg_bg_sampler.batch_size_per_image == head["batch_size_per_image"]
    assert default.roi_heads.fg_bg_sampler.batch_size_per_image == 512
    width = head["representation_size"]
    assert tuned.roi_heads.box_head.fc7.out_features == width
    assert default.roi_heads.box_head.fc7.out_features == 1024
    assert tuned.roi_heads.box_predictor.cls_score.out_features == 7  # 6 classes + background
    assert tuned.transform.min_size == default.transform.min_size == (256,)
    # both train on detkit's batches (boxes as torchvision names them)
    tuned.train()
    images = [torch.rand(3, 256, 256), torch.rand(3, 256, 256)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([3])}] * 2
    losses = tuned(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness",
                           "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_the_quickstart_data_section_builds_the_data_module_training_uses():
    """The benchmark builds its DataModule from the config's YAML: the synthetic set by name
    (a dict in YAML) and the scale jitter as a tuple, as the training command line does."""
    from detkit.benchmarks.quality import data_module
    from detkit.data.synthetic import SyntheticFactors

    settings = yaml.safe_load(QUICKSTART.read_text())["data"]
    data = data_module(settings)
    assert data.format == "synthetic" and data.batch_size == settings["batch_size"]
    assert data.format_args["synthetic"] == SyntheticFactors(preset="default")
    assert data.augmentation.scale_jitter == tuple(settings["scale_jitter"])
