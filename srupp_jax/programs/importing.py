"""--mode=import: a released SRU++ language model into a workdir every other mode accepts.

    importing.import_torch(config, workdir, "wiki103_base.pt")

The file (a PyTorch state dict of the paper's experiments) is read by
srupp_jax/convert/released.py; here the run around it: the config adopts the file's layout,
the data's vocabulary is checked, and the workdir gets config.json and a checkpoint (README:
Pretrained models). torch is imported only when a file is read.
"""
from __future__ import annotations

from srupp_jax import tasks


def import_torch(config, workdir: str, path: str, given=()) -> dict:
    """--mode=import: a released SRU++ language model (a PyTorch state dict of the paper's
    experiments, srupp_jax/convert/released.py) into a new `workdir` that every other mode
    accepts: config.json (`config` with every model key the file decides read from it, the
    file recorded in model.imported_from, float32 compute as the official evaluation) and a
    checkpoint of its parameters (step 0). Everything is checked before anything is written:
    the file, its layout against the config (a key set on the command line that the file
    contradicts is an error), the prepared data's vocabulary size. given: the keys set on the
    command line."""
    import hashlib
    import json
    import os

    from flax import nnx

    from srupp_jax.convert import released
    from srupp_jax.data.datasets import unit_of
    from srupp_jax.training import run_config
    from srupp_jax.training.checkpoint import Checkpoints
    from srupp_jax.training.rng import model_rngs
    from srupp_jax.training.steps import count_params

    if run_config.load(workdir) is not None or os.path.isdir(os.path.join(workdir,
                                                                          "checkpoints")):
        raise ValueError(f"--workdir={workdir} already holds a run; import into a new workdir")
    state_dict = released.load_state_dict(path)
    layout = released.read_layout(state_dict, path)
    config = adopt_layout(config, layout, path, given)
    unit = unit_of(config.data.name, config.data.unit)
    if (layout["kind"] == "enwik8") != (unit == "byte"):
        kind = "a byte model (enwik8)" if unit == "word" else "a word model (adaptive softmax)"
        raise ValueError(f"{path} is {kind}, but the config's data ({config.data.name}) are "
                         f"{unit}s; use the config of its dataset (README: Pretrained models)")
    task = tasks.prepared(config)
    if task.config.model.vocab_size != layout["vocab_size"]:
        raise ValueError(f"{path} has a vocabulary of {layout['vocab_size']:,} ids but the "
                         f"prepared {config.data.name} data have {task.config.model.vocab_size:,}"
                         ": prepare the dataset the model was trained on (README: Pretrained "
                         "models)")
    model = task.build_model(model_rngs(task.config))
    released.load_params(model, state_dict)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    config = task.config
    config.model.imported_from = f"{os.path.abspath(path)} (sha256 {digest.hexdigest()})"
    _, params, rest = nnx.split(model, nnx.Param, ...)
    with Checkpoints(f"{workdir}/checkpoints", best_metric=task.best_metric,
                     best_mode=task.best_mode) as ckpt:
        ckpt.save(0, {"params": params, "rest": rest},
                  meta={"config": json.loads(config.model.to_json())})
    run_config.save(config, workdir)
    return {"imported": config.model.imported_from, "layout": layout["kind"],
            "params": count_params(model), "vocab_size": layout["vocab_size"]}


def adopt_layout(config, layout: dict, path: str, given=()):
    """A copy of `config` with the model keys of a released file's layout (ValueError for one
    the command line sets otherwise); float32 compute (the official evaluation's)."""
    import ml_collections
    from absl import logging

    from srupp_jax.convert.released import config_keys as layout_keys

    config = ml_collections.ConfigDict(config.to_dict())
    m = config.model
    if m.get("arch", "srupp") != "srupp":
        raise ValueError(f"model.arch={m.arch!r}; a released SRU++ model imports with an SRU++ "
                         "config (configs/enwik8.py, wiki103*.py, billion_word.py)")
    replaced, refused = [], []
    for key, value in layout_keys(layout).items():
        ours = tuple(m[key]) if isinstance(m[key], (list, tuple)) else m[key]
        if key == "vocab_size" or ours == value:
            continue
        if f"model.{key}" in given:
            refused.append(f"--config.model.{key}={ours!r} but {path} has {value!r}")
        else:
            replaced.append(f"model.{key} {ours!r} -> {value!r}")
            m[key] = value
    if refused:
        raise ValueError("; ".join(refused) + " (read from its tensors); drop the flag")
    if replaced:
        logging.info("from %s: %s", path, ", ".join(replaced))
    m.vocab_size = 0                        # the data's, checked against the file's
    config.train.compute_dtype = "float32"
    return config


def check_torch_checkpoint(path: str) -> None:
    import os
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"--torch_checkpoint={path!r}: no such file; give the released "
                                ".pt file (README: Pretrained models)")
