r"""Episodes per second the training feed makes on this machine, in-process and with workers.

Generation, augmentation and tokenisation of ``finetune.py:PRESET``'s stream
(``ttt_jax.train.feed.SourceExamples``), timed after a warm-up that covers worker start-up and
task-set loading. docs/training.md ("GPU recipe") compares it with what a GPU step consumes.

  python -m experiments.feed_throughput --workers=0,1,2 --examples=1000
"""

from __future__ import annotations

import itertools
import time

from absl import app, flags

from experiments.configs import finetune as finetune_config
from ttt_jax.train import feed

_PRESET = flags.DEFINE_string("preset", "gpu", "finetune.py preset whose stream is timed")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "worker processes (0: in-process)")
_EXAMPLES = flags.DEFINE_integer("examples", 1000, "stream positions timed per setting")
_WARMUP = flags.DEFINE_integer("warmup", 64, "positions taken before timing")


def measure(source: feed.SourceExamples, workers: int, n: int, warmup: int) -> dict:
  """Positions/s, episodes/s (usable examples) and tokens/s over ``n`` positions."""
  examples = (feed.ParallelExamples(source, 0, workers) if workers
              else feed.serial_examples(source, 0))
  try:
    list(itertools.islice(examples, warmup))
    t0 = time.perf_counter()
    got = list(itertools.islice(examples, n))
    sec = time.perf_counter() - t0
  finally:
    if workers:
      examples.close()
  usable = [e for e in got if e is not None]
  return {"positions_s": n / sec, "episodes_s": len(usable) / sec,
          "tokens_s": sum(len(e.tokens_T) for e in usable) / sec}


def main(argv):
  del argv
  c = finetune_config.get_config(_PRESET.value)
  source = feed.SourceExamples(c.data.sources, c.seed, tuple(c.data.exclude_families),
                               c.max_tokens, c.data.loss_mode)
  print(f"stream: {c.data.sources}, max_tokens {c.max_tokens}, {len(c.data.exclude_families)} "
        "families held out")
  print("| workers | positions/s | episodes/s | tokens/s |")
  print("|---|---|---|---|")
  for w in map(int, _WORKERS.value):
    r = measure(source, w, _EXAMPLES.value, _WARMUP.value)
    print(f"| {w or 'in-process'} | {r['positions_s']:.0f} | {r['episodes_s']:.0f} | "
          f"{r['tokens_s']:.0f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
