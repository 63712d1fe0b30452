"""Importing a released SRU++ file at real size on a CPU machine: time and peak memory.

    python benchmarks/import_released.py                          # lm1b_large_10l_k5 (465M)
    python benchmarks/import_released.py --which=wiki103_base --eval

The released files cannot be downloaded here, so the file is made: random float32 tensors
with the exact keys and shapes of the chosen released file (srupp_jax/convert/released.py's
layout; 1.9 GB for lm1b_large_10l_k5), saved with torch.save. A tiny dataset in the source
format with the file's vocabulary size is prepared (enwik8: a text of 205 distinct byte
values; WikiText-103: 267,734 distinct words; Billion Word: a 793,471-line vocabulary file),
then `main.py --mode=import` runs as a subprocess: its wall time and its peak resident memory
(the child's ru_maxrss) are the result. With --eval, `main.py --mode=eval` of the import is
timed too, on valid and test splits of two evaluation windows each (the config's eval.unroll:
3072, 2560 or 96; compilation included): the import evaluates at real size. Prints a table
and writes JSON (device, versions, sizes, times, memory).
"""
import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from report import save_json  # noqa: E402

# name: (config, d, d', k, vocabulary, cutoffs, tied projections)
FILES = {
    "enwik8_base": ("configs/enwik8.py", 3072, 768, 1, 205, None, True),
    "enwik8_large_ratio8": ("configs/enwik8_large.py:ratio8", 6016, 752, 1, 205, None, True),
    "wiki103_base": ("configs/wiki103.py", 3072, 768, 1, 267_735, [19997, 39997, 199997], True),
    "wiki103_large_ratio8": ("configs/wiki103_large.py:ratio8", 5952, 744, 1, 267_735,
                             [19997, 39997, 199997], True),
    "wiki103_large_ratio8_k5": ("configs/wiki103_large.py:ratio8_k5", 5952, 744, 5, 267_735,
                                [19997, 39997, 199997], True),
    "lm1b_base": ("configs/billion_word.py", 4096, 1024, 1, 793_471, [59998, 159998], False),
    "lm1b_large_10l_k5": ("configs/billion_word.py:large", 7616, 1024, 5, 793_471,
                          [59998, 159998], False),
}


def released_state_dict(d, d_proj, k, V, cutoffs, tied, layers=10, n_e=1024, div=4.0):
    """Random tensors under the keys and shapes of a released file."""
    import torch
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.02
    sd = {}
    for i in range(layers):
        p, t = f"rnn.rnn_lst.{i}.", f"rnn.rnn_lst.{i}.transform_module."
        sd.update({p + "weight_c": r(2 * d), p + "bias": r(2 * d), p + "scale_x": torch.ones(1),
                   t + "linear1.weight": r(d_proj, d), t + "layer_norm.weight": torch.ones(d_proj),
                   t + "layer_norm.bias": torch.zeros(d_proj)})
        if (i + 1) % k == 0:
            sd.update({t + "alpha": r(1), t + "linear2.weight": r(2 * d_proj, d_proj),
                       t + "linear3.weight": r(3 * d, d_proj)})
        else:
            sd[t + "linear2.weight"] = r(3 * d, d_proj)
    if cutoffs is None:
        sd.update({"embedding_layer.weight": r(V, d), "output_layer.weight": r(V, d),
                   "output_layer.bias": r(V)})
        return sd
    ends = [0] + cutoffs + [V]
    n = len(ends) - 1
    for i in range(n):
        width = int(n_e // div ** i)
        rows = ends[i + 1] - ends[i] + (n - 1 if i == 0 else 0)
        sd[f"output_layer.out_layers.{i}.weight"] = r(rows, width)
        sd[f"output_layer.out_layers.{i}.bias"] = r(rows)
        sd[f"output_layer.out_projs.{i}"] = r(d, width)
        sd[f"embedding_layer.emb_projs.{i}"] = (sd[f"output_layer.out_projs.{i}"] if tied
                                                else r(d, width))
    return sd


def prepare_data(name, V, root):
    """A tiny dataset in the source format whose vocabulary has V ids; returns the flags."""
    src, data_dir, cache = (os.path.join(root, x) for x in ("src", "tfds", "cache"))
    os.makedirs(src)
    if name.startswith("enwik8"):               # 205 distinct byte values; test 2 x 3072 + 1
        values = bytes(range(32, 32 + V - 1)) + b"\n"
        with open(os.path.join(src, "enwik8"), "wb") as f:
            f.write((values * 600)[:20 * (2 * 3072 + 1)])
        dataset = "enwik8"
    elif name.startswith("wiki103"):            # V - 1 distinct words (+ <eos>); test 2 x 2560
        words = [f"w{i}" for i in range(V - 1)]
        for split in ("train", "valid", "test"):
            lines = [" ".join(words[j:j + 100]) for j in range(0, len(words), 100)] \
                if split == "train" else [" ".join(words[:2 * 2560 - 1])]
            with open(os.path.join(src, f"wiki.{split}.tokens"), "w") as f:
                f.write("\n".join(lines) + "\n")
        dataset = "wikitext103"
    else:
        base = os.path.join(src, "1-billion-word-language-modeling-benchmark-r13output")
        for sub in ("training-monolingual.tokenized.shuffled",
                    "heldout-monolingual.tokenized.shuffled"):
            os.makedirs(os.path.join(base, sub))
        words = ["<S>", "</S>", "<UNK>"] + [f"w{i}" for i in range(V - 3)]
        text = " ".join(words[3:98]) + "\n" + " ".join(words[98:193]) + "\n"   # 2 x 96
        for path in ("training-monolingual.tokenized.shuffled/news.en-00001-of-00100",
                     "heldout-monolingual.tokenized.shuffled/news.en.heldout-00000-of-00050"):
            with open(os.path.join(base, path), "w") as f:
                f.write(text)
        with open(os.path.join(src, "1b_word_vocab.txt"), "w") as f:
            f.write("".join(f"{w} 1\n" for w in words))
        dataset = "lm1b"
    subprocess.run([sys.executable, "-m", "srupp_jax.data.prepare", f"--dataset={dataset}",
                    f"--manual_dir={src}", f"--data_dir={data_dir}", f"--cache_dir={cache}",
                    "--allow_modified_source"], cwd=ROOT, check=True, capture_output=True)
    return [f"--config.data.data_dir={data_dir}", f"--config.data.cache_dir={cache}"]


# A process of its own runs main.py, so that its children's peak RSS is main.py's alone.
_WRAPPER = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
            "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
            "file=sys.stderr); sys.exit(code)")


