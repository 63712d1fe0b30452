"""Classification data: the TSV folder's format and its one-line errors, labels in the order
first seen, held-out splits, the three units, the generated default task, and batches that are
a pure function of the step."""
import importlib
import os

import ml_collections
import numpy as np
import pytest

from srupp_jax.data import classification_data, corpus, labelled, stdlib_lines
from srupp_jax.data.batches import TrainBatches


def write(folder, **files):
    """Files of `folder` from keyword arguments: train="..." -> train.tsv (str or bytes)."""
    os.makedirs(folder, exist_ok=True)
    for name, text in files.items():
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        (folder / f"{name}.tsv").write_bytes(data)
    return folder


def data_config(path, **kw):
    return ml_collections.ConfigDict(dict(dict(name="tsv", path=str(path), unit="byte",
                                               src="", tokenizer="moses", lowercase=False,
                                               vocab_size=0, cache_dir=""), **kw))


TRAIN = "".join(f"{label}\t{text}\n" for label, text in [
    ("sport", "the match ended two all"), ("weather", "rain all day"),
    ("sport", "a late goal"), ("food", "bread and\tbutter"), ("weather", "sunny and warm"),
    ("food", "fresh soup"), ("sport", "the final whistle"), ("weather", "cold wind"),
] * 5)


def test_labels_in_first_seen_order_and_the_text_after_the_first_tab(tmp_path):
    folder = write(tmp_path / "d", train=TRAIN.replace("\n", "\r\n"),
                   valid="food\tsoup\nsport\tgoal", test="weather\t  rain  \n")
    splits, labels, info = labelled.load_folder(str(folder))
    assert labels == ["sport", "weather", "food"] and info["held_out"] == []
    assert splits["train"].texts[3] == "bread and\tbutter"        # only the first tab splits
    assert splits["valid"].labels == ["food", "sport"] and splits["test"].texts == ["rain"]
    assert len(splits["train"]) == 40


def test_missing_splits_are_cut_from_train_the_same_way_every_time(tmp_path):
    folder = write(tmp_path / "d", train=TRAIN)
    a, _, info = labelled.load_folder(str(folder))
    b, _, _ = labelled.load_folder(str(folder))
    assert info["held_out"] == ["valid", "test"]
    assert [len(a[s]) for s in ("train", "valid", "test")] == [36, 2, 2]   # 5% of 40 each
    assert a["valid"].texts == b["valid"].texts and a["test"].texts == b["test"].texts
    every = a["train"].texts + a["valid"].texts + a["test"].texts
    assert sorted(every) == sorted(t.split("\t", 1)[1] for t in TRAIN.splitlines())


@pytest.mark.parametrize("files,message", [
    (dict(train="sport\tgoal\nno tab here\n"), "train.tsv, line 2 has no tab"),
    (dict(train="sport\tgoal\n\tno label\n"), "train.tsv, line 2 has an empty label"),
    (dict(train="sport\tgoal\nfood\t   \n"), "train.tsv, line 2 has an empty text"),
    (dict(train="sport\tgoal\n\nfood\tsoup\n"), "train.tsv, line 2 has no tab"),
    (dict(train=b"sport\tgoal\nfood\tcr\xe8me\n"), "train.tsv, line 2: the bytes at offset 18 "
                                                  "are not UTF-8"),
    (dict(train=""), "train.tsv is empty"),
    (dict(train=TRAIN, test="sport\tgoal\nmusic\tjazz\n"),
     "test.tsv, line 2: label 'music' is not among train.tsv's labels (sport, weather, food)"),
    (dict(valid="sport\tgoal\n"), "holds no train.tsv (it holds valid.tsv)"),
    (dict(train="sport\tgoal\nfood\tsoup\n"), "only 2 train examples: too few to split off 2"),
])
def test_bad_files_are_one_line_naming_the_file_and_line(tmp_path, files, message):
    folder = write(tmp_path / "d", **files)
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        classification_data.load(data_config(folder), max_len=64)
    text = str(e.value)
    assert message in text and "\n" not in text, text


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.path=.*nowhere.* is not a folder"):
        classification_data.load(data_config(tmp_path / "nowhere"), max_len=64)


