"""The pair format: one input -> output pair per sequence, a learned task embedding per task.

``data`` (sequences, pools, batches), ``model`` (transformer + task and augmentation tables),
``pretrain`` (cumulative training), ``checkpoint`` (committable checkpoints), ``ttt`` (a new
task's vector, LoRA or weights, many tasks at once), ``predict`` (views, decoding, voting),
``evaluate`` (pass@2 and test-output loss). docs/taskemb.md describes the format.
"""
