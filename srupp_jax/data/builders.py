"""TensorFlow Datasets builders for enwik8 and WikiText-103 (Billion Word: billion_word.py).

Both are written with `file_format='array_record'` and `disable_shuffling=True` (TFDS would
otherwise shuffle records by key hash at write time, fatal for contiguous LM streams), and read
back with `tfds.data_source` (no TensorFlow needed; with tensorflow-datasets 4.9.10 building
these two needs no TensorFlow either). Records keep document order: every example is
`{"index": int64 position in its split, "text": bytes}` and `read_split` checks the indices.

enwik8: the unzipped `enwik8` file (100,000,000 bytes) split contiguously 90M/5M/5M
(`corpus.split_sizes`: 90/5/5 of any file size), each split stored as `CHUNK_BYTES` chunks.
WikiText-103 (word level, wikitext-103-v1.zip): one example per line of `wiki.{train,valid,test}
.tokens` (UTF-8 text, line terminator removed, empty lines kept: each becomes a lone `<eos>`).

Sources (`resolve_source`): a given `manual_dir` must exist and hold the zip or the extracted
file(s) (offline preparation); without one the builder downloads `URL`. A zip must be a valid
zip with the published sha256 (`SHA256`); an extracted enwik8 must be the original file
(100,000,000 bytes, `ENWIK8_SHA256`). A source that is not the standard one stops preparation
unless `allow_modified=True`, and is then recorded as such: `build` writes `SOURCE_FILE` (the
source's sha256 and whether it is standard) beside TFDS's dataset_info.json, and every metric
of a run on it says so. The extracted WikiText-103 files have no published checksums: they are
recorded (sha256) but cannot be verified.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import tarfile
import zipfile
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds

from srupp_jax import files, phases
from srupp_jax.data.corpus import split_sizes

_FEATURES = dict(index=np.int64, text=tfds.features.Tensor(shape=(), dtype=np.object_))


def _features():
    return tfds.features.FeaturesDict(dict(_FEATURES))


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


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str, sha256: str) -> None:
    digest = file_sha256(path)
    if digest != sha256:
        raise ValueError(f"{path} has sha256 {digest}; expected {sha256} (a corrupt "
                         "or different download: delete it and prepare again)")


SOURCE_FILE = "srupp_source.json"
ENWIK8_SIZE = 100_000_000
ENWIK8_SHA256 = "2b49720ec4d78c3c9fabaee6e4179a5e997302b3a70029f30f2d582218c024a8"


@dataclasses.dataclass
class Source:
    """The files a dataset is built from: {split or "all": (path, zip member or None)}, the
    sha256 of every file used, and whether they are the standard published ones."""
    files: Dict[str, Tuple[str, Optional[str]]]
    sha256: Dict[str, str]
    standard: bool
    note: str = ""

    def record(self) -> dict:
        return dict(sha256=self.sha256, standard=self.standard, note=self.note)


def _check_zip_or_tar(path: str, expected_sha256: str) -> Tuple[str, str]:
    """(sha256, problem or '') of a named zip or tar archive; an invalid one is always an
    error."""
    if not (zipfile.is_zipfile(path) or tarfile.is_tarfile(path)):
        raise ValueError(f"{path} is not a valid zip or tar file (a partial download?); delete "
                         "it and download it again")
    digest = file_sha256(path)
    problem = "" if digest == expected_sha256 else (
        f"{path} has sha256 {digest}, not the published {expected_sha256}")
    return digest, problem


def resolve_source(name: str, manual_dir: str, allow_modified: bool = False) -> Source:
    """Find and check the source files of `name` ("enwik8", "wikitext103") in `manual_dir`.

    Raises FileNotFoundError naming the paths looked for, ValueError for an invalid zip or,
    unless allow_modified, for files that are not the standard ones."""
    if name == "lm1b":
        from srupp_jax.data import billion_word
        return billion_word.resolve_source(manual_dir, allow_modified)
    builder = BUILDERS[name]
    if not os.path.isdir(manual_dir):
        raise FileNotFoundError(f"--manual_dir={manual_dir} does not exist (expected a folder "
                                f"holding {builder.MANUAL_FILES})")
    problem, note = "", ""
    if name == "enwik8":
        path = _find(manual_dir, ("enwik8", "enwik8.zip"))
        if path is None:
            raise FileNotFoundError(f"--manual_dir={manual_dir} holds no file named enwik8 or "
                                    "enwik8.zip (searched recursively)")
        if path.endswith(".zip"):
            digest, problem = _check_zip_or_tar(path, builder.SHA256)
            files = {"all": (path, "enwik8")}
        else:
            size, digest = os.path.getsize(path), file_sha256(path)
            if size != ENWIK8_SIZE or digest != ENWIK8_SHA256:
                problem = (f"{path} has {size:,} bytes and sha256 {digest}; the original enwik8 "
                           f"has {ENWIK8_SIZE:,} bytes and sha256 {ENWIK8_SHA256}")
            files = {"all": (path, None)}
        sha = {path: digest}
    else:
        found = {s: _find(manual_dir, (f,)) for s, f in builder.FILES.items()}
        zip_path = _find(manual_dir, ("wikitext-103-v1.zip",))
        if all(found.values()):
            files = {s: (p, None) for s, p in found.items()}
            sha = {p: file_sha256(p) for p in found.values()}
            note = "extracted WikiText-103 files (no published checksums: not verified)"
        elif zip_path:
            digest, problem = _check_zip_or_tar(zip_path, builder.SHA256)
            files = {s: (zip_path, f) for s, f in builder.FILES.items()}
            sha = {zip_path: digest}
        else:
            raise FileNotFoundError(
                f"--manual_dir={manual_dir} holds neither wikitext-103-v1.zip nor all of "
                f"{sorted(builder.FILES.values())} (searched recursively)")
    if problem and not allow_modified:
        raise ValueError(f"{problem}: not the standard {name}. Replace it with the original "
                         "file, or pass --allow_modified_source to prepare it anyway (every "
                         "metric of runs on it is then marked as not standard)")
    return Source(files, sha, standard=not problem, note=problem or note)


class Enwik8(tfds.core.GeneratorBasedBuilder):
    """enwik8 (first 10^8 bytes of an English Wikipedia XML dump), bytes, split 90M/5M/5M."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Contiguous 90/5/5 split of the raw bytes, chunked, in order."}
    URL = "http://mattmahoney.net/dc/enwik8.zip"
    SHA256 = "547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc"
    CHUNK_BYTES = 1 << 20
    MANUAL_FILES = "enwik8.zip or the unzipped file enwik8"
    source: Optional[Source] = None     # set by `build` (resolve_source); None: download
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional (offline): put enwik8.zip, or the unzipped file `enwik8`, in the manual_dir "
        f"({URL}). Without it the builder downloads the zip.")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, features=_features(),
            homepage="http://mattmahoney.net/dc/textdata.html", disable_shuffling=True)

    def _source_bytes(self, dl_manager) -> bytes:
        if self.source is None:
            path = download_verified(dl_manager, self.URL, self.SHA256)
            self.source = Source({"all": (path, "enwik8")}, {path: self.SHA256}, True)
        path, member = self.source.files["all"]
        if member:
            return _read_member(path, member)
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
    MANUAL_FILES = "wikitext-103-v1.zip or wiki.{train,valid,test}.tokens"
    source: Optional[Source] = None     # set by `build` (resolve_source); None: download
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional (offline): put wikitext-103-v1.zip, or its extracted wiki.train.tokens, "
        f"wiki.valid.tokens and wiki.test.tokens, in the manual_dir ({URL}).")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, features=_features(),
            homepage="https://www.salesforce.com/blog/the-wikitext-long-term-dependency-"
                     "language-modeling-dataset/", disable_shuffling=True)

    def _split_generators(self, dl_manager):
        if self.source is None:
            zip_path = download_verified(dl_manager, self.URL, self.SHA256)
            self.source = Source({s: (zip_path, f) for s, f in self.FILES.items()},
                                 {zip_path: self.SHA256}, True)
        return {s: self._generate_examples(*src) for s, src in self.source.files.items()}

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
NAMES = (*BUILDERS, "lm1b")         # lm1b: billion_word.BillionWord


