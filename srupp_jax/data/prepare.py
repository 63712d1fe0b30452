"""Prepare a dataset once: build its TFDS array_record files, then its token cache.

  python -m srupp_jax.data.prepare --dataset=enwik8 --data_dir=~/tensorflow_datasets \\
      [--manual_dir=DIR_WITH_enwik8.zip] [--cache_dir=~/.cache/srupp_jax]

enwik8 and wikitext103 build without TensorFlow (tensorflow-datasets 4.9.10); TFDS's own lm1b
builder calls `tf.io.gfile`, so preparing lm1b needs `pip install tensorflow` (reading it back
for training does not). `--dataset=default` only fills the token cache of the embedded corpus.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from srupp_jax.data import datasets


def prepare(name: str, data_dir: Optional[str] = None, manual_dir: Optional[str] = None,
            cache_dir: Optional[str] = None, max_bytes: Optional[int] = None):
    """Builds the TFDS dataset (unless already prepared) and the token cache; returns LMData."""
    datasets._check_name(name)
    if name != "default":
        data_dir = datasets.default_data_dir() if data_dir is None else os.fspath(data_dir)
        info = os.path.join(datasets._tfds_dir(name, data_dir), "dataset_info.json")
        if not os.path.exists(info):
            from srupp_jax.data import builders
            builders.build(name, data_dir, manual_dir=manual_dir)
    return datasets.load_tokens(name, data_dir=data_dir, cache_dir=cache_dir,
                                max_bytes=max_bytes)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=datasets.NAMES)
    p.add_argument("--data_dir", default=None, help="TFDS data dir (default: $TFDS_DATA_DIR "
                   "or ~/tensorflow_datasets)")
    p.add_argument("--manual_dir", default=None, help="offline copy of the source files")
    p.add_argument("--cache_dir", default=None, help="token cache (default ~/.cache/srupp_jax)")
    p.add_argument("--max_bytes", type=int, default=None, help="'default' corpus size")
    p.add_argument("--allow_modified_source", action="store_true", help="(accepted; no effect)")
    a = p.parse_args(argv)
    data = prepare(a.dataset, data_dir=a.data_dir and os.path.expanduser(a.data_dir),
                   manual_dir=a.manual_dir and os.path.expanduser(a.manual_dir),
                   cache_dir=a.cache_dir and os.path.expanduser(a.cache_dir),
                   max_bytes=a.max_bytes)
    print(f"{a.dataset}: unit={data.unit} vocab_size={data.vocab_size} tokens "
          f"train={data.train.shape[0]} valid={data.valid.shape[0]} test={data.test.shape[0]}"
          f"\ncache: {data.info['cache_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
