"""The comparison report on hand-made runs: intervals, paired differences, marks, study.json."""

import json

import pytest

from detkit.eval.report import write_report, write_sweep_report

PNG = b"\x89PNG\r\n\x1a\n"


def run(ap: float, **other: float) -> dict:
    values = {"AP": ap, "AP50": ap + 0.2, "AP75": ap - 0.1, "APs": -1.0, "APm": ap, "APl": ap,
              "ARs": -1.0, "ARm": 0.5, "ARl": 0.6, "proposal_ARs@300": 0.3,
              "proposal_ARm@300": 0.4, "proposal_ARl@300": 0.5, "train_images_per_s": 10.0,
              "infer_ms_per_image": 20.0, "params": 1e7}
    return {**values, **other}


def runs(shift: float = 0.0) -> dict:
    """roi_align varies a lot between seeds; deform_roi_pool adds 0.010-0.014 on each seed (an
    effect only pairing shows); roi_pool is noise around roi_align (no effect), its seed 1 without
    APl; seed 3 of deform_roi_pool has no roi_align partner."""
    base = [0.30 + shift, 0.40 + shift, 0.50 + shift]
    return {
        "roi_align": {s: run(v) for s, v in enumerate(base)},
        "deform_roi_pool": {**{s: run(v + d) for s, (v, d) in
                               enumerate(zip(base, (0.010, 0.012, 0.014), strict=True))},
                            3: run(0.9)},
        "roi_pool": {s: run(v + d, APl=None if s == 1 else v + d) for s, (v, d) in
                     enumerate(zip(base, (0.02, -0.03, 0.01), strict=True))},
    }


def row(text: str, name: str, index: int) -> list[str]:
    rows = [line for line in text.splitlines() if line.startswith(f"| {name} |")]
    return [cell.strip() for cell in rows[index].split("|")[2:-1]]


