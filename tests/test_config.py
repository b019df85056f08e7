"""The AkkoLLM settings: environment variables, checks and help text."""

from __future__ import annotations

import pytest

from akko_jupyter_llm.app import AkkoLLM
from akko_jupyter_llm.config import ENV_VARS, check_settings, check_upstream_url, redact_url


@pytest.fixture
def clean_environment(monkeypatch):
    for name in ENV_VARS.values():
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults(clean_environment):
    app = AkkoLLM()
    settings, problems = check_settings(app, app._env_problems)
    assert problems == []
    assert settings.upstream_url == "http://127.0.0.1:11434/v1"
    assert settings.first_byte_timeout >= 300
    assert app.api_key == ""


def test_environment_variables_feed_defaults(clean_environment):
    clean_environment.setenv("AKKO_LLM_UPSTREAM_URL", "http://akko-akko-litellm:4000/v1/")
    clean_environment.setenv("AKKO_LLM_CONNECT_TIMEOUT", "2.5")
    clean_environment.setenv("AKKO_LLM_MAX_BODY_SIZE", "1000")
    clean_environment.setenv("AKKO_LLM_MAX_CONCURRENT_REQUESTS", "3")
    app = AkkoLLM()
    settings, problems = check_settings(app, app._env_problems)
    assert problems == []
    assert settings.upstream_url == "http://akko-akko-litellm:4000/v1"
    assert settings.connect_timeout == 2.5
    assert settings.max_body_size == 1000
    assert settings.max_concurrent_requests == 3


def test_bad_environment_value_is_a_problem(clean_environment):
    clean_environment.setenv("AKKO_LLM_IDLE_TIMEOUT", "two minutes")
    clean_environment.setenv("AKKO_LLM_MAX_BODY_SIZE", "1.5")
    app = AkkoLLM()
    _, problems = check_settings(app, app._env_problems)
    assert len(problems) == 2
    assert "AKKO_LLM_IDLE_TIMEOUT='two minutes'" in problems[0]
    assert "c.AkkoLLM.idle_timeout" in problems[0]
    assert "AKKO_LLM_MAX_BODY_SIZE='1.5' is not an integer" in problems[1]


@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://akko-akko-litellm:4000/v1", None),
        ("https://gateway.example/v1", None),
        ("akko-akko-litellm:4000/v1", "must start with http:// or https://"),
        ("ftp://gateway/v1", "must start with http:// or https://"),
        ("http:///v1", "has no host name"),
        ("http://user:sk-secret@gateway/v1", "must not contain a user name or password"),
        ("http://gateway/v1?key=1", "must not have a query string"),
        ("http://gateway:99999/v1", "not a valid URL"),
    ],
)
def test_upstream_url_checks(url, expected):
    problem = check_upstream_url(url)
    if expected is None:
        assert problem is None
    else:
        assert expected in problem
        assert "c.AkkoLLM.upstream_url" in problem
        assert "sk-secret" not in problem


def test_redact_url_hides_credentials():
    assert redact_url("http://user:sk-secret@gateway:4000/v1") == "http://***@gateway:4000/v1"
    assert redact_url("http://gateway:4000/v1") == "http://gateway:4000/v1"


@pytest.mark.parametrize("trait", sorted(ENV_VARS))
def test_every_setting_documents_its_variable(trait):
    help_text = AkkoLLM.class_traits()[trait].help
    assert ENV_VARS[trait] in help_text
    assert AkkoLLM.class_traits()[trait].metadata.get("config") is True


@pytest.mark.parametrize(
    "trait, unit",
    [
        ("connect_timeout", "Seconds"),
        ("first_byte_timeout", "Seconds"),
        ("idle_timeout", "Seconds"),
        ("max_body_size", "bytes"),
        ("max_concurrent_requests", "Requests"),
    ],
)
def test_numeric_settings_name_their_unit(trait, unit):
    assert unit in AkkoLLM.class_traits()[trait].help


@pytest.mark.parametrize(
    "trait, value, expected",
    [
        ("connect_timeout", "abc", "c.AkkoLLM.connect_timeout"),
        ("idle_timeout", [1], "c.AkkoLLM.idle_timeout"),
        ("max_body_size", "a lot", "c.AkkoLLM.max_body_size"),
        ("max_concurrent_requests", 2.5, "c.AkkoLLM.max_concurrent_requests"),
    ],
)
def test_wrongly_typed_setting_is_a_problem(clean_environment, trait, value, expected):
    """A value of the wrong type is reported like any bad value, not raised at start."""
    from traitlets.config import Config

    config = Config()
    config.AkkoLLM[trait] = value
    app = AkkoLLM(config=config)
    _, problems = check_settings(app, app._env_problems)
    assert len(problems) == 1
    assert expected in problems[0]
    assert repr(value) in problems[0]


def test_numeric_strings_from_config_accepted(clean_environment):
    from traitlets.config import Config

    config = Config()
    config.AkkoLLM.idle_timeout = "30"
    config.AkkoLLM.max_body_size = "1000"
    app = AkkoLLM(config=config)
    settings, problems = check_settings(app, app._env_problems)
    assert problems == []
    assert settings.idle_timeout == 30.0
    assert settings.max_body_size == 1000
