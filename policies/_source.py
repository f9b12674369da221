"""Reading model.conf and policy.csv into checked, immutable rules.

pycasbin ignores what it does not understand (a line of unknown type, a misspelt section) and
fails late (a line with a wrong field count raises only when a request reaches it). Here every
line is parsed strictly, checked against the grammar of :mod:`policies._syntax`, and compared
with pycasbin's own reading of the same text, so the rules we compile are exactly the rules
pycasbin's ``Enforcer`` would evaluate.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

from casbin.config import Config
from casbin.model import Model
from casbin.persist.adapter import load_policy_line

from policies._syntax import (
    EFFECTS,
    METHOD_WILDCARD,
    SCOPES,
    TENANT_VAR,
    Effect,
    Scope,
    keyget2_regex,
    pattern_problem,
    valid_method,
)
from policies.errors import ModelUnsupported, PolicyInvalid, PolicySyntaxError

__all__ = ["SUPPORTED_MODEL", "Link", "PolicySource", "Rule", "check_model", "load_source"]

#: The model the fast evaluator implements (section -> key -> value, whitespace-normalised).
SUPPORTED_MODEL: Final[Mapping[str, Mapping[str, str]]] = {
    "request_definition": {"r": "sub, dom, obj, act"},
    "policy_definition": {"p": "sub, dom, obj, act, eft"},
    "role_definition": {"g": "_, _"},
    "policy_effect": {"e": "some(where (p.eft == allow)) && !some(where (p.eft == deny))"},
    "matchers": {
        "m": 'g(r.sub, p.sub) && (p.act == "*" || r.act == p.act) && keyMatch2(r.obj, p.obj) '
        '&& (p.dom == "all" || (p.dom == "tenant" && r.dom != "") || (p.dom == "own" '
        '&& r.dom != "" && keyGet2(r.obj, p.obj, "tenant") == r.dom))'
    },
}

_SPACES: Final = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``p`` line. ``index`` is its position among the ``p`` lines (pycasbin's order)."""

    index: int
    line: int
    role: str
    scope: Scope
    pattern: str
    method: str
    effect: Effect

    @property
    def text(self) -> str:
        """The line as written in policy.csv (normalised spacing): what audit events name."""
        return f"p, {self.role}, {self.scope}, {self.pattern}, {self.method}, {self.effect}"

    @property
    def fields(self) -> tuple[str, str, str, str, str]:
        return (self.role, self.scope, self.pattern, self.method, self.effect)


@dataclass(frozen=True, slots=True)
class Link:
    """One ``g`` line: ``role`` inherits every rule of ``inherits``."""

    line: int
    role: str
    inherits: str

    @property
    def text(self) -> str:
        return f"g, {self.role}, {self.inherits}"


@dataclass(frozen=True, slots=True)
class PolicySource:
    """The checked content of model.conf and policy.csv, with their hashes."""

    model_text: str
    policy_text: str
    rules: tuple[Rule, ...]
    links: tuple[Link, ...]
    policy_sha256: str
    model_sha256: str
    policy_name: str = "policy.csv"

    def casbin_model(self, *, rule_indices: Collection[int] | None = None) -> Model:
        """A fresh pycasbin model holding this policy, or only some of its ``p`` lines."""
        model = Model()
        model.load_model_from_text(self.model_text)
        kept = self.rules if rule_indices is None else [self.rules[i] for i in sorted(rule_indices)]
        for rule in kept:
            model["p"]["p"].policy.append(list(rule.fields))
        for link in self.links:
            model["g"]["g"].policy.append([link.role, link.inherits])
        return model


def _normalise(value: str) -> str:
    return _SPACES.sub(" ", value.strip())


def check_model(text: str, *, name: str = "model.conf") -> None:
    """Raise :class:`ModelUnsupported` unless ``text`` is exactly the supported model."""
    try:
        config = Config.new_config_from_text(text)
    except Exception as exc:  # pycasbin raises RuntimeError and friends on malformed text
        raise ModelUnsupported(f"{name}: cannot be parsed: {exc}") from exc
    # Config keeps its sections in a private dict; there is no public way to list them.
    found = {
        section: {key: _normalise(value) for key, value in options.items()}
        for section, options in cast(dict[str, dict[str, str]], config._data).items()
    }
    expected = {
        section: {key: _normalise(value) for key, value in options.items()}
        for section, options in SUPPORTED_MODEL.items()
    }
    if found != expected:
        differing = sorted(
            f"{section}::{key}"
            for section in set(found) | set(expected)
            for key in set(found.get(section, {})) | set(expected.get(section, {}))
            if found.get(section, {}).get(key) != expected.get(section, {}).get(key)
        )
        raise ModelUnsupported(
            f"{name}: differs from the model the gateway implements in {', '.join(differing)}"
        )


