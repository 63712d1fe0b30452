"""TensorFlow Datasets builders for enwik8 and WikiText-103 (Billion Word is TFDS's own `lm1b`).

Both are written with `file_format='array_record'` and `disable_shuffling=True` (TFDS would
otherwise shuffle records by key hash at write time, fatal for contiguous LM streams), and read
back with `tfds.data_source` (no TensorFlow needed; with tensorflow-datasets 4.9.10 building
these two needs no TensorFlow either). Records keep document order: every example is
`{"index": int64 position in its split, "text": bytes}` and `read_split` checks the indices.

enwik8: the unzipped `enwik8` file (100,000,000 bytes) split contiguously 90M/5M/5M
(`corpus.split_sizes`: 90/5/5 of any file size), each split stored as `CHUNK_BYTES` chunks.
WikiText-103 (word level, wikitext-103-v1.zip): one example per line of `wiki.{train,valid,test}
.tokens` (UTF-8 text, line terminator removed, empty lines kept: each becomes a lone `<eos>`).

Sources: a `manual_dir` holding the zip, or the extracted file(s), is used when present (offline
preparation); otherwise the builder downloads `URL` and checks the zip's sha256 against
`SHA256` (the published checksums of enwik8.zip and wikitext-103-v1.zip) before using it.
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds

from srupp_jax.data.corpus import split_sizes

_FEATURES = dict(index=np.int64, text=tfds.features.Tensor(shape=(), dtype=np.object_))


def _features():
    return tfds.features.FeaturesDict(dict(_FEATURES))


def _manual_dir(dl_manager) -> Optional[str]:
    """The manual_dir if it exists and is non-empty, else None (never raises)."""
    try:
        return os.fspath(dl_manager.manual_dir)
    except (AssertionError, ValueError):
        return None


def _find(root: str, names: Sequence[str]) -> Optional[str]:
    """First file under root (searched recursively, in sorted order) named one of names."""
    found = {}
    for dirpath, _, filenames in os.walk(root):
        for name in names:
            if name in filenames:
                found.setdefault(name, []).append(os.path.join(dirpath, name))
    for name in names:
        if name in found:
            return sorted(found[name])[0]
    return None


def _read_member(zip_path: str, basename: str) -> bytes:
    with zipfile.ZipFile(zip_path) as z:
        for info in z.infolist():
            if os.path.basename(info.filename) == basename:
                return z.read(info)
    raise FileNotFoundError(f"{basename} not found in {zip_path}")


def download_verified(dl_manager, url: str, sha256: str) -> str:
    """Download `url` through TFDS and check its sha256; a mismatch stops preparation."""
    path = os.fspath(dl_manager.download(url))
    verify_sha256(path, sha256)
    return path


def verify_sha256(path: str, sha256: str) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != sha256:
        raise ValueError(f"{path} has sha256 {digest.hexdigest()}; expected {sha256} (a corrupt "
                         "or different download: delete it and prepare again)")


class Enwik8(tfds.core.GeneratorBasedBuilder):
    """enwik8 (first 10^8 bytes of an English Wikipedia XML dump), bytes, split 90M/5M/5M."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Contiguous 90/5/5 split of the raw bytes, chunked, in order."}
    URL = "http://mattmahoney.net/dc/enwik8.zip"
    SHA256 = "547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc"
    CHUNK_BYTES = 1 << 20
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional (offline): put enwik8.zip, or the unzipped file `enwik8`, in the manual_dir "
        f"({URL}). Without it the builder downloads the zip.")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, features=_features(),
            homepage="http://mattmahoney.net/dc/textdata.html", disable_shuffling=True)

    def _source_bytes(self, dl_manager) -> bytes:
        manual = _manual_dir(dl_manager)
        path = _find(manual, ("enwik8", "enwik8.zip")) if manual else None
        if path is None:
            path = download_verified(dl_manager, self.URL, self.SHA256)
        if zipfile.is_zipfile(path):
            return _read_member(path, "enwik8")
        with open(path, "rb") as f:
            return f.read()

    def _split_generators(self, dl_manager):
        data = self._source_bytes(dl_manager)
        a, b, _ = split_sizes(len(data))
        return {"train": self._generate_examples(data[:a]),
                "validation": self._generate_examples(data[a:a + b]),
                "test": self._generate_examples(data[a + b:])}

    def _generate_examples(self, data: bytes):
        n = self.CHUNK_BYTES
        for i, start in enumerate(range(0, len(data), n)):
            yield i, {"index": i, "text": data[start:start + n]}


