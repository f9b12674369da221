"""Benchmark: policy decisions per second and latency, fast evaluator vs pycasbin's Enforcer.

Usage: ``.venv/bin/python bench/policy.py [--quick]``

For generated policies of 100, 1,000 and 10,000 lines (1 role per 10 lines), and a worst case
for the index ("10000w": one role holding 10,000 rules that all start with /api), it times allowed
and denied requests one decision at a time through the fast evaluator (decision cache off: the
worst case, what an attacker varying paths gets; and cache on, for repeated requests) and
through pycasbin's plain ``Enforcer`` (the baseline, measured in the same run on fewer
requests: one decision costs it up to tens of milliseconds). Prints decisions/s, p50 and p99 in
microseconds, and the fast evaluator's speed-up over the Enforcer. Goal: p99 <= 50 us at
10,000 lines, allow and deny alike.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# The repository first: run as a script, bench/ is on sys.path and bench/audit.py would shadow
# the audit package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.types import Decision
from policies._evaluator import FastEvaluator
from policies._reference import ReferenceAuthorizer
from policies._source import source_from_text
from policies._store import DEFAULT_MODEL
from policies._synthetic import Request, synthetic_policy, synthetic_requests

SIZES = (100, 1_000, 10_000)
WORST = 10_000
FAST_REQUESTS = 5_000
#: pycasbin requests per (size, kind): bounded so the run ends in about a minute.
CASBIN_REQUESTS = {100: 1_000, 1_000: 200, 10_000: 30}


def _one_role_policy(lines: int) -> str:
    """One role, every rule under /api: the trie index's worst case short of identical rules."""
    rules = []
    for n in range(lines):
        effect = "deny" if n % 10 == 9 else "allow"
        rules.append(f"p, staff, all, /api/r{n}/items/:id, {'GET' if n % 3 else 'POST'}, {effect}")
    return "\n".join(rules) + "\n"


Decide = Callable[[Request], Decision]


def _split(
    fast: FastEvaluator, requests: Sequence[Request], count: int
) -> dict[str, list[Request]]:
    kinds: dict[str, list[Request]] = {"allow": [], "deny": []}
    for request in requests:
        roles, tenant, method, path = request
        decision = fast.decide(roles=roles, tenant=tenant, method=method, path=path)
        if decision.reason in ("allowed", "explicit_deny", "no_matching_rule"):
            bucket = kinds["allow" if decision.allowed else "deny"]
            if len(bucket) < count:
                bucket.append(request)
    return kinds


def _time(decide: Decide, requests: Sequence[Request]) -> tuple[float, float, float]:
    """(decisions per second, p50 us, p99 us) over one pass, one decision at a time."""
    samples = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for request in requests:
            start = clock()
            decide(request)
            samples.append(clock() - start)
    finally:
        gc.enable()
    total = sum(samples) / 1e9
    quantiles = statistics.quantiles(samples, n=100, method="inclusive")
    return len(samples) / total, quantiles[49] / 1e3, quantiles[98] / 1e3


def _decider(authorizer: FastEvaluator | ReferenceAuthorizer) -> Decide:
    def decide(request: Request) -> Decision:
        roles, tenant, method, path = request
        return authorizer.decide(roles=roles, tenant=tenant, method=method, path=path)

    return decide


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    model = DEFAULT_MODEL.read_text(encoding="utf-8")
    header = (
        f"{'lines':>6} {'kind':<5} {'engine':<16} {'n':>6} {'decisions/s':>12} "
        f"{'p50 us':>9} {'p99 us':>9} {'p50 speed-up':>13}"
    )
    print(header)
    print("-" * len(header))
    policies = [
        (str(size), size, synthetic_policy(lines=size, roles=size // 10, seed=7)) for size in SIZES
    ]
    policies.append((f"{WORST}w", WORST, _one_role_policy(WORST)))
    for label, size, text in policies:
        source = source_from_text(model, text)
        fast = FastEvaluator(source, cache_size=0)
        cached = FastEvaluator(source)
        casbin = ReferenceAuthorizer(source)
        pool = list(synthetic_requests(source, count=FAST_REQUESTS * 8 // scale, seed=8))
        for kind, requests in _split(fast, pool, FAST_REQUESTS // scale).items():
            budget = CASBIN_REQUESTS[size] // (3 if label.endswith("w") else 1)
            few = requests[: max(budget // scale, 5)]
            base = _time(_decider(casbin), few)
            fill = _decider(cached)
            for request in requests:  # fill the cache before timing it
                fill(request)
            rows = [
                ("pycasbin Enforcer", len(few), base),
                ("fast, no cache", len(requests), _time(_decider(fast), requests)),
                ("fast, cached", len(requests), _time(_decider(cached), requests)),
            ]
            for engine, count, (rate, p50, p99) in rows:
                print(
                    f"{label:>6} {kind:<5} {engine:<16} {count:>6} {rate:>12,.0f} "
                    f"{p50:>9.1f} {p99:>9.1f} {base[1] / p50:>12,.0f}x"
                )
    print("goal: p99 <= 50 us at 10,000 lines for the fast evaluator, allow and deny alike")


if __name__ == "__main__":
    main()
