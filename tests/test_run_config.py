"""Config layering (configs/base.py), keys resolved from the data, the workdir's saved config,
and the config checks that run before anything compiles."""
import importlib
import types

import pytest

from srupp_jax.training import run_config

from srupp_jax.programs import modes
from srupp_jax.tasks.lm import resolve_config

PAPER = {"enwik8": [""], "enwik8_large": ["", "ratio8"], "wiki103": [None],
         "wiki103_large": ["", "ratio8", "ratio8_k5"], "billion_word": ["", "large"]}


def _config(name, variant=None):
    module = importlib.import_module(f"configs.{name}")
    return module.get_config() if variant is None else module.get_config(variant)


def _flat(config, prefix=""):
    out = {}
    for k, v in config.items():
        if hasattr(v, "items"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("name,variant", [(n, v) for n, vs in PAPER.items() for v in vs])
def test_paper_configs_inherit_nothing_from_the_toy_config(name, variant):
    """Every key of a paper config is base.py's or set by its own table, never default.py's
    toy value: the corpus size, toy sizes and the toy dev slice stay in default.py."""
    base, toy, paper = (_flat(c) for c in (_config("base"), _config("default"),
                                           _config(name, variant)))
    assert set(paper) == set(base) == set(toy)
    assert paper["data.max_bytes"] == 0 and paper["eval.max_tokens"] == 0
    assert paper["model.vocab_size"] == 0             # from the prepared vocabulary
    for key in ("model.d", "model.d_proj", "model.num_layers", "train.batch_size",
                "train.unroll", "train.steps", "eval.unroll"):
        assert paper[key] != toy[key], key


def _data(vocab_size, unit):
    return types.SimpleNamespace(vocab_size=vocab_size, unit=unit)


def test_resolve_takes_vocab_size_and_cutoffs_from_the_data():
    config = _config("wiki103")
    resolved = resolve_config(config, _data(70_000, "word"))
    assert resolved.model.vocab_size == 70_000 and config.model.vocab_size == 0
    with pytest.raises(ValueError, match=r"model.cutoffs=\(20000, 60000\) but the wikitext103 "
                                         r"vocabulary has 30000 entries"):
        resolve_config(config, _data(30_000, "word"))
    config.model.vocab_size = 50_000
    with pytest.raises(ValueError, match="model.vocab_size=50000 but the wikitext103 vocabulary "
                                         "has 70000 entries; set --config.model.vocab_size=0"):
        resolve_config(config, _data(70_000, "word"))
    text = _config("text")
    assert resolve_config(text, _data(256, "byte")).model.cutoffs == ()
    assert resolve_config(text, _data(1000, "word")).model.cutoffs == (50, 250)
    assert resolve_config(text, _data(60, "word")).model.cutoffs == ()


def test_saved_config_round_trip_and_overrides(tmp_path):
    config = resolve_config(_config("wiki103"), _data(300_000, "word"))
    run_config.save(config, str(tmp_path))
    back = run_config.load(str(tmp_path))
    assert back.to_dict() == config.to_dict()
    assert isinstance(back.model.cutoffs, tuple) and isinstance(back.train.lr, float)
    run_config.override(back, {"eval.mem_len": 512, "train.batch_size": 8})
    assert back.eval.mem_len == 512 and back.train.batch_size == 8
    with pytest.raises(ValueError, match="--config.eval.memlen: the saved config has no key"):
        run_config.override(back, {"eval.memlen": 1})
    assert run_config.load(str(tmp_path / "none")) is None


def _tiny(name="enwik8", variant=""):
    config = _config(name, variant)
    m, t, e = config.model, config.train, config.eval
    m.d, m.d_proj, m.num_layers = 16, 4, 2
    t.batch_size, t.unroll, e.unroll = 2, 8, 16
    return config


@pytest.mark.parametrize("change,match", [
    (dict(), "model.k=5 with model.num_layers=2 leaves no attention layer"),
    (dict(num_layers=4), "model.k=5 with model.num_layers=4 leaves no attention layer"),
])
def test_k_beyond_the_depth_is_an_error(change, match):
    config = _tiny("enwik8", "k5")
    for k, v in change.items():
        setattr(config.model, k, v)
    with pytest.raises(ValueError, match=match):
        modes.validate_config(config, 1)
    config.model.num_layers = 5
    modes.validate_config(config, 1)                  # layer 5 has attention
    config.model.num_layers, config.model.attention_last_n, config.model.k = 2, 0, 1
    modes.validate_config(config, 1)                  # a plain SRU stack, asked for explicitly


@pytest.mark.parametrize("key,value,match", [
    ("data.max_bytes", 4_000_000, "data.max_bytes=4000000 applies to data.name='default' only"),
    ("data.name", "enwik9", "data.name='enwik9'; expected one of default, enwik8, wikitext103, "
                            "lm1b, text"),
    ("model.d", 0, "model.d=0; expected >= 1"),
    ("train.steps", 0, "train.steps=0; expected >= 1"),
    ("model.cutoffs", (4, 8, 12),
     r"model.d=16, model.adaptive_factor=4.0, 3 cutoffs: cluster 3 .* = 0"),
])
def test_config_checks_name_the_value(key, value, match):
    config = _tiny()
    section, name = key.split(".")
    setattr(getattr(config, section), name, value)
    with pytest.raises(ValueError, match=match):
        modes.validate_config(config, 1)


def test_base_alone_is_rejected_with_the_unset_sizes():
    with pytest.raises(ValueError, match="model.d=0; expected >= 1"):
        modes.validate_config(_config("base"), 1)


def test_a_record_from_before_a_key_existed_names_what_it_trained_with(tmp_path):
    """A workdir recorded before train.prng_impl existed trained with threefry keys: a rerun
    with the rbg default is refused naming the key (its checkpoint holds threefry keys)."""
    config = _config("default")
    with config.unlocked():
        del config.train["prng_impl"]
    run_config.save(config, str(tmp_path))
    new = _config("default")
    with pytest.raises(ValueError, match="train.prng_impl 'threefry2x32' -> 'rbg'"):
        run_config.record_changes(str(tmp_path), new)
    new.train.prng_impl = "threefry2x32"
    assert run_config.record_changes(str(tmp_path), new) == []


def test_an_old_record_is_completed_with_every_key_of_base(tmp_path):
    """A config.json written before keys existed reads back with all of base.py's keys: the
    recorded values kept, RECORDED_BEFORE for keys it predates (prng_impl), else base.py's
    defaults, so code reads keys directly."""
    import json
    config = _config("default")
    saved = json.loads(config.to_json())
    for section, key in (("model", "arch"), ("train", "time_budget"), ("train", "prng_impl"),
                         ("mesh", "fsdp_size")):
        del saved[section][key]
    saved["model"]["d"] = 24
    (tmp_path / "config.json").write_text(json.dumps(saved))
    back = run_config.load(str(tmp_path))
    base = _config("base")
    assert back.model.d == 24 and back.model.arch == base.model.arch == "srupp"
    assert back.train.time_budget == base.train.time_budget and back.mesh.fsdp_size == 0
    assert back.train.prng_impl == "threefry2x32" != base.train.prng_impl
    flat = lambda c: set(run_config._flat(c.to_dict()))
    assert flat(back) >= flat(base)