class Wikitext103(tfds.core.GeneratorBasedBuilder):
    """WikiText-103 v1 (word level, raw `wiki.*.tokens`), one example per line, in order."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "One example per line of wiki.{train,valid,test}.tokens."}
    URL = "https://wikitext.smerity.com/wikitext-103-v1.zip"
    SHA256 = "242ba0f20b329cfdf1ccc61e9e9e5b59becf189db7f7a81cd2a0e2fc31539590"
    FILES = {"train": "wiki.train.tokens", "validation": "wiki.valid.tokens",
             "test": "wiki.test.tokens"}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional (offline): put wikitext-103-v1.zip, or its extracted wiki.train.tokens, "
        f"wiki.valid.tokens and wiki.test.tokens, in the manual_dir ({URL}).")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, features=_features(),
            homepage="https://www.salesforce.com/blog/the-wikitext-long-term-dependency-"
                     "language-modeling-dataset/", disable_shuffling=True)

    def _split_generators(self, dl_manager):
        manual = _manual_dir(dl_manager)
        sources: Dict[str, Tuple[str, Optional[str]]] = {}
        if manual:
            files = {s: _find(manual, (f,)) for s, f in self.FILES.items()}
            if all(files.values()):
                sources = {s: (p, None) for s, p in files.items()}
            else:
                zip_path = _find(manual, ("wikitext-103-v1.zip",))
                if zip_path:
                    sources = {s: (zip_path, f) for s, f in self.FILES.items()}
        if not sources:
            zip_path = download_verified(dl_manager, self.URL, self.SHA256)
            sources = {s: (zip_path, f) for s, f in self.FILES.items()}
        return {s: self._generate_examples(*src) for s, src in sources.items()}

    def _generate_examples(self, path: str, member: Optional[str]):
        if member is None:
            with open(path, "rb") as f:
                data = f.read()
        else:
            data = _read_member(path, member)
        # Universal newlines, as Python's text-mode `for line in open(...)` (the reference).
        text = data.decode("utf-8")
        for i, line in enumerate(io.StringIO(text, newline=None)):
            yield i, {"index": i, "text": line.rstrip("\n").encode("utf-8")}


BUILDERS = {"enwik8": Enwik8, "wikitext103": Wikitext103}


def build(name: str, data_dir: str, manual_dir: Optional[str] = None) -> str:
    """Download (or read manual_dir) and prepare `name` ('enwik8', 'wikitext103', 'lm1b') as
    array_record under data_dir; returns the prepared dataset directory."""
    if name in BUILDERS:
        builder = BUILDERS[name](data_dir=data_dir, file_format="array_record")
    elif name == "lm1b":
        builder = tfds.builder("lm1b", data_dir=data_dir, file_format="array_record")
    else:
        raise ValueError(f"no TFDS builder for {name!r}; expected one of "
                         f"{sorted(BUILDERS) + ['lm1b']}")
    config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    builder.download_and_prepare(download_config=config)
    return os.fspath(builder.data_dir)


def data_source(name: str, data_dir: str):
    """{split: ArrayRecordDataSource} of a prepared dataset (no download, no TensorFlow)."""
    return tfds.data_source(name, data_dir=data_dir, download=False)


def read_split(source, batch: int = 4096, field: str = "text") -> Iterator[bytes]:
    """The `field` of every record of one split, in order (checks `index` when present)."""
    n = len(source)
    for start in range(0, n, batch):
        records = source.__getitems__(list(range(start, min(n, start + batch))))
        for j, r in enumerate(records):
            if "index" in r and int(r["index"]) != start + j:
                raise ValueError(f"records out of order: record {start + j} has index "
                                 f"{int(r['index'])} (was the dataset built with shuffling?)")
            yield r[field]
