import pytest

from detkit._validation import check_choice


def test_check_choice_names_the_argument_and_the_choices():
    check_choice("mode", "max", ("avg", "max"))  # a valid choice passes
    with pytest.raises(ValueError, match=r"^fusion must be 'sum', 'max' or 'concat', got 'x'$"):
        check_choice("fusion", "x", ("sum", "max", "concat"))
    with pytest.raises(ValueError, match=r"^mode must be 'avg' or 'max', got None$"):
        check_choice("mode", None, ("avg", "max"))
    with pytest.raises(ValueError, match=r"^subset must be 'train', got 'val'$"):
        check_choice("subset", "val", ("train",))
