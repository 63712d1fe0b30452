"""The paper's released models (issue 27): --mode=import, the official evaluation, generation
and fine-tuning from an import, and the bad inputs the import refuses.

The released files cannot be downloaded here. PyTorch models with their module structure and
parameter names (tests/released_torch.py: sru.SRUpp plus adaptive layers written for the tests)
are trained a few steps on tiny text in the datasets' real formats, saved as state dicts and
imported through `main.py --mode=import`; `main.py --mode=eval` must then give the official
final evaluation's loss, and the imported model the PyTorch model's log-probability token by
token, for the enwik8, WikiText-103 and Billion Word layouts (k = 1 and k > 1, with and without
the layers' own layer norms). The token ids of the PyTorch side come from the written rules
(tests/helpers.py), not from our builders.
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the released models are PyTorch files")
pytest.importorskip("sru", reason="the released models' stack is sru.SRUpp")

from helpers import assert_close, written_byte_values_rule, written_counts_rule  # noqa: E402
from srupp_jax.data import corpus  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORDS = ("the cat sat on a mat and dog ran to red big small house tree river under over "
         "bird sang song went home with her his old new day night").split()
L = 16   # the evaluation window of these tests (the paper's: 3072 enwik8, 2560 WikiText-103)

# (name, config file, dataset, ReleasedLM keyword arguments)
VARIANTS = {
    "enwik8_k1": ("configs/enwik8.py", "enwik8", dict(k=1)),
    "enwik8_k2_ln": ("configs/enwik8.py", "enwik8", dict(k=2, layer_norm=True)),
    "wt103_k1_ln": ("configs/wiki103.py", "wikitext103", dict(k=1, layer_norm=True)),
    "wt103_k2": ("configs/wiki103.py", "wikitext103", dict(k=2)),
    "lm1b_k2_untied": ("configs/billion_word.py", "lm1b", dict(k=2, tie_proj=False)),
}
ADAPTIVE = dict(wikitext103=dict(cutoffs=[6, 14, 25], n_e=16, div_val=2.0),
                lm1b=dict(cutoffs=[8, 20], n_e=16, div_val=2.0))


def _sentences(n, seed):
    rng = np.random.RandomState(seed)
    return [" ".join(rng.choice(WORDS, rng.randint(3, 9))) + " ." for _ in range(n)]


def main_py(*args, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def last_json(out):
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _prepare(name, manual_dir, data_dir, cache_dir):
    out = subprocess.run([sys.executable, "-m", "srupp_jax.data.prepare", f"--dataset={name}",
                          f"--manual_dir={manual_dir}", f"--data_dir={data_dir}",
                          f"--cache_dir={cache_dir}", "--allow_modified_source"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.fixture(scope="session")
def sources(tmp_path_factory):
    """Tiny enwik8, WikiText-103 and Billion Word in their source formats, prepared; with the
    ids the written rules give each split: {dataset: {"flags", "ids": {split: array}, "V"}}."""
    from test_data import write_billion_word
    root = tmp_path_factory.mktemp("released")
    data = [f"--config.data.data_dir={root / 'tfds'}", f"--config.data.cache_dir={root / 'c'}"]
    out = {}
    raw = corpus.embedded_corpus(16_000)[0]                     # enwik8: bytes
    (root / "e").mkdir()
    (root / "e" / "enwik8").write_bytes(raw)
    _prepare("enwik8", root / "e", root / "tfds", root / "c")
    values, ids = written_byte_values_rule(raw)
    a, b, _ = corpus.split_sizes(len(raw))
    out["enwik8"] = dict(V=len(values), ids=dict(train=np.array(ids[:a]),
                                                 valid=np.array(ids[a:a + b]),
                                                 test=np.array(ids[a + b:])))
    (root / "w").mkdir()                                        # WikiText-103: lines
    text = {}
    for split, n, seed in (("train", 300, 0), ("valid", 30, 1), ("test", 33, 2)):
        text[split] = [" = Title = ", ""] + _sentences(n, seed) + [""]
        (root / "w" / f"wiki.{split}.tokens").write_text("\n".join(text[split]) + "\n")
    _prepare("wikitext103", root / "w", root / "tfds", root / "c")
    vocab = written_counts_rule(text["train"])
    index = {w: i for i, w in enumerate(vocab)}
    encode = lambda lines: np.array([index[w] for line in lines for w in line.split() + [
        "<eos>"]])
    out["wikitext103"] = dict(V=len(vocab), ids={s: encode(t) for s, t in text.items()})
    train, heldout = [_sentences(150, 3), _sentences(150, 4)], _sentences(30, 5)   # lm1b
    lm1b_vocab = ["<S>", "</S>", "<UNK>"] + WORDS[:-3] + ["."]          # 3 words unknown
    write_billion_word(root / "b", train, heldout,
                       "".join(f"{w} {100 - i}\n" for i, w in enumerate(lm1b_vocab)))
    _prepare("lm1b", root / "b", root / "tfds", root / "c")
    index = {w: i for i, w in enumerate(lm1b_vocab)}
    stream = lambda sents: np.array([0] + [index.get(w, 2) for s in sents
                                           for w in s.split() + ["<S>"]])
    out["lm1b"] = dict(V=len(lm1b_vocab), ids=dict(train=stream(sum(train, [])),
                                                    valid=stream(heldout), test=stream(heldout)))
    for d in out.values():
        d["flags"] = data
    return out


@pytest.fixture(scope="session")
def trained(sources, tmp_path_factory):
    """{variant: (the trained PyTorch model, its saved state dict's path)}, built lazily."""
    from released_torch import ReleasedLM, train
    root, cache = tmp_path_factory.mktemp("pt"), {}

    def get(name):
        if name not in cache:
            _, dataset, kw = VARIANTS[name]
            src = sources[dataset]
            model = ReleasedLM(src["V"], 16, 8, 4 if kw["k"] > 1 else 3,
                               **ADAPTIVE.get(dataset, {}), **kw)
            train(model, src["ids"]["train"], steps=25, lr=2e-2)
            path = root / f"{name}.pt"
            torch.save(model.state_dict(), path)
            cache[name] = model, path
        return cache[name]
    return get


def _import(name, sources, trained, workdir, *extra):
    config, dataset, _ = VARIANTS[name]
    model, path = trained(name)
    out = main_py(f"--config={config}", "--mode=import", f"--torch_checkpoint={path}",
                  f"--workdir={workdir}", *sources[dataset]["flags"],
                  f"--config.eval.unroll={L}", f"--config.eval.mem_len={L}", *extra)
    return model, last_json(out)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VARIANTS))
