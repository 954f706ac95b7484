"""The [tips] section: reasons in the site's language plus [tips.<lang>] tables, validated."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from edged import config
from edged.decide.policy import Reason, Tips
from edged.errors import ConfigError


def test_plain_keys_and_language_tables(make_config: Callable[..., config.Config]) -> None:
    cfg = make_config(
        '\n[tips]\ngranted = "Hi"\n[tips.de]\ngranted = "Hallo"\nexpired = "Abgelaufen"\n'
    )
    tips = Tips.from_config(cfg.tips, cfg.site.language)
    assert tips.text(Reason.GRANTED) == "Hi"
    assert tips.text(Reason.EXPIRED, "de") == "Abgelaufen"
    assert "[tips]" in config.to_toml(config.to_dict(cfg))


def test_unknown_reasons_and_bad_languages_are_reported_together(
    make_config: Callable[..., config.Config],
) -> None:
    with pytest.raises(ConfigError) as exc:
        make_config('\n[tips]\ngranteed = "Hi"\n[tips.Deutsch]\nholliday = "Zu"\n')
    problems = "\n".join(exc.value.problems)
    assert "tips.granteed: not a decision reason (docs/decisions.md); did you mean 'granted'?" in (
        problems
    )
    assert "tips.Deutsch: not a language code" in problems
    assert "tips.Deutsch.holliday: not a decision reason" in problems
    assert "did you mean 'holiday'?" in problems


def test_a_tip_must_be_text(make_config: Callable[..., config.Config]) -> None:
    with pytest.raises(ConfigError, match=r"tips\.granted"):
        make_config("\n[tips]\ngranted = 3\n")
