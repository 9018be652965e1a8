"""The chunk plan of the shared sample layout: bounded chunks, bags split only when too big."""

import torch

from detkit.ops._sampling import SampleLayout


def test_chunks_end_at_bags_unless_a_bag_is_too_big():
    # 3 RoIs x 3 bins with 2x2, 0x3 (empty bags) and 1x1 samples: bags start at 0, 4, 8, 12 (x4,
    # three empty), 13, 14; 15 samples in all
    layout = SampleLayout((1, 3), torch.tensor([2, 0, 1]), torch.tensor([2, 3, 1]))
    assert layout.total == 15
    assert layout.chunks(100) == [(0, 15, 0, 9)]
    # limit 5: chunks end at bag starts; the empty bags go with the chunk they start in
    assert layout.chunks(5) == [(0, 4, 0, 1), (4, 8, 1, 2), (8, 13, 2, 7), (13, 15, 7, 9)]
    # limit 3 < bag size 4: bags are split and the next chunk starts with the split bag
    plan = layout.chunks(3)
    assert plan[:3] == [(0, 3, 0, 1), (3, 4, 0, 1), (4, 7, 1, 2)]
    assert max(stop - start for start, stop, _, _ in plan) <= 3
    assert [stop for _, stop, _, _ in plan][-1] == 15 and plan[-1][3] == 9
    sl = layout.slice(*plan[5])  # (11, 14, 2, 8): end of bag 2, the empty bags, bags 6 and 7
    assert sl.bag_offsets.tolist() == [0, 1, 1, 1, 1, 2]
    assert sl.bag.tolist() == [2, 6, 7] and sl.roi.tolist() == [0, 2, 2]
    assert sl.iy.tolist() == [1, 0, 0] and sl.ix.tolist() == [1, 0, 0]
