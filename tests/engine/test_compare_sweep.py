"""Sweeps (--vary) crossed with extractors and seeds, with a fake training function: the grid
grows by a seed or a value reusing every finished run, and an interrupted run resumes."""

import json
from pathlib import Path

import pytest

from detkit.engine.cli import resolve_config
from detkit.engine.compare import (
    compare,
    frozen_front_note,
    parse_sweep,
    pick_baseline,
    reference_index,
    training_time_line,
)
from detkit.engine.runs import CHECKPOINT, RunFolderError, run_key, write_key

SIZE = "model.roi_extractor_args.output_size"
BONUS = {"roi_align": 0.0, "deform_roi_pool": 0.02}


class FakeTrain:
    """Writes what a real run leaves (run.json, last.ckpt) and returns metrics that depend on the
    extractor, seed and output size; records each call, and whether it found a checkpoint to
    resume. ``interrupt``: (extractor, seed, size) of a run that stops after its checkpoint."""

    def __init__(self, interrupt=None):
        self.calls, self.interrupt = [], interrupt

    def __call__(self, argv):
        config = resolve_config(argv)
        model, directory = config["model"], Path(config["run_dir"])
        size = model["roi_extractor_args"].get("output_size", 7)  # the extractors' default
        run = (model["roi_extractor"], config["seed_everything"], size)
        self.calls.append((*run, (directory / CHECKPOINT).exists(), model["roi_extractor_args"]))
        write_key(directory, run_key(config))
        (directory / CHECKPOINT).parent.mkdir(parents=True, exist_ok=True)
        (directory / CHECKPOINT).write_bytes(b"")
        if run == self.interrupt:
            raise KeyboardInterrupt
        ap = 0.3 + 0.05 * run[1] + BONUS[run[0]] + 0.01 * size
        return {"AP": ap, "AP50": ap + 0.2, "AP75": ap - 0.1, "APs": -1.0, "APm": ap,
                "APl": ap + 0.1, "ARs": -1.0, "ARm": 0.5, "ARl": 0.6, "params": 1e6}

    def runs(self):
        return sorted(c[:3] for c in self.calls)


def study(out, train_fn, sizes, seeds, **options):
    return compare(None, ["roi_align", "deform_roi_pool"], out, seeds=seeds,
                   sweep=None if sizes is None else parse_sweep(f"{SIZE}={sizes}"),
                   train_fn=train_fn,
                   extractor_args={"deform_roi_pool": {"offset_fc_channels": 32}}, **options)


def test_a_sweep_grows_by_a_seed_or_a_value_and_resumes(tmp_path):
    out = tmp_path / "study"
    first = FakeTrain()
    report = study(out, first, "2,4", seeds=1).read_text()
    assert first.runs() == [(e, 0, s) for e in ("deform_roi_pool", "roi_align") for s in (2, 4)]
    # the swept setting is merged into the extractor's own settings, not replacing them
    assert {json.dumps(c[4], sort_keys=True) for c in first.calls if c[0] == "deform_roi_pool"} \
        == {'{"offset_fc_channels": 32, "output_size": 2}',
            '{"offset_fc_channels": 32, "output_size": 4}'}
    assert (out / "runs" / "roi_align" / f"{SIZE}=4" / "seed0" / "metrics.json").exists()
    assert f"## {SIZE} = 2" in report and f"## {SIZE} = 4" in report
    assert f"--vary {SIZE}=2,4" in report and "Differences against roi_align" in report
    assert "Training time: 4 runs," in report  # each run's own time, from its metrics.json

    grow_seed = FakeTrain()
    study(out, grow_seed, "2,4", seeds=2)  # one more seed: only seed 1 trains
    assert grow_seed.runs() == [(e, 1, s) for e in ("deform_roi_pool", "roi_align")
                                for s in (2, 4)]
    assert not any(c[3] for c in grow_seed.calls)  # fresh runs, nothing to resume

    interrupted = FakeTrain(interrupt=("deform_roi_pool", 1, 7))
    with pytest.raises(KeyboardInterrupt):
        study(out, interrupted, "2,4,7", seeds=2)  # one more value, stopped in its last run
    assert interrupted.runs() == [("deform_roi_pool", 0, 7), ("deform_roi_pool", 1, 7),
                                  ("roi_align", 0, 7), ("roi_align", 1, 7)]
    resumed = FakeTrain()
    report = study(out, resumed, "2,4,7", seeds=2).read_text()
    assert [c[:4] for c in resumed.calls] == [("deform_roi_pool", 1, 7, True)]

    # paired over seeds 0 and 1: deform_roi_pool is 0.02 above roi_align on every seed
    values = json.loads((out / "study.json").read_text())["values"]
    assert [v["value"] for v in values] == [2, 4, 7]
    difference = values[2]["extractors"]["deform_roi_pool"]["differences"]["AP"]
    assert difference["mean"] == pytest.approx(0.02) and difference["effect"] is True
    assert difference["seeds"] == [0, 1]
    assert values[0]["extractors"]["roi_align"]["metrics"]["AP"]["mean"] == pytest.approx(0.345)
    assert (out / f"effect_vs_{SIZE}.png").exists() and "+0.020 ± 0.000 *" in report


