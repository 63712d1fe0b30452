"""The one entry point from a translation dataset name to subword ids: `load_translation`.

  numbers_de_en  generated German number words -> English (`numbers.py`), no download, never
                 TFDS; BPE of `data.vocab_size` (0: 256) pieces with the number morphemes kept.
  iwslt14_de_en  our TFDS builder (`iwslt_tfds.py`, prepared once from --manual_dir), recipe
                 `data.recipe` = lin2020 (default) | fairseq; BPE of `data.vocab_size` pieces,
                 0: the recipe's merges (14,000 | 10,000) + characters + 4 specials.
  parallel       your own folder `data.path` of {train,valid,test}.{data.src,data.tgt}
                 (`parallel.py`), `data.tokenizer` moses | none, `data.lowercase`; BPE of
                 `data.vocab_size` (0: 8,000) pieces.

The joint BPE (`subwords.py`) is learned on the tokenized train text of both sides. Everything
is cached under `cache_dir/<name>-<key>/` (default ~/.cache/srupp_jax or $SRUPP_JAX_CACHE):
`spm.model` (the BPE model), `meta.json`, per split the ids as flat int32 arrays with int64
offsets (`{split}.{src,tgt}.npy`, `{split}.{src,tgt}_offsets.npy`, memory-mapped) and the texts
(`{split}.{src,tgt}.{tok,raw}.txt`). The key hashes the content: the sha256 of your files, the
prepared TFDS splits and source record, or the generator's settings and num2words version; and
the vocabulary size and text recipe. An edited file or a new vocab_size builds a new cache
(and a new BPE model); the same inputs give the same model and ids.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
from typing import Any, Dict, List, Optional

import numpy as np
from absl import logging

from srupp_jax import files, phases
from srupp_jax.data import numbers, parallel
from srupp_jax.data.datasets import default_cache_dir, default_data_dir
from srupp_jax.data.subwords import Subwords, TextRecipe, train_bpe, vocab_size_for_merges

NAMES = ("numbers_de_en", "iwslt14_de_en", "parallel")
SPLITS = ("train", "valid", "test")
PIPELINE_VERSION = 1   # bump when a recipe, the BPE settings or the cache layout change
NUMBERS_VOCAB, PARALLEL_VOCAB = 256, 8000
NUMBERS_RECIPE = TextRecipe("moses")


@dataclasses.dataclass
class Ragged:
    """Variable-length rows: row i is flat[offsets[i]:offsets[i + 1]].

    flat: [total] int32 ids; offsets: [n + 1] int64, offsets[0] = 0."""
    flat: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_rows(cls, rows: List[np.ndarray]) -> "Ragged":
        lengths = np.array([len(r) for r in rows], np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32)
        return cls(flat, offsets)

    @property
    def lengths(self) -> np.ndarray:
        """[n] int64 row lengths."""
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.flat[self.offsets[i]:self.offsets[i + 1]])


@dataclasses.dataclass
class TranslationSplit:
    """One split. src, tgt: BPE ids without BOS/EOS; src_text, tgt_text: tokenized text (tgt_text
    is the reference of the tokenized BLEU); src_raw, tgt_raw: raw text (tgt_raw is the reference
    of sacreBLEU, src_raw what `--mode=translate` would be given)."""
    src: Ragged
    tgt: Ragged
    src_text: List[str]
    tgt_text: List[str]
    src_raw: List[str]
    tgt_raw: List[str]

    def __len__(self) -> int:
        return len(self.src)

    def head(self, n: int) -> "TranslationSplit":
        """The first n pairs (all when n <= 0 or n >= len): e.g. a quick dev BLEU."""
        if n <= 0 or n >= len(self):
            return self
        cut = lambda r: Ragged(r.flat[:r.offsets[n]], r.offsets[:n + 1])
        return TranslationSplit(cut(self.src), cut(self.tgt), *(
            t[:n] for t in (self.src_text, self.tgt_text, self.src_raw, self.tgt_raw)))


@dataclasses.dataclass
class TranslationData:
    """A dataset: its splits, the shared subwords (`vocab_size` pieces, ids PAD 0, UNK 1, BOS 2,
    EOS 3) and info (cache_path, key, counts, source record, standard_source, lowercase: whether
    the text is lower-cased, so sacreBLEU must be told)."""
    name: str
    src_lang: str
    tgt_lang: str
    train: TranslationSplit
    valid: TranslationSplit
    test: TranslationSplit
    subwords: Subwords
    vocab_size: int
    info: Dict[str, Any]

    def split(self, name: str) -> TranslationSplit:
        if name not in SPLITS:
            raise ValueError(f"split={name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, name)


def _key(parts) -> str:
    return hashlib.sha256(json.dumps([PIPELINE_VERSION, parts], sort_keys=True,
                                     default=str).encode()).hexdigest()[:16]


def _iwslt_fingerprint(data_dir: str, recipe: str) -> dict:
    from srupp_jax.data import iwslt_tfds
    path = iwslt_tfds.prepared_dir(data_dir, recipe)
    info_path = os.path.join(path, "dataset_info.json")
    if not os.path.exists(info_path):
        raise FileNotFoundError(
            f"iwslt14_de_en/{recipe} is not prepared: {info_path} does not exist. Prepare it "
            f"once with:\n  python -m srupp_jax.data.prepare --dataset=iwslt14_de_en "
            f"--recipe={recipe} --manual_dir=DIR_WITH_de-en.tgz --data_dir={data_dir}")
    fix = iwslt_tfds.prepare_again(data_dir, recipe)
    info = files.read_json(info_path, fix)
    splits = sorted((s.get("name"), s.get("numBytes"), s.get("shardLengths"))
                    for s in info.get("splits", []))
    source_path = os.path.join(path, "srupp_source.json")
    source = files.read_json(source_path, fix) if os.path.exists(source_path) else None
    return dict(splits=splits, version=info.get("version"), source=source)


def _settings(name, path, src, tgt, recipe, vocab_size, lowercase, tokenizer, numbers_sizes,
              numbers_seed, data_dir) -> dict:
    """What the cache key hashes (cheap: reads no more than file hashes and TFDS metadata)."""
    if name == "numbers_de_en":
        return dict(sizes=dict(numbers_sizes or numbers.DEFAULT_SIZES), seed=numbers_seed,
                    num2words=importlib.metadata.version("num2words"), vocab_size=vocab_size,
                    recipe=dataclasses.asdict(NUMBERS_RECIPE))
    if name == "iwslt14_de_en":
        from srupp_jax.data import iwslt
        if recipe not in iwslt.RECIPES:
            raise ValueError(f"data.recipe={recipe!r}; expected one of "
                             f"{', '.join(iwslt.RECIPES)}")
        return dict(recipe=recipe, vocab_size=vocab_size,
                    tfds=_iwslt_fingerprint(data_dir, recipe))
    files = parallel.fingerprint(parallel.split_files(path, src, tgt))
    return dict(files=files, src=src, tgt=tgt, vocab_size=vocab_size,
                recipe=dataclasses.asdict(TextRecipe(tokenizer, lowercase=lowercase)))


def _texts(name, path, src, tgt, recipe, lowercase, tokenizer, numbers_sizes, numbers_seed,
           data_dir):
    """({split: dict(src_raw, tgt_raw, src, tgt)}, TextRecipe, (src, tgt) langs, info)."""
    if name == "numbers_de_en":
        raw = numbers.generate(numbers_sizes, seed=numbers_seed)
        texts = {s: dict(src_raw=d, tgt_raw=e, src=NUMBERS_RECIPE.tokenize(d, "de"),
                         tgt=NUMBERS_RECIPE.tokenize(e, "en")) for s, (d, e) in raw.items()}
        return texts, NUMBERS_RECIPE, ("de", "en"), {}
    if name == "iwslt14_de_en":
        from srupp_jax.data import iwslt, iwslt_tfds
        return (iwslt_tfds.read(data_dir, recipe), iwslt.TEXT_RECIPES[recipe], ("de", "en"),
                {})
    text = TextRecipe(tokenizer, lowercase=lowercase)
    pairs, info = parallel.load_folder(path, src, tgt)
    texts = {s: dict(src_raw=a, tgt_raw=b, src=text.tokenize(a, src), tgt=text.tokenize(b, tgt))
             for s, (a, b) in pairs.items()}
    return texts, text, (src, tgt), info


def _vocab_size(name, recipe, vocab_size, train_lines) -> int:
    if vocab_size:
        return int(vocab_size)
    if name == "numbers_de_en":
        return NUMBERS_VOCAB
    if name == "iwslt14_de_en":
        from srupp_jax.data import iwslt
        return vocab_size_for_merges(train_lines, iwslt.MERGES[recipe])
    return PARALLEL_VOCAB


def _write(tmp: str, texts, model: bytes, subwords: Subwords) -> None:
    """The files of a cache directory into the folder tmp (files.cached_dir publishes it)."""
    phases.enter("cache.write")
    for split, t in texts.items():
        for side in ("src", "tgt"):
            ids = Ragged.from_rows(subwords.encode_tokenized(t[side]))
            np.save(os.path.join(tmp, f"{split}.{side}.npy"), ids.flat)
            np.save(os.path.join(tmp, f"{split}.{side}_offsets.npy"), ids.offsets)
            for kind, key in (("tok", side), ("raw", side + "_raw")):
                with open(os.path.join(tmp, f"{split}.{side}.{kind}.txt"), "w",
                          encoding="utf-8", newline="\n") as f:
                    f.write("\n".join(t[key]))
    with open(os.path.join(tmp, "spm.model"), "wb") as f:
        f.write(model)


def _read_lines(file: str, n: int) -> List[str]:
    with open(file, encoding="utf-8", newline="\n") as f:
        lines = f.read().split("\n") if n else []
    if len(lines) != n:
        raise ValueError(f"{file} has {len(lines)} lines, its meta.json says {n}: a damaged "
                         f"cache; delete {os.path.dirname(file)} to rebuild it")
    return lines


def _load(path: str, meta: dict) -> TranslationData:
    """The dataset of a checked cache directory (files.cached_dir) and its meta.json."""
    with open(os.path.join(path, "spm.model"), "rb") as f:
        model = f.read()
    subwords = Subwords(model, TextRecipe(**meta["recipe"]), *meta["langs"])
    splits = {}
    for split in SPLITS:
        n = meta["counts"][split]
        arrays = {}
        for side in ("src", "tgt"):
            arrays[side] = Ragged(
                np.load(os.path.join(path, f"{split}.{side}.npy"), mmap_mode="r"),
                np.load(os.path.join(path, f"{split}.{side}_offsets.npy")))
            for kind in ("tok", "raw"):
                arrays[f"{side}_{kind}"] = _read_lines(
                    os.path.join(path, f"{split}.{side}.{kind}.txt"), n)
        splits[split] = TranslationSplit(arrays["src"], arrays["tgt"], arrays["src_tok"],
                                         arrays["tgt_tok"], arrays["src_raw"], arrays["tgt_raw"])
    info = dict(meta["info"], cache_path=path, key=meta["key"], counts=meta["counts"],
                lowercase=meta["recipe"]["lowercase"])
    return TranslationData(meta["name"], *meta["langs"], **splits, subwords=subwords,
                           vocab_size=subwords.vocab_size, info=info)


def load_translation(name: str, *, path: str = "", src: str = "", tgt: str = "",
                     recipe: str = "lin2020", vocab_size: int = 0, lowercase: bool = False,
                     tokenizer: str = "moses", numbers_sizes: Optional[Dict[str, int]] = None,
                     numbers_seed: int = 0, data_dir: Optional[str] = None,
                     cache_dir: Optional[str] = None) -> TranslationData:
    """The dataset `name` (one of NAMES), built once and then read from the cache.

    path, src, tgt, lowercase, tokenizer: "parallel" only (data.path, data.src, data.tgt,
    data.lowercase, data.tokenizer). recipe: "iwslt14_de_en" only (data.recipe). vocab_size:
    BPE pieces, 0 = the dataset's default (module docstring). numbers_sizes, numbers_seed:
    "numbers_de_en" only ({train, valid, test: pairs}, the seed). data_dir: TFDS data_dir
    (default $TFDS_DATA_DIR or ~/tensorflow_datasets); cache_dir: the cache (default
    $SRUPP_JAX_CACHE or ~/.cache/srupp_jax).
    Raises ValueError for bad names or settings, FileNotFoundError (with the command that
    prepares it) for an unprepared IWSLT'14, and the `parallel` errors for bad files.
    """
    if name not in NAMES:
        raise ValueError(f"unknown translation dataset {name!r}; valid names: "
                         f"{', '.join(NAMES)}")
    if int(vocab_size) != vocab_size or vocab_size < 0:
        raise ValueError(f"data.vocab_size={vocab_size!r}; expected 0 (the default) or a "
                         "number of BPE pieces >= 8")
    cache_dir = default_cache_dir() if cache_dir is None else os.fspath(cache_dir)
    data_dir = default_data_dir() if data_dir is None else os.fspath(data_dir)
    args = (name, path, src, tgt, recipe, vocab_size, lowercase, tokenizer, numbers_sizes,
            numbers_seed, data_dir)
    settings = _settings(*args)
    key = _key([name, settings])
    cache = os.path.join(cache_dir, f"{name}-{key}")

    def fill(tmp: str) -> dict:
        logging.info("building the %s cache (BPE, subword ids), once: %s", name, cache)
        texts, text_recipe, langs, info = _texts(name, path, src, tgt, recipe, lowercase,
                                                 tokenizer, numbers_sizes, numbers_seed,
                                                 data_dir)
        train = texts["train"]["src"] + texts["train"]["tgt"]
        size = _vocab_size(name, recipe, vocab_size, train)
        symbols = numbers.MORPHEMES if name == "numbers_de_en" else ()
        model = train_bpe(train, size, symbols)
        subwords = Subwords(model, text_recipe, *langs)
        if name == "iwslt14_de_en":
            info = dict(info, source=settings["tfds"]["source"], recipe=recipe)
        info.update(requested_vocab_size=size, user_symbols=list(symbols))
        _write(tmp, texts, model, subwords)
        return dict(name=name, langs=list(langs), recipe=dataclasses.asdict(text_recipe),
                    key=settings, info=info, pipeline_version=PIPELINE_VERSION,
                    counts={s: len(texts[s]["src"]) for s in SPLITS})

    data = _load(cache, files.cached_dir(cache, fill, f"the {name} cache"))
    if name == "iwslt14_de_en":
        source = data.info.get("source")
        data.info["standard_source"] = bool(source is None or source.get("standard", True))
    return data


def from_config(data_config, cache_dir: Optional[str] = None) -> TranslationData:
    """`load_translation` with the keys of a config's `data` block (missing keys: defaults)."""
    get = data_config.get
    numbers_cfg = get("numbers", None) or {}
    sizes = {s: int(numbers_cfg.get(f"{s}_size", 0) or numbers.DEFAULT_SIZES[s])
             for s in SPLITS}
    return load_translation(
        get("name"), path=get("path", ""), src=get("src", ""), tgt=get("tgt", ""),
        recipe=get("recipe", "lin2020") or "lin2020", vocab_size=int(get("vocab_size", 0)),
        lowercase=bool(get("lowercase", False)), tokenizer=get("tokenizer", "moses") or "moses",
        numbers_sizes=sizes, numbers_seed=int(numbers_cfg.get("seed", 0) or 0),
        data_dir=get("data_dir", "") or None,
        cache_dir=cache_dir or get("cache_dir", "") or None)


