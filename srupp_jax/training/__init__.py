"""The training loop and its infrastructure; it imports no model, task, data or program.

  trainer.py     train_and_evaluate(task, workdir): the loop, knowing only the Task interface
  steps.py       the compiled train step (float16: dynamic loss scaling) and its on-device
                 metric window; precision.py the compute dtype that suits a device
  report.py      what a run tells while it runs (lines, TensorBoard, the progress bar) and
                 the trace it can take
  optim.py       the optax chain (RAdam, decoupled weight decay, clipping, schedules)
  checkpoint.py  Orbax checkpoints (keep N + best, checksums, quarantine); leaves.py their leaves
  metrics.py     metrics.jsonl and TensorBoard; progress.py the progress bar; mfu.py MFU
  sharding.py    the device mesh and where arrays live on it
  rng.py         the PRNG implementation of a run's keys
  workdir.py     the workdir lock, signals, how a run ends
  run_config.py  the workdir's config.json and its recorded changes
  fine_tune.py   train.init_from: starting from another workdir's parameters
"""
