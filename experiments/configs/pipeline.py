"""End-to-end pipeline config (TTT -> augmented prediction -> vote -> score).

Presets, chosen after ``:`` in ``--config=experiments/configs/pipeline.py:PRESET``:
  (none)   the embedded default: the model shipped in ttt_jax/assets/default_model on a small
           dev-80 task set, sized to finish in a few minutes on a 2-core CPU;
  paper    behaves like the paper's reference code (github.com/ekinakyurek/marc) on all of
           dev-80: its TTT data (plain + colour-permuted copies, zero-demonstration episodes,
           duplicates removed), LoRA rank 128 / alpha 16 on q, v, gate, up, down without
           gradient clipping, 2 epochs of batch 2, 250 examples of up to 8192 tokens, its
           inference views (identity x subsets x 3 orders + 5 single transformed views) and its
           vote (3 slots per group, cross-shape row majority, pooled group). docs/reference.md
           lists every difference from our defaults and why ours differ;
  no_ttt   the fine-tuned model with augmented inference and voting only.
Override anything from the command line, e.g. ``--config.tasks=arc1-eval --config.ttt.epochs=1``.

``infer.answer_budget`` defaults to ``"full"``: every view reserves room for a 30x30 answer, so with
the embedded 1024-token model most views of the default run no longer fit and the run falls back
to fewer demonstrations or the baseline; add ``--config.infer.answer_budget=demos`` for a quick
CPU smoke run whose answers are cut at the largest demonstration output.
"""

from ml_collections import config_dict

from ttt_jax import voting  # numpy only
from ttt_jax.model import overrides