def build(name: str, data_dir: str, manual_dir: Optional[str] = None,
          source: Optional[Source] = None, download_dir: Optional[str] = None) -> str:
    """Download (or read manual_dir) and prepare `name` ('enwik8', 'wikitext103', 'lm1b') as
    array_record under data_dir, recording its source (lm1b: and its vocabulary file) and
    every prepared file's size and sha256 in SOURCE_FILE; returns the prepared dataset
    directory. `source`: already resolved from manual_dir (resolve_source); download_dir:
    where downloads are kept (default data_dir/downloads)."""
    from srupp_jax.data import billion_word
    phases.enter("prepare.build")
    tfds.disable_progress_bar()
    if name not in NAMES:
        raise ValueError(f"no TFDS builder for {name!r}; expected one of {NAMES}")
    cls = billion_word.BillionWord if name == "lm1b" else BUILDERS[name]
    builder = cls(data_dir=data_dir, file_format="array_record")
    if source is None and manual_dir is not None:
        source = resolve_source(name, manual_dir)
    builder.source = source
    config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_dir=download_dir, download_config=config)
    out = os.fspath(builder.data_dir)
    if name == "lm1b":
        billion_word.save_vocab(builder.source, out)
    record = builder.source.record()
    record["files"] = files.manifest(out, skip=(SOURCE_FILE,))
    with open(os.path.join(out, SOURCE_FILE), "w", encoding="utf-8") as f:
        f.write(files.sealed(record))
    return out


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
