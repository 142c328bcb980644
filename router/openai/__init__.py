"""The OpenAI-compatible ``/v1`` surface, served as plain ASGI."""
