"""The ``jaxvol`` CLI: every command listed, config errors reported with the bad key."""

import subprocess
import sys

import pytest

from jaxvol import cli

REPO_CACHE = str(__import__("pathlib").Path(__file__).resolve().parent.parent / ".jax_cache")


@pytest.fixture(autouse=True)
def _same_compile_cache(monkeypatch):
    # cli.main calls jaxvol.configure(), which points JAX's compilation cache at
    # $JAXVOL_CACHE_DIR: keep it on the suite's cache (tests/conftest.py)
    monkeypatch.setenv("JAXVOL_CACHE_DIR", REPO_CACHE)


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("demo", "nightly", "merge"):
        assert command in text


def test_nightly_help_documents_the_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["nightly", "--help"])
    text = capsys.readouterr().out
    for option in ("--config", "--input", "--out", "--warm-start", "--num-processes",
                   "--process-id", "--fresh", "--set"):
        assert option in text


def test_bad_config_key_exits_2_naming_it(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[heston]\nstrikes_per_expry = 4\n")
    assert cli.main(["nightly", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "unknown key heston.strikes_per_expry" in capsys.readouterr().err


def test_bad_override_exits_2(tmp_path, capsys):
    assert cli.main(["nightly", "--set", "market.underlyings=-5",
                     "--out", str(tmp_path / "o")]) == 2
    assert "market.underlyings = -5 is out of range" in capsys.readouterr().err


def test_merge_of_an_unfinished_run_exits_2(tmp_path, capsys):
    assert cli.main(["merge", "--out", str(tmp_path / "nothing")]) == 2


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "jaxvol.jobs", "--help"],
                            capture_output=True, text=True, check=True)
    assert "nightly" in result.stdout and "merge" in result.stdout
