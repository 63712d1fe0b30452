"""Tests for srupp_jax.data.streams: contiguous LM streams, purity, multi-process split, eval."""
import numpy as np
import pytest

from srupp_jax.data.streams import Streams


def _tokens(n, seed=0):
    # distinct ids (a permutation) so that "which token is this" is unambiguous
    return np.random.default_rng(seed).permutation(n).astype(np.int64)


def test_shapes_and_lengths():
    s = Streams(_tokens(103), batch_size=4, unroll=5)
    assert s.stream_length == (103 - 1) // 4 == 25
    assert s.steps_per_epoch == len(s) == 5
    assert s.num_tokens == 100 and s.dropped_tokens == 2
    x, y = s.batch(0)
    assert x.shape == y.shape == (4, 5) and x.dtype == y.dtype == np.int32


def test_contiguous_within_and_across_steps():
    tokens = _tokens(4 * 23 + 1)
    s = Streams(tokens, batch_size=4, unroll=5)  # L = 23, 4 steps, 3 positions dropped
    pos = {int(t): i for i, t in enumerate(tokens)}
    for step in range(s.steps_per_epoch):
        x, y = s.batch(step)
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
        # every target is the token after its input in the original array
        for b in range(4):
            for t in range(5):
                assert pos[int(y[b, t])] == pos[int(x[b, t])] + 1
            assert pos[int(x[b, 0])] == b * 23 + step * 5
        if step > 0:
            np.testing.assert_array_equal(x[:, 0], s.batch(step - 1)[1][:, -1])


def test_wraps_around_per_epoch():
    s = Streams(_tokens(2 * 23 + 1), batch_size=2, unroll=5)
    assert s.steps_per_epoch == 4
    for k in range(4):
        for a, b in zip(s.batch(k), s.batch(k + 4)):
            np.testing.assert_array_equal(a, b)
    assert s.epoch(3) == 0 and s.epoch(4) == 1
    np.testing.assert_array_equal(s.batch(0)[0][:, 0], s.batch(4)[0][:, 0])


def test_batch_is_pure():
    tokens = _tokens(301)
    s = Streams(tokens, batch_size=3, unroll=7)
    first = s.batch(5)
    for step in (0, 9, 2, 100, 1):
        s.batch(step)
    list(s.eval_batches())
    again = s.batch(5)
    fresh = Streams(tokens, batch_size=3, unroll=7).batch(5)
    for a, b, c in zip(first, again, fresh):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_two_processes_equal_one_process_split_in_halves():
    tokens = _tokens(4 * 31 + 3)
    one = Streams(tokens, batch_size=4, unroll=6)
    p0 = Streams(tokens, batch_size=2, unroll=6, num_processes=2, process_index=0)
    p1 = Streams(tokens, batch_size=2, unroll=6, num_processes=2, process_index=1)
    assert p0.stream_length == p1.stream_length == one.stream_length
    assert p0.steps_per_epoch == one.steps_per_epoch
    for step in (0, 1, 4, 7):
        for g, a, b in zip(one.batch(step), p0.batch(step), p1.batch(step)):
            np.testing.assert_array_equal(g[:2], a)
            np.testing.assert_array_equal(g[2:], b)


def _weighted_targets(chunks):
    """The targets whose weight is 1, in order, and a check that all other weights are 0."""
    out = []
    for inputs, targets, weights in chunks:
        assert inputs.shape == targets.shape == weights.shape
        assert set(np.unique(weights).tolist()) <= {0.0, 1.0}
        out.append(targets[weights == 1])
    return np.concatenate(out)


@pytest.mark.parametrize("n, b, m, eval_m", [(101, 4, 6, None), (101, 4, 6, 7), (41, 1, 5, 40),
                                             (9, 2, 4, 1), (97, 3, 2, 3), (96, 3, 5, 5)])
