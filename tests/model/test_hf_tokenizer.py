from __future__ import annotations

import numpy as np
import pytest

from ttt_jax.model import hf_tokenizer

tokenizers = pytest.importorskip("tokenizers")

SPECIALS = ["<pad>", "<s>", "</s>"]
CHARS = list("0123456789[] \n->#")


def _char_tokenizer(path):
  """A character-level WordLevel tokenizer over the grid text alphabet, saved as tokenizer.json."""
  vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<pad>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Split(tokenizers.Regex(r"[\s\S]"), behavior="isolated")
  tok.decoder = tokenizers.decoders.Fuse()
  tok.add_special_tokens(SPECIALS)
  tok.post_processor = tokenizers.processors.TemplateProcessing(
      single="<s> $A </s>", special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])])
  file = str(path / "tokenizer.json")
  tok.save(file)
  return file


def _grid_text():
  grid = np.array([[0, 0, 1], [1, 0, 0], [3, 9, 2]], np.int8)
  return str(grid) + " -> " + str(grid.T) + "#"  # numpy print style: "[[0 0 1]\n [1 0 0]\n [3 9 2]]"


def test_grid_text_round_trips_through_a_local_tokenizer(tmp_path):
  tok = hf_tokenizer.load_tokenizer(_char_tokenizer(tmp_path))
  text = _grid_text()
  assert "\n" in text and text.startswith("[[0 0 1]\n [1 0 0]")
  ids = tok.encode(text)
  assert ids.dtype == np.int32 and len(ids) == len(text)  # one id per character
  assert tok.decode(ids) == text
  with_specials = tok.encode(text, add_special_tokens=True)
  assert with_specials[0] == tok.token_id("<s>") and with_specials[-1] == tok.token_id("</s>")
  assert tok.decode(with_specials) == text
  batch = tok.encode_batch([text, "[[5]]"])
  np.testing.assert_array_equal(batch[0], ids)
  assert tok.decode(batch[1]) == "[[5]]"


def test_loads_from_directory_and_reports_missing(tmp_path):
  _char_tokenizer(tmp_path)
  tok = hf_tokenizer.load_tokenizer(str(tmp_path))
  assert tok.vocab_size == len(SPECIALS) + len(CHARS)
  with pytest.raises(KeyError, match="<eot>"):
    tok.token_id("<eot>")
  with pytest.raises(FileNotFoundError, match="tokenizer.json"):
    hf_tokenizer.load_tokenizer(str(tmp_path / "nowhere"))


def test_paper_text_format_through_a_local_tokenizer(tmp_path):
  from ttt_jax.arc import io
  from ttt_jax.data import text_format
  tok = hf_tokenizer.load_tokenizer(_char_tokenizer(tmp_path))
  task = io.load_tasks("dev80:1")[0][0]
  prompt, target = text_format.episode_text(task.train, task.test[0].input, task.test[0].output)
  body = prompt.split("\n", 1)[1]  # the instruction's letters are outside this tiny alphabet
  assert tok.decode(tok.encode(body)) == body
  answer = tok.decode(tok.encode(target))
  np.testing.assert_array_equal(text_format.text_to_grid(answer), task.test[0].output)
