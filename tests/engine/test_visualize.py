import pytest
import torch
from PIL import Image

from detkit.engine.cli import train, visualize
from detkit.engine.offsets import bin_layout, draw_bins
from detkit.models import build_faster_rcnn
from tests.engine.helpers import FAST_MODEL, FAST_TRAINER, coco_args


def test_bins_move_by_gamma_times_roi_size_times_offset():
    model = build_faster_rcnn(2, roi_extractor="deform_roi_pool",
                              roi_extractor_args={"offset_fc_channels": 16, "output_size": 3})
    model.eval()
    image = torch.randn(3, 64, 96)
    boxes = torch.tensor([[8.0, 4.0, 38.0, 64.0]])  # 30 x 60
    layout = bin_layout(model, image, boxes)
    assert layout.before.shape == (1, 3, 3, 4)
    torch.testing.assert_close(layout.before, layout.after)  # zero-initialised offsets
    torch.testing.assert_close(layout.before[0, 0, 0], torch.tensor([8.0, 4.0, 18.0, 24.0]))
    with torch.no_grad():  # every bin: offset (x, y) = (0.5, -1.0)
        model.roi_extractor.offset_fc[-1].bias.copy_(torch.tensor([0.5] * 9 + [-1.0] * 9))
    layout = bin_layout(model, image, boxes)
    shift = torch.tensor([0.1 * 30 * 0.5, 0.1 * 60 * -1.0] * 2)  # gamma 0.1
    torch.testing.assert_close(layout.after, layout.before + shift)
    drawn = draw_bins(image, boxes, layout)
    assert drawn.dtype == torch.uint8 and drawn.shape == (3, 64, 96)
    zoomed = draw_bins(image, boxes, layout, zoom=3)
    assert zoomed.shape == (3, 192, 288)
    # the RoI's white outline lands at 3x its coordinates: column x1 = 8 -> 24, inside the box
    assert (zoomed[:, 3 * 30, 24] == 255).all() and not (drawn[:, 30, 24] == 255).all()


def test_plain_extractor_has_no_offsets_to_draw():
    model = build_faster_rcnn(2, roi_extractor="roi_align")
    with pytest.raises(ValueError, match="learns no offsets") as error:
        bin_layout(model, torch.randn(3, 32, 32), torch.tensor([[1.0, 1.0, 20.0, 20.0]]))
    assert "deform_roi_pool, mdeform_roi_pool, deform_psroi_pool" in str(error.value)


def test_visualize_writes_images(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = coco_args(tmp_path / "coco")
    model = [*FAST_MODEL, "--model.roi_extractor", "deform_psroi_pool"]
    train([*data, *model, *FAST_TRAINER, "--trainer.max_steps", "2"])
    ckpt = tmp_path / "runs" / "detkit" / "deform_psroi_pool" / "v0" / "checkpoints" / "last.ckpt"
    written = visualize([*data, *model, "--ckpt", str(ckpt), "--out", str(tmp_path / "viz"),
                         "--num_images", "2", "--score_thresh", "0.0"])
    names = sorted(p.name for p in written)
    assert len(names) == 4 and sum(n.endswith("_offsets.png") for n in names) == 2
    with Image.open(written[0]) as image:
        assert image.size == (64, 64)
    with Image.open(written[1]) as image:  # offsets enlarged to 512 px so the bins are legible
        assert written[1].name.endswith("_offsets.png") and image.size == (512, 512)
    capsys.readouterr()
    visualize([*data, *model, "--ckpt", str(ckpt), "--out", str(tmp_path / "none"),
               "--num_images", "2", "--score_thresh", "1.01"])  # no score reaches it
    printed = capsys.readouterr().out
    assert "2 of 2 image(s) have no detection scoring >= 1.01" in printed
    assert "no offsets drawn on 2 image(s)" in printed


def test_drawings_keep_the_images_own_pixel_values():
    """predict draws on the user's photo by normalising it and back: rounding, not truncation,
    so every pixel keeps its value (truncation made many one level darker)."""
    from detkit.engine.drawing import MEAN, STD, to_uint8

    pixels = torch.arange(256, dtype=torch.uint8).repeat(3, 4, 1)
    assert torch.equal(to_uint8((pixels.float() / 255 - MEAN) / STD), pixels)


def test_image_row_pads_to_the_largest_and_keeps_each_image():
    from detkit.engine.drawing import image_row

    a = torch.full((3, 10, 20), 7, dtype=torch.uint8)
    b = torch.full((3, 16, 12), 9, dtype=torch.uint8)
    row = image_row([a, b], padding=2)
    assert row.shape == (3, 16 + 4, 20 + 20 + 6)  # each cell 16 x 20, padding around and between
    assert torch.equal(row[:, 2:12, 2:22], a) and torch.equal(row[:, 2:18, 24:36], b)
    assert int(row[:, 12:18, 2:22].max()) == 0  # a padded below with zeros
    assert int(row[:, 0, :].min()) == 255  # white separators
