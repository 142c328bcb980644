"""Test doubles shared across the test suite (adapters and router)."""

from tests.fakes.fake_upstream import FakeUpstream, RecordedRequest, closed_port_url, fake_upstream

__all__ = ["FakeUpstream", "RecordedRequest", "closed_port_url", "fake_upstream"]
