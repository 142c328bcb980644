"""Errors of the policy core (pure; the admin API maps them to HTTP).

PolicyError (ValueError)
├── PolicyInvalid          a policy, rule or preset cannot be compiled or fails validation
│                          (admin API: 400, nothing is saved or half-applied)
├── PolicyTestFileInvalid  a ``policy test`` file is malformed
├── UnknownModelOrRoute    ``explain`` was asked about a name that is no route or model
│                          (admin API: 404 model_not_found)
└── UnknownTenant          ``explain`` was asked about a tenant the registry does not have
                           (admin API: 404 tenant_not_found)
"""

from __future__ import annotations


class PolicyError(ValueError):
    """Base class of every policy-core error."""


class PolicyInvalid(PolicyError):
    """A policy was rejected. ``errors`` lists each problem, naming the rule id when there is one;
    Cedar's own error text is kept verbatim."""

    def __init__(self, message: str, *, errors: tuple[str, ...] = ()):
        self.errors = errors or (message,)
        details = "" if errors == (message,) or not errors else ": " + "; ".join(errors)
        super().__init__(message + details)
        self.message = message


class PolicyTestFileInvalid(PolicyError):
    """A policy test file does not follow the documented format."""


class UnknownModelOrRoute(PolicyError, LookupError):
    """The name is no route or model of the registry snapshot."""


class UnknownTenant(PolicyError, LookupError):
    """The tenant is not in the registry snapshot."""
