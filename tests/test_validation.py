import pytest

from detkit._validation import check_choice, choice_problem


def test_check_choice_names_the_argument_and_the_choices():
    check_choice("mode", "max", ("avg", "max"))  # a valid choice passes
    with pytest.raises(ValueError, match=r"^fusion must be 'sum', 'max' or 'concat', got 'x'$"):
        check_choice("fusion", "x", ("sum", "max", "concat"))
    with pytest.raises(ValueError, match=r"^mode must be 'avg' or 'max', got None$"):
        check_choice("mode", None, ("avg", "max"))
    with pytest.raises(ValueError, match=r"^subset must be 'train', got 'val'$"):
        check_choice("subset", "val", ("train",))


def test_every_choice_check_words_its_message_the_same_way():
    from detkit.data.datamodule import DetectionDataModule
    from detkit.data.synthetic import SyntheticFactors
    from detkit.eval.metrics import proposal_key
    from detkit.models.backbone import norm_layer

    assert choice_problem("mode", "avg", ("avg", "max")) is None
    assert choice_problem("clutter", "x", ["mild", None]) == \
        "clutter must be 'mild' or None, got 'x'"
    for call, message in [
            (lambda: norm_layer("ln"), "norm must be 'group', 'frozen_bn' or 'bn', got 'ln'"),
            (lambda: proposal_key("xl", 100), "size must be '', 's', 'm' or 'l', got 'xl'"),
            (lambda: SyntheticFactors(clutter="wild"),
             "invalid SyntheticFactors: clutter must be 'none', 'low', 'high' or None, got "
             "'wild'"),
            (lambda: DetectionDataModule(format="yolo"), "format must be 'coco', .* got 'yolo'")]:
        with pytest.raises(ValueError, match=message):
            call()
