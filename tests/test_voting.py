"""Voting rules on hand-built candidates: each rule of the two-stage vote, flat vote, edges."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ttt_jax import voting
from ttt_jax.voting import Candidate


def g(*rows):
  return np.asarray(rows, dtype=np.int8)


A, B, C, D, E = (g([i, i], [i, i]) for i in range(1, 6))  # distinct 2x2 grids


def grids(ranked):
  return [voting.grid_key(v.grid) for v in ranked]


def keys(*gs):
  return [voting.grid_key(x) for x in gs]


def test_grid_key_is_exact_on_shape_and_values():
  assert voting.grid_key(g([1, 2])) == voting.grid_key(np.asarray([[1, 2]], np.int64))
  assert voting.grid_key(g([1, 2])) != voting.grid_key(g([1], [2]))  # same bytes, other shape
  assert voting.grid_key(g([1, 2])) != voting.grid_key(g([2, 1]))


def test_zero_candidates_give_empty_ranking():
  assert voting.hierarchical_vote([]) == []
  assert voting.flat_vote([]) == []
  assert voting.attempts([]) == []


def test_one_candidate_is_the_only_attempt():
  ranked = voting.hierarchical_vote([Candidate(A, "identity")])
  # One distinct grid: its row/column majority grids equal it, so no fill-in is added.
  assert grids(ranked) == keys(A)
  assert (ranked[0].votes, ranked[0].count, ranked[0].identity_count) == (1, 1, 1)
  assert len(voting.attempts(ranked)) == 1


def test_group_takes_top3_by_frequency_ties_by_first_appearance():
  picks = voting.group_picks([D, B, C, C, B, A, A, A])
  assert [voting.grid_key(p) for p, _ in picks] == keys(A, B, C)  # B before C: seen first
  assert not any(fill for _, fill in picks)


def test_row_and_column_majority_grids():
  x = g([1, 1, 1], [2, 2, 2], [3, 3, 3])
  y = g([1, 1, 1], [5, 5, 5], [3, 3, 4])
  z = g([0, 0, 0], [5, 5, 5], [3, 3, 4])
  other_shape = g([9, 9])
  row = voting.row_majority_grid([x, other_shape, y, z])
  np.testing.assert_array_equal(row, g([1, 1, 1], [5, 5, 5], [3, 3, 4]))
  col = voting.column_majority_grid([x, y, other_shape, z])
  # Columns 0 and 1 are (1,2,3),(1,5,3),(0,5,3) in x,y,z: all distinct -> first (x's).
  # Column 2: (1,2,3),(1,5,4),(0,5,4): all distinct -> x's.
  np.testing.assert_array_equal(col, x)
  assert voting.row_majority_grid([]) is None


def test_majority_uses_most_common_shape():
  small = [g([1]), g([1]), g([2])]
  big = g([7, 7], [7, 7])
  np.testing.assert_array_equal(voting.row_majority_grid([big] + small), g([1]))
  # Shape tie (one each) goes to the first grid's shape.
  np.testing.assert_array_equal(voting.row_majority_grid([big, g([1])]), big)


# Three 3x1 grids whose row-wise majority (1,5,4) is none of them: x x y y z gives
# row0 [1] (x,x,z), row1 [5] (y,y,z), row2 [4] (x,x,y,y).
X, Y, Z = g([1], [2], [4]), g([0], [5], [4]), g([1], [5], [3])
XYZ_ROW_MAJORITY = g([1], [5], [4])


def test_fill_in_adds_novel_majority_grid_when_group_is_short():
  picks = voting.group_picks([X, X, Y, Y, Z], top_k=4)  # 3 distinct < 4: room for one
  assert [voting.grid_key(p) for p, _ in picks] == keys(X, Y, Z, XYZ_ROW_MAJORITY)
  assert [fill for _, fill in picks] == [False, False, False, True]
  # Room for two: the column-wise majority of 3x1 grids is the first grid (each column
  # is a whole grid, all distinct... X and Y tie at 2 -> X): a duplicate, so skipped.
  picks = voting.group_picks([X, X, Y, Y, Z], top_k=5)
  assert len(picks) == 4
  # No room, or fill-ins off: no fill-in.
  assert len(voting.group_picks([X, X, Y, Y, Z], top_k=3)) == 3
  assert len(voting.group_picks([X, X, Y, Y, Z], top_k=4, fill_in=False)) == 3


def test_column_fill_in_used_when_row_fill_in_duplicates():
  # Transposes of X, Y, Z: the row majority is now a duplicate (rows are whole grids)
  # and the column majority is the novel grid.
  cands = [X.T, X.T, Y.T, Y.T, Z.T]
  picks = voting.group_picks(cands, top_k=4)
  np.testing.assert_array_equal(picks[3][0], XYZ_ROW_MAJORITY.T)
  assert picks[3][1]


def test_group_level_fill_ins_never_add_a_grid_with_two_distinct():
  # Documented property: a majority grid over <= 2 distinct grids is one of them, so with
  # the paper's top 3 a short group gets no new grid, whatever the counts or order.
  p, q = g([1, 2], [3, 4]), g([1, 5], [6, 4])
  for cands in ([p], [p, q], [q, p, p], [p, q, q, p], [p, g([7])], [g([7]), p, q]):
    picks = voting.group_picks(cands)
    assert not any(fill for _, fill in picks)
    assert len(picks) == len({voting.grid_key(c) for c in cands})


def test_fill_source_all_builds_fill_ins_from_every_candidate():
  cands = [Candidate(X, "identity"), Candidate(X, "identity"), Candidate(Y, "rot90"),
           Candidate(Y, "rot90"), Candidate(Z, "flip_ud")]
  group = voting.hierarchical_vote(cands)
  assert not any(v.fill_in for v in group)
  pooled = voting.hierarchical_vote(cands, fill_source="all")
  fill = [v for v in pooled if v.fill_in]
  # Every group is short (1 distinct), so each adds the task-wide row majority.
  assert len(fill) == 1 and fill[0].votes == 3 and fill[0].count == 0
  np.testing.assert_array_equal(fill[0].grid, XYZ_ROW_MAJORITY)
  with pytest.raises(ValueError, match="fill_source"):
    voting.hierarchical_vote(cands, fill_source="nope")


def test_stage2_counts_groups_that_pick_each_grid():
  cands = ([Candidate(A, "identity")] * 3 + [Candidate(B, "identity")] +
           [Candidate(B, "transpose")] * 2 + [Candidate(C, "transpose")] +
           [Candidate(B, "flip_lr"), Candidate(D, "flip_lr")])
  ranked = voting.hierarchical_vote(cands, fill_in=False)
  by = {voting.grid_key(v.grid): v for v in ranked}
  assert by[voting.grid_key(B)].votes == 3  # every group picked B
  assert by[voting.grid_key(B)].groups == ("identity", "transpose", "flip_lr")
  assert by[voting.grid_key(A)].votes == 1
  assert by[voting.grid_key(A)].count == 3
  # B wins despite A being the most frequent candidate overall: groups vote, not raw counts.
  assert grids(ranked)[0] == voting.grid_key(B)
  # A vs C vs D all have one vote; A has identity candidates -> second.
  assert grids(ranked)[:2] == keys(B, A)


def test_tie_goes_to_identity_view():
  cands = [Candidate(C, "rot90"), Candidate(C, "rot90"),  # C first and more frequent
           Candidate(A, "identity"), Candidate(B, "flip_ud"), Candidate(B, "flip_ud")]
  ranked = voting.hierarchical_vote(cands, fill_in=False)
  assert all(v.votes == 1 for v in ranked)
  assert grids(ranked)[0] == voting.grid_key(A)  # the identity view's grid wins the tie
  # Then more candidates in total (B, C both 2) then first appearance: C before B.
  assert grids(ranked) == keys(A, C, B)


def test_identity_name_is_configurable():
  cands = [Candidate(C, "x"), Candidate(A, "id")]
  assert grids(voting.hierarchical_vote(cands, identity="id"))[0] == voting.grid_key(A)
  assert grids(voting.hierarchical_vote(cands, identity="identity"))[0] == voting.grid_key(C)


def test_full_tie_is_broken_by_first_appearance_and_is_order_deterministic():
  cands = [Candidate(D, "t1"), Candidate(B, "t2"), Candidate(E, "t3")]
  ranked = voting.hierarchical_vote(cands)
  assert grids(ranked) == keys(D, B, E)
  # Same input twice -> same output (no hidden state).
  assert grids(voting.hierarchical_vote(cands)) == grids(ranked)
  # Every permutation ranks by its own first-appearance order.
  for perm in itertools.permutations(cands):
    assert grids(voting.hierarchical_vote(list(perm))) == [voting.grid_key(c.grid) for c in perm]


def test_candidates_of_different_shapes():
  wide, tall = g([1, 2, 3]), g([1], [2], [3])  # same cells, different shapes
  cands = [(wide, "identity"), (tall, "transpose"), (tall, "rot90"), (wide, "rot90")]
  ranked = voting.hierarchical_vote(cands)
  # Two groups each; wide has the identity candidate -> first.
  assert grids(ranked) == keys(wide, tall)
  assert [(v.votes, v.count, v.identity_count) for v in ranked] == [(2, 2, 1), (2, 2, 0)]


def test_different_shapes_votes_exact():
  wide = g([1, 2, 3])
  tall = g([1], [2], [3])
  cands = [(wide, "identity"), (tall, "transpose"), (tall, "rot90"), (tall, "flip_ud")]
  ranked = voting.hierarchical_vote(cands)
  assert grids(ranked) == keys(tall, wide)
  assert [(v.votes, v.count, v.identity_count) for v in ranked] == [(3, 3, 0), (1, 1, 1)]


def test_pooled_group_option_adds_one_vote_per_pooled_pick():
  cands = [Candidate(A, "identity"), Candidate(B, "rot90"), Candidate(B, "flip_lr"),
           Candidate(C, "flip_ud"), Candidate(D, "transpose"), Candidate(E, "rot180")]
  plain = voting.hierarchical_vote(cands)
  pooled = voting.hierarchical_vote(cands, pooled_group=True)
  votes_plain = {voting.grid_key(v.grid): v.votes for v in plain}
  votes_pooled = {voting.grid_key(v.grid): v.votes for v in pooled}
  # Pooled top 3: B (2), then A, C by first appearance.
  for x, extra in ((A, 1), (B, 1), (C, 1), (D, 0), (E, 0)):
    assert votes_pooled[voting.grid_key(x)] == votes_plain[voting.grid_key(x)] + extra
  assert voting.POOLED_GROUP in pooled[0].groups
  with pytest.raises(ValueError, match="reserved"):
    voting.hierarchical_vote([Candidate(A, voting.POOLED_GROUP)], pooled_group=True)


def test_fill_in_grid_ranks_after_candidates_on_ties():
  cands = [Candidate(c, "identity") for c in (X, X, Y, Y, Z)]
  ranked = voting.hierarchical_vote(cands, top_per_group=4)
  assert all(v.votes == 1 for v in ranked)
  # Identity counts X=Y=2 > Z=1 > fill-in 0.
  assert grids(ranked) == keys(X, Y, Z, XYZ_ROW_MAJORITY)
  assert [v.fill_in for v in ranked] == [False, False, False, True]


def test_flat_vote_ranks_all_distinct_candidates_by_count():
  cands = [(C, "rot90"), (A, "rot90"), (B, "flip"), (A, "flip"), (B, "identity"), (D, "x")]
  ranked = voting.flat_vote(cands)
  # A and B both 2; B has an identity candidate -> first. C and D: 1 each, first seen.
  assert grids(ranked) == keys(B, A, C, D)
  assert [v.votes for v in ranked] == [2, 2, 1, 1]
  assert all(v.votes == v.count for v in ranked)


def test_plain_tuples_and_bad_candidates():
  assert grids(voting.flat_vote([(A, "identity")])) == keys(A)
  with pytest.raises(ValueError, match="candidate 1"):
    voting.flat_vote([(A, "identity"), (np.zeros((2,), np.int8), "rot90")])
  with pytest.raises(ValueError, match="candidate 0"):
    voting.hierarchical_vote([A])
  with pytest.raises(ValueError, match="integer"):
    voting.flat_vote([(np.zeros((2, 2)), "identity")])


# --- the reference code's options (voting.REFERENCE); expected values checked by hand
# against the behaviour of the paper's reference code on the same cases.

def test_reference_unanimous_group_gives_its_grid_three_slots():
  picks = voting.group_picks([A, A], fill_rule="reference")
  assert [voting.grid_key(p) for p, _ in picks] == keys(A, A, A)
  assert [fill for _, fill in picks] == [False, True, True]
  # A single view (one candidate) is a unanimous group too.
  ranked = voting.hierarchical_vote([Candidate(A, "rot90")], **voting.REFERENCE)
  assert (ranked[0].votes, ranked[0].groups) == (6, ("rot90",) * 3 + (voting.POOLED_GROUP,) * 3)


def test_reference_two_grid_group_repeats_a_majority_grid():
  # Rows and columns of the majority grids are A's (2 of 3), so the third slot repeats A.
  picks = voting.group_picks([A, A, B], fill_rule="reference")
  assert [voting.grid_key(p) for p, _ in picks] == keys(A, B, A)
  # ...unless the row-wise majority is a new grid: then it takes the slot (distinct rule too).
  picks = voting.group_picks([X, X, Y, Y, Z], top_k=4, fill_rule="reference")
  assert [voting.grid_key(p) for p, _ in picks] == keys(X, Y, Z, XYZ_ROW_MAJORITY)
  # Three or more distinct grids fill every slot without fill-ins, as by default.
  assert len(voting.group_picks([C, B, A, D], fill_rule="reference")) == 3


def test_reference_cross_shape_row_majority_differs_from_same_shape():
  a, b, c, d, e, f, h = ([i] * 3 for i in range(1, 8))
  two_rows = [g(a, c), g(b, c), g(d, c)]  # the most common shape, 2x3
  three_rows = [g(e, c, f), g(e, c, h)]  # 3x3: same width, so their rows count across shapes
  grids_ = two_rows + three_rows
  # Same shape only: row 0 is a three-way tie -> the first grid's row.
  np.testing.assert_array_equal(voting.row_majority_grid(grids_), g(a, c))
  # Across shapes: row 0 is e (twice, from the 3x3 grids), a grid none of them is.
  np.testing.assert_array_equal(voting.row_majority_grid(grids_, across_shapes=True), g(e, c))
  # Column-wise, on the transposes: the same, transposed.
  t = [x.T for x in grids_]
  np.testing.assert_array_equal(voting.column_majority_grid(t, across_shapes=True), g(e, c).T)
  # As a fill-in of a short group built from every candidate.
  picks = voting.group_picks([g(a, c)], top_k=2, fill_from=grids_, row_majority="cross_shape")
  np.testing.assert_array_equal(picks[1][0], g(e, c))


def test_reference_vote_counts_slots_and_can_change_the_second_attempt():
  cands = ([Candidate(A, "identity")] * 3 + [Candidate(B, "identity"), Candidate(C, "transpose"),
                                              Candidate(B, "flip_ud")])
  # Default (the paper's text): B is picked by 2 groups; A and C by one; A has identity votes.
  assert grids(voting.hierarchical_vote(cands))[:2] == keys(B, A)
  ranked = voting.hierarchical_vote(cands, **voting.REFERENCE)
  votes = {voting.grid_key(v.grid): v.votes for v in ranked}
  # identity slots A, B, A; transpose C x3; flip_ud B x3; pooled (A 3, B 2, C 1) A, B, C.
  assert votes == dict(zip(keys(A, B, C), (3, 5, 4)))
  assert grids(ranked) == keys(B, C, A)  # the reference code's attempts are (B, C) too


def test_fill_rule_and_row_majority_are_checked():
  with pytest.raises(ValueError, match="fill_rule"):
    voting.hierarchical_vote([Candidate(A, "identity")], fill_rule="nope")
  with pytest.raises(ValueError, match="row_majority"):
    voting.group_picks([A], row_majority="nope")
