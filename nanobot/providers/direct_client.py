"""httpx's client, minus the auth and redirect layers where neither has work.

``AsyncClient.send`` wraps the one transport call in an auth flow (an async
generator that, with no auth set, hands the request back unchanged) and a
redirect loop (which returns at the first answer that is not a redirect):
about 15 µs of frames and generators per call, which the provider pays on
every turn. :class:`DirectAsyncClient` sends straight away when the request
carries no auth of any kind and no event hook is set, and joins httpx's own
redirect loop only when the answer is a redirect.
"""

from __future__ import annotations

from typing import Any

import httpx2
from httpx2 import USE_CLIENT_DEFAULT
from httpx2._client import ClientState


class DirectAsyncClient(httpx2.AsyncClient):
    """``httpx2.AsyncClient`` whose ``send`` goes straight to the transport when it can."""

    async def send(
        self,
        request: httpx2.Request,
        *,
        stream: bool = False,
        auth: Any = USE_CLIENT_DEFAULT,
        follow_redirects: Any = USE_CLIENT_DEFAULT,
    ) -> httpx2.Response:
        if not self._direct(request, stream, auth, follow_redirects):
            return await super().send(request, stream=stream, auth=auth, follow_redirects=follow_redirects)
        self._set_timeout(request)
        response = await self._send_single_request(request)
        if not response.has_redirect_location:
            return response
        try:
            if not self.follow_redirects:
                return self._keep_redirect(request, response)
            await response.aread()
            return await self._send_handling_redirects(
                self._build_redirect_request(request, response), follow_redirects=True, history=[response]
            )
        except BaseException:
            await response.aclose()
            raise

    def _keep_redirect(self, request: httpx2.Request, response: httpx2.Response) -> httpx2.Response:
        """What httpx does with a redirect it is not to follow: say where it leads."""
        try:
            response.next_request = self._build_redirect_request(request, response)
        except httpx2.RemoteProtocolError:
            pass
        return response

    def _direct(self, request: httpx2.Request, stream: bool, auth: Any, follow_redirects: Any) -> bool:
        """True when httpx's auth flow and hooks would change nothing."""
        return (
            stream
            and auth is USE_CLIENT_DEFAULT
            and follow_redirects is USE_CLIENT_DEFAULT
            and self._auth is None
            and self._state is ClientState.OPENED
            and not self._event_hooks["request"]
            and not self._event_hooks["response"]
            and not request.url.userinfo
        )
