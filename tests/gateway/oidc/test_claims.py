"""gateway/oidc/_claims.py: claims to roles and tenant per issuer, and local grants."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from audit import MemorySink
from gateway.oidc import Grants, load_claims
from gateway.oidc._claims import resolve_roles
from gateway.oidc.errors import ConfigError, NoRoleMapping
from tests.gateway.oidc._support import Clock

ROOT = Path(__file__).resolve().parents[3]

CLAIMS = """
[mappings.surf]
roles_claim = "eduperson_affiliation"
tenant_claim = "schac_home_organization"
[mappings.surf.roles]
student = "student"
employee = "teacher"

[mappings.entree]
roles_claim = "role"
tenant_claim = "brin"
[mappings.entree.roles]
leerling = "student"
[mappings.entree.tenants]
"00AA" = "school-a"
"""


def _claims(tmp_path: Path, text: str = CLAIMS):  # type: ignore[no-untyped-def]
    path = tmp_path / "claims.toml"
    path.write_text(text)
    return load_claims(path)


class TestClaimMapping:
    def test_list_claim_maps_roles_and_tenant(self, tmp_path: Path) -> None:
        """A multi-valued affiliation maps each known value; the tenant claim is the tenant."""
        mapping = _claims(tmp_path)["surf"]
        roles, tenant = mapping.map(
            {"eduperson_affiliation": ["employee", "member"], "schac_home_organization": "Sch-A"}
        )
        assert roles == {"teacher"}
        assert tenant == "sch-a"

    def test_tenant_table(self, tmp_path: Path) -> None:
        """With a tenants table, only listed values become tenants."""
        mapping = _claims(tmp_path)["entree"]
        assert mapping.map({"role": "leerling", "brin": "00AA"}) == ({"student"}, "school-a")
        assert mapping.map({"role": "leerling", "brin": "99ZZ"}) == ({"student"}, None)

    @pytest.mark.parametrize("tenant", ["a*b", "a/b", "*", "", "a b", "x" * 80])
    def test_pattern_characters_never_a_tenant(self, tmp_path: Path, tenant: str) -> None:
        """Tenant values that could act as patterns or separators are dropped."""
        mapping = _claims(tmp_path)["surf"]
        _, found = mapping.map(
            {"eduperson_affiliation": "student", "schac_home_organization": tenant}
        )
        assert found is None

    def test_wrong_claim_type_maps_nothing(self, tmp_path: Path) -> None:
        """A claim of an unexpected type maps to no role."""
        mapping = _claims(tmp_path)["surf"]
        assert mapping.map({"eduperson_affiliation": {"x": 1}})[0] == frozenset()

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("[mappings.x]\nroles = {}\n", "roles_claim"),
            ('[mappings.x]\nroles_claim = "r"\n[mappings.x.roles]\na = "Bad Role"\n', "role name"),
            ('[mappings.x]\nroles_claim="r"\nextra=1\n[mappings.x.roles]\n', "unknown keys"),
            ("mappings = 1\n", "expected"),
            ("[mappings\n", "not valid TOML"),
        ],
    )
    def test_bad_file(self, tmp_path: Path, text: str, message: str) -> None:
        """A bad claims file is an error naming the entry."""
        with pytest.raises(ConfigError, match=message):
            _claims(tmp_path, text)

    def test_shipped_claims_file_loads(self) -> None:
        """policies/claims.toml is valid and maps SURFconext staff to teacher."""
        mappings = load_claims(ROOT / "policies" / "claims.toml")
        roles, _ = mappings["surfconext"].map({"eduperson_affiliation": ["employee"]})
        assert roles == {"teacher"}


def _grants(tmp_path: Path, text: str, sink: MemorySink, clock: Clock) -> Grants:
    path = tmp_path / "grants.toml"
    path.write_text(text)
    return Grants(path=path, sink=sink, clock=clock)


GRANT = '[[grants]]\nissuer = "surf"\nsubject = "s1"\ntenant = "school-a"\nroles = ["{role}"]\n'


class TestGrants:
    def test_roles_for_tenant(self, tmp_path: Path) -> None:
        """A grant applies in its tenant only."""
        g = _grants(tmp_path, GRANT.format(role="lob_coordinator"), MemorySink(), Clock())
        assert g.roles_for("surf", "s1", "school-a") == {"lob_coordinator"}
        assert g.roles_for("surf", "s1", "school-b") == frozenset()
        assert g.roles_for("other", "s1", "school-a") == frozenset()

    def test_tenantless_grant_applies_everywhere(self, tmp_path: Path) -> None:
        """A grant without a tenant applies whatever the session's tenant."""
        text = '[[grants]]\nissuer = "staff"\nsubject = "p"\nroles = ["security_officer"]\n'
        g = _grants(tmp_path, text, MemorySink(), Clock())
        assert g.roles_for("staff", "p", None) == {"security_officer"}

    def test_change_reloaded_and_audited(self, tmp_path: Path) -> None:
        """A changed file takes effect without a restart; each change is an audit event."""
        sink, clock = MemorySink(), Clock()
        g = _grants(tmp_path, GRANT.format(role="lob_coordinator"), sink, clock)
        path = tmp_path / "grants.toml"
        path.write_text(GRANT.format(role="school_admin"))
        os.utime(path, ns=(1, 1))
        clock.advance(2)
        assert g.roles_for("surf", "s1", "school-a") == {"school_admin"}
        assert sorted(sink.actions()) == ["role_granted", "role_revoked"]
        granted = next(e for e in sink.events if e["event.action"] == "role_granted")
        assert granted["user.target.id"] == "surf|s1"
        assert granted["user.target.roles"] == ["school_admin"]
        assert granted["organization.id"] == "school-a"

    def test_same_answer_object_until_the_grants_change(self, tmp_path: Path) -> None:
        """roles_for answers with the same object until a reload, then with the new roles."""
        sink, clock = MemorySink(), Clock()
        g = _grants(tmp_path, GRANT.format(role="lob_coordinator"), sink, clock)
        first = g.roles_for("surf", "s1", "school-a")
        assert g.roles_for("surf", "s1", "school-a") is first
        path = tmp_path / "grants.toml"
        path.write_text(GRANT.format(role="school_admin"))
        os.utime(path, ns=(1, 1))
        clock.advance(2)
        assert g.roles_for("surf", "s1", "school-a") == {"school_admin"}

    def test_broken_reload_keeps_previous(self, tmp_path: Path) -> None:
        """A file broken while running keeps the old grants and is reported."""
        sink, clock = MemorySink(), Clock()
        g = _grants(tmp_path, GRANT.format(role="lob_coordinator"), sink, clock)
        (tmp_path / "grants.toml").write_text("[[grants]\n")
        os.utime(tmp_path / "grants.toml", ns=(1, 1))
        clock.advance(2)
        assert g.roles_for("surf", "s1", "school-a") == {"lob_coordinator"}
        assert sink.actions() == ["grants_reload_failed"]

    def test_broken_file_at_start_is_fatal(self, tmp_path: Path) -> None:
        """A broken grants file at start-up is an error."""
        with pytest.raises(ConfigError):
            _grants(tmp_path, '[[grants]]\nissuer = "x"\n', MemorySink(), Clock())

    def test_shipped_grants_file_loads(self) -> None:
        """policies/grants.toml is valid."""
        Grants(path=ROOT / "policies" / "grants.toml", sink=MemorySink())


class TestResolveRoles:
    def test_no_role_mapping(self, tmp_path: Path) -> None:
        """No mapped role and no grant: login refused with no_role_mapping."""
        mapping = _claims(tmp_path)["surf"]
        g = _grants(tmp_path, "", MemorySink(), Clock())
        with pytest.raises(NoRoleMapping):
            resolve_roles(mapping=mapping, grants=g, idp="surf", subject="s", claims={"x": "y"})

    def test_grant_supplies_tenant(self, tmp_path: Path) -> None:
        """No asserted tenant and grants in exactly one tenant: that tenant is taken."""
        mapping = _claims(tmp_path)["surf"]
        g = _grants(tmp_path, GRANT.format(role="supplier"), MemorySink(), Clock())
        federated, roles, tenant = resolve_roles(
            mapping=mapping, grants=g, idp="surf", subject="s1", claims={}
        )
        assert federated == frozenset()
        assert roles == {"supplier"}
        assert tenant == "school-a"
