"""The console's browser suite uses the gateway fixtures of the router tests."""

from tests.router.conftest import gateway_factory

__all__ = ["gateway_factory"]
