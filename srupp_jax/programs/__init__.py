"""The programs a user runs: main.py / `srupp` (cli.py, modes.py), the study, plot.

  cli.py          flags, the config file and its overrides, modes, exit codes
  modes.py        what each mode of main.py does, for any task
  config_keys.py  the keys of configs/base.py, their meanings, unknown keys named
  study.py        `python -m srupp_jax.study`: the compute-efficiency study
  plot.py         `python -m srupp_jax.plot`: learning curves
  logs.py         short logs
  importing.py    --mode=import: a released PyTorch model into a workdir
"""