def _tokens(line: str, *, name: str, number: int) -> list[str]:
    if any(char in line for char in "[]()"):
        raise PolicySyntaxError(f"{name}:{number}: brackets are not allowed in policy lines")
    return [token.strip() for token in line.split(",")]


def _rule(tokens: list[str], *, index: int, name: str, number: int) -> Rule:
    if len(tokens) != 6:
        raise PolicySyntaxError(
            f"{name}:{number}: a p line has 5 fields (role, scope, pattern, method, effect)"
        )
    _, role, scope, pattern, method, effect = tokens
    where = f"{name}:{number}"
    if not role:
        raise PolicyInvalid(f"{where}: empty role")
    if scope not in SCOPES:
        raise PolicyInvalid(f"{where}: scope {scope!r} is not one of {sorted(SCOPES)}")
    problem = pattern_problem(pattern)
    if problem is not None:
        raise PolicyInvalid(f"{where}: pattern {pattern!r}: {problem}")
    if method != METHOD_WILDCARD and not valid_method(method):
        raise PolicyInvalid(f"{where}: method {method!r} is not an upper-case HTTP method or *")
    if method == "HEAD":
        raise PolicyInvalid(f"{where}: HEAD is decided as GET; write GET")
    if effect not in EFFECTS:
        raise PolicyInvalid(f"{where}: effect {effect!r} is not allow or deny")
    if scope == "own" and keyget2_regex(pattern, TENANT_VAR)[1] is None:
        raise PolicyInvalid(f"{where}: scope own needs a :{TENANT_VAR} segment in the pattern")
    return Rule(
        index=index,
        line=number,
        role=role,
        scope=cast(Scope, scope),
        pattern=pattern,
        method=method,
        effect=cast(Effect, effect),
    )


def parse_policy(
    text: str, *, name: str = "policy.csv"
) -> tuple[tuple[Rule, ...], tuple[Link, ...]]:
    """Parse policy text strictly into rules and links (raises :class:`PolicyError`)."""
    rules: list[Rule] = []
    links: list[Link] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = _tokens(line, name=name, number=number)
        if tokens[0] == "p":
            rules.append(_rule(tokens, index=len(rules), name=name, number=number))
        elif tokens[0] == "g":
            if len(tokens) != 3 or not tokens[1] or not tokens[2]:
                raise PolicySyntaxError(f"{name}:{number}: a g line has 2 fields (role, inherits)")
            links.append(Link(line=number, role=tokens[1], inherits=tokens[2]))
        else:
            raise PolicySyntaxError(f"{name}:{number}: a line starts with p or g")
    return tuple(rules), tuple(links)


def _same_as_pycasbin(
    model_text: str, policy_text: str, rules: tuple[Rule, ...], links: tuple[Link, ...], name: str
) -> None:
    model = Model()
    model.load_model_from_text(model_text)
    for raw in policy_text.split("\n"):
        load_policy_line(raw.strip(), model)
    theirs_p = [list(map(str, p)) for p in model["p"]["p"].policy]
    theirs_g = [list(map(str, g)) for g in model["g"]["g"].policy]
    if theirs_p != [list(rule.fields) for rule in rules] or theirs_g != [
        [link.role, link.inherits] for link in links
    ]:
        raise PolicySyntaxError(f"{name}: pycasbin reads this file differently than we do")


def _read(path: Path) -> tuple[str, bytes]:
    try:
        data = path.read_bytes()
        return data.decode("utf-8"), data
    except OSError as exc:
        raise PolicySyntaxError(f"{path.name}: cannot be read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise PolicySyntaxError(f"{path.name}: is not UTF-8") from exc


def source_from_text(
    model_text: str, policy_text: str, *, policy_name: str = "policy.csv"
) -> PolicySource:
    """Check and parse model and policy text (raises :class:`PolicyError`)."""
    check_model(model_text)
    rules, links = parse_policy(policy_text, name=policy_name)
    _same_as_pycasbin(model_text, policy_text, rules, links, policy_name)
    return PolicySource(
        model_text=model_text,
        policy_text=policy_text,
        rules=rules,
        links=links,
        policy_sha256=hashlib.sha256(policy_text.encode("utf-8")).hexdigest(),
        model_sha256=hashlib.sha256(model_text.encode("utf-8")).hexdigest(),
        policy_name=policy_name,
    )


def load_source(model_path: Path, policy_path: Path) -> PolicySource:
    """Read, check and parse both files (raises :class:`PolicyError`)."""
    model_text, _ = _read(model_path)
    policy_text, _ = _read(policy_path)
    return source_from_text(model_text, policy_text, policy_name=policy_path.name)
