"""A short soak: mixed requests from three clients, every byte checked, nothing leaked.

The full soak (10,000 requests against a server in a child process, with its
memory measured) is ``python -m tests.soak``; see tests/soak.py.
"""

from __future__ import annotations

import pytest

from tests.soak import client_headers, login_cookies, run_soak

# Enough requests to mix every route, stream kind, client and body size.
REQUESTS = 600
CONCURRENCY = 12


@pytest.mark.akko(max_concurrent_requests=CONCURRENCY)
async def test_short_soak(proxy, upstream, resources):
    cookies = await login_cookies(proxy.session, proxy.server_url, proxy.base_url, proxy.token)
    clients = client_headers(proxy.token, cookies)

    warm = await run_soak(proxy.session, proxy.endpoint, clients, CONCURRENCY * 2,
                          CONCURRENCY, seed=2)
    assert warm.failures == []
    upstream.requests.clear()
    resources.mark()

    async def forget_requests(_result) -> None:
        upstream.requests.clear()

    result = await run_soak(proxy.session, proxy.endpoint, clients, REQUESTS, CONCURRENCY,
                            seed=1, on_progress=forget_requests)

    assert result.lost == []
    assert result.corrupted == []
    assert result.unexpected_status == []
    assert result.ok == REQUESTS
    # The per-user limit equals the concurrency, so no request was turned away.
    assert set(result.statuses) == {200}
    await resources.assert_released()
