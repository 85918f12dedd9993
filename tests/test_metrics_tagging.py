"""Tagging metrics against the naive reference (tests/reference_metrics.py) and on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import reference_metrics as ref
import torch

from locsens.metrics.tagging import (
    TaggingAccuracy,
    drop_excluded,
    ground_truth_from_csr,
    place_name_mask,
    ranked_topk,
    tagging_accuracy,
)


def random_case(seed: int, n: int = 60, v: int = 30, t: int = 5, tie_levels: int = 4):
    """Scores with many ties (few distinct values, both signs) and padded ground truth with duplicates."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(-tie_levels, tie_levels, (n, v), generator=g).float() * 0.5
    if seed % 2:
        scores = scores + torch.randn(n, v, generator=g)  # mostly distinct values, any sign
    target = torch.randint(-1, v, (n, t), generator=g)
    target[:, 1] = target[:, 0]  # duplicates allowed
    target[0] = -1  # an image without ground truth
    exclude = torch.rand(v, generator=g) < 0.3
    return scores, target, exclude


def as_lists(target: torch.Tensor) -> list[list[int]]:
    return [[int(x) for x in row] for row in target]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 7, 30, 45])
@pytest.mark.parametrize("use_exclude", [False, True])
def test_ranked_topk_matches_reference_ranking(seed, k, use_exclude):
    scores, _, exclude = random_case(seed)
    got = ranked_topk(scores, k, exclude if use_exclude else None)
    ex = {int(i) for i in torch.nonzero(exclude)} if use_exclude else set()
    want = [ref.rank(row.tolist(), ex)[:k] for row in scores]
    assert got.tolist() == want


