"""`--config FILE`: TOML settings that name their file and key when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossreport import config
from tests.support.procs import ROOT


def test_the_shipped_example_config_is_valid() -> None:
    settings = config.load(ROOT / "systemd" / "lossreport.toml")
    assert settings["email_to"] == ["ml-team@example.com"]
    assert settings["smtp_security"] == "starttls"
    assert settings["stale_after"] == 600.0
    assert settings["email_retry"] == 30.0
    assert settings["smtp_password_file"] == Path(
        "/run/credentials/lossreport.service/smtp-password"
    )
    assert settings["port"] == 8000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[watch]\nworkers = "two"\n', "[watch] workers = 'two': expected an integer"),
        ("[watch]\nworkers = true\n", "[watch] workers = True: expected an integer"),
        ('[watch]\nstale_after = "soon"\n', "'soon' is not a duration"),
        ('[email]\nsmtp_security = "tls"\n', "expected one of none, starttls, ssl"),
        ("[email]\nto = [1]\n", "expected an address or a list of addresses"),
        ('[email]\npassword = "x"\n', "a password is never written in the config"),
        ('[mail]\nto = "a@b"\n', "unknown section [mail]"),
        ("[watch\n", "not a TOML file"),
    ],
)
def test_bad_settings_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "lossreport.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_a_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="cannot read the config file"):
        config.load(tmp_path / "absent.toml")
