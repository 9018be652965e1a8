"""The quality benchmark's torchvision baselines: defaults, and tuned from a detkit config."""

from pathlib import Path

import pytest
import torch
import yaml
from torchvision.ops.misc import FrozenBatchNorm2d

from detkit.benchmarks import quality
from detkit.benchmarks.quality import (
    build_torchvision_baseline,
    reference_recipe,
    tuned_recipe,
    tuned_settings,
)

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
    # trainable GroupNorm and the config's FPN width; the defaults keep FrozenBatchNorm and 256
    assert model["norm"] == "group" and model["fpn_channels"] == 64
    tuned_norms = {type(m) for m in tuned.backbone.modules()} & {torch.nn.GroupNorm,
                                                                FrozenBatchNorm2d}
    default_norms = {type(m) for m in default.backbone.modules()} & {torch.nn.GroupNorm,
                                                                    FrozenBatchNorm2d}
    assert tuned_norms == {torch.nn.GroupNorm} and default_norms == {FrozenBatchNorm2d}
    assert tuned.backbone.out_channels == 64 and default.backbone.out_channels == 256
    assert tuned.backbone.fpn.layer_blocks[0][1].__class__ is torch.nn.GroupNorm  # FPN too
    assert tuned.roi_heads.box_head.fc6.in_features == 64 * 7 * 7
    assert all(p.requires_grad for p in tuned.backbone.parameters())
    # both train on detkit's batches (boxes as torchvision names them)
    tuned.train()
    images = [torch.rand(3, 256, 256), torch.rand(3, 256, 256)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([3])}] * 2
    losses = tuned(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness",
                           "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_the_benchmark_reads_data_and_model_as_eval_does(tmp_path):
    """The benchmark's DataModule, detector and model settings come from the config through the
    command line's parser (the synthetic set by name, the scale jitter as a tuple), and the
    detector holds the checkpoint's weights."""
    from detkit.benchmarks.quality import trained_setup
    from detkit.data.synthetic import SyntheticFactors
    from detkit.engine.cli import TrainCLI, _cli, trainer_defaults

    cli = _cli(TrainCLI, ["--config", str(QUICKSTART), "--run_dir", str(tmp_path / "run")],
               trainer_defaults=trainer_defaults())
    checkpoint = tmp_path / "model.ckpt"
    trained = {k: v + 1 if v.is_floating_point() else v for k, v in cli.model.state_dict().items()}
    torch.save({"state_dict": trained, "global_step": 0,
                "hyper_parameters": dict(cli.model.hparams)}, checkpoint)
    data, model, settings = trained_setup(str(QUICKSTART), str(checkpoint))
    yaml_data = yaml.safe_load(QUICKSTART.read_text())["data"]
    assert data.format == "synthetic" and data.batch_size == yaml_data["batch_size"]
    assert data.format_args["synthetic"] == SyntheticFactors(preset="default")
    assert data.augmentation.scale_jitter == tuple(yaml_data["scale_jitter"])
    # the checkpoint's weights (not the ones the same seed would build)
    loaded = model.state_dict()
    assert loaded and all(torch.equal(v, trained[f"model.{k}"]) for k, v in loaded.items())
    assert list(settings["model"]["rpn"]["anchor_sizes"]) == [16, 32, 64, 128, 256]
    assert settings["model"]["roi_head"]["representation_size"] == 256
    assert settings["trainer"]["gradient_clip_val"] == 10.0


def test_the_recipes_reference_and_tuned_from_the_config():
    config = yaml.safe_load(QUICKSTART.read_text())
    reference = reference_recipe(batch_size=2)
    assert (reference.optimizer.name, reference.optimizer.lr) == ("sgd", 0.02 * 2 / 16)
    schedule = reference.schedule(1500)  # warmup at most a tenth, x0.1 at 2/3 and 8/9
    assert (schedule.kind, schedule.warmup_steps, schedule.milestones) == ("step", 150,
                                                                           (1000, 1333))
    assert reference.schedule(30000).warmup_steps == 1000 and reference.clip_grad_norm is None
    tuned = tuned_recipe(config)
    assert (tuned.optimizer.name, tuned.optimizer.lr, tuned.optimizer.weight_decay) == (
        "adamw", 0.001, 0.05)
    schedule = tuned.schedule(400)
    assert (schedule.kind, schedule.warmup_steps, schedule.milestones) == ("cosine", 50, ())
    assert tuned.clip_grad_norm == 10.0
    # a step-decay config: its milestones become the same fractions of the budget
    stepped = {"model": {"schedule": {"kind": "step", "milestones": [600, 800], "gamma": 0.5,
                                      "warmup_factor": 0.01}},
               "trainer": {"max_steps": 1000}}
    schedule = tuned_recipe(stepped).schedule(500)
    assert (schedule.milestones, schedule.gamma, schedule.warmup_factor) == ((300, 400), 0.5,
                                                                             0.01)
    with pytest.raises(ValueError, match="milestones need trainer.max_steps"):
        tuned_recipe({"model": stepped["model"], "trainer": {"max_steps": -1}})


def test_the_schedule_follows_the_budget_s_steps_re_estimated_every_step(monkeypatch):
    """The learning rates a baseline trains with: warmup, then cosine to about zero at the
    last step the budget allows, even when the first steps are slow (start-up)."""
    clock = iter([0.0] + [10.0 + step for step in range(1000)])  # 10 s of start-up, 1 s a step
    monkeypatch.setattr(quality.time, "perf_counter", lambda: next(clock))
    model = torch.nn.Linear(1, 1)
    rates = []

    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = model

        def forward(self, images, targets):
            rates.append(optimizer_lr())
            return {"loss": self.linear(torch.ones(1, 1)).sum()}

    def optimizer_lr():
        return made[0].param_groups[0]["lr"]

    made = []
    real = quality.make_optimizer
    monkeypatch.setattr(quality, "make_optimizer", lambda *a: made.append(real(*a)) or made[-1])

    class Data:
        def train_dataloader(self):
            batch = ([torch.zeros(3, 4, 4)], [{"boxes_xyxy": torch.zeros(0, 4),
                                               "labels": torch.zeros(0, dtype=torch.long)}])
            return [batch] * 10

    recipe = quality.BaselineRecipe(quality.OptimizerSettings("adamw", lr=1.0), kind="cosine",
                                    warmup_steps=5, warmup_fraction_cap=1.0, decay_at=())
    steps = quality.train_baseline(Detector(), Data(), 110.0, recipe)
    assert steps == 100 and len(rates) == 100  # 10 s start-up, then 100 steps of 1 s
    assert rates[0] == pytest.approx(0.001) and 0.9 < max(rates) <= 1.0
    assert rates[-1] < 0.01  # decayed to about zero at the budget's end, not before
    assert all(r > 0 for r in rates[:-1])