def test_any_config_key_is_passed_to_the_runs(tmp_path):
    seen = []

    def train_fn(argv):
        config = resolve_config(argv)
        seen.append((config["data"]["synthetic"]["deformation"], config["run_dir"]))
        write_key(Path(config["run_dir"]), run_key(config))
        return {"AP": 0.5}

    compare(None, ["roi_pool"], tmp_path, train_fn=train_fn,
            sweep=parse_sweep("data.synthetic.deformation=none,strong"))
    assert seen == [(v, str(tmp_path / "runs" / "roi_pool" / f"data.synthetic.deformation={v}"
                            / "seed0")) for v in ("none", "strong")]


def test_sweep_values_and_refusals():
    assert parse_sweep(f"{SIZE}=2,4,7,14").values == (2, 4, 7, 14)
    assert parse_sweep("data.synthetic.deformation=none,mild").values == ("none", "mild")
    grids = parse_sweep("model.roi_extractor_args.grids=[1,2],[1,2,4]")
    assert grids.values == ([1, 2], [1, 2, 4])
    assert grids.label([1, 2]) == "model.roi_extractor_args.grids=[1,2]"
    assert parse_sweep("model.optimizer.lr=1e-3,0.02").values == (0.001, 0.02)
    for text, message in [("data.min_size", "KEY=V1"), ("seed_everything=1,2", "--seeds"),
                          ("model.roi_extractor=a,b", "--extractors"), ("x=1,1", "once"),
                          ("run_dir=a,b", "does not change"), ("x=[1", "YAML"),
                          ("model.roi_extractor_args={}", "one of its settings")]:
        with pytest.raises(ValueError, match=message):
            parse_sweep(text)
    assert pick_baseline(["roi_pool", "roi_align"], None) == "roi_align"
    assert pick_baseline(["roi_pool", "spp"], None) == "roi_pool"
    with pytest.raises(ValueError, match="not among"):
        pick_baseline(["roi_pool"], "roi_align")


