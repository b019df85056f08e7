"""An HTTPS upstream on 127.0.0.1 whose certificate comes from a test CA.

`start_https_upstream` serves ``GET /v1/models`` with one model over TLS, for
tests of certificate verification. It records the ``Authorization`` header of
each request, so a test can check where the gateway key went.
"""

from __future__ import annotations

import ssl

from aiohttp import web


async def _start(context: ssl.SSLContext, seen: list) -> tuple[web.AppRunner, int]:
    async def models(request):
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"object": "list", "data": [{"id": "qwen2.5:3b"}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


def start_https_upstream(loop, authority, host_name: str = "127.0.0.1"):
    """Start the upstream in ``loop`` with a certificate for ``host_name``.

    ``authority`` is a `trustme.CA`. Returns ``(runner, url, seen)``, where
    ``url`` ends in ``/v1`` and ``seen`` lists the Authorization headers received;
    stop it with ``loop.run_until_complete(runner.cleanup())``.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(host_name).configure_cert(context)
    seen: list = []
    runner, port = loop.run_until_complete(_start(context, seen))
    return runner, f"https://127.0.0.1:{port}/v1", seen
