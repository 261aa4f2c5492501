import subprocess
import sys

import numpy as np
import pytest

from ttt_jax.arc import generators as G
from ttt_jax.arc.generators import common as C
from ttt_jax.arc.task import check_grid

NAMES = sorted(G.FAMILIES)
SEEDS = range(20)
DIFFICULTIES = (0.0, 0.5, 1.0)


def test_at_least_40_families_covering_the_issue_themes():
  assert len(NAMES) >= 40
  themes = {f.theme for f in G.FAMILIES.values()}
  for theme in ("objects", "colour", "movement", "fill", "outline", "lines", "symmetry",
                "denoise", "pattern", "scaling", "tiling", "logic", "counting", "cropping",
                "geometry", "composite"):
    assert theme in themes, theme
  for fam in G.FAMILIES.values():
    assert fam.doc, f"{fam.name} has no docstring describing its rule"


@pytest.mark.parametrize("name", NAMES)
def test_family_tasks_are_valid_and_verified(name):
  fam = G.FAMILIES[name]
  for d in DIFFICULTIES:
    for seed in SEEDS:
      task = G.generate(name, seed, d)
      assert task.task_id == f"gen/{name}/{seed}"
      assert 3 <= len(task.train) <= 4 and len(task.test) == 1 and task.has_test_outputs
      inputs = [p.input.tobytes() + bytes(p.input.shape) for p in task.train + task.test]
      assert len(set(inputs)) == len(inputs), "inputs repeat inside a task"
      for p in task.train + task.test:
        for g in (p.input, p.output):
          assert g.dtype == np.int8
          check_grid(g)
        assert not (p.input.shape == p.output.shape and np.array_equal(p.input, p.output))
      # The canonical (un-randomised) pairs satisfy the family's verifier, and the
      # verifier rejects the same pairs with one output cell or the shape changed.
      rule, pairs = fam.sample(np.random.default_rng(seed), d, 3)
      for inp, out in pairs:
        assert fam.verify(inp, out, rule) is None
        bad = out.copy()
        r, c = seed % out.shape[0], (seed // 2) % out.shape[1]
        bad[r, c] = (bad[r, c] + 1 + seed % 9) % 10
        assert fam.verify(inp, bad, rule) is not None
        assert fam.verify(inp, np.concatenate([out, out[:1]], 0), rule) is not None


@pytest.mark.parametrize("name", NAMES)
def test_family_is_deterministic_and_diverse(name):
  a = G.generate(name, 7, 0.5)
  b = G.generate(name, 7, 0.5)
  for p, q in zip(a.train + a.test, b.train + b.test):
    assert np.array_equal(p.input, q.input) and np.array_equal(p.output, q.output)
  tests = {G.generate(name, s, 0.5).test[0].input.tobytes() for s in range(20)}
  assert len(tests) >= 19  # unique-input ratio >= 0.95 at difficulty 0.5


def test_difficulty_grows_grids():
  def mean_cells(d):
    return np.mean([G.generate(n, s, d).test[0].input.size for n in NAMES for s in range(3)])
  assert mean_cells(1.0) > 1.5 * mean_cells(0.0)


def test_randomisation_applies_one_transform_to_every_grid():
  rng = np.random.default_rng(0)
  g0 = np.arange(6, dtype=np.int8).reshape(2, 3)
  g1 = np.arange(4, 10, dtype=np.int8).reshape(3, 2)
  pairs = [(g0, g1), (g1, g0)]
  seen_k, seen_bg = set(), set()
  for _ in range(60):
    out = G.randomise(rng, pairs, recolour=False)
    ks = [k for k in range(8)
          if all(np.array_equal(G.d4(a, k), x) for p, q in zip(pairs, out) for a, x in zip(p, q))]
    assert len(ks) == 1
    seen_k.add(ks[0])
    out = G.randomise(rng, pairs, reorient=False)
    lut = {}
    for p, q in zip(pairs, out):
      for a, x in zip(p, q):
        for c, y in zip(a.ravel().tolist(), x.ravel().tolist()):
          assert lut.setdefault(c, y) == y, "colour mapped two ways"
    assert sorted(lut.values()) == list(range(10))
    seen_bg.add(lut[0])
  assert seen_k == set(range(8))
  assert 0 in seen_bg and len(seen_bg) > 1  # background mostly kept, sometimes recoloured


def test_failing_family_raises_clear_error_instead_of_looping():
  def pair(rng, d, rule):
    raise G.Retry("never fits")
  fam = G.Family("always_fails", "test", "", lambda rng, d: {}, pair, lambda i, r: i)
  with pytest.raises(G.GenerationError, match="always_fails.*never fits"):
    fam(0, 0.5)


def test_identity_rule_is_rejected():
  fam = G.Family("identity", "test", "", lambda rng, d: {},
                 lambda rng, d, r: (rng.integers(0, 10, (3, 3)), None), lambda i, r: i)
  with pytest.raises(G.GenerationError, match="output equals input"):
    fam(0, 0.5)


def test_unknown_family_and_bad_difficulty():
  with pytest.raises(KeyError, match="unknown generator family 'nope'"):
    G.generate("nope", 0, 0.5)
  with pytest.raises(ValueError, match="difficulty 1.5"):
    G.generate(NAMES[0], 0, 1.5)


# Hand-made inputs check that the solvers (the verifiers) implement the rules the
# docstrings state, independently of the generators.
def _g(rows):
  return np.array([[int(ch) for ch in r.replace(".", "0")] for r in rows], np.int8)


def test_solvers_on_hand_made_inputs():
  cases = [
      ("gravity_cells", {}, ["1.2", ".3.", "..."], ["...", "...", "132"]),
      ("gravity_objects", {}, ["11.", ".1.", "...", "..2", "..."],
       ["...", "...", "...", "11.", ".12"]),
      ("fill_enclosed", dict(wall=4, fill=5), ["4444.", "4..4.", "4444.", "4.4.."],
       ["4444.", "4554.", "4444.", "4.4.."]),
      ("overlay_xor", dict(op="xor", a=1, b=2, divider=9, out=3), ["1.9.2", "119.2"],
       ["33", "3."]),
      ("colour_histogram", {}, ["1.2.", "2.3.", "2..1"], ["222", "11.", "3.."]),
      ("periodic_fill", dict(mask=5), ["1212", "2155", "1255"], ["1212", "2121", "1212"]),
      ("symmetry_complete", dict(kind="lr", mask=5), ["12355", "46764"], ["12321", "46764"]),
      ("crop_largest_object", dict(largest=True), ["11..2", "1...2", "....2", "3...2"],
       ["2", "2", "2", "2"]),
      ("denoise_pixels", dict(noise=5), ["2225", "2522", "...."], ["2222", "2222", "...."]),
      ("rays_to_wall", {}, ["...", "..3", "1.."], ["1.3", "1.3", "1.."]),
      ("connect_pairs", {}, ["1..1", "....", "2...", "2..."], ["1111", "....", "2...", "2..."]),
      ("hollow_rectangles", {}, ["333.", "333.", "333.", "...1"], ["333.", "3.3.", "333.", "...1"]),
      ("attract_to_wall", dict(wall=5), ["2..", "...", "555", "...", ".11"],
       ["...", "2..", "555", ".11", "..."]),
  ]
  for name, rule, inp, out in cases:
    np.testing.assert_array_equal(G.FAMILIES[name].solve(_g(inp), rule), _g(out), err_msg=name)


def test_shape_helpers():
  rng = np.random.default_rng(0)
  for _ in range(50):
    h, w = int(rng.integers(1, 7)), int(rng.integers(1, 7))
    m = C.random_shape(rng, h, w)
    assert m.shape == (h, w) and m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()
    assert len(C.components(m.astype(np.int8))) == 1  # 4-connected


def test_generators_do_not_import_jax():
  code = ("import sys; import ttt_jax.arc.generators, ttt_jax.arc.stream; "
          "assert 'jax' not in sys.modules, 'jax imported'")
  subprocess.run([sys.executable, "-c", code], check=True)


def test_gallery_html_structure():
  from experiments import gallery  # pylint: disable=import-outside-toplevel
  page = gallery.render_gallery(["upscale", "fill_enclosed"], per_family=2)
  assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>")
  assert page.count('<section class="family"') == 2 and page.count('<div class="task">') == 4
  assert page.count('<div class="pair test">') == 4
  assert page.count("<svg") == 2 * page.count('<div class="pair')  # input and output per pair
  assert 'id="fill_enclosed"' in page and "gen/upscale/1" in page
  assert "#FF4136" in page  # ARC palette red: enclosed regions are drawn


def test_generator_stats_smoke():
  from experiments import generator_stats  # pylint: disable=import-outside-toplevel
  rows, summary = generator_stats.run(["upscale", "denoise_pixels"], num_tasks=4)
  assert [r["family"] for r in rows] == ["upscale", "denoise_pixels"]
  assert summary["valid_rate"] == 1.0 and summary["min_unique_input_ratio"] >= 0.95
  assert "| upscale | scaling |" in generator_stats.format_markdown(rows)
