"""The policy core: which deployments may serve a request, and why. Pure: no web framework,
database session or HTTP client; plain data in (registry snapshot, tenant, request context),
decisions with rule ids and reasons out.

    compile_policy(format, source)     YAML rules / raw Cedar -> validated CompiledPolicy
    PolicyEngine.build(snapshot, policy)   one engine per (policy version, registry version)
    eligible_deployments(engine, ...)  THE seam the router calls before every attempt
    explain(...) / what_if(...) / run_policy_tests(...)   the compliance officer's tools

Read in this order: ``schema`` (what a policy can see), ``facts`` (how unknown is
represented), ``conditions`` and ``rules`` (what each rule means), ``engine``.
"""

from router.policy.compiler import DEFAULT_POLICY_SOURCE, CompiledPolicy, compile_policy
from router.policy.context import RequestContext
from router.policy.engine import CandidateDecision, PolicyEngine, eligible_deployments
from router.policy.errors import (
    PolicyError,
    PolicyInvalid,
    PolicyTestFileInvalid,
    UnknownModelOrRoute,
    UnknownTenant,
)
from router.policy.explain import (
    CandidateExplanation,
    Explanation,
    candidate_deployments,
    explain,
)
from router.policy.facts import CedarValue, DeploymentFacts
from router.policy.policy_tests import (
    PolicyTestResult,
    TestReport,
    run_policy_tests,
    tested_tenants,
)
from router.policy.presets import Preset, list_presets, load_preset, preset_policy_source
from router.policy.schema import CEDAR_SCHEMA
from router.policy.whatif import WhatIfChange, WhatIfReport, what_if

__all__ = [
    "CEDAR_SCHEMA",
    "DEFAULT_POLICY_SOURCE",
    "CandidateDecision",
    "CandidateExplanation",
    "CedarValue",
    "CompiledPolicy",
    "DeploymentFacts",
    "Explanation",
    "PolicyEngine",
    "PolicyError",
    "PolicyInvalid",
    "PolicyTestFileInvalid",
    "PolicyTestResult",
    "Preset",
    "RequestContext",
    "TestReport",
    "UnknownModelOrRoute",
    "UnknownTenant",
    "WhatIfChange",
    "WhatIfReport",
    "candidate_deployments",
    "compile_policy",
    "eligible_deployments",
    "explain",
    "list_presets",
    "load_preset",
    "preset_policy_source",
    "run_policy_tests",
    "tested_tenants",
    "what_if",
]