def prepare(name: str, *, data_dir: Optional[str] = None, manual_dir: Optional[str] = None,
            cache_dir: Optional[str] = None, recipe: str = "lin2020", vocab_size: int = 0,
            overwrite: bool = False) -> TranslationData:
    """Prepare a translation dataset once (`python -m srupp_jax.data.prepare`): for
    iwslt14_de_en, build TFDS config `recipe` from the release in manual_dir (unless already
    prepared from the same files; `overwrite` rebuilds); then fill the cache (BPE, ids)."""
    if name == "iwslt14_de_en":
        from srupp_jax.data import iwslt, iwslt_tfds
        data_dir = default_data_dir() if data_dir is None else os.fspath(data_dir)
        if recipe not in iwslt.RECIPES:
            raise ValueError(f"--recipe={recipe!r}; expected one of {', '.join(iwslt.RECIPES)}")
        prepared = iwslt_tfds.prepared_dir(data_dir, recipe)
        # Built aside, then moved in, by one process at a time: a failed or killed rebuild
        # leaves the old build as it was.
        with files.building(prepared, f"the prepared iwslt14_de_en/{recipe}") as tmp:
            done = os.path.exists(os.path.join(prepared, "dataset_info.json"))
            if done and not overwrite:
                if manual_dir is not None:
                    _check_same_release(prepared, manual_dir)
            else:
                if manual_dir is None:
                    raise ValueError("iwslt14_de_en is prepared from the release: pass "
                                     "--manual_dir=DIR holding de-en.tgz (IWSLT 2014, "
                                     "https://wit3.fbk.eu/2014-01)")
                try:
                    built = iwslt_tfds.build(tmp, manual_dir, recipe)
                    phases.enter("prepare.record")
                    files.move_into(built, prepared)
                except OSError as e:          # a full disk: what was being prepared named
                    raise files.named(e, prepared) from None
    elif name not in NAMES or name == "parallel":
        raise ValueError(f"--dataset={name!r}: prepare builds iwslt14_de_en or numbers_de_en "
                         "(your own parallel folder needs no preparation)")
    return load_translation(name, recipe=recipe, vocab_size=vocab_size, data_dir=data_dir,
                            cache_dir=cache_dir)


def _check_same_release(prepared: str, manual_dir: str) -> None:
    from srupp_jax.data import iwslt
    _, record = iwslt.read_release(manual_dir)
    try:
        with open(os.path.join(prepared, "srupp_source.json"), encoding="utf-8") as f:
            before = json.load(f)
    except (OSError, ValueError):
        before = None
    if before is None or sorted(before["sha256"].values()) != sorted(record["sha256"].values()):
        raise ValueError(f"iwslt14_de_en in {prepared} was prepared from other files than "
                         f"those in --manual_dir={manual_dir}; rerun with --overwrite to "
                         "rebuild it from them")
