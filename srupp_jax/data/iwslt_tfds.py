"""The TFDS builder `iwslt14_de_en` (configs `lin2020`, `fairseq`; see `iwslt.py`).

Prepared once from the release in a manual_dir:

  python -m srupp_jax.data.prepare --dataset=iwslt14_de_en --manual_dir=DIR [--recipe=fairseq]

Written as array_record with `disable_shuffling=True` (records stay in recipe order) and read
back with `tfds.data_source` (no TensorFlow). Every record is one sentence pair:
`{"index": int64 position in its split, "src", "tgt": the tokenized, lower-cased text (bytes),
"src_raw", "tgt_raw": the raw text (bytes)}`. TFDS splits train, validation, test. The source
record (sha256 of what was read, standard, note) is written beside dataset_info.json as
`builders.SOURCE_FILE`, as for the language-model datasets.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

import numpy as np
import tensorflow_datasets as tfds

from srupp_jax import files, phases
from srupp_jax.data import iwslt
from srupp_jax.data.builders import SOURCE_FILE

NAME = "iwslt14_de_en"
FIELDS = ("src", "tgt", "src_raw", "tgt_raw")
TFDS_SPLITS = dict(train="train", valid="validation", test="test")


class Iwslt14DeEn(tfds.core.GeneratorBasedBuilder):
    """IWSLT'14 German-English TED talks, one record per sentence pair, in recipe order."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "The lin2020 and fairseq recipes of the 2014 de-en release."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="lin2020", description="Lin et al. 2020 (the paper's "
                                "Table 8): random 4% valid, TED dev2010+tst2010-2012 test"),
        tfds.core.BuilderConfig(name="fairseq", description="fairseq prepare-iwslt14.sh: "
                                "every 23rd pair valid, test adds TEDX dev2012"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the IWSLT 2014 release de-en.tgz (https://wit3.fbk.eu/2014-01), or its extracted "
        "de-en/ folder, in the manual_dir.")
    files: Optional[Dict[str, bytes]] = None   # set by `build` (iwslt.read_release)

    def _info(self):
        features = dict(index=np.int64,
                        **{f: tfds.features.Tensor(shape=(), dtype=np.object_) for f in FIELDS})
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, features=tfds.features.FeaturesDict(features),
            homepage="https://wit3.fbk.eu/2014-01", disable_shuffling=True)

    def _split_generators(self, dl_manager):
        if self.files is None:
            self.files, _ = iwslt.read_release(os.fspath(dl_manager.manual_dir))
        splits = iwslt.prepare_recipe(self.builder_config.name, self.files)
        return {TFDS_SPLITS[s]: self._generate_examples(splits[s]) for s in TFDS_SPLITS}

    def _generate_examples(self, split: dict):
        for i in range(len(split["src"])):
            yield i, dict(index=i, **{f: split[f][i].encode("utf-8") for f in FIELDS})


def prepared_dir(data_dir: str, recipe: str) -> str:
    return os.path.join(data_dir, NAME, recipe, str(Iwslt14DeEn.VERSION))


def build(data_dir: str, manual_dir: str, recipe: str) -> str:
    """Prepare config `recipe` from the release in manual_dir; returns the prepared directory,
    whose source record lists every file's size and sha256 (checked by `read`)."""
    phases.enter("prepare.build")
    if recipe not in iwslt.RECIPES:
        raise ValueError(f"recipe={recipe!r}; expected one of {', '.join(iwslt.RECIPES)}")
    release, record = iwslt.read_release(manual_dir)
    tfds.disable_progress_bar()
    builder = Iwslt14DeEn(config=recipe, data_dir=data_dir, file_format="array_record")
    builder.files = release
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    out = os.fspath(builder.data_dir)
    counts = {s: builder.info.splits[t].num_examples for s, t in TFDS_SPLITS.items()}
    note = iwslt.count_note(recipe, counts)
    record = dict(record, counts=counts, note="; ".join(x for x in (record["note"], note) if x),
                  files=files.manifest(out, skip=(SOURCE_FILE,)))
    with open(os.path.join(out, SOURCE_FILE), "w", encoding="utf-8") as f:
        f.write(files.sealed(record))
    return out


def prepare_again(data_dir: str, recipe: str) -> str:
    """What to do about a damaged prepared config: the command that rebuilds it."""
    return (f"prepare it again: python -m srupp_jax.data.prepare --dataset={NAME} "
            f"--recipe={recipe} --manual_dir=DIR_WITH_de-en.tgz --data_dir={data_dir} "
            "--overwrite")


def read(data_dir: str, recipe: str) -> Dict[str, Dict[str, List[str]]]:
    """{train, valid, test: {src, tgt, src_raw, tgt_raw: [str]}} of a prepared config, its
    files checked first against their record (DamagedFile naming the first that differs)."""
    path = prepared_dir(data_dir, recipe)
    source = os.path.join(path, SOURCE_FILE)
    record = files.read_json(source, prepare_again(data_dir, recipe)) if os.path.exists(
        source) else {}
    if "files" in record:
        files.check(path, record["files"], prepare_again(data_dir, recipe))
    source = tfds.data_source(f"{NAME}/{recipe}", data_dir=data_dir, download=False)
    out = {}
    for split, tfds_split in TFDS_SPLITS.items():
        out[split] = {f: [] for f in FIELDS}
        data = source[tfds_split]
        for start in range(0, len(data), 4096):
            records = data.__getitems__(list(range(start, min(len(data), start + 4096))))
            for j, r in enumerate(records):
                if int(r["index"]) != start + j:
                    raise ValueError(f"{NAME}/{recipe} {tfds_split}: record {start + j} has "
                                     f"index {int(r['index'])}; rebuild with --overwrite")
                for f in FIELDS:
                    out[split][f].append(r[f].decode("utf-8"))
    return out
