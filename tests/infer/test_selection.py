import dataclasses
import itertools
import json

import numpy as np
import pytest

from ttt_jax.infer import selection
from ttt_jax.infer.records import Candidate, CandidateRecord, Ranked


def _g(v, shape=(1, 2)):
  return np.full(shape, v).tolist()


def _record(counts, ranked=None):
  """Candidates _g(i) with counts[i]; the vote ranks them by count unless ``ranked`` says."""
  cands = sorted((Candidate(_g(i), n, 0) for i, n in enumerate(counts)), key=lambda c: -c.count)
  order = ranked if ranked is not None else [c.grid[0][0] for c in cands]
  return CandidateRecord(num_views=sum(counts), num_invalid=0, num_extra=0,
                         ranked=tuple(Ranked(_g(i), 1, 1, False) for i in order),
                         candidates=tuple(cands))


def _ids(grids):
  return [g[0][0] for g in grids]


def test_vote_order_is_the_ranking_then_the_rest():
  r = _record([5, 4, 3, 1], ranked=[1, 0])
  assert _ids(selection.order(r, "vote")) == [1, 0]  # the vote's ranking only, as before
  assert _ids(selection.vote_order(r)) == [1, 0, 2, 3]
  assert _ids(selection.pool(r, 3)) == [1, 0, 2]


def test_poe_orders_scored_by_score_then_unscored_by_vote():
  r = selection.attach_scores(_record([5, 4, 3, 1]), [_g(0), _g(1), _g(2)], [-9.0, -1.0, -4.0])
  assert _ids(selection.order(r, "poe")) == [1, 2, 0, 3]
  assert selection.score_of(r, _g(1)) == -1.0 and selection.score_of(r, _g(3)) is None
  att, topped = selection.attempts(r, "poe")
  assert _ids(att) == [1, 2] and not topped


def test_vote_plus_poe_is_a_borda_count_with_score_tiebreak():
  # vote ranks 0,1,2,3; scores rank 3,2,0,1 -> sums 0:0+2, 1:1+3, 2:2+1, 3:3+0.
  r = selection.attach_scores(_record([9, 7, 5, 3]), [_g(i) for i in range(4)],
                              [-2.0, -3.0, -1.5, -1.0])
  # 0 (2), 2 (3, score rank 1), 3 (3, score rank 0) -> 3 beats 2 on the tie; then 1 (4).
  assert _ids(selection.order(r, "vote+poe")) == [0, 3, 2, 1]


def test_orders_do_not_depend_on_how_candidates_are_listed():
  base = _record([6, 5, 4, 2])
  grids, scores = [_g(i) for i in range(4)], [-3.0, -0.5, -2.0, -7.0]
  want = {m: _ids(selection.order(selection.attach_scores(base, grids, scores), m))
          for m in selection.METHODS}
  for perm in itertools.permutations(range(4)):
    shuffled = dataclasses.replace(base, candidates=tuple(base.candidates[i] for i in perm))
    r = selection.attach_scores(shuffled, [grids[i] for i in perm], [scores[i] for i in perm])
    for m in selection.METHODS:
      assert _ids(selection.order(r, m)) == want[m]


def test_attempts_top_up_from_the_fallback_without_repeats():
  r = _record([3])
  att, topped = selection.attempts(r, "poe", fallback=[_g(0), _g(7)])
  assert _ids(att) == [0, 7] and topped
  att, topped = selection.attempts(CandidateRecord(0, 0, 0), "vote", fallback=[_g(5)])
  assert _ids(att) == [5, 5] and topped
  # A grid of another type (int8 from the baseline) is still the same grid.
  att, _ = selection.attempts(r, "vote", fallback=[np.asarray(_g(0), np.int8), _g(4)])
  assert _ids(att) == [0, 4]


def test_attach_scores_keeps_grids_the_vote_filled_in():
  r = _record([2, 1], ranked=[0, 5])  # 5: a fill-in, no raw votes
  s = selection.attach_scores(r, selection.pool(r, 8), [-1.0, -0.1, -2.0])
  assert selection.score_of(s, _g(5)) == -0.1
  assert _ids(selection.order(s, "poe")) == [5, 0, 1]
  with pytest.raises(ValueError, match="scores"):
    selection.attach_scores(r, [_g(0)], [])
  with pytest.raises(ValueError, match="select method"):
    selection.order(r, "best")


def test_record_json_round_trip_keeps_the_file_format():
  """A record written and read back is the same record, and its JSON is what the files held
  before records were typed: ``poe`` only once scored (null where unscored), ``rounds`` only
  after self-training."""
  r = _record([3, 1], ranked=[0, 5])
  plain = r.to_json()
  assert list(plain) == ["attempts", "fallback", "select", "num_views", "num_invalid",
                         "num_extra", "ranked", "candidates"]
  assert all("poe" not in c for c in plain["candidates"])
  s = dataclasses.replace(selection.attach_scores(r, [_g(0), _g(5)], [-1.0, -2.0]),
                          attempts=(_g(0), _g(5)), rounds=({"round": 0},))
  js = s.to_json()
  assert [c.get("poe", "absent") for c in js["candidates"]] == [-1.0, None, -2.0]
  assert js["rounds"] == [{"round": 0}]
  for rec in (r, s):
    back = CandidateRecord.from_json(json.loads(json.dumps(rec.to_json())))
    assert back == rec and json.dumps(back.to_json()) == json.dumps(rec.to_json())