def test_eval_covers_every_target_once(n, b, m, eval_m):
    tokens = _tokens(n)
    s = Streams(tokens, batch_size=b, unroll=m)
    chunks = list(s.eval_batches(eval_m))
    r = s.dropped_tokens
    body, tail = (chunks[:-1], chunks[-1]) if r else (chunks, None)
    step = m if eval_m is None else eval_m
    assert [c[0].shape[1] for c in body[:-1]] == [step] * (len(body) - 1)
    assert 1 <= body[-1][0].shape[1] <= step
    inputs = np.concatenate([c[0] for c in body], axis=1)
    targets = np.concatenate([c[1] for c in body], axis=1)
    L = s.stream_length
    assert targets.shape == (b, L) and targets.size == s.num_tokens
    np.testing.assert_array_equal(targets, tokens[1:1 + b * L].reshape(b, L))
    np.testing.assert_array_equal(inputs, tokens[:b * L].reshape(b, L))
    assert all(np.all(c[2] == 1) for c in body)
    if tail is not None:   # the last stream goes on into the tail; other rows weigh nothing
        assert tail[0].shape == (b, r) and 0 < r < b
        np.testing.assert_array_equal(tail[0][-1], tokens[b * L:n - 1])
        np.testing.assert_array_equal(tail[1][-1], tokens[b * L + 1:])
        assert np.all(tail[2][-1] == 1) and np.all(tail[2][:-1] == 0)
    # each token after the first is predicted exactly once, in order along each stream
    np.testing.assert_array_equal(np.sort(_weighted_targets(chunks)), np.sort(tokens[1:]))


@pytest.mark.parametrize("n", [2 * 2 * 10 + 1, 2 * 2 * 10 + 4])
def test_eval_two_processes_partition_the_targets(n):
    """n - 1 = 40 (nothing left over) and 43 (3 tail tokens, all on the last process)."""
    tokens = _tokens(n)
    got, shapes = [], []
    for p in range(2):
        s = Streams(tokens, batch_size=2, unroll=3, num_processes=2, process_index=p)
        chunks = list(s.eval_batches())
        shapes.append([c[0].shape for c in chunks])
        got.append(_weighted_targets(chunks))
    assert shapes[0] == shapes[1]       # the processes step together
    np.testing.assert_array_equal(np.sort(np.concatenate(got)), np.sort(tokens[1:]))


def test_accepts_memmap(tmp_path):
    tokens = _tokens(50).astype(np.uint16)
    path = tmp_path / "tokens.bin"
    tokens.tofile(path)
    mm = np.memmap(path, dtype=np.uint16, mode="r")
    a, b = Streams(mm, 2, 4), Streams(tokens, 2, 4)
    for x, y in zip(a.batch(3), b.batch(3)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(batch_size=0, unroll=4), "batch_size=0"),
    (dict(batch_size=2, unroll=0), "unroll=0"),
    (dict(batch_size=2, unroll=4, num_processes=0), "num_processes=0"),
    (dict(batch_size=2, unroll=4, num_processes=2, process_index=2), "process_index=2"),
    (dict(batch_size=2, unroll=4, process_index=-1), "process_index=-1"),
    (dict(batch_size=4, unroll=6), "N=21.*B=4.*M=6"),
    (dict(batch_size=2, unroll=4, num_processes=4), "N=21.*B=2.*M=4"),
])
def test_errors(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        Streams(_tokens(21), **kwargs)


def test_bad_tokens_and_steps():
    with pytest.raises(ValueError, match="1-D"):
        Streams(np.zeros((4, 5), np.int32), 1, 1)
    with pytest.raises(ValueError, match="integer"):
        Streams(np.zeros(50, np.float32), 1, 1)
    with pytest.raises(ValueError, match="N=0"):
        Streams(np.zeros(0, np.int32), 1, 1)
    s = Streams(_tokens(21), 2, 4)
    with pytest.raises(ValueError, match="step=-1"):
        s.batch(-1)
    with pytest.raises(ValueError, match="unroll=0"):
        next(s.eval_batches(0))
