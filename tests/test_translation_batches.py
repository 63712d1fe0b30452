"""Translation batches (token buckets, pure in the step, sharded rows; evaluation order) and
the BLEU / chrF metrics against sacreBLEU's own calls."""
import numpy as np
import pytest

from srupp_jax.inference import bleu
from srupp_jax.data import batches
from srupp_jax.data.subwords import BOS_ID, EOS_ID, PAD_ID
from srupp_jax.data.translation_data import Ragged


def _ragged(lengths, rng):
    return Ragged.from_rows([rng.randint(4, 50, size=n).astype(np.int32) for n in lengths])


def _data(n=500, seed=0):
    rng = np.random.RandomState(seed)
    src_len = rng.randint(0, 55, size=n)
    tgt_len = np.clip(src_len + rng.randint(-5, 6, size=n), 0, None)
    src_len[:3] = [90, 1, 0]          # one over-long pair (n > 64), one tiny, one empty source
    return _ragged(src_len, rng), _ragged(tgt_len, rng)


def test_bucket_lengths():
    assert batches.bucket_lengths(256) == (8, 16, 24, 40, 64, 96, 144, 216, 256)
    assert batches.bucket_lengths(64) == (8, 16, 24, 40, 64)
    assert batches.bucket_lengths(5) == (5,)
    with pytest.raises(ValueError, match="max_len"):
        batches.bucket_lengths(1)


def test_train_batches_cover_each_pair_once_per_epoch_in_bucket_shapes():
    src, tgt = _data()
    tb = batches.TrainBatches(src, tgt, batch_tokens=600, max_len=64, seed=7, num_devices=4)
    assert tb.buckets == (8, 16, 24, 40, 64) and tb.dropped == 1 and tb.num_pairs == 499
    assert tb.rows == [72, 36, 24, 12, 8]          # 600 // L, down to a multiple of 4
    shapes = {(r, L) for r, L in zip(tb.rows, tb.buckets)}
    for epoch in range(2):
        seen = []
        for step in range(epoch * len(tb), (epoch + 1) * len(tb)):
            b = tb.batch(step)
            assert (b.src.shape in shapes and b.src.shape == b.tgt_in.shape ==
                    b.tgt_out.shape == b.weights.shape)
            assert b.src.dtype == b.tgt_in.dtype == np.int32 and b.weights.dtype == np.float32
            real = b.index >= 0
            assert (b.weights[~real] == 0).all()
            seen += b.index[real].tolist()
            for r in np.nonzero(real)[0]:
                i = b.index[r]
                x, y = src[i], tgt[i]
                L = b.src.shape[1]
                assert max(len(x), len(y)) + 1 <= L
                pad_x, pad_y = [PAD_ID] * (L - len(x) - 1), [PAD_ID] * (L - len(y) - 1)
                np.testing.assert_array_equal(b.src[r], np.r_[x, EOS_ID, pad_x])
                np.testing.assert_array_equal(b.tgt_in[r], np.r_[BOS_ID, y, pad_y])
                np.testing.assert_array_equal(b.tgt_out[r], np.r_[y, EOS_ID, pad_y])
                np.testing.assert_array_equal(b.weights[r], (np.arange(L) <= len(y)).astype(float))
        assert sorted(seen) == list(range(1, 500))        # pair 0 (over-long) dropped
    # The order differs between epochs (the check can fail), not the coverage.
    assert [tb.batch(s).index.tolist() for s in range(3)] != [
        tb.batch(len(tb) + s).index.tolist() for s in range(3)]


def test_train_batches_pure_in_the_step_and_sharded():
    src, tgt = _data()
    kw = dict(batch_tokens=600, max_len=64, seed=3, num_devices=4)
    a = batches.TrainBatches(src, tgt, **kw)
    steps = [0, 5, len(a) - 1, len(a), 3 * len(a) + 2, 5]
    first = [a.batch(s) for s in steps]
    fresh = batches.TrainBatches(src, tgt, **kw)      # a resumed run: a fresh object
    for s, b in zip(reversed(steps), reversed(first)):
        c = fresh.batch(s)
        for name in ("index", "src", "tgt_in", "tgt_out", "weights"):
            np.testing.assert_array_equal(getattr(c, name), getattr(b, name))
    other_seed = batches.TrainBatches(src, tgt, **dict(kw, seed=4))
    assert other_seed.batch(0).index.tolist() != a.batch(0).index.tolist()
    # Two processes: each builds its own half of the rows of the same global batch.
    parts = [batches.TrainBatches(src, tgt, **kw, num_processes=2, process_index=p)
             for p in range(2)]
    for s in (0, 7, len(a) + 1):
        whole = a.batch(s)
        halves = [p.batch(s) for p in parts]
        assert halves[0].src.shape[0] == halves[1].src.shape[0] == whole.src.shape[0] // 2
        for name in ("index", "src", "tgt_in", "tgt_out", "weights"):
            np.testing.assert_array_equal(
                np.concatenate([getattr(h, name) for h in halves]), getattr(whole, name))
    with pytest.raises(ValueError, match="train.batch_tokens"):
        batches.TrainBatches(src, tgt, batch_tokens=0)
    long = _ragged([5, 6], np.random.RandomState(0))
    with pytest.raises(ValueError, match="no train pair fits max_len=4"):
        batches.TrainBatches(long, long, batch_tokens=100, max_len=4)
    with pytest.raises(ValueError, match="step"):
        a.batch(-1)


