import pytest
import torch

from detkit.engine.module import (
    DetectionModule,
    outputs_in_original_pixels,
    proposal_recall_due,
)
from detkit.models import RPNSettings


def test_module_scores_proposals_at_the_kept_count():
    module = DetectionModule(2, backbone="resnet18", fpn_channels=32, proposal_recall_every=2,
                             rpn=RPNSettings(post_nms_top_n_test=300))
    assert module._proposal_limits == (100, 300)  # not @1000: the RPN keeps 300
    assert module.hparams["proposal_recall_every"] == 2  # restored from checkpoints
    module._validations = 3
    assert module._proposal_recall_due()
    module._validations = 4
    assert not module._proposal_recall_due()


@pytest.mark.parametrize(("every", "due"), [(1, [1, 2, 3, 4, 5]), (2, [1, 3, 5]),
                                            (3, [1, 4]), (0, [])])
def test_proposal_recall_due(every, due):
    assert [v for v in range(1, 6) if proposal_recall_due(v, every)] == due


def test_proposal_recall_every_rejects_negative():
    with pytest.raises(ValueError, match="proposal_recall_every"):
        DetectionModule(2, proposal_recall_every=-1)


def test_outputs_in_original_pixels():
    outputs = [{"boxes_xyxy": torch.tensor([[10.0, 10.0, 20.0, 30.0]]),
                "scores": torch.tensor([0.9]), "labels": torch.tensor([1]),
                "proposals_xyxy": torch.tensor([[0.0, 0.0, 5.0, 5.0]])},
               {"boxes_xyxy": torch.zeros(0, 4), "scores": torch.zeros(0),
                "labels": torch.zeros(0, dtype=torch.long)}]
    targets = [{"image_id": 7, "orig_size": (200, 400), "input_size": (100, 100)},
               {"image_id": 9, "orig_size": (50, 50), "input_size": (50, 50)}]
    mapped = outputs_in_original_pixels(outputs, targets)
    assert list(mapped) == [7, 9]
    assert mapped[7]["boxes"].tolist() == [[40.0, 20.0, 80.0, 60.0]]  # x * 4, y * 2
    assert mapped[7]["proposals"].tolist() == [[0.0, 0.0, 20.0, 10.0]]
    assert "proposals" not in mapped[9] and mapped[9]["boxes"].shape == (0, 4)