def test_bytes_words_and_bpe(tmp_path):
    folder = write(tmp_path / "d", train=TRAIN, valid="food\tbread soup\n",
                   test="sport\tgoal é\n")
    byte = classification_data.load(data_config(folder), max_len=8)
    assert byte.vocab_size == 256 and byte.tokens.end_id == 10
    assert byte.test.ids[0].tolist() == list("goal é".encode())
    assert byte.train.ids.lengths.max() == 7                   # cut to max_len - 1
    assert byte.info["truncated"]["train"] == sum(len(t.split("\t")[1].encode()) > 7
                                                  for t in TRAIN.splitlines())
    assert byte.train.labels[:3].tolist() == [0, 1, 0]
    word = classification_data.load(data_config(folder, unit="word"), max_len=64)
    vocab = word.tokens.words
    assert word.valid.ids[0].tolist() == [vocab.index["bread"], vocab.index["soup"]]
    assert word.test.ids[0].tolist() == [vocab.index["goal"], vocab.unk_id]
    assert word.tokens.end_id == vocab.eos_id
    cache = tmp_path / "cache"
    bpe = classification_data.load(data_config(folder, unit="bpe", vocab_size=40,
                                               cache_dir=str(cache)), max_len=64)
    assert bpe.vocab_size <= 40 and bpe.tokens.end_id == 3 and bpe.tokens.pad_id == 0
    again = classification_data.load(data_config(folder, unit="bpe", vocab_size=40,
                                                 cache_dir=str(cache)), max_len=64)
    assert len([n for n in os.listdir(cache) if not n.startswith(".")]) == 1  # learned once
    assert again.train.ids.flat.tolist() == bpe.train.ids.flat.tolist()


def test_batches_are_a_pure_function_of_the_step_and_cover_an_epoch(tmp_path):
    folder = write(tmp_path / "d", train=TRAIN)
    data = classification_data.load(data_config(folder), max_len=32)
    make = lambda: TrainBatches(data.train.ids, None, 96, max_len=32, seed=3, eos_id=10)
    a, b = make(), make()
    for step in (5, 0, 17, 5):
        x, y = a.batch(step), b.batch(step)
        assert np.array_equal(x.src, y.src) and np.array_equal(x.index, y.index)
    seen = []
    for step in range(a.steps_per_epoch):
        batch = a.batch(step)
        real = batch.index >= 0
        seen += batch.index[real].tolist()
        for row, i in zip(batch.src[real], batch.index[real]):
            n = len(data.train.ids[i])
            assert row[:n].tolist() == data.train.ids[i].tolist() and row[n] == 10
        assert (batch.lengths[real] == data.train.ids.lengths[batch.index[real]] + 1).all()
    assert sorted(seen) == list(range(len(data.train)))


def test_the_default_task_is_unseen_by_the_default_lm_and_split_once():
    default = importlib.import_module("configs.default").get_config()
    assert stdlib_lines.LM_BYTES == default.data.max_bytes
    lm_files = {rel for rel, _, start in corpus.with_offsets() if start < stdlib_lines.LM_BYTES}
    files = stdlib_lines.package_files()
    assert files and not lm_files & {rel for _, rel, _ in files}
    splits = stdlib_lines.generate()
    assert len(splits["test"]) == stdlib_lines.TEST_SIZE
    assert len(splits["valid"]) == stdlib_lines.VALID_SIZE
    texts = [set(splits[s].texts) for s in ("train", "valid", "test")]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert set(splits["train"].labels) == set(stdlib_lines.PACKAGES)
    assert all(len(t) >= stdlib_lines.MIN_CHARS for t in splits["test"].texts)
    assert stdlib_lines.generate()["test"].texts == splits["test"].texts
