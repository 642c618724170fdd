"""Named control tokens: the file's form, and finding a token's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from empath.control import tokens
from empath.core import errors, settings


def test_a_tokens_file_is_name_colon_token_lines() -> None:
    text = "# comment\nalice:aaaaaaaaaaaaaaaa\n\n ci-bot : bbbbbbbbbbbbbbbb:with-colon \n"
    assert tokens.parse(text, source="f") == {
        "alice": "aaaaaaaaaaaaaaaa",
        "ci-bot": "bbbbbbbbbbbbbbbb:with-colon",
    }


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("alice\n", "f line 1: expected name:token"),
        ("alice:short\n", "f line 1: expected name:token"),
        ("\nbad name:aaaaaaaaaaaaaaaa\n", "f line 2: expected name:token"),
        ("a:aaaaaaaaaaaaaaaa\na:bbbbbbbbbbbbbbbb\n", "f line 2: 'a' given twice"),
    ],
)
def test_a_wrong_line_is_named_without_its_token(text: str, reason: str) -> None:
    with pytest.raises(errors.ConfigurationError) as refused:
        tokens.parse(text, source="f")
    assert str(refused.value).startswith(reason)
    assert "aaaaaaaaaaaaaaaa" not in str(refused.value)


def test_the_single_token_is_named_default_beside_the_named_ones(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("alice:aaaaaaaaaaaaaaaa\n")
    known = tokens.load(settings.Settings(control_token="d" * 20, control_tokens_file=path))
    assert known.names == ["alice", "default"]
    assert known.name_of("d" * 20) == "default"
    assert known.name_of("aaaaaaaaaaaaaaaa") == "alice"
    assert known.name_of("aaaaaaaaaaaaaaab") is None
    assert known.name_of("") is None


def test_a_named_token_may_not_take_the_name_default(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("default:aaaaaaaaaaaaaaaa\n")
    with pytest.raises(errors.ConfigurationError, match="'default'"):
        tokens.load(settings.Settings(control_token="d" * 20, control_tokens_file=path))
