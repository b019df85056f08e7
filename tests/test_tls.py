"""TLS to the upstream: verified by default, a CA bundle setting, and turning it off."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from akko_jupyter_llm.app import AkkoLLM
from akko_jupyter_llm.config import check_settings
from tests.conftest import GATEWAY_KEY, apply_akko_marker
from tests.upstreams.https import start_https_upstream


@pytest.fixture(scope="module")
def authority():
    import trustme

    return trustme.CA()


@pytest.fixture
def ca_file(authority, tmp_path):
    path = tmp_path / "ca.crt"
    authority.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def https_upstream(jp_asyncio_loop, authority):
    """An HTTPS upstream on 127.0.0.1 with a certificate from a private CA."""
    runner, url, seen = start_https_upstream(jp_asyncio_loop, authority, "127.0.0.1")
    yield SimpleNamespace(url=url, authorization_seen=seen)
    jp_asyncio_loop.run_until_complete(runner.cleanup())


@pytest.fixture
def wrong_name_upstream(jp_asyncio_loop, authority):
    """An HTTPS upstream whose certificate names another host than 127.0.0.1."""
    runner, url, seen = start_https_upstream(jp_asyncio_loop, authority, "gateway.test")
    yield SimpleNamespace(url=url, authorization_seen=seen)
    jp_asyncio_loop.run_until_complete(runner.cleanup())


@pytest.fixture
def akko_settings(request, https_upstream, ca_file, gateway_key_file):
    """The settings of the ``akko`` marker, where ``ca_bundle="CA"`` names the CA file."""
    settings = {"upstream_url": https_upstream.url, "api_key_file": str(gateway_key_file)}
    apply_akko_marker(request, settings)
    if settings.get("ca_bundle") == "CA":
        settings["ca_bundle"] = str(ca_file)
    return settings


async def _get_models(proxy):
    async with proxy.request("GET", "models") as response:
        return response.status, await response.json()


async def test_verified_by_default(proxy, https_upstream):
    status, document = await _get_models(proxy)
    assert status == 502
    error = document["error"]
    assert error["code"] == "upstream_tls_error"
    assert "certificate verify failed" in error["message"]
    assert "c.AkkoLLM.ca_bundle" in error["message"]
    assert "AKKO_LLM_CA_BUNDLE" in error["message"]
    assert "signed by a CA that this machine trusts" in error["message"]
    # The key never reached a server whose certificate was not trusted.
    assert https_upstream.authorization_seen == []


@pytest.mark.akko(ca_bundle="CA")
async def test_ca_bundle_trusts_private_ca(proxy, https_upstream, caplog):
    status, document = await _get_models(proxy)
    assert status == 200
    assert document["data"][0]["id"] == "qwen2.5:3b"
    assert https_upstream.authorization_seen == [f"Bearer {GATEWAY_KEY}"]


class TestWrongHostName:
    @pytest.fixture
    def akko_settings(self, wrong_name_upstream, ca_file, gateway_key_file):
        return {
            "upstream_url": wrong_name_upstream.url,
            "api_key_file": str(gateway_key_file),
            "ca_bundle": str(ca_file),
        }

    async def test_host_name_checked(self, proxy, wrong_name_upstream):
        status, document = await _get_models(proxy)
        assert status == 502
        assert document["error"]["code"] == "upstream_tls_error"
        assert wrong_name_upstream.authorization_seen == []


@pytest.mark.akko(verify_tls=False)
async def test_verification_off_connects_and_warns(capsys, proxy, https_upstream):
    status, _document = await _get_models(proxy)
    assert status == 200
    # The extension's logger writes to stderr and does not propagate to
    # caplog while the server starts; capsys is set up before the server.
    start_log = capsys.readouterr().err.splitlines()
    warnings = [line for line in start_log if line.startswith("[W") and "verify_tls" in line]
    assert len(warnings) == 1
    assert https_upstream.url in warnings[0]
    assert "AKKO_LLM_VERIFY_TLS" in warnings[0]


async def test_verification_on_does_not_warn(capsys, proxy, https_upstream):
    await _get_models(proxy)
    start_log = capsys.readouterr().err
    assert "proxying" in start_log
    assert "verify_tls" not in start_log


@pytest.mark.akko(ca_bundle="/nonexistent/akko-llm/ca.crt")
async def test_missing_ca_bundle_reported(proxy, https_upstream):
    status, document = await _get_models(proxy)
    assert status == 503
    error = document["error"]
    assert error["code"] == "proxy_misconfigured"
    assert "/nonexistent/akko-llm/ca.crt" in error["message"]
    assert "c.AkkoLLM.ca_bundle" in error["message"]
    assert https_upstream.authorization_seen == []


# ------------------------------------------------------------- settings


def _app(**settings) -> AkkoLLM:
    app = AkkoLLM()
    for name, value in settings.items():
        setattr(app, name, value)
    return app


def test_defaults_verify_with_system_cas(monkeypatch):
    monkeypatch.delenv("AKKO_LLM_CA_BUNDLE", raising=False)
    monkeypatch.delenv("AKKO_LLM_VERIFY_TLS", raising=False)
    app = _app()
    settings, problems = check_settings(app, app._env_problems)
    assert problems == []
    assert settings.verify_tls is True
    assert settings.ca_bundle == ""


def test_settings_from_environment(monkeypatch, ca_file):
    monkeypatch.setenv("AKKO_LLM_CA_BUNDLE", str(ca_file))
    monkeypatch.setenv("AKKO_LLM_VERIFY_TLS", "false")
    app = _app()
    settings, problems = check_settings(app, app._env_problems)
    assert problems == []
    assert settings.ca_bundle == str(ca_file)
    assert settings.verify_tls is False


@pytest.mark.parametrize("raw", ["maybe", "2"])
def test_bad_verify_environment_reported(monkeypatch, raw):
    monkeypatch.setenv("AKKO_LLM_VERIFY_TLS", raw)
    app = _app()
    settings, problems = check_settings(app, app._env_problems)
    assert len(problems) == 1
    assert f"AKKO_LLM_VERIFY_TLS={raw!r}" in problems[0]
    assert "true or false" in problems[0]
    # Verification stays on while the setting is wrong.
    assert settings.verify_tls is True


def test_wrongly_typed_verify_setting_reported():
    app = _app(verify_tls="sometimes")
    settings, problems = check_settings(app, app._env_problems)
    assert len(problems) == 1
    assert "c.AkkoLLM.verify_tls" in problems[0]
    assert "'sometimes'" in problems[0]
    assert settings.verify_tls is True


def test_ca_bundle_not_pem_reported(tmp_path):
    path = tmp_path / "ca.crt"
    path.write_text("not a certificate\n")
    app = _app(ca_bundle=str(path))
    _settings, problems = check_settings(app, app._env_problems)
    assert len(problems) == 1
    assert str(path) in problems[0]
    assert "AKKO_LLM_CA_BUNDLE" in problems[0]
