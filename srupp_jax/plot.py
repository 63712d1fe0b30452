"""`python -m srupp_jax.plot`: learning curves of workdirs (srupp_jax/programs/plot.py)."""
import sys

from srupp_jax.programs.plot import main

if __name__ == "__main__":
    sys.exit(main())