def get_config(preset: str = "") -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  c.tasks = "dev80-small"  # any ttt_jax.arc.io.load_tasks spec ("name:N" keeps N tasks)
  c.solutions = ""  # Kaggle solutions file, when tasks is a challenges file
  c.model_dir = ""  # a ttt_jax.model.store directory; "" = the embedded default model
  # --config.model_overrides.FIELD=... (any ModelConfig field). The CPU-sized presets compute
  # attention in causal blocks (equal results, fewer FLOPs on a CPU: BENCHMARKS.md); paper: XLA's.
  c.model_overrides = overrides.override_fields(attention_impl="blocked")
  c.out_dir = "runs/pipeline"
  c.adapters_dir = ""  # with ttt.enabled=False: use adapters saved here (experiments/ttt.py)
  c.seed = 0
  # JAX's persistent compilation cache (ttt_jax.compile_cache): later runs with the same shapes
  # skip the minutes of compiling the decode loop on CPU; {host}: one per machine. "": off.
  c.jax_cache_dir = "~/.cache/ttt_jax/jax/{host}"
  # jax.transfer_guard level for the stages, once the engine has placed the base: "disallow"
  # makes any implicit transfer (a host array passed to a compiled call, or a device result
  # read without jax.device_get) an error, to find the copies that make an accelerator wait;
  # "log" reports them. "allow": no checking.
  c.transfer_guard = "allow"
  # The TTT adapters (rank, alpha, targets; --config.lora.rank=...), as in every binary. Rank 32
  # for the embedded 0.8M-parameter model; the paper preset sets its 128.
  c.lora = overrides.lora_section(rank=32)
  c.ttt = config_dict.ConfigDict(dict(
      enabled=True,
      learning_rate=config_dict.placeholder(float),  # None: the paper's choice for the model
      # max_tokens 1024: the embedded arc-cpu model trained on episodes of at most 1024 tokens,
      # and on 2 CPU cores a 2048-token TTT group of 4 tasks took 322 s against 86 s at 1024.
      epochs=2, batch_size=2, n_max=24, max_tokens=1024, loss_mode="all_outputs",
      augment=True, group_size=4, min_bucket=128, shared_adapter=False,
      clip_norm=config_dict.FieldReference(1.0, field_type=float),  # None or 0: no clipping
      data_mode="ours"))  # "reference": the TTT set as the paper's code builds it
  c.infer = config_dict.ConfigDict(dict(
      # Views (ttt_jax.infer.views.make_views): "ours" = 7 invertible transforms x every
      # leave-out subset x n_orders orders; "reference" = the reference code's: identity x every
      # subset x n_orders orders, plus one view each of transpose, flip_ud, flip_lr, rot90,
      # rot180 (of a random identity view), repeated prompts skipped. n_orders counts the orders
      # per subset, its own order included: "ours" draws distinct permutations until there are
      # n_orders; "reference" draws n_orders - 1 permutations and drops repeats (its permute_n=2
      # is n_orders=3).
      views="ours",
      n_orders=2, leave_out=1, max_tokens=2048, group_size=4, seed=0,
      # New tokens reserved per answer, EOS included (ttt_jax.infer.views.answer_budget):
      # "full" = any grid up to 30x30 (931 tokens); "demos" = the largest demonstration output
      # in either orientation, for CPU smoke runs with short contexts only (bigger answers are
      # cut off and invalid); or a number of tokens ("600").
      answer_budget="full",
      # Sequences (tasks x views) per compiled decoding call; more views are decoded in chunks
      # (same tokens). Bounds the prefill's rows x heads x prompt x cache attention memory:
      # 32 rows of a 2048-token arc-cpu context: ~1.2 GB per score tensor. 0: no limit.
      max_rows=32,
      # Pad every decoding and scoring call's task axis to group_size (copies of a task,
      # discarded): one compiled program per stage however the inputs fall into groups. Worth it
      # where compiling costs more than the padding rows (an accelerator); on a CPU the padding
      # rows cost their full decoding time, so off there.
      pad_tasks=False,
      # Decode steps per KV-cache length (ttt_jax.model.decode.generate's chunk): a step reads
      # at most this many idle cache slots; every chunk is one more loop to compile. 0: the
      # default (the budget in at most 8 chunks).
      decode_chunk=0))
  # Voting (ttt_jax.voting): method "hierarchical" (the paper's two-stage vote) or "flat"
  # (raw counts; takes none of the other fields). The rest are hierarchical_vote's options;
  # the defaults follow the paper's text, voting.REFERENCE lists the reference code's values.
  c.vote = config_dict.ConfigDict(dict(
      method="hierarchical", top_per_group=3, fill_in=True, fill_source="group",
      pooled_group=False, fill_rule="distinct", row_majority="same_shape"))
  # Candidate search (ttt_jax.infer.dfs): "greedy" = one answer per view; "dfs" also adds, on
  # `views` views spread over each test input's views, every answer whose probability stays
  # above min_prob (at most max_candidates per view and max_expansions forward calls, each one
  # token on CPU/GPU: a host loop). Extra answers vote like greedy ones.
  c.search = config_dict.ConfigDict(dict(
      method="greedy", views=8, min_prob=0.1, max_candidates=8, max_expansions=2000))
  # Attempt selection (ttt_jax.infer.selection): "vote" = the vote's ranking; "poe" = the
  # max_candidates leading candidates by product-of-experts score (summed log-probability under
  # `views` views spread over the test input's views); "vote+poe" = by vote rank + score rank.
  # max_rows bounds the sequences (tasks x candidates x views) of one scoring pass. Scores go
  # to candidates.json and the report.
  c.select = config_dict.ConfigDict(dict(method="vote", max_candidates=8, views=8, max_rows=32))
  # Test-time self-training after prediction (ttt_jax.selftrain): up to `rounds` rounds; a test
  # input's leading candidate (by select.method) becomes a pseudo-label when its vote share is
  # at least min_vote_share and (min_margin > 0) its PoE score beats the runner-up's by
  # min_margin nats; pseudo pairs join the leave-one-out data with loss weight `weight`, the
  # adapter trains `epochs` more epochs and is kept only if, on the real demonstrations (each
  # the query of the others), the number reproduced exactly does not drop and the mean
  # teacher-forced token accuracy drops by at most max_token_acc_drop (1.0: exactness alone).
  # verify="control" also trains the same continuation without the pseudo-labels and keeps
  # the labelled adapter only if it is not below that control either (twice the training):
  # training alone raises the demonstrations' accuracy, whatever the label.
  # The M-step trains with the TTT settings; learning_rate (None: TTT's) replaces TTT's rate.
  # Rounds write under out_dir/selftrain/.
  c.self_train = config_dict.ConfigDict(dict(
      enabled=False, rounds=3, min_vote_share=0.5, min_margin=0.0, weight=0.5, epochs=1,
      max_token_acc_drop=0.0, verify="before", learning_rate=config_dict.placeholder(float)))

  if preset == "paper":
    c.tasks = "dev80"
    c.lora.rank, c.ttt.n_max, c.ttt.max_tokens = 128, 250, 8192
    c.lora.targets = ("q", "v", "gate", "up", "down")
    c.ttt.clip_norm = None
    c.ttt.data_mode = "reference"
    c.ttt.group_size, c.ttt.min_bucket = 8, 256
    # Memory, not results (same adapters and tokens): the plan `python -m experiments.memory_plan`
    # fits every stage of llama-3.2-1b into 80 GiB with layer remat and 4 tasks per decoding call.
    c.model_overrides.remat = True
    c.infer.max_tokens, c.infer.group_size = 8192, 4
    c.infer.pad_tasks = True
    c.infer.views, c.infer.n_orders = "reference", 3
    c.vote.update(voting.REFERENCE)
    # cuDNN's fused attention on a GPU, the blockwise pure-JAX form elsewhere: XLA's default
    # keeps every 8192 x 8192 score (618 GiB for the 1B's TTT step in the memory plan).
    c.model_overrides.attention_impl = "auto"
  elif preset == "no_ttt":
    c.ttt.enabled = False
  elif preset:
    raise ValueError(f"unknown pipeline preset {preset!r}; known: paper, no_ttt")
  return c
