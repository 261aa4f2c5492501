"""Where a training run's records go: ``metrics.jsonl`` always, TensorBoard event files too
when tensorboardX is installed.

``metrics.jsonl`` stays the record of truth (resuming, ``plan_steps`` and the exported model's
loss curve read it). The event files only let the field's usual viewer watch a run
(``tensorboard --logdir runs``): one scalar per numeric field of each record, tagged by the
field's name, at the record's step. tensorboardX is optional (``pip install -e '.[tensorboard]'``):
it is the one standard writer that needs no TensorFlow. Without it nothing changes but one info
line per run.
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any, Mapping, Optional

from absl import logging

TENSORBOARD_DIR = "tensorboard"  # under the run's out_dir
# tensorboardX names event files by the second and host only: a writer opened in the same second
# (a quick resume, a test) would truncate the last one's file without a suffix of its own.
_WRITER_IDS = itertools.count()


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
  """The record's numeric fields but ``step``: what TensorBoard plots."""
  return {k: float(v) for k, v in record.items()
          if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def tensorboard_writer(log_dir: str, purge_step: Optional[int] = None) -> Optional[Any]:
  """A tensorboardX ``SummaryWriter`` on ``log_dir``, or None when tensorboardX is missing.

  ``purge_step``: a resumed run re-logs the steps after its last checkpoint; TensorBoard then
  hides the earlier run's events from this step on, as ``records_by_step`` keeps the last
  record of each step.
  """
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
  except ImportError:
    logging.info("tensorboardX is not installed: metrics go to metrics.jsonl only "
                 "(pip install -e '.[tensorboard]' for TensorBoard event files)")
    return None
  return tensorboardX.SummaryWriter(log_dir, purge_step=purge_step, flush_secs=30,
                                   filename_suffix=f".{os.getpid()}.{next(_WRITER_IDS)}")


class MetricsLog:
  """Appends records to ``out_dir/metrics.jsonl`` (flushed at once) and, with ``tensorboard``
  and tensorboardX installed, to event files in ``out_dir/tensorboard``.

  ``start_step`` is the step a resumed run restarts from (0 for a new run).
  """

  def __init__(self, out_dir: str, *, start_step: int = 0, tensorboard: bool = True):
    self.path = os.path.join(out_dir, "metrics.jsonl")
    self._file = open(self.path, "a")  # pylint: disable=consider-using-with
    self._tb = None
    if tensorboard:
      self._tb = tensorboard_writer(os.path.join(out_dir, TENSORBOARD_DIR),
                                    purge_step=start_step + 1 if start_step else None)

  def write(self, record: Mapping[str, Any]) -> None:
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._tb is not None:
      for tag, value in scalars(record).items():
        self._tb.add_scalar(tag, value, int(record["step"]))

  def close(self) -> None:
    self._file.close()
    if self._tb is not None:
      self._tb.close()

  def __enter__(self) -> "MetricsLog":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
