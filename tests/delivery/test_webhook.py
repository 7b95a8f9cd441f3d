"""Posting alerts to a webhook: a real HTTP server on loopback. The URL's path and the token
are secrets: no error or log line may repeat them."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossreport.delivery.webhook import TOKEN_ENV, WebhookSettings, check_url, post
from lossreport.errors import WebhookError
from tests.support.smtp import free_port
from tests.support.webhook import WebhookReceiver

SECRET_PATH = "/services/T0/B0/s3cretpath"


def test_a_post_carries_the_json_and_a_token_read_from_a_file_without_its_newline(
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t0ken\n")
    with WebhookReceiver() as hook:
        post(WebhookSettings(hook.url, token_file=token_file), {"text": "hi", "step": 7})
        (received,) = hook.posts
    assert received.body == {"text": "hi", "step": 7}
    assert received.headers["Authorization"] == "Bearer t0ken"
    assert received.headers["Content-Type"] == "application/json"


def test_a_token_with_a_control_character_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "t0k\r\nX-Injected: 1")
    with WebhookReceiver() as hook, pytest.raises(WebhookError) as caught:
        post(WebhookSettings(hook.url), {"text": "hi"})
    assert str(caught.value) == f"${TOKEN_ENV}: the webhook token holds a control character"
    assert hook.posts == []


def test_errors_name_the_host_but_never_the_path(tmp_path: Path) -> None:
    with WebhookReceiver(fail_first=1) as hook:
        url = hook.url.replace("/hooks/lossreport", SECRET_PATH)
        with pytest.raises(WebhookError) as refused:
            post(WebhookSettings(url), {"text": "hi"})
    assert str(refused.value).endswith("answered HTTP 500")
    closed = f"http://127.0.0.1:{free_port()}{SECRET_PATH}"
    with pytest.raises(WebhookError) as unreachable:
        post(WebhookSettings(closed, timeout=5), {"text": "hi"})
    assert "unreachable" in str(unreachable.value)
    for error in (refused.value, unreachable.value):
        assert "s3cret" not in str(error) and str(error).startswith("http://127.0.0.1:")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"https://hooks.example.com{SECRET_PATH} x", "holds a space or a control character"),
        (f"https://hooks.example.com{SECRET_PATH}\n", "holds a space or a control character"),
        (f"ftp://hooks.example.com{SECRET_PATH}", "is not an http:// or https:// URL"),
        (f"https://user:pw@hooks.example.com{SECRET_PATH}", "holds a user or password"),
        (f"https://hooks.example.com:port{SECRET_PATH}", "cannot be parsed"),
    ],
)
def test_a_bad_webhook_url_is_refused_without_repeating_it(url: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_url(url)
    assert message in str(caught.value) and "s3cret" not in str(caught.value)
