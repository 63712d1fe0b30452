"""Prepare a dataset once: build its TFDS array_record files, then its token cache.

  python -m srupp_jax.data.prepare --dataset=enwik8 --data_dir=~/tensorflow_datasets \\
      [--manual_dir=DIR_WITH_enwik8.zip] [--cache_dir=~/.cache/srupp_jax]

A given --manual_dir must exist and hold the source files; a zip must be valid and carry its
published sha256, an extracted enwik8 must be the original 100,000,000 bytes. Other files stop
preparation unless --allow_modified_source is given (the dataset then records that it is not the
standard one, and so does every metric of a run on it). Preparing again from different source
files stops with a message; --overwrite rebuilds.

Every dataset builds without TensorFlow (tensorflow-datasets 4.9.10). lm1b reads the One
Billion Word tarball (or its extracted folder) and 1b_word_vocab.txt (srupp_jax/data/
billion_word.py). `--dataset=default` only fills the token cache of the embedded corpus.

Translation: `--dataset=iwslt14_de_en --manual_dir=DIR_WITH_de-en.tgz [--recipe=lin2020|fairseq|
all]` builds the TFDS config(s) and the BPE cache (`translation_data.prepare`);
`--dataset=numbers_de_en` only fills the cache of the generated numbers task.

A mistake (an unknown dataset, a missing or modified source, a bad flag) prints one line
`error: ...` and exits with status 2 (srupp_jax/errors.py). Ctrl-C (130) and SIGTERM (75) stop
within seconds, saying so; nothing half-built is kept (datasets and caches are built aside and
moved in whole, by one process at a time), and the same command finishes the work.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

from srupp_jax import errors, files, phases
from srupp_jax.data import datasets, translation_data
from srupp_jax.programs import logs


def prepare(name: str, data_dir: Optional[str] = None, manual_dir: Optional[str] = None,
            cache_dir: Optional[str] = None, max_bytes: Optional[int] = None, *,
            allow_modified_source: bool = False, overwrite: bool = False):
    """Builds the TFDS dataset (unless already prepared from the same source) and the token
    cache; returns LMData."""
    datasets._check_name(name)
    if name != "default":
        from srupp_jax.data import builders
        data_dir = datasets.default_data_dir() if data_dir is None else os.fspath(data_dir)
        prepared = datasets._tfds_dir(name, data_dir)
        source = (builders.resolve_source(name, manual_dir, allow_modified_source)
                  if manual_dir is not None else None)
        # Built aside, then moved in, by one process at a time: a failed or killed build
        # leaves the old one as it was (or none), never a part.
        with files.building(prepared, f"the prepared {name}") as tmp:
            if os.path.exists(os.path.join(prepared, "dataset_info.json")) and not overwrite:
                _check_same_source(name, prepared, source)
            else:
                try:
                    built = builders.build(name, tmp, manual_dir=manual_dir, source=source,
                                           download_dir=os.path.join(data_dir, "downloads"))
                    phases.enter("prepare.record")
                    files.move_into(built, prepared)
                except OSError as e:          # a full disk: what was being prepared named
                    raise files.named(e, prepared) from None
    return datasets.load_tokens(name, data_dir=data_dir, cache_dir=cache_dir,
                                max_bytes=max_bytes)


def _check_same_source(name: str, prepared: str, source) -> None:
    """An existing build is reused only if it was made from the same source files."""
    from srupp_jax.data import builders
    if source is None:
        return
    try:
        with open(os.path.join(prepared, builders.SOURCE_FILE), encoding="utf-8") as f:
            before = json.load(f)
    except (OSError, ValueError):
        before = None
    if before is None or sorted(before["sha256"].values()) != sorted(source.sha256.values()):
        raise ValueError(f"{name} in {prepared} was prepared from other source files than "
                         f"those in --manual_dir ({sorted(source.sha256)}); rerun with "
                         "--overwrite to rebuild it from them")


def main(argv=None) -> int:
    p = errors.OneLineArgumentParser(prog="python -m srupp_jax.data.prepare",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    translation = ("iwslt14_de_en", "numbers_de_en")
    p.add_argument("--dataset", required=True, choices=datasets.NAMES + translation)
    p.add_argument("--data_dir", default=None, help="TFDS data dir (default: $TFDS_DATA_DIR "
                   "or ~/tensorflow_datasets)")
    p.add_argument("--manual_dir", default=None, help="offline copy of the source files")
    p.add_argument("--cache_dir", default=None, help="token cache (default ~/.cache/srupp_jax)")
    p.add_argument("--max_bytes", type=int, default=None, help="'default' corpus size")
    p.add_argument("--allow_modified_source", action="store_true",
                   help="prepare source files that are not the published ones (recorded, and "
                   "every metric of runs on them says so)")
    p.add_argument("--overwrite", action="store_true",
                   help="rebuild even if the dataset is already prepared")
    p.add_argument("--recipe", default="lin2020", choices=("lin2020", "fairseq", "all"),
                   help="iwslt14_de_en: which recipe(s) to prepare")
    p.add_argument("--vocab_size", type=int, default=0,
                   help="translation: BPE pieces (0: the dataset's default)")
    p.add_argument("--traceback", action="store_true", help="the full stack of an error")
    a = p.parse_args(argv)
    logs.setup()
    errors.stop_on_sigterm()
    return errors.call(lambda: _main_translation(a) if a.dataset in translation else
                       _main_lm(a), traceback=a.traceback)


def _main_lm(a) -> int:
    data = prepare(a.dataset, data_dir=a.data_dir and os.path.expanduser(a.data_dir),
                   manual_dir=a.manual_dir and os.path.expanduser(a.manual_dir),
                   cache_dir=a.cache_dir and os.path.expanduser(a.cache_dir),
                   max_bytes=a.max_bytes, allow_modified_source=a.allow_modified_source,
                   overwrite=a.overwrite)
    if not data.info.get("standard_source", True):
        print(f"NOTE: not the standard {a.dataset}: {data.info['source']['note']}")
    print(f"{a.dataset}: unit={data.unit} vocab_size={data.vocab_size} tokens "
          f"train={data.train.shape[0]} valid={data.valid.shape[0]} test={data.test.shape[0]}"
          f"\ncache: {data.info['cache_path']}")
    return 0


def _main_translation(a) -> int:
    recipes = ("lin2020", "fairseq") if a.recipe == "all" else (a.recipe,)
    for recipe in recipes:
        data = translation_data.prepare(
            a.dataset, data_dir=a.data_dir and os.path.expanduser(a.data_dir),
            manual_dir=a.manual_dir and os.path.expanduser(a.manual_dir),
            cache_dir=a.cache_dir and os.path.expanduser(a.cache_dir), recipe=recipe,
            vocab_size=a.vocab_size, overwrite=a.overwrite)
        source = data.info.get("source") or {}
        if source.get("note"):
            print(f"NOTE: {source['note']}")
        print(f"{a.dataset}{'/' + recipe if a.dataset == 'iwslt14_de_en' else ''}: "
              f"vocab_size={data.vocab_size} pairs train={len(data.train)} "
              f"valid={len(data.valid)} test={len(data.test)}\ncache: {data.info['cache_path']}")
        if a.dataset != "iwslt14_de_en":
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
