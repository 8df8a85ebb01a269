"""The OpenAI Responses API (``/v1/responses``): wire format, request rules, stored responses."""
