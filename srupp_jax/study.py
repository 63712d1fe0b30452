"""`python -m srupp_jax.study`: the compute-efficiency study (srupp_jax/programs/study.py)."""
from srupp_jax.programs.study import run

if __name__ == "__main__":
    run()
