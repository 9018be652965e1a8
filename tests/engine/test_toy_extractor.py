"""A new extractor needs only its class and one entry in EXTRACTORS: this toy, defined here and
added by monkeypatch, trains, predicts, runs in the comparison study and has its bins drawn."""

import json

import torch
from PIL import Image
from torch import Tensor

from detkit import ops
from detkit.engine.cli import load_module, train, visualize
from detkit.engine.compare import compare
from detkit.engine.offsets import bin_layout
from detkit.models import EXTRACTORS, BinLayout, RoIExtractor
from tests.engine.helpers import FAST_MODEL, FAST_TRAINER, coco_args


class ShiftedRoIAlignExtractor(RoIExtractor):
    """RoIAlign with every bin moved right by ``shift`` RoI widths: a toy that moves its bins."""

    def __init__(self, *, in_channels: int, output_size: int = 7, shift: float = 0.25) -> None:
        super().__init__(in_channels=in_channels, output_size=output_size)
        self.shift = shift

    def pool_level(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        moved = rois.clone()
        moved[:, [1, 3]] += self.shift * (rois[:, 3:4] - rois[:, 1:2])
        return ops.roi_align(feature, moved, self.output_size, scale, 2)

    def bin_layout(self, features: dict[str, Tensor], boxes_per_image: list[Tensor]) -> BinLayout:
        boxes = torch.cat(boxes_per_image)
        offset = boxes.new_zeros(len(boxes), 2, *self.output_size)
        offset[:, 0] = self.shift
        return BinLayout.from_offsets(boxes, offset, 1.0)


def test_toy_extractor_trains_predicts_compares_and_is_drawn(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(EXTRACTORS, "toy", ShiftedRoIAlignExtractor)
    assert ShiftedRoIAlignExtractor.moves_bins
    data = coco_args(tmp_path / "coco")
    model_args = [*FAST_MODEL, "--model.roi_extractor", "toy"]

    # the study trains it through the training command line and reports it
    out = tmp_path / "study"
    report = compare(None, ["toy"], out, overrides=[*data, *FAST_MODEL, *FAST_TRAINER,
                                                    "--trainer.max_steps", "1"],
                     extractor_args={"toy": {"shift": 0.5}}, train_fn=train)
    assert any(line.startswith("| toy |") for line in report.read_text().splitlines())
    metrics = json.loads((out / "runs" / "toy" / "seed0" / "metrics.json").read_text())
    checkpoint = metrics["checkpoint"]

    # the checkpoint rebuilds the toy by name and predicts
    module = load_module(checkpoint).eval()
    extractor = module.model.roi_extractor
    assert isinstance(extractor, ShiftedRoIAlignExtractor) and extractor.shift == 0.5
    image = torch.randn(3, 64, 64)
    with torch.no_grad():
        output = module.model([image])[0]
    assert output["boxes_xyxy"].shape[1] == 4 and len(output["scores"]) > 0

    # its bins, moved half a RoI width right, are what visualize draws
    box = torch.tensor([[8.0, 8.0, 28.0, 40.0]])
    layout = bin_layout(module.model, image, box)
    shift = torch.tensor([0.5 * 20.0, 0.0, 0.5 * 20.0, 0.0])
    torch.testing.assert_close(layout.after, layout.before + shift)
    # the command line describes the checkpoint's model (visualize refuses one that differs)
    written = visualize([*data, *model_args, "--model.roi_extractor_args", '{"shift": 0.5}',
                         "--ckpt", checkpoint, "--out", str(tmp_path / "viz"),
                         "--num_images", "1", "--score_thresh", "0.0"])
    offsets = [p for p in written if p.name.endswith("_offsets.png")]
    assert len(written) == 2 and len(offsets) == 1
    with Image.open(offsets[0]) as drawn:
        assert drawn.size == (512, 512)