def timed(args):
    """(wall seconds, peak RSS in GB, last stdout line) of main.py with `args`."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _WRAPPER, sys.executable,
                          os.path.join(ROOT, "main.py"), *args], cwd=ROOT, capture_output=True,
                         text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    seconds = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    peak_kb = int(out.stderr.rsplit("PEAK_KB", 1)[1].split()[0])
    return seconds, peak_kb / 1e6, out.stdout.strip().splitlines()[-1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--which", default="lm1b_large_10l_k5", choices=sorted(FILES))
    p.add_argument("--eval", action="store_true", help="also time --mode=eval of the import")
    p.add_argument("--tmp", default=None, help="where the file and workdir go (default: a "
                   "temporary folder, removed after)")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                 "import_released.json"))
    args = p.parse_args(argv)
    import jax
    import torch

    config, d, d_proj, k, V, cutoffs, tied = FILES[args.which]
    root = args.tmp or tempfile.mkdtemp(prefix="import_released_")
    try:
        start = time.perf_counter()
        sd = released_state_dict(d, d_proj, k, V, cutoffs, tied)
        path = os.path.join(root, f"{args.which}.pt")
        torch.save(sd, path)
        n_params = sum(v.numel() for key, v in sd.items() if not key.startswith(
            "embedding_layer.emb_projs") or not tied) - sum(
            v.numel() for key, v in sd.items() if key.endswith("scale_x"))
        del sd
        made = time.perf_counter() - start
        flags = prepare_data(args.which, V, os.path.join(root, "data"))
        workdir = os.path.join(root, "imported")
        seconds, peak_gb, line = timed([f"--config={config}", "--mode=import",
                                        f"--torch_checkpoint={path}", f"--workdir={workdir}",
                                        *flags])
        row = dict(file=args.which, params=n_params, file_gb=os.path.getsize(path) / 1e9,
                   import_seconds=seconds, import_peak_rss_gb=peak_gb, made_seconds=made,
                   result=line)
        if args.eval:
            row["eval_seconds"], row["eval_peak_rss_gb"], row["eval_result"] = timed(
                [f"--workdir={workdir}", "--mode=eval"])
    finally:
        if not args.tmp:
            shutil.rmtree(root, ignore_errors=True)
    print(f"host {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM")
    print("| file | params | .pt GB | import s | import peak RSS GB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| {row['file']} | {row['params'] / 1e6:.1f}M | {row['file_gb']:.2f} | "
          f"{row['import_seconds']:.0f} | {row['import_peak_rss_gb']:.2f} |")
    save_json(args.out, results=[row], settings=vars(args),
              device=dict(platform=jax.default_backend(), cpus=os.cpu_count()),
              versions=dict(jax=jax.__version__, torch=torch.__version__,
                            python=platform.python_version()),
              host=dict(machine=platform.machine(), ram_gib=os.sysconf("SC_PAGE_SIZE")
                        * os.sysconf("SC_PHYS_PAGES") / 2**30))
    return row


if __name__ == "__main__":
    main()
