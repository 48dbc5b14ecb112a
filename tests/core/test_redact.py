"""stablenew.redact: URLs lose their userinfo (user and password), nothing else."""

from __future__ import annotations

import pytest

from stablenew.redact import redact_text, redact_url, split_credentials


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:SECRET@127.0.0.1:7860", "http://127.0.0.1:7860"),
        ("https://user:p%40ss@host/sdapi/v1?x=1", "https://host/sdapi/v1?x=1"),
        ("http://user:p@ss@host:1/", "http://host:1/"),  # an "@" left unescaped goes too
        ("http://user@host", "http://host"),
        ("http://127.0.0.1:7860", "http://127.0.0.1:7860"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_takes_userinfo_out_of_every_url() -> None:
    text = "WebUI at http://a:S1@h:1/x refuses us; tried https://b:S2@k too (mail me@example)"
    assert redact_text(text) == (
        "WebUI at http://h:1/x refuses us; tried https://k too (mail me@example)"
    )


def test_split_credentials() -> None:
    assert split_credentials("http://u:p%40w@h:2/a") == ("http://h:2/a", ("u", "p@w"))
    assert split_credentials("http://h:2") == ("http://h:2", None)
