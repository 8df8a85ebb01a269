"""The Responses API routes: ``POST /v1/responses`` and the stored responses.

``POST`` is the chat route's handler (body limits, deadline, cancel on
disconnect, how a failure ends) running the Responses pipeline. The
``GET``/``DELETE`` routes read the store; an unknown, deleted or expired id
is a 404.
"""

from __future__ import annotations

from typing import Any

import orjson

from nanobot.errors import InvalidRequest, NotFound
from nanobot.pipeline import Pipeline
from nanobot.responses.protocol import deleted_body, item_list_body
from nanobot.responses.store import StoredResponse
from nanobot.server.chat import ChatCompletionsHandler
from nanobot.server.handlers import BaseHandler

MAX_LIST_LIMIT = 100
DEFAULT_LIST_LIMIT = 20


class ResponsesHandler(ChatCompletionsHandler):
    """``POST /v1/responses``: one turn, in the Responses wire format."""

    route = "/v1/responses"

    def pipeline(self) -> Pipeline:
        pipeline = self.state.responses_pipeline
        assert pipeline is not None, "make_app builds it"
        return pipeline


class _StoredBase(BaseHandler):
    async def _stored(self, response_id: str) -> StoredResponse:
        services = self.services
        found = await services.responses.get(response_id, services.response_cleaner.since())
        if found is None:
            raise NotFound(f"No stored response with id '{response_id}'.", code="response_not_found")
        return found


class StoredResponseHandler(_StoredBase):
    """``GET`` / ``DELETE /v1/responses/{id}``."""

    route = "/v1/responses/{id}"

    async def get(self, response_id: str) -> None:
        found = await self._stored(response_id)
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps(found.body))

    async def delete(self, response_id: str) -> None:
        services = self.services
        # Expired rows count as gone: a DELETE of one is a 404 like a GET.
        if await services.responses.get(response_id, services.response_cleaner.since()) is None:
            raise NotFound(f"No stored response with id '{response_id}'.", code="response_not_found")
        await services.responses.delete(response_id)
        self.set_header("Content-Type", "application/json")
        self.finish(deleted_body(response_id))


class InputItemsHandler(_StoredBase):
    """``GET /v1/responses/{id}/input_items``: ``order`` (default desc), ``limit`` (1-100, 20), ``after``."""

    route = "/v1/responses/{id}/input_items"

    async def get(self, response_id: str) -> None:
        order = self.get_query_argument("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest("order must be asc or desc.", param="order")
        limit = _limit(self.get_query_argument("limit", str(DEFAULT_LIST_LIMIT)))
        after = self.get_query_argument("after", None)
        items: list[dict[str, Any]] = (await self._stored(response_id)).items
        if order == "desc":
            items = items[::-1]
        if after is not None:  # an id that is not one of this response's items: nothing after it
            ids = [item.get("id") for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        self.set_header("Content-Type", "application/json")
        self.finish(item_list_body(items[:limit], len(items) > limit))


def _limit(value: str) -> int:
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidRequest(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}.", param="limit")
    return limit