def test_eval_batches_every_sentence_once_sorted_long_ones_kept():
    src, tgt = _data(n=203, seed=1)
    for target in (tgt, None):
        out = batches.eval_batches(src, target, batch_tokens=500, max_len=64, num_devices=2)
        index = np.concatenate([b.index for b in out])
        real = index[index >= 0]
        assert sorted(real.tolist()) == list(range(203))         # once each, pair 0 included
        n = src.lengths + 1 if target is None else np.maximum(src.lengths, tgt.lengths) + 1
        assert (np.diff(n[real]) >= 0).all()                      # sorted by length
        lengths = {b.src.shape[1] for b in out}
        assert lengths <= {8, 16, 24, 40, 64, 128} and 128 in lengths   # 91 -> 2 * max_len
        for b in out:
            assert b.src.shape[0] % 2 == 0
            assert (target is None) == (b.tgt_in is None)
            if target is not None:
                assert (b.weights[b.index < 0] == 0).all()
            for r in np.nonzero(b.index >= 0)[0]:
                x = src[b.index[r]]
                np.testing.assert_array_equal(b.src[r, :len(x) + 1], np.r_[x, EOS_ID])
                assert (b.src[r, len(x) + 1:] == PAD_ID).all()
    # Two processes: the same number of batches and shapes, disjoint rows.
    parts = [batches.eval_batches(src, tgt, 500, max_len=64, num_devices=2, num_processes=2,
                                  process_index=p) for p in range(2)]
    assert [b.src.shape for b in parts[0]] == [b.src.shape for b in parts[1]]
    index = np.concatenate([b.index for p in parts for b in p])
    assert sorted(index[index >= 0].tolist()) == list(range(203))


# ---------------------------------------------------------------- BLEU

HYPS = ["The cat sat on the mat.", "A dog barked loudly at night!", "it's twenty-three cats",
        "hello world"]
REFS = ["The cat sat on a mat.", "The dog barked loudly at night.", "It's twenty-three cats.",
        "Hello there, world"]


def test_bleu_and_chrf_equal_sacrebleu():
    import sacrebleu
    for lowercase in (False, True):
        got = bleu.bleu(HYPS, REFS, lowercase=lowercase)
        want = sacrebleu.corpus_bleu(HYPS, [REFS], lowercase=lowercase)
        assert got.score == pytest.approx(want.score, abs=1e-9) and 0 < got.score < 100
        assert ("case:lc" if lowercase else "case:mixed") in got.signature
        assert "tok:13a" in got.signature
        case = (lambda t: [x.lower() for x in t]) if lowercase else list
        assert bleu.chrf(HYPS, REFS, lowercase=lowercase).score == pytest.approx(
            sacrebleu.corpus_chrf(case(HYPS), [case(REFS)]).score, abs=1e-9)
    tok = bleu.bleu_tok(HYPS, REFS)
    want = sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="none", lowercase=True)
    assert tok.score == pytest.approx(want.score, abs=1e-9) and "tok:none" in tok.signature
    assert tok.score != bleu.bleu(HYPS, REFS, lowercase=True).score    # tokenization matters
    assert bleu.bleu(REFS, REFS).score == pytest.approx(100.0)
    s = bleu.scores(HYPS, REFS, [h.lower() for h in HYPS], [r.lower() for r in REFS],
                    lowercase=True)
    assert set(s) == {"bleu", "bleu_tok", "chrf", "signatures"}
    assert s["bleu_tok"] == pytest.approx(tok.score)
    assert "nw:0" in s["signatures"]["chrf"] and "case:lc" in s["signatures"]["bleu"]
    with pytest.raises(ValueError, match="3 hypotheses for 4 references"):
        bleu.bleu(HYPS[:3], REFS)
