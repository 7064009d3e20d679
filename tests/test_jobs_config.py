"""Config loading and validation of the nightly job (no JAX work)."""

import pathlib
import tomllib

import pytest

from jaxvol.jobs import config as cfg

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def test_nightly_toml_is_the_embedded_default():
    # configs/nightly.toml documents the default: every key, same value
    assert cfg.load_config(CONFIGS / "nightly.toml") == cfg.default_config()
    raw = tomllib.loads((CONFIGS / "nightly.toml").read_text())
    assert {s: set(v) for s, v in raw.items()} == {s: set(v) for s, v in cfg.SCHEMA.items()}


@pytest.mark.parametrize("name", ["quick.toml", "sweep.toml"])
def test_shipped_configs_validate(name):
    config = cfg.load_config(CONFIGS / name)
    assert config["market"]["underlyings"] <= 2000


def _write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, fragment", [
    ("[svi]\nmax_iter = 5\n", "unknown key svi.max_iter"),
    ("[svii]\nenabled = true\n", "unknown section [svii]"),
    ("[svi]\nmax_iterations = \"50\"\n", "svi.max_iterations must be int"),
    ("[svi]\nmax_iterations = 0\n", "svi.max_iterations = 0 is out of range"),
    ("[market]\nexpiries = 9\n", "market.expiries = 9 is out of range (must be 2..8)"),
    ("[job]\nchunk_underlyings = true\n", "job.chunk_underlyings must be int, got a boolean"),
    ("[indices]\nterm_days = [30, -1]\n", "indices.term_days"),
    ("[fx]\nmodel = \"cubic\"\n", "fx.model = 'cubic' is out of range"),
    ("[svi]\nno_arbitrage = \"sometimes\"\n",
     "svi.no_arbitrage = 'sometimes' is out of range (must be off, repair or penalty)"),
    ("svi = 3\n", "svi must be a table"),
    ("[svi\n", "is not valid TOML"),
])
def test_errors_name_the_bad_key(tmp_path, text, fragment):
    path = _write(tmp_path, text)
    with pytest.raises(cfg.ConfigError) as error:
        cfg.load_config(path)
    assert fragment in str(error.value)
    if "TOML" not in fragment:
        assert str(path) in str(error.value)  # and the file it came from


def test_partial_file_keeps_defaults_and_ints_become_floats(tmp_path):
    config = cfg.load_config(_write(tmp_path, "[sabr]\nbeta = 1\n"))
    assert config["sabr"]["beta"] == 1.0 and isinstance(config["sabr"]["beta"], float)
    assert config["svi"] == cfg.default_config()["svi"]


def test_svi_no_arbitrage_takes_the_mode_and_the_old_booleans(tmp_path):
    # The job's default is the repair (docs/benchmarks.md, issue 20); configs written when the
    # key was a boolean keep their meaning (false = the plain fit, true = the penalty).
    assert cfg.default_config()["svi"]["no_arbitrage"] == "repair"
    for text, mode in (("false", "off"), ("true", "penalty"), ('"off"', "off"),
                       ('"penalty"', "penalty")):
        config = cfg.load_config(_write(tmp_path, f"[svi]\nno_arbitrage = {text}\n"))
        assert config["svi"]["no_arbitrage"] == mode


def test_dump_round_trips(tmp_path):
    config = cfg.merge_overrides(cfg.default_config(), {"market.underlyings": 7,
                                                        "job.name": 'a "quoted" name'})
    assert cfg.load_config(_write(tmp_path, cfg.dump_toml(config))) == config


def test_overrides_are_validated():
    with pytest.raises(cfg.ConfigError, match="market.underlyings = -3"):
        cfg.merge_overrides(cfg.default_config(), {"market.underlyings": -3})
    with pytest.raises(cfg.ConfigError, match="must be section.key"):
        cfg.merge_overrides(cfg.default_config(), {"underlyings": 3})


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(cfg.ConfigError, match="not found"):
        cfg.load_config(tmp_path / "none.toml")
