"""Fixtures of the policy tests: the shipped files, loaded once."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies._evaluator import FastEvaluator
from policies._reference import ReferenceAuthorizer
from policies._resources import Resources
from policies._source import PolicySource, load_source

POLICIES = Path(__file__).resolve().parents[2] / "policies"
MODEL = POLICIES / "model.conf"
POLICY = POLICIES / "policy.csv"
RESOURCES = POLICIES / "resources.toml"
TABLE = POLICIES / "policy_tests.csv"


@pytest.fixture(scope="session")
def shipped() -> PolicySource:
    return load_source(MODEL, POLICY)


@pytest.fixture(scope="session")
def fast(shipped: PolicySource) -> FastEvaluator:
    return FastEvaluator(shipped)


@pytest.fixture(scope="session")
def reference(shipped: PolicySource) -> ReferenceAuthorizer:
    return ReferenceAuthorizer(shipped)


@pytest.fixture(scope="session")
def resources() -> Resources:
    return Resources.from_file(RESOURCES)
