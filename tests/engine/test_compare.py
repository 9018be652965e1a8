import json

import pytest

from detkit.engine import compare as compare_module
from detkit.engine.cli import train
from detkit.engine.compare import compare
from detkit.engine.runs import RunFolderError
from tests.engine.helpers import FAST_MODEL, FAST_TRAINER, coco_args


def test_compare_writes_report_and_reuses_finished_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = [*coco_args(tmp_path / "coco"), *FAST_MODEL, *FAST_TRAINER,
                 "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
                 "--trainer.check_val_every_n_epoch", "null"]
    calls = []

    def counting_train(argv):
        calls.append(argv)
        return train(argv)

    out = tmp_path / "study"
    report = compare(None, ["roi_align", "deform_roi_pool"], out, seeds=2, overrides=overrides,
                     extractor_args={"deform_roi_pool": {"offset_fc_channels": 32}},
                     train_fn=counting_train)
    assert len(calls) == 4
    text = report.read_text()
    header = next(line for line in text.splitlines() if line.startswith("| extractor | AP |"))
    for title in ("AP50", "APs", "APm", "APl", "ARs", "ARm", "ARl", "pARs@", "train img/s",
                  "infer ms/img", "params (M)"):
        assert title in header
    rows = [line for line in text.splitlines() if line.startswith(("| roi_align |",
                                                                    "| deform_roi_pool |"))]
    assert len(rows) == 4  # results table and differences table
    assert " ± " in rows[0] and "**" in text  # mean ± std over 2 seeds, best marked
    assert "+0.000" in text  # roi_align against itself in the differences table
    for png in ("ap_ar_by_size.png", "ap_vs_iou.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("roi_align", "deform_roi_pool"):
        for seed in (0, 1):
            run = out / "runs" / name / f"seed{seed}"
            metrics = json.loads((run / "metrics.json").read_text())
            assert {"AP", "AP_per_iou", "infer_ms_per_image", "params"} <= set(metrics)
            assert list(run.glob("events.out.tfevents.*")), "TensorBoard run per extractor"
            assert (run / "run.json").exists() and not (run / ".lock").exists()
    params = {n: json.loads((out / "runs" / n / "seed0" / "metrics.json").read_text())["params"]
              for n in ("roi_align", "deform_roi_pool")}
    assert params["deform_roi_pool"] > params["roi_align"]  # the offset branch is there

    # re-running reuses the finished runs: nothing is trained again
    def must_not_train(argv):
        raise AssertionError("a finished run was trained again")

    compare(None, ["roi_align", "deform_roi_pool"], out, seeds=2, overrides=overrides,
            extractor_args={"deform_roi_pool": {"offset_fc_channels": 32}},
            train_fn=must_not_train)
    # ... but not when the settings differ: refused, naming them (nothing trained or cleared)
    longer = [*overrides, "--trainer.max_steps", "3"]
    with pytest.raises(RunFolderError, match=r"seed0 was trained with other settings "
                       r"\(trainer.max_steps: 2 -> 3\)"):
        compare(None, ["roi_align"], out, overrides=longer, train_fn=must_not_train)
    with pytest.raises(RunFolderError, match="model.roi_extractor_args.offset_fc_channels"):
        compare(None, ["deform_roi_pool"], out, overrides=overrides, train_fn=must_not_train)
    assert (out / "runs" / "roi_align" / "seed0" / "metrics.json").exists()

    # a run without metrics.json (killed after its last checkpoint) resumes from it
    (out / "runs" / "roi_align" / "seed0" / "metrics.json").unlink()
    steps_run = []
    monkeypatch.setattr("detkit.engine.module.DetectionModule.on_train_batch_start",
                        lambda self, batch, batch_idx: steps_run.append(self.global_step))
    calls.clear()
    compare(None, ["roi_align"], out, overrides=overrides, train_fn=counting_train)
    assert len(calls) == 1 and steps_run == []  # resumed at its final step: nothing retrained
    assert (out / "runs" / "roi_align" / "seed0" / "metrics.json").exists()


def test_compare_rejects_unknown_extractors(tmp_path):
    with pytest.raises(ValueError, match="valid names"):
        compare(None, ["roi_align", "roi_warp"], tmp_path)
    assert compare_module.DEFAULT_EXTRACTORS[2] == "roi_align"
