"""srupp_jax entry point in a checkout (installed, the same program is the `srupp` command).

    python main.py --config=configs/default.py --workdir=DIR               # train, then dev eval
    python main.py --config=configs/enwik8.py:k5 --workdir=DIR             # a config variant
    python main.py --config=configs/default.py --config.model.d=128 ...    # override any key
    python main.py --workdir=DIR --mode=eval                               # dev + test of best
    python main.py --workdir=DIR --mode=generate --prompt="def " --top_p=0.9  # sample text
    python main.py --config=configs/enwik8.py --mode=show_config            # keys, meanings

Modes, flags, config files and exit codes: `python main.py --help` (srupp_jax/programs/cli.py).
"""
from srupp_jax.programs.cli import run

if __name__ == "__main__":
    run()