def test_ranked_topk_ties_go_to_lower_id_and_negative_zero_scores_rank_correctly():
    scores = torch.tensor([[0.0, -1.0, 0.0, -0.5, 0.0], [-3.0, -3.0, -2.0, -3.0, -7.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    assert ranked_topk(scores, 5).tolist() == [[0, 2, 4, 3, 1], [2, 0, 1, 3, 4], [0, 1, 2, 3, 4]]
    assert ranked_topk(scores, 2).tolist() == [[0, 2], [2, 0], [0, 1]]
    inf = torch.tensor([[-float("inf"), -1e30, float("inf"), -float("inf")]])
    assert ranked_topk(inf, 4).tolist() == [[2, 1, 0, 3]]


def test_ranked_topk_rejects_nan_and_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        ranked_topk(torch.tensor([[0.0, float("nan")]]), 1)
    with pytest.raises(ValueError, match="floating"):
        ranked_topk(torch.tensor([[0, 1]]), 1)
    with pytest.raises(ValueError, match="bool mask"):
        ranked_topk(torch.zeros(2, 3), 1, exclude=torch.zeros(4, dtype=torch.bool))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("use_exclude", [False, True])
def test_tagging_accuracy_matches_reference(seed, use_exclude):
    scores, target, exclude = random_case(seed)
    ks = (1, 3, 10, 50)  # 50 > V = 30: top-50 is every tag
    ex = exclude if use_exclude else None
    got = tagging_accuracy(scores, target, ks=ks, exclude=ex)
    exset = {int(i) for i in torch.nonzero(exclude)} if use_exclude else set()
    want = ref.tagging([ref.rank(r.tolist()) for r in scores], as_lists(target), ks, exset)
    for key in want:
        assert got[key] == pytest.approx(want[key]), key
    assert got["n_short"] == 0
    # the same from a precomputed full ranking (integer ids)
    ids = ranked_topk(scores, 30)
    got_ids = tagging_accuracy(ids, target, num_tags=30, ks=ks, exclude=ex)
    for key in want:
        assert got_ids[key] == pytest.approx(want[key]), key


def test_all_negative_scores_are_ranked_not_ignored():
    scores = torch.tensor([[-3.0, -0.1, -2.0, -5.0], [-1.0, -1.0, -9.0, 0.0]])
    target = torch.tensor([[1, -1], [3, 2]])
    out = tagging_accuracy(scores, target, ks=(1, 2))
    assert out["A@1"] == 100.0 and out["A@2"] == 100.0
    assert out["%pred"] == pytest.approx(100.0 * 2 / 3)  # predicted {1, 3}, test tags {1, 2, 3}
    assert out["%cpred"] == pytest.approx(100.0 * 2 / 3)


def test_hand_made_pred_cpred_and_k_larger_than_vocabulary():
    # image 0: top-1 tag 2 (wrong), image 1: top-1 tag 2 (right), image 2: top-1 tag 0 (wrong)
    scores = torch.tensor([[0.0, 0.1, 0.9, 0.2], [0.0, 0.0, 0.5, 0.1], [0.8, 0.0, 0.1, 0.7]])
    target = torch.tensor([[3, -1], [2, 1], [1, 1]])
    out = tagging_accuracy(scores, target, ks=(1, 2, 100))
    assert out["A@1"] == pytest.approx(100 / 3)
    assert out["A@2"] == pytest.approx(200 / 3)  # image 0: tags 2,3 -> hit; image 2: tags 0,3 -> miss
    assert out["A@100"] == 100.0  # k > V: every tag is listed
    assert out["%pred"] == pytest.approx(100 * 2 / 3)  # {2, 0} over test tags {1, 2, 3}
    assert out["%cpred"] == pytest.approx(100 * 1 / 3)  # {2}


def test_places_omitted_drops_empty_images_and_shifts_predictions():
    exclude = torch.tensor([True, False, False, True, False])  # tags 0 and 3 are place names
    scores = torch.tensor([[9.0, 1.0, 5.0, 8.0, 0.0], [9.0, 8.0, 1.0, 7.0, 0.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    target = torch.tensor([[0, 2], [3, 0], [1, -1]])  # image 1 has only place names
    out = tagging_accuracy(scores, target, ks=(1, 2, 3), exclude=exclude)
    assert out["n"] == 2 and out["n_dropped"] == 1
    assert out["A@1"] == 50.0  # image 0: best non-place tag is 2 (hit); image 2: 4 (miss)
    assert out["A@2"] == 50.0  # image 2 ranks 4, 2, 1 among non-places: its tag 1 is third
    assert out["A@3"] == 100.0  # ... which it is only because places 3 and 0 moved out of the way
    with_places = tagging_accuracy(scores, target, ks=(1, 3))
    assert with_places["n"] == 3 and with_places["A@1"] == pytest.approx(200 / 3)
    assert with_places["A@3"] == pytest.approx(200 / 3)  # image 2 ranks 4, 3, 2, 1: tag 1 is fourth


def test_drop_excluded_shifts_up_and_pads():
    ranked = torch.tensor([[3, 0, 2, 1], [0, 3, -1, -1]])
    exclude = torch.tensor([True, False, False, True])
    assert drop_excluded(ranked, exclude).tolist() == [[2, 1, -1, -1], [-1, -1, -1, -1]]


def test_precomputed_ranking_short_after_exclusion_is_reported():
    exclude = torch.tensor([True, True, False, False, False, False])
    ids = torch.tensor([[0, 1, 2], [2, 3, 4]])  # top-3 lists; image 0 keeps only one tag after exclusion
    target = torch.tensor([[5], [4]])
    out = tagging_accuracy(ids, target, num_tags=6, ks=(1, 3), exclude=exclude)
    assert out["n_short"] == 1
    assert out["A@3"] == 50.0


def test_bad_rankings_raise():
    target = torch.tensor([[1]])
    with pytest.raises(ValueError, match="keep more"):
        tagging_accuracy(torch.tensor([[1, 2]]), target, num_tags=10, ks=(1, 5))
    with pytest.raises(ValueError, match="num_tags"):
        tagging_accuracy(torch.tensor([[1, 2]]), target, ks=(1,))
    with pytest.raises(ValueError, match=r"\[-1, 10\)"):
        tagging_accuracy(torch.tensor([[11, 2]]), target, num_tags=10, ks=(1,))
    with pytest.raises(ValueError, match="target"):
        tagging_accuracy(torch.zeros(1, 10), torch.tensor([[12]]), ks=(1,))


@pytest.mark.parametrize("seed", range(3))
def test_metric_batches_and_ddp_merge_equal_one_call(seed):
    scores, target, exclude = random_case(seed, n=90)
    ks = (1, 5, 10)
    for ex in (None, exclude):
        want = tagging_accuracy(scores, target, ks=ks, exclude=ex)
        m = TaggingAccuracy(30, ks=ks, exclude=ex)
        for a in range(0, 90, 25):
            m.update(scores[a : a + 25], target[a : a + 25])
        assert m.compute() == pytest.approx(want)
        # two "ranks", each with half the data, merged through the declared reductions
        rank0, rank1 = TaggingAccuracy(30, ks=ks, exclude=ex), TaggingAccuracy(30, ks=ks, exclude=ex)
        rank0.update(scores[:45], target[:45])
        rank1.update(ranked_topk(scores[45:], 30), target[45:])  # other rank passes ranked ids
        rank0.merge_state(rank1)
        assert rank0.compute() == pytest.approx(want)


def test_ground_truth_from_csr_and_place_mask():
    indptr = np.array([0, 2, 2, 5])
    indices = np.array([4, 1, 0, 0, 3])
    assert ground_truth_from_csr(indptr, indices, np.array([2, 0, 1])).tolist() == [[0, 0, 3], [4, 1, -1], [-1, -1, -1]]
    assert place_name_mask(["paris", "beach", "france"], ["france", "paris", "europe"]).tolist() == [True, False, True]


def _ddp_worker(rank: int, out_dir: str) -> None:
    """One of two gloo ranks: each updates with its half; compute() all-reduces the declared states."""
    import json

    scores, target, exclude = random_case(1, n=90)
    m = TaggingAccuracy(30, ks=(1, 5, 10), exclude=exclude)
    half = slice(0, 40) if rank == 0 else slice(40, 90)  # unequal shares
    m.update(scores[half], target[half])
    with open(f"{out_dir}/rank{rank}.json", "w") as fh:
        json.dump(m.compute(), fh)


@pytest.mark.slow
def test_real_two_process_ddp_equals_single_process(tmp_path):
    import json

    from conftest import gloo_ranks

    gloo_ranks(_ddp_worker, tmp_path)
    scores, target, exclude = random_case(1, n=90)
    want = tagging_accuracy(scores, target, ks=(1, 5, 10), exclude=exclude)
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == pytest.approx(want)
