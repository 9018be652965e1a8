"""An unreadable val image with skip_bad_images: no predictions, no ground truth, counted."""

import json

import lightning as L

from detkit.data import DetectionDataModule
from detkit.engine import DetectionModule
from detkit.models import RoIHeadSettings, RPNSettings
from tests.engine.helpers import write_shapes_coco


def test_skipped_val_image_is_counted_and_evaluated_nowhere(tmp_path):
    train_images, train_ann = write_shapes_coco(tmp_path, "train", 2, seed=1)
    val_images, val_ann = write_shapes_coco(tmp_path, "val", 3, seed=2)
    (val_images / "val-1.png").write_bytes(b"truncated")  # image id 202
    dm = DetectionDataModule(format="coco", train_images=str(train_images),
                             train_ann=str(train_ann), val_images=str(val_images),
                             val_ann=str(val_ann), min_size=64, max_size=64, batch_size=2,
                             skip_bad_images=True)
    module = DetectionModule(
        dm.num_classes, backbone="resnet18",
        rpn=RPNSettings(anchor_sizes=(16, 32, 64, 128, 256), pre_nms_top_n_test=50,
                        post_nms_top_n_test=20),
        roi_head=RoIHeadSettings(score_thresh=0.0, representation_size=32))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, datamodule=dm, verbose=False)
    metrics = module.last_metrics
    assert metrics["images_skipped"] == 1
    assert sorted(module._val_proposals) == [201, 203]  # the images evaluated (`seen`)
    assert {p["image_id"] for p in module.last_predictions} <= {201, 203}
    assert module.last_predictions  # score_thresh 0: the two good images got detections
    json.dumps(metrics)  # metrics.json can hold it