def test_the_reference_value_is_one_of_the_swept_values(tmp_path):
    sizes = parse_sweep(f"{SIZE}=2,4,7,14")
    assert reference_index(sizes, None) == 0 and reference_index(sizes, "7") == 2
    assert reference_index(parse_sweep("model.optimizer.lr=1e-3,0.02"), "0.001") == 0
    assert reference_index(parse_sweep("data.synthetic.deformation=none,mild"), "mild") == 1
    with pytest.raises(ValueError, match=r"--reference-value 5 is not among the values of "
                                         rf"--vary {SIZE}=2,4,7,14"):
        reference_index(sizes, "5")
    with pytest.raises(ValueError, match="--reference-value needs --vary"):
        compare(None, ["roi_align"], tmp_path, train_fn=FakeTrain(), reference="7")
    # the report measures each size against 4: deform_roi_pool's AP is 0.01 * size higher
    report = compare(None, ["roi_align", "deform_roi_pool"], tmp_path, train_fn=FakeTrain(),
                     seeds=2, sweep=parse_sweep(f"{SIZE}=2,4"), reference="4").read_text()
    assert "--reference-value 4" in report
    assert f"## Effect of {SIZE}: each value against {SIZE} = 4, by extractor" in report
    assert "| roi_align | 2 | -0.020 ± 0.000 * |" in report
    study = json.loads((tmp_path / "study.json").read_text())
    assert study["reference_value"] == 4
    (effect,) = study["factor_effects"]
    assert effect["value"] == 2
    assert effect["extractors"]["deform_roi_pool"]["AP"]["mean"] == pytest.approx(-0.02)
    # deform_roi_pool's gain is 0.02 at every size: no interaction
    (gain,) = study["interactions"]
    assert gain["extractors"]["deform_roi_pool"]["AP"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert (tmp_path / f"factor_effect_vs_{SIZE}.png").read_bytes()[:4] == b"\x89PNG"


def test_layered_configs_reach_every_run_in_order(tmp_path):
    """--config given twice: the second file's settings win over the first's, in every run and
    in the command the report records."""
    base, study_layer = tmp_path / "base.yaml", tmp_path / "layer.yaml"
    base.write_text("model:\n  fpn_channels: 32\n")
    study_layer.write_text("model:\n  fpn_channels: 16\n")
    seen = []

    class Recording(FakeTrain):
        def __call__(self, argv):
            seen.append(resolve_config(argv)["model"]["fpn_channels"])
            return super().__call__(argv)

    report = compare([str(base), str(study_layer)], ["roi_align"], tmp_path / "out",
                     extractor_args={"roi_align": {"output_size": 4}},
                     train_fn=Recording()).read_text()
    assert seen == [16]
    assert f"--config {base} --config {study_layer} --extractors roi_align" in report


def test_the_configs_own_extractor_settings_stay_with_its_extractor(tmp_path):
    """A config's model.roi_extractor_args reach the runs of its model.roi_extractor (under
    --extractor-args, which win per setting), not the other extractors' runs."""
    config = tmp_path / "config.yaml"
    config.write_text("model:\n  roi_extractor: deform_roi_pool\n"
                      "  roi_extractor_args: {offset_fc_channels: 16, gamma: 0.2}\n")
    train = FakeTrain()
    compare(str(config), ["roi_align", "deform_roi_pool"], tmp_path / "out", train_fn=train,
            extractor_args={"roi_align": {"output_size": 7},
                            "deform_roi_pool": {"output_size": 7, "gamma": 0.3}})
    given = {c[0]: c[4] for c in train.calls}
    assert given == {"roi_align": {"output_size": 7},
                     "deform_roi_pool": {"offset_fc_channels": 16, "gamma": 0.3,
                                         "output_size": 7}}


def test_the_training_time_line_sums_what_each_run_recorded():
    grid = [{"roi_align": {0: {"wall_seconds": 100.0}, 1: {"wall_seconds": 140.0}},
             "roi_pool": {0: {"wall_seconds": 120.0}, 1: {"AP": 0.5}}}]
    assert training_time_line(grid) == (
        "Training time: 3 runs, 6.0 min in all on this machine (median 120 s, 100-140 s per "
        "run; a run that resumed counts only its last part); 1 more without a recorded time.")
    assert training_time_line([{"roi_align": {0: {"AP": 0.5}}}]) == (
        "Training time: not recorded (1 run).")


def test_another_studys_runs_with_the_same_settings_are_linked_not_retrained(tmp_path):
    first = FakeTrain()
    study(tmp_path / "a", first, "4,7", seeds=1)
    # the same runs asked for as output_size=7 in a sweep and as the extractors' default 7
    swept, default = FakeTrain(), FakeTrain()
    report = study(tmp_path / "b", swept, "7,14", seeds=1, reuse_runs=[tmp_path]).read_text()
    assert swept.runs() == [("deform_roi_pool", 0, 14), ("roi_align", 0, 14)]
    study(tmp_path / "c", default, None, seeds=1, reuse_runs=[tmp_path / "a"])
    assert default.calls == []
    for out, folder in ((tmp_path / "b", f"{SIZE}=7/seed0"), (tmp_path / "c", "seed0")):
        linked = out / "runs" / "roi_align" / folder
        assert linked.is_symlink() and linked.resolve() == (
            tmp_path / "a" / "runs" / "roi_align" / f"{SIZE}=7" / "seed0")
    assert "Training time: 2 runs," in report
    assert "; 2 more reused from other studies' runs (same settings)." in report
    # a link whose run no longer matches is refused, and --rerun replaces the link only
    with pytest.raises(RunFolderError, match=r"links to .*a run with other settings .*"
                                             r"trainer.max_steps"):
        study(tmp_path / "c", FakeTrain(), None, seeds=1, overrides=["--trainer.max_steps", "9"])
    again = FakeTrain()
    study(tmp_path / "c", again, None, seeds=1, overrides=["--trainer.max_steps", "9"],
          rerun=True)
    assert again.runs() == [("deform_roi_pool", 0, 7), ("roi_align", 0, 7)]
    assert not (tmp_path / "c" / "runs" / "roi_align" / "seed0").is_symlink()
    assert (tmp_path / "a" / "runs" / "roi_align" / f"{SIZE}=7" / "seed0" / "metrics.json").exists()


def test_a_baseline_given_by_name_names_the_outputs_it_changes(tmp_path):
    """One study's runs reported against two baselines: both reports, their numbers and their
    effect plots stay side by side; the plots that do not depend on the baseline are shared."""
    reports = {}
    for baseline in ("deform_roi_pool", "roi_align"):
        reports[baseline] = study(tmp_path, FakeTrain(), "4,7", seeds=1, baseline=baseline)
    effect = f"effect_vs_{SIZE}"
    for baseline, report in reports.items():
        assert report == tmp_path / f"report_vs_{baseline}.md"
        text = report.read_text()
        assert f"]({effect}_vs_{baseline}.png)" in text
        assert f"Differences against {baseline}" in text
        assert (tmp_path / f"{effect}_vs_{baseline}.png").exists()
        assert json.loads((tmp_path / f"study_vs_{baseline}.json").read_text())["baseline"] == (
            baseline)
    assert f"](ap_by_size_vs_{SIZE}.png)" in text and (tmp_path / f"ap_by_size_vs_{SIZE}.png"
                                                        ).exists()
    assert not (tmp_path / "report.md").exists() and not (tmp_path / f"{effect}.png").exists()


def test_reports_warn_that_runs_reading_a_shared_front_train_faster():
    computed = {"AP": 0.5, "frozen_front": {"read": 0, "computed": 10}}
    read = {"AP": 0.5, "frozen_front": {"read": 10, "computed": 0}}
    assert frozen_front_note([{"roi_align": {0: computed, 1: {"AP": 0.4}}}]) is None
    note = frozen_front_note([{"roi_align": {0: computed}, "roi_pool": {0: read}}])
    assert note.startswith("Speed: 1 of 2 runs read their frozen backbone/FPN/RPN outputs")
    assert "inference ms/image" in note
    val_only = {"AP": 0.5, "frozen_front": {"read": 0, "computed": 10, "val_read": 5}}
    assert frozen_front_note([{"roi_align": {0: val_only}}]).startswith("Speed: 1 of 1 runs")
