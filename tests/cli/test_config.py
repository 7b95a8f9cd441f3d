"""`--config FILE`: TOML settings that name their file and key when wrong."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from lossreport.cli import config
from lossreport.cli.main import duration, main
from lossreport.errors import ConfigError
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
        ('[email]\npassword = "x"\n', "a secret is never written in the config"),
        ('[alerts]\nwebhook_token = "x"\n', "a secret is never written in the config"),
        ('[alerts]\nwebhook = "ftp://example.com/x"\n', "is not an http:// or https:// URL"),
        ('[alerts]\nwebhook = "https://u:p@example.com/x"\n', "holds a user or password"),
        (
            '[[alerts.rule]]\nname = "stuck"\nloss = "overall_loss"\n',
            '[alerts] rule 1 ("stuck"): has none of above',
        ),
        ("[alerts.divergence]\nfactor = 0.5\n", "[alerts.divergence] factor = 0.5: expected"),
        ('[mail]\nto = "a@b"\n', "unknown section [mail]"),
        ("[watch\n", "not a TOML file"),
        ("[watch]\nstale_after = nan\n", "[watch] stale_after = nan: expected a duration"),
        ('[watch]\nstale_after = "inf"\n', "'inf' is not a finite duration"),
        ("[watch]\nlive_every = inf\n", "[watch] live_every = inf: expected a duration"),
        ('[watch]\nrescan_every = "1e400"\n', "'1e400' is not a finite duration"),
        ("[watch]\npoll_interval = 0\n", "[watch] poll_interval = 0: expected a duration"),
        ('[watch]\nidle_restart = "0s"\n', "'0s' is too short: at least 0.1s"),
        ("[email]\nretry = 0\n", "[email] retry = 0: expected a duration"),
        ("[watch]\nworkers = 0\n", "[watch] workers = 0: expected an integer from 1 to 64"),
        ("[watch]\nworkers = -3\n", "[watch] workers = -3: expected an integer from 1 to 64"),
        ("[watch]\nworkers = 100000\n", "[watch] workers = 100000: expected an integer"),
        ("[serve]\nport = 70000\n", "[serve] port = 70000: expected an integer from 0 to 65535"),
        ("[serve]\nport = -1\n", "[serve] port = -1: expected an integer from 0 to 65535"),
        ("[serve]\ncache_mb = 0\n", "[serve] cache_mb = 0: expected an integer from 1 to"),
        ('[serve]\nallow_host = "a.example/x"\n', "'a.example/x' is not a host name"),
        ('[serve]\nallow_host = ["ok.example", "x y"]\n', "'x y' is not a host name"),
        ("[email]\nsmtp_port = 0\n", "[email] smtp_port = 0: expected an integer from 1 to"),
        (
            '[email]\nto = ["ok@example.com", "a@example.com\\r\\nBcc: victim@example.com"]\n',
            "but 'a@example.com\\r\\nBcc: victim@example.com' has a control or invisible",
        ),
        ('[email]\nto = "a@example.com, b@example.com"\n', "holds 2 addresses, expected one"),
        ('[email]\nfrom = "lossreport"\n', "[email] from = 'lossreport': expected one email"),
        ('[email]\nfrom = "x@example.com\\nTo: y@example.com"\n', "has a control or invisible"),
    ],
)
def test_bad_settings_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "lossreport.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_a_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        config.load(tmp_path / "absent.toml")


def test_settings_at_their_limits_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "lossreport.toml"
    path.write_text(
        '[watch]\nworkers = 64\npoll_interval = "0.1s"\nstale_after = "8760h"\n'
        '[email]\nto = "Team <ml-team@example.com>"\nfrom = "me@localhost"\nsmtp_port = 65535\n'
        '[serve]\nport = 0\ncache_mb = 1\nallow_host = ["Gpu-Box.Lab.", "[fe80::1]"]\n'
    )
    settings = config.load(path)
    assert settings["cache_mb"] == 1 and settings["allow_host"] == ["gpu-box.lab", "[fe80::1]"]
    assert settings["workers"] == 64 and settings["port"] == 0 and settings["smtp_port"] == 65535
    assert settings["poll_interval"] == 0.1 and settings["stale_after"] == 365 * 24 * 3600
    assert settings["email_to"] == ["Team <ml-team@example.com>"]
    assert settings["email_from"] == "me@localhost"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nan", "'nan' is not a finite duration"),
        ("inf", "'inf' is not a finite duration"),
        ("-inf", "'-inf' is not a finite duration"),
        ("1e400", "'1e400' is not a finite duration"),
        ("1e308h", "'1e308h' is not a finite duration"),
        ("0", "'0' is too short: at least 0.1s"),
        ("0.05s", "'0.05s' is too short: at least 0.1s"),
        ("8761h", "'8761h' is too long: at most 365 days"),
        ("-3", "'-3': a duration cannot be negative"),
    ],
)
def test_durations_must_be_finite_and_a_real_wait(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        config.parse_duration(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("ml-team@example.com", "ml-team@example.com"),
        ("Team <ml-team@example.com>", "Team <ml-team@example.com>"),
        ('"Doe, Jo" <jo@example.com>', '"Doe, Jo" <jo@example.com>'),
        ("root@localhost", "root@localhost"),
    ],
)
def test_one_address_is_accepted_in_its_normal_form(text: str, normal: str) -> None:
    assert config.parse_address(text) == normal


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("a@example.com\r\nBcc: victim@example.com", "has a control or invisible character"),
        ("a@example.com\nBcc: victim@example.com", "has a control or invisible character"),
        ("a@example.com\x00", "has a control or invisible character"),
        ("a@example.com\u2028", "has a control or invisible character"),
        ("a@example.com\u202e", "has a control or invisible character"),
        ("a@example.com, b@example.com", "holds 2 addresses, expected one"),
        ("", "holds 0 addresses, expected one"),
        ("team: a@example.com;", "is an address group"),
        ("a@example.com b@example.com", "is not an email address"),
        ("lossreport", "is not an email address"),
        ("@example.com", "is not an email address"),
        ("a@", "is not an email address"),
        ("a@b@example.com", "is not an email address"),
        ("Me <me@example.com", "is not an email address"),
    ],
)
def test_anything_but_exactly_one_clean_address_is_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError) as caught:
        config.parse_address(text)
    assert str(caught.value).startswith(f"{text!r} {why}")
    assert "\n" not in str(caught.value) and "\r" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "seconds"), [("300", 300), ("30s", 30), ("10m", 600), ("2h", 7200), ("0.5", 0.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["ten", "5d", "-3", ""])
def test_bad_durations_say_what_is_wrong(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        duration(text)


def test_watch_flags_default_to_what_the_daemon_does_unasked(tmp_path: Path) -> None:
    from lossreport.cli.main import _parser, poll_interval
    from lossreport.cli.stores import POLL_SECONDS
    from lossreport.daemon.options import WatchOptions
    from lossreport.delivery.smtp import SmtpSettings

    args = _parser({}).parse_args(["watch", str(tmp_path)])
    daemon, smtp = WatchOptions(), SmtpSettings()
    for flag in ("poll", "rescan_every", "stale_after", "live_every"):
        assert getattr(args, flag) == getattr(daemon, flag), flag
    assert poll_interval(args) == daemon.poll_interval
    on_a_store = _parser({}).parse_args(["watch", "s3://runs-bucket/sae"])
    assert poll_interval(on_a_store) == POLL_SECONDS  # a listing costs requests: less often
    assert (args.workers, args.idle_restart, args.email_retry) == (
        daemon.workers,
        daemon.idle_restart,
        daemon.mail_retry,
    )
    assert (args.smtp_host, args.smtp_security, args.smtp_password_env) == (
        smtp.host,
        smtp.security,
        smtp.password_env,
    )


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (0.5, "0.5s"), (300, "5m"), (7200, "2h")])
def test_help_texts_show_durations_as_they_are_typed(seconds: float, text: str) -> None:
    assert config.format_duration(seconds) == text
    assert config.parse_duration(text) == seconds


def test_alert_settings_and_rules_load_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "lossreport.toml"
    path.write_text(
        '[alerts]\nwebhook = "https://chat.example.com/hooks/x"\nstalled = false\n'
        'webhook_token_file = "/run/credentials/token"\n'
        "[alerts.divergence]\nfactor = 3.0\n"
        '[[alerts.rule]]\nname = "high"\nloss = "mse_loss"\nabove = 0.5\n'
    )
    settings = config.load(path)
    assert settings["alert_webhook"] == "https://chat.example.com/hooks/x"
    assert settings["alert_webhook_token_file"] == Path("/run/credentials/token")
    rules = settings["alert_rules"]
    assert rules.stalled is False and rules.divergence.factor == 3.0
    assert rules.names() == ["non-finite", "divergence", "high"]


@pytest.mark.parametrize(
    "webhook",
    [
        "https://bot:S3CRET-PASS@hooks.example.com/services/T0/B0/XYZ",
        "https://hooks.example.com/services/T0/B0/S3CRET-PASS ",  # a stray space
    ],
)
def test_a_refused_webhook_in_the_config_is_not_repeated(
    webhook: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A chat's webhook URL is a secret (its path, or a user and password in it): the error
    printed it whole."""
    settings = tmp_path / "lossreport.toml"
    settings.write_text(f'[alerts]\nwebhook = "{webhook}"\n')
    assert main(["watch", str(tmp_path), "--once", "--config", str(settings)]) == 2
    error = capsys.readouterr().err
    assert f"{settings}: [alerts] webhook: expected" in error
    assert "S3CRET-PASS" not in error
