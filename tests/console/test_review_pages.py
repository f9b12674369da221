"""Policy review and statistics in the console."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from console import CONSOLE_PATH
from console._review_pages import PolicyHistory
from console.errors import NotFound
from policies._source import load_source
from policies._store import DEFAULT_MODEL, DEFAULT_POLICY
from tests.console._support import World, person, world

POLICIES = CONSOLE_PATH + "/policies"


@pytest.fixture
def reviewer(tmp_path: Path) -> Iterator[World]:
    yield from world(tmp_path, person("compliance_reviewer", subject="cr"))


class TestPolicyReview:
    def test_matrix_lists_roles_and_routes(self, reviewer: World) -> None:
        """The matrix has a column per role and the console's own routes among its rows."""
        page = reviewer.client.get(POLICIES).text
        assert '<th scope="col">incident_responder</th>' in page
        assert "/_gateway/console/holds/:id/release" in page

    def test_category_view(self, reviewer: World) -> None:
        """The category view says who reaches pupils' platform usage (b) through which family."""
        page = reviewer.client.get(POLICIES, params={"view": "categories"}).text
        assert "b) gebruik van het platform" in page
        assert "own_registrations" in page

    def test_lint_findings(self, reviewer: World) -> None:
        """The lint view shows the policy's findings."""
        page = reviewer.client.get(POLICIES, params={"view": "lint"}).text
        assert "wildcard_path" in page

    def test_unknown_version_is_404(self, reviewer: World) -> None:
        """A version id that is not known (or not well-formed) is a 404 page."""
        answer = reviewer.client.get(POLICIES, params={"view": "diff", "against": "git:--help"})
        assert answer.status_code == 404

    def test_unknown_view_is_400(self, reviewer: World) -> None:
        """A view that does not exist is a 400."""
        assert reviewer.client.get(POLICIES, params={"view": "x"}).status_code == 400


class TestPolicyHistory:
    def test_diff_against_a_git_revision(self, tmp_path: Path) -> None:
        """A policy in a git work tree offers its commits; the diff says what changed."""
        repo = tmp_path / "repo"
        repo.mkdir()
        policy = repo / "policy.csv"
        text = DEFAULT_POLICY.read_text()
        policy.write_text(
            text.replace("p, compliance_reviewer, all, /_gateway/stats, GET, allow\n", "")
        )
        git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "add", "policy.csv"], check=True)
        subprocess.run([*git, "commit", "-qm", "older policy"], check=True)
        policy.write_text(text)
        history = PolicyHistory(policy_path=policy)
        current = load_source(DEFAULT_MODEL, policy)
        [version] = history.versions(current)
        assert version.id.startswith("git:") and "older policy" in version.label
        old = history.source(version.id, current.model_text)
        assert len(old.rules) == len(current.rules) - 1

    def test_no_git_no_versions(self, tmp_path: Path) -> None:
        """A policy outside any git work tree offers no git versions, and a git id is 404."""
        policy = tmp_path / "policy.csv"
        policy.write_text(DEFAULT_POLICY.read_text())
        history = PolicyHistory(policy_path=policy)
        current = load_source(DEFAULT_MODEL, policy)
        assert history.versions(current) == []
        with pytest.raises(NotFound):
            history.source("git:" + "a" * 40, current.model_text)

    def test_versions_seen_running_are_offered(self, tmp_path: Path) -> None:
        """A version that ran before (remembered) can be compared with; the current one not."""
        history = PolicyHistory(policy_path=tmp_path / "policy.csv")
        current = load_source(DEFAULT_MODEL, DEFAULT_POLICY)
        history.remember(current)
        assert history.versions(current) == []


class TestStatistics:
    def test_small_counts_suppressed(self, reviewer: World) -> None:
        """Counts below the threshold are shown as <10, never as the number."""
        reviewer.add_events(*({"organization.id": "school-a"} for _ in range(3)))
        page = reviewer.client.get(
            CONSOLE_PATH + "/stats", params={"row": "organization.id", "column": "event.action"}
        ).text
        table = page.split('id="stats-table"', 1)[1]
        assert "&lt;10" in table
        assert re.search(r"<td>3</td>", table) is None

    def test_bad_key_is_400(self, reviewer: World) -> None:
        """An unknown count key is a 400 naming it."""
        answer = reviewer.client.get(CONSOLE_PATH + "/stats", params={"row": "user.id"})
        assert answer.status_code == 400
        assert "user.id" in answer.text

    def test_statistics_are_audited(self, reviewer: World) -> None:
        """Each statistics page is an audit event of kind statistics."""
        reviewer.client.get(CONSOLE_PATH + "/stats")
        [event] = reviewer.emitted("audit_search")
        assert event["labels"]["kind"] == "statistics"