def test_report_shows_intervals_paired_differences_and_effects(tmp_path):
    report = write_report(runs(), tmp_path, title="t", setup_lines=["setup"],
                          baseline="roi_align").read_text()
    assert "Mean ± 95% CI over 4 seeds (t distribution" in report
    # roi_align AP over seeds 0.3, 0.4, 0.5: t(0.975, 2) * 0.1 / sqrt(3) = 0.248
    assert row(report, "roi_align", 0)[0] == "0.400 ± 0.248"
    assert "Seeds: roi_align 0, 1, 2; deform_roi_pool 0, 1, 2, 3; roi_pool 0, 1, 2." in report
    # 0.31, 0.412, 0.514, 0.9: s = 0.25782, t(0.975, 3) = 3.182446
    assert row(report, "deform_roi_pool", 0)[0] == "**0.534 ± 0.410**"
    assert row(report, "roi_align", 0)[3] == "n/a"  # APs: no ground truth on any seed
    deform, noise = row(report, "deform_roi_pool", 1), row(report, "roi_pool", 1)
    assert deform[0] == "+0.012 ± 0.005 *"  # paired over seeds 0-2: 0.010, 0.012, 0.014
    assert noise[0].startswith("+0.000 ± ") and "*" not in noise[0]
    # APl of seeds 0 and 2 only: 0.32, 0.51 -> 12.706205 * 0.134350 / sqrt(2)
    assert row(report, "roi_pool", 0)[5] == "0.415 ± 1.207 (n=2)"
    assert noise[5] == "+0.015 ± 0.064 (n=2)"
    assert row(report, "roi_align", 1)[0] == "+0.000 ± 0.000"
    assert deform[3] == "n/a" and deform[-2:] == ["1.00x", "1.00x"]
    assert "* = the CI excludes 0" in report and "Seeds paired: 0, 1, 2." in report
    assert ("deform_roi_pool: seeds 0, 1, 2 paired; seed(s) 3 have a run of only one of "
            "deform_roi_pool and roi_align") in report
    for png in ("ap_ar_by_size.png", "ap_vs_iou.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG

    study = json.loads((tmp_path / "study.json").read_text())
    assert study["factor"] is None and study["baseline"] == "roi_align"
    (only,) = study["values"]
    deform_entry = only["extractors"]["deform_roi_pool"]
    assert deform_entry["seeds"] == [0, 1, 2, 3]
    assert deform_entry["runs"]["3"]["AP"] == 0.9
    assert deform_entry["metrics"]["AP"]["n"] == 4
    ap = deform_entry["differences"]["AP"]
    assert ap["mean"] == pytest.approx(0.012) and ap["ci95"] == pytest.approx(0.004968, abs=1e-6)
    assert ap["effect"] is True and ap["seeds"] == [0, 1, 2] and ap["n"] == 3
    assert deform_entry["differences"]["APs"] == {"mean": None, "ci95": None, "n": 0,
                                                   "effect": False, "seeds": []}
    assert only["extractors"]["roi_pool"]["differences"]["AP"]["effect"] is False


def test_one_seed_reports_means_without_intervals(tmp_path):
    one = {name: {0: seeds[0]} for name, seeds in runs().items()}
    report = write_report(one, tmp_path, title="t", setup_lines=[],
                          baseline="roi_align").read_text()
    assert "One seed: means, no intervals" in report
    assert not any(" ± " in line for line in report.splitlines() if line.startswith("| "))
    assert row(report, "deform_roi_pool", 1)[0] == "+0.010"  # no interval, hence no mark


def test_sweep_report_has_a_section_per_value_and_the_effect_plots(tmp_path):
    sweep = [(2, runs()), (7, runs(shift=0.1))]
    report = write_sweep_report(sweep, "model.roi_extractor_args.output_size", tmp_path,
                                title="t", setup_lines=[], baseline="roi_align").read_text()
    assert report.index("## model.roi_extractor_args.output_size = 2") < report.index(
        "## model.roi_extractor_args.output_size = 7")
    assert report.count("### Paired differences against roi_align") == 2
    seven = report[report.index("## model.roi_extractor_args.output_size = 7"):]
    assert row(seven, "roi_align", 0)[0] == "0.500 ± 0.248"  # value 7's results
    for png in ("effect_vs_model.roi_extractor_args.output_size.png",
                "ap_by_size_vs_model.roi_extractor_args.output_size.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG
        assert f"]({png})" in report
    study = json.loads((tmp_path / "study.json").read_text())
    assert study["factor"] == "model.roi_extractor_args.output_size"
    assert [v["value"] for v in study["values"]] == [2, 7]
    assert study["values"][1]["extractors"]["roi_align"]["metrics"]["AP"]["mean"] == \
        pytest.approx(0.5)
    # categorical values plot on an index axis
    write_sweep_report([("none", runs()), ("strong", runs())], "data.synthetic.deformation",
                       tmp_path, title="t", setup_lines=[], baseline="roi_align")
    assert (tmp_path / "effect_vs_data.synthetic.deformation.png").exists()
    # list values (spp's grids) are not hashable; the reference is found by equality
    report = write_sweep_report([([1, 2], runs()), ([1, 2, 4], runs(shift=0.1))], "grids",
                                tmp_path, title="t", setup_lines=[], baseline="roi_align",
                                reference_index=1).read_text()
    assert row(report, "roi_align", 0)[:2] == ["[1, 2]", "-0.100 ± 0.000 * (n=3)"]


def deformation_sweep() -> list:
    """roi_align loses 0.10 (+-0.01) from none to strong; deform_roi_pool's gain over it is
    0.010-0.014 at none and 0.05-0.07 at strong."""
    none = {"roi_align": {s: run(v) for s, v in enumerate((0.30, 0.40, 0.50))},
            "deform_roi_pool": {s: run(v) for s, v in enumerate((0.31, 0.412, 0.514))}}
    strong = {"roi_align": {s: run(v) for s, v in enumerate((0.20, 0.31, 0.39))},
              "deform_roi_pool": {s: run(v) for s, v in enumerate((0.25, 0.37, 0.46))}}
    return [("none", none), ("strong", strong)]


def test_sweep_report_gives_the_factor_effect_and_the_change_of_each_gain(tmp_path):
    factor = "data.synthetic.deformation"
    report = write_sweep_report(deformation_sweep(), factor, tmp_path, title="t",
                                setup_lines=[], baseline="roi_align").read_text()
    effects = report[report.index("## Effect of"):report.index("## Does")]
    assert f"each value against {factor} = none, by extractor" in effects
    # roi_align: -0.10, -0.09, -0.11 -> sd 0.01, t(0.975, 2) * 0.01 / sqrt(3) = 0.0248
    assert row(effects, "roi_align", 0)[:2] == ["strong", "-0.100 ± 0.025 *"]
    # deform_roi_pool: -0.06, -0.042, -0.054 -> sd 0.009165 -> 0.0228
    assert row(effects, "deform_roi_pool", 0)[:2] == ["strong", "-0.052 ± 0.023 *"]
    assert row(effects, "roi_align", 0)[4] == "n/a"  # APs: no ground truth
    gains = report[report.index("## Does"):report.index("## Effects of each")]
    # gains 0.05, 0.06, 0.07 at strong minus 0.010, 0.012, 0.014 at none: 0.040, 0.048, 0.056
    assert row(gains, "deform_roi_pool", 0)[:2] == ["strong", "+0.048 ± 0.020 *"]
    assert "| roi_align |" not in gains  # the baseline has no gain over itself
    assert (tmp_path / f"factor_effect_vs_{factor}.png").read_bytes()[:8] == PNG
    study = json.loads((tmp_path / "study.json").read_text())
    assert study["reference_value"] == "none"
    (effect,) = study["factor_effects"]
    ap = effect["extractors"]["roi_align"]["AP"]
    assert effect["value"] == "strong" and ap["effect"] is True and ap["n"] == 3
    assert ap["mean"] == pytest.approx(-0.10) and ap["ci95"] == pytest.approx(0.024841, abs=1e-6)
    (gain,) = study["interactions"]
    assert gain["extractors"]["deform_roi_pool"]["AP"]["mean"] == pytest.approx(0.048)

    # measured against "strong" instead, every sign turns
    report = write_sweep_report(deformation_sweep(), factor, tmp_path, title="t",
                                setup_lines=[], baseline="roi_align",
                                reference_index=1).read_text()
    assert row(report, "roi_align", 0)[:2] == ["none", "+0.100 ± 0.025 *"]
    assert row(report, "deform_roi_pool", 1)[:2] == ["none", "-0.048 ± 0.020 *"]


def test_a_gain_that_does_not_change_is_not_marked(tmp_path):
    """deform_roi_pool's gain is 0.01 +- noise at both values: the change's CI includes 0."""
    sweep = [(v, {"roi_align": {s: run(a + shift) for s, a in enumerate((0.3, 0.4, 0.5))},
                  "deform_roi_pool": {s: run(a + shift + d) for s, (a, d) in
                                      enumerate(zip((0.3, 0.4, 0.5), noise, strict=True))}})
             for v, shift, noise in [(1, 0.0, (0.01, 0.02, 0.00)), (2, 0.1, (0.02, 0.00, 0.01))]]
    report = write_sweep_report(sweep, "x", tmp_path, title="t", setup_lines=[],
                                baseline="roi_align").read_text()
    gains = report[report.index("## Does"):report.index("## Effects of each")]
    (cell,) = row(gains, "deform_roi_pool", 0)[1:2]
    assert cell.startswith("+0.000 ± ") and "*" not in cell


def test_sweep_tick_labels_keep_what_differs_in_paths():
    from detkit.eval.report import tick_labels

    donors = ["runs/study/donor/checkpoints/best.ckpt",
              "runs/study/donor_roi_pool/checkpoints/best.ckpt"]
    assert tick_labels(donors) == ["donor", "donor_roi_pool"]
    # a label never empties: the shorter path keeps its last part
    assert tick_labels(["a/x.ckpt", "a/b/x.ckpt"]) == ["x.ckpt", "b/x.ckpt"]
    assert tick_labels(["none", "mild", "strong"]) == ["none", "mild", "strong"]
    assert tick_labels([2, 4, 7]) == ["2", "4", "7"]
    assert tick_labels(["only/one.ckpt"]) == ["only/one.ckpt"]
