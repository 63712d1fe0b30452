"""The One Billion Word benchmark (`data.name = "lm1b"`) as the SRU++ and Transformer-XL
experiments read it: our TFDS builder `billion_word` (array_record, document order kept, no
TensorFlow needed), replacing TFDS's own `lm1b` (whose test split holds all 50 held-out files,
shuffled, so its numbers are not the published ones).

  train        training-monolingual.tokenized.shuffled/news.en-000{01..99}-of-00100, in order
  valid, test  both heldout-monolingual.tokenized.shuffled/news.en.heldout-00000-of-00050
               (Transformer-XL's getdata.sh copies that one file twice)
  vocabulary   1b_word_vocab.txt (lines `word count`; id = line index), written beside the
               prepared splits as VOCAB_FILE (vocab.WordVocab.from_file)

One example per sentence: {"index": position in its split, "text": the line's bytes}.

Sources (`resolve_source`): a --manual_dir holding the benchmark's tarball (checked against
its published sha256, TFDS's) or its extracted folder (recorded, not verifiable), and
1b_word_vocab.txt (recorded: it has no published checksum); without a manual_dir both are
downloaded (the tarball is 1.8 GB).
"""
from __future__ import annotations

import glob
import os
import shutil
from typing import Optional

import tensorflow_datasets as tfds

from srupp_jax.data.builders import (
    Source,
    _check_zip_or_tar,
    _features,
    _find,
    download_verified,
    file_sha256,
)

URL = ("http://www.statmt.org/lm-benchmark/"
       "1-billion-word-language-modeling-benchmark-r13output.tar.gz")
SHA256 = "01ba60381110baf7f189dfd2b8374de371e8c9a340835793f190bdae9e90a34e"
VOCAB_URL = "https://github.com/rafaljozefowicz/lm/raw/master/1b_word_vocab.txt"
VOCAB_FILE = "1b_word_vocab.txt"
TRAIN_DIR, HELDOUT_DIR = "training-monolingual.tokenized.shuffled", \
    "heldout-monolingual.tokenized.shuffled"
HELDOUT_FILE = "news.en.heldout-00000-of-00050"
MANUAL_FILES = (f"{os.path.basename(URL)} or its extracted folder (with {TRAIN_DIR} and "
                f"{HELDOUT_DIR}), and {VOCAB_FILE}")


def _find_dir(root: str, name: str) -> Optional[str]:
    found = sorted(os.path.join(d, name) for d, dirs, _ in os.walk(root) if name in dirs)
    return found[0] if found else None


def resolve_source(manual_dir: str, allow_modified: bool = False) -> Source:
    """The benchmark's files in `manual_dir` (see the module docstring); FileNotFoundError
    naming what is missing, ValueError for a tarball that is not the published one (unless
    allow_modified)."""
    if not os.path.isdir(manual_dir):
        raise FileNotFoundError(f"--manual_dir={manual_dir} does not exist (expected a folder "
                                f"holding {MANUAL_FILES})")
    vocab = _find(manual_dir, (VOCAB_FILE,))
    archive = _find(manual_dir, (os.path.basename(URL),))
    train = _find_dir(manual_dir, TRAIN_DIR)
    if vocab is None or (archive is None and train is None):
        raise FileNotFoundError(f"--manual_dir={manual_dir} lacks "
                                f"{VOCAB_FILE if vocab is None else os.path.basename(URL)} "
                                f"(expected {MANUAL_FILES}, searched recursively)")
    sha = {vocab: file_sha256(vocab)}
    problem, note = "", f"{VOCAB_FILE} has no published checksum (recorded, not verified)"
    if train is not None:
        files = {"root": (os.path.dirname(train), None)}
        note = "extracted Billion Word files (no published checksums: not verified); " + note
    else:
        digest, problem = _check_zip_or_tar(archive, SHA256)
        files, sha[archive] = {"archive": (archive, None)}, digest
    if problem and not allow_modified:
        raise ValueError(f"{problem}: not the standard lm1b. Replace it with the original "
                         "file, or pass --allow_modified_source to prepare it anyway (every "
                         "metric of runs on it is then marked as not standard)")
    files["vocab"] = (vocab, None)
    return Source(files, sha, standard=not problem, note=problem or note)


class BillionWord(tfds.core.GeneratorBasedBuilder):
    """One Billion Word (Chelba et al. 2013), one example per sentence, in file order."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "The benchmark's files in order; valid = test = held-out 0."}
    MANUAL_FILES = MANUAL_FILES
    source: Optional[Source] = None     # set by builders.build (resolve_source); None: download
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Optional (offline): put {MANUAL_FILES} in the manual_dir ({URL}, {VOCAB_URL}). "
        "Without it the builder downloads them.")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, features=_features(),
            homepage="https://www.statmt.org/lm-benchmark/", disable_shuffling=True)

    def _split_generators(self, dl_manager):
        if self.source is None:
            archive = download_verified(dl_manager, URL, SHA256)
            vocab = os.fspath(dl_manager.download(VOCAB_URL))
            self.source = Source({"archive": (archive, None), "vocab": (vocab, None)},
                                 {archive: SHA256, vocab: file_sha256(vocab)}, True,
                                 f"{VOCAB_FILE} has no published checksum")
        files = self.source.files
        root = files["root"][0] if "root" in files else os.fspath(
            dl_manager.extract(files["archive"][0]))
        train = sorted(glob.glob(os.path.join(_find_dir(root, TRAIN_DIR), "news.en-*")))
        heldout = [os.path.join(_find_dir(root, HELDOUT_DIR), HELDOUT_FILE)]
        if not train or not os.path.exists(heldout[0]):
            raise FileNotFoundError(f"{root} lacks {TRAIN_DIR}/news.en-* or "
                                    f"{HELDOUT_DIR}/{HELDOUT_FILE}")
        return {"train": self._generate_examples(train),
                "validation": self._generate_examples(heldout),
                "test": self._generate_examples(heldout)}

    def _generate_examples(self, paths):
        i = 0
        for path in paths:
            with open(path, "r", encoding="utf-8") as f:     # universal newlines, as the
                for line in f:                                  # reference reads them
                    yield i, {"index": i, "text": line.rstrip("\n").encode("utf-8")}
                    i += 1


def save_vocab(source: Source, out_dir: str) -> None:
    """Copy the source's vocabulary file beside the prepared splits (VOCAB_FILE)."""
    shutil.copyfile(source.files["vocab"][0], os.path.join(out_dir, VOCAB_FILE))