def test_import_then_eval_is_the_official_evaluation(name, sources, trained, tmp_path):
    """--mode=eval of the import equals the official final evaluation of the PyTorch model
    (batch 1, L-token segments, the previous segment as memory, the same-length mask, the last
    segment shorter; Billion Word: the last partial window dropped), dev and test; and its
    log-probabilities equal the PyTorch model's token by token; the import counts the PyTorch
    model's parameters (shared ones once)."""
    import jax
    from flax import nnx

    from released_torch import official_eval
    from srupp_jax import tasks
    from srupp_jax.data.streams import Streams
    from srupp_jax.programs import modes
    from srupp_jax.training import run_config
    workdir = tmp_path / "imported"
    model, imported = _import(name, sources, trained, workdir)
    assert imported["params"] == sum(p.numel() for p in model.parameters())
    ids = sources[VARIANTS[name][1]]["ids"]
    assert (len(ids["test"]) - 1) % L, "the last segment must be shorter than L"
    reference = {split: official_eval(model, ids[split], L) for split in ("valid", "test")}
    uniform = np.log(sources[VARIANTS[name][1]]["V"])
    assert -reference["test"].mean() < uniform - 0.3           # trained: far from uniform
    evaluated = last_json(main_py(f"--workdir={workdir}", "--mode=eval"))
    assert evaluated["step"] == 0
    for split, ours in (("valid", "dev_loss"), ("test", "test_loss")):
        scored = reference[split]
        if VARIANTS[name][1] == "lm1b":     # its iterator stops before a partial window
            scored = scored[:len(scored) // L * L]
        assert_close(evaluated[ours], -scored.mean(), 1e-5, split)
    # token by token, through the evaluation's segments
    config = run_config.load(str(workdir))
    assert config.data.vocab_sha256 and config.model.imported_from.startswith(str(trained(name)[1]))
    ours, params, rest, _ = modes.restore(config, str(workdir))
    nnx.update(ours, params, rest)
    ours.eval()
    data = tasks.prepared(config).data
    np.testing.assert_array_equal(data.test, ids["test"])       # the written rules' ids
    graphdef, variables = nnx.split(ours)
    step = jax.jit(lambda v, x, y, s: nnx.merge(graphdef, v).nll(x, y, s, same_length=True))
    state, logp = ours.init_state(1, L), []
    for x, y, _ in Streams(data.test, 1, L).eval_batches():
        nll, state = step(variables, x, y, state)
        logp.append(-np.asarray(nll[0]))
    assert_close(np.concatenate(logp), reference["test"], 1e-5, "log p token by token")


@pytest.mark.slow
def test_generate_and_fine_tune_from_an_import(sources, trained, tmp_path):
    """Greedy generation from an import equals the PyTorch model's; a run with
    train.init_from=IMPORT starts from its parameters (after one step at lr 1e-12 its
    evaluation is the import's), with the source's architecture, a fresh optimizer and the
    source recorded; a command-line size that contradicts the source, and training in the
    imported workdir itself, are refused in one line with nothing written."""
    from released_torch import set_mask
    name = "wt103_k2"
    workdir = tmp_path / "imported"
    model, _ = _import(name, sources, trained, workdir)
    out = main_py(f"--workdir={workdir}", "--mode=generate", "--prompt=the cat",
                  "--num_tokens=6", "--temperature=0")
    assert out.returncode == 0, out.stderr[-3000:]
    imported = json.loads((workdir / "config.json").read_text())
    assert imported["model"]["d"] == 16 and imported["model"]["cutoffs"] == [6, 14, 25]
    from srupp_jax import tasks
    from srupp_jax.training import run_config
    words = tasks.prepared(run_config.load(str(workdir))).data.vocab
    seq = [words.eos_id] + list(words.encode("the cat", add_eos=False))
    with torch.no_grad():
        for _ in range(6):
            x = torch.as_tensor(seq)[:, None]
            mask = set_mask(len(seq), False)[:len(seq), :len(seq)]
            logp, _, _ = model(x, torch.zeros(model.depth, 1, model.d), None, mask)
            seq.append(int(logp[-1].argmax()))
    assert out.stdout.strip() == "the cat " + words.decode(np.array(seq[3:]))
    # fine-tuning: the source's architecture, its parameters, a fresh optimizer
    tune = tmp_path / "tuned"
    train_flags = [*sources["wikitext103"]["flags"], f"--config.train.init_from={workdir}",
                   "--config.train.batch_size=2", "--config.train.unroll=8",
                   "--config.train.steps=1", "--config.train.warmup_steps=0",
                   "--config.train.lr=1e-12", "--config.train.compute_dtype=float32",
                   f"--config.eval.unroll={L}", f"--config.eval.mem_len={L}"]
    refused = main_py("--config=configs/wiki103.py", f"--workdir={tune}", *train_flags,
                      "--config.model.d=32")
    assert refused.returncode == 2 and not tune.exists(), refused.stderr[-2000:]
    assert refused.stderr.strip().splitlines()[-1].startswith(
        "error: train.init_from: the command line contradicts the source's architecture: "
        f"model.d=16 in {workdir}, 32 here")
    tuned = last_json(main_py("--config=configs/wiki103.py", f"--workdir={tune}", *train_flags))
    assert tuned["status"] == "finished" and tuned["train_step"] == 1
    record = json.loads((tune / "config.json").read_text())
    assert record["train"]["init_from"] == str(workdir) and record["train"]["init_step"] == 0
    assert record["model"]["d"] == 16 and record["model"]["k"] == 2
    source_eval = last_json(main_py(f"--workdir={workdir}", "--mode=eval"))
    tuned_eval = last_json(main_py(f"--workdir={tune}", "--mode=eval"))
    assert_close(tuned_eval["test_loss"], source_eval["test_loss"], 1e-6, "fine-tuned")
    again = main_py("--config=configs/wiki103.py", f"--workdir={workdir}",
                    *sources["wikitext103"]["flags"])
    assert again.returncode == 2 and "holds a model imported from" in again.stderr


def _small(tmp_path, **kw):
    """An untrained enwik8-layout file (V 20, d 8, d' 4, 2 layers): (path, its state dict)."""
    from released_torch import ReleasedLM
    sd = ReleasedLM(20, 8, 4, 2, **kw).state_dict()
    path = tmp_path / "small.pt"
    torch.save(sd, path)
    return path, sd


def _edits(tmp_path):
    """(what, a function that writes a bad file at the path and returns (config, given),
    the error's words) for each bad input refused before any data are read."""
    import sru
    from configs import enwik8, wiki103

    def saved(sd):
        def write(path):
            torch.save(sd, path)
            return enwik8.get_config(), ()
        return write

    path, sd = _small(tmp_path)
    good = path.read_bytes()
    sru_sd = {f"rnn.{k}": v for k, v in sru.SRU(8, 8, 2).state_dict().items()}
    sru_sd.update({k: sd[k] for k in ("embedding_layer.weight", "output_layer.weight",
                                      "output_layer.bias")})
    other = dict(sd, **{"extra.weight": torch.zeros(2)})
    missing = {k: v for k, v in sd.items() if k != "rnn.rnn_lst.1.bias"}

    def contradicting(path):
        torch.save(sd, path)
        config = enwik8.get_config()
        config.model.d = 32
        return config, ("model.d",)

    return [
        ("text", lambda p: (p.write_text("not a model\n"), (enwik8.get_config(), ()))[1],
         "is not a PyTorch state dict torch can read"),
        ("truncated", lambda p: (p.write_bytes(good[:len(good) // 2]),
                                 (enwik8.get_config(), ()))[1],
         "is not a PyTorch state dict torch can read"),
        ("not tensors", saved({"step": 3, "note": "x"}), "holds a dict, not a state dict"),
        ("sru", saved(sru_sd), r"has no attention layer \(no transform_module.alpha\): an SRU "
                               "without attention"),
        ("missing", saved(missing), r"lacks 1 key\(s\) of the released models' layout: "
                                    r"rnn.rnn_lst.1.bias"),
        ("unexpected", saved(other), r"has 1 key\(s\) the released models do not: "
                                     r"extra.weight"),
        ("words", lambda p: (torch.save(sd, p), (wiki103.get_config(), ()))[1],
         r"is a byte model \(enwik8\), but the config's data \(wikitext103\) are words"),
        ("flag", contradicting, "--config.model.d=32 but .* has 8 .*drop the flag"),
    ]


def test_bad_files_are_one_line_errors_and_write_nothing(tmp_path):
    """Item 7: each bad input is a ValueError naming the file and what is wrong (one line
    `error: ...` with exit 2 on the command line, test below), before anything is written."""
    from srupp_jax.programs import importing
    for what, write, match in _edits(tmp_path):
        path, workdir = tmp_path / f"{what}.pt", tmp_path / f"run_{what}"
        config, given = write(path)
        with pytest.raises(ValueError, match=match):
            importing.import_torch(config, str(workdir), str(path), given)
        assert not workdir.exists(), what


@pytest.mark.slow
def test_bad_vocabulary_and_the_command_line(sources, tmp_path):
    """A file whose vocabulary is not the prepared data's is refused (one line, exit 2,
    nothing written), as is a workdir that already holds a run."""
    from released_torch import ReleasedLM
    V = sources["enwik8"]["V"]
    path = tmp_path / "bigger.pt"
    torch.save(ReleasedLM(V + 3, 8, 4, 2).state_dict(), path)
    workdir, flags = tmp_path / "run", [*sources["enwik8"]["flags"],
                                        f"--config.eval.unroll={L}", f"--config.eval.mem_len={L}"]
    out = main_py("--config=configs/enwik8.py", "--mode=import", f"--torch_checkpoint={path}",
                  f"--workdir={workdir}", *flags)
    assert out.returncode == 2 and not workdir.exists()
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: {path} has a vocabulary of {V + 3} ids but the prepared enwik8 data have {V}: "
        "prepare the dataset the model was trained on (README: Pretrained models)")
    workdir.mkdir()
    (workdir / "config.json").write_text('{"model": {}, "train": {}, "data": {}}')
    out = main_py("--config=configs/enwik8.py", "--mode=import", f"--torch_checkpoint={path}",
                  f"--workdir={workdir}", *flags)
    assert out.returncode == 2 and "already holds a run" in out.stderr
