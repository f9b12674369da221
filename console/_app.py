"""The console's routes under ``/_gateway/console``, built once from the services they show.

Every route is decided by the policy first, like every other gateway endpoint (the authorize
stage runs before the console); the navigation shows exactly the pages the policy allows the
caller, asked from the same authorizer. The services then apply their own scope (a school
admin's search is limited to their tenant by :func:`audit.scope_for`).

POST routes change state. Each reads a small urlencoded form, checks the CSRF token bound to
the session (:mod:`console._csrf`) before anything else, and answers with a redirect or a
confirmation page; a refused token is a 403 page and an ``access_denied`` audit event.
Blocking store calls run in the thread pool.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from audit import AuditSink, AuditStore, BadFilter, SearchRefused, SubjectExporter
from audit.errors import StoreError
from audit.errors import StoreUnavailable as AuditStoreUnavailable
from console._audit_pages import AuditPages
from console._csrf import CSRF_FIELD, CsrfTokens
from console._holds_pages import HoldsPages
from console._i18n import chosen_language
from console._render import Form, NavItem, Page, Renderer, finish, first, read_form
from console._review_pages import PolicyHistory, ReviewPages
from console._sessions_pages import SessionsPages
from console.errors import BadForm, ConsoleError, NotPermitted, StoreUnavailable
from gateway._audit import request_event
from gateway.oidc import RevocationStore
from gateway.types import identity, state
from policies import Authorizer, PolicyStore
from retention import Holds
from retention.errors import RetentionError

__all__ = ["CONSOLE_PATH", "PAGES", "STYLESHEET_PATH", "Console"]

CONSOLE_PATH: Final = "/_gateway/console"
STYLESHEET_PATH: Final = CONSOLE_PATH + "/static/console.css"
#: The console's pages in navigation order: (path, title key, description key).
PAGES: Final = (
    (CONSOLE_PATH + "/audit", "page_audit", "page_audit_text"),
    (CONSOLE_PATH + "/holds", "page_holds", "page_holds_text"),
    (CONSOLE_PATH + "/sessions", "page_sessions", "page_sessions_text"),
    (CONSOLE_PATH + "/subjects", "page_subjects", "page_subjects_text"),
    (CONSOLE_PATH + "/policies", "page_policies", "page_policies_text"),
    (CONSOLE_PATH + "/stats", "page_stats", "page_stats_text"),
)
logger = logging.getLogger("gateway.console")

GetHandler = Callable[[Request, Page], Response]
PostHandler = Callable[[Request, Page, Form], Response]


class Console:
    """The security console: ``routes`` for the gateway's own endpoints."""

    def __init__(
        self,
        *,
        events: AuditStore,
        sink: AuditSink,
        holds: Holds,
        policy: PolicyStore,
        revocations: RevocationStore,
        session_lifetime: float,
        session_keys: Sequence[bytes],
        authorizer: Authorizer | None = None,
        stats_threshold: int = 10,
        exporter: SubjectExporter | None = None,
    ) -> None:
        self._sink = sink
        self._authorizer: Authorizer = authorizer if authorizer is not None else policy
        self._csrf = CsrfTokens(keys=session_keys)
        self.renderer = Renderer()
        self._audit = AuditPages(store=events, sink=sink, renderer=self.renderer, exporter=exporter)
        self._holds = HoldsPages(holds=holds, events=events, renderer=self.renderer)
        self._sessions = SessionsPages(
            revocations=revocations,
            lifetime=session_lifetime,
            events=events,
            sink=sink,
            renderer=self.renderer,
        )
        self._review = ReviewPages(
            policy=policy,
            history=PolicyHistory(policy_path=policy.paths["policy"]),
            store=events,
            sink=sink,
            renderer=self.renderer,
            stats_threshold=stats_threshold,
        )
        self._stylesheet = (resources.files("console") / "static" / "console.css").read_bytes()
        self._etag = '"' + hashlib.sha256(self._stylesheet).hexdigest()[:32] + '"'

    @property
    def routes(self) -> list[Route]:
        p = CONSOLE_PATH
        return [
            Route(p, self._get(self._home), methods=["GET"]),
            Route(STYLESHEET_PATH, self._stylesheet_endpoint, methods=["GET"]),
            Route(p + "/audit", self._get(self._audit.search), methods=["GET"]),
            Route(p + "/audit/export", self._get(self._audit.export), methods=["GET"]),
            Route(p + "/audit/events/{event_id}", self._get(self._audit.event), methods=["GET"]),
            Route(p + "/subjects", self._get(self._audit.subjects), methods=["GET"]),
            Route(p + "/subjects/export", self._get(self._audit.subject_export), methods=["GET"]),
            Route(p + "/holds", self._get(self._holds.list), methods=["GET"]),
            Route(p + "/holds/confirm", self._post(self._holds.confirm), methods=["POST"]),
            Route(p + "/holds", self._post(self._holds.place), methods=["POST"]),
            Route(
                p + "/holds/{hold_id}/release", self._post(self._holds.release), methods=["POST"]
            ),
            Route(p + "/sessions", self._get(self._sessions.form), methods=["GET"]),
            Route(p + "/sessions/confirm", self._post(self._sessions.confirm), methods=["POST"]),
            Route(p + "/sessions/revoke", self._post(self._sessions.revoke), methods=["POST"]),
            Route(p + "/policies", self._get(self._review.policies), methods=["GET"]),
            Route(p + "/stats", self._get(self._review.stats), methods=["GET"]),
        ]

    # --- the page context ----------------------------------------------------------------

    def allowed(self, page: Page, method: str, path: str) -> bool:
        """Whether the policy lets the caller make this request (for links and forms)."""
        who = page.who
        return self._authorizer.decide(
            roles=who.roles, tenant=who.tenant, method=method, path=path
        ).allowed

    def _page(self, request: Request) -> Page:
        who = identity(request.scope)
        lang, changed = chosen_language(request.scope, request.query_params.get("lang"))
        page = Page(
            lang=lang,
            set_lang_cookie=changed,
            who=who,
            csrf_token=self._csrf.issue(who),
            nav=[],
            path=state(request.scope).path or CONSOLE_PATH,
            query=list(request.query_params.multi_items()),
            request_id=state(request.scope).request_id,
        )
        page.nav = [NavItem(path, key) for path, key, _ in PAGES if self.allowed(page, "GET", path)]
        page.extra["may"] = lambda method, path: self.allowed(page, method, path)
        return page

    # --- endpoints -----------------------------------------------------------------------

    def _home(self, _request: Request, page: Page) -> Response:
        texts = {path: text for path, _, text in PAGES}
        return self.renderer.render(page, "home.html", texts=texts)

    async def _stylesheet_endpoint(self, request: Request) -> Response:
        headers = {"etag": self._etag, "cache-control": "private, max-age=3600"}
        if request.headers.get("if-none-match") == self._etag:
            return Response(status_code=304, headers=headers)
        return Response(self._stylesheet, media_type="text/css; charset=utf-8", headers=headers)

    def _get(self, handler: GetHandler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            page = self._page(request)
            return await self._run(page, lambda: handler(request, page))

        return endpoint

    def _post(self, handler: PostHandler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            page = self._page(request)
            try:
                form = await read_form(request)
            except BadForm as exc:
                return self._error(page, exc)
            try:
                self._csrf.check(request.scope, page.who, first(form, CSRF_FIELD))
            except ConsoleError as exc:
                self._sink.emit(
                    request_event(
                        request.scope,
                        action="access_denied",
                        category=["web"],
                        event_type=["denied"],
                        outcome="failure",
                        reason="csrf_rejected",
                        **{
                            "http.response.status_code": 403,
                            "labels": {"csrf": exc.message, "via": "console"},
                        },
                    )
                )
                return self._error(page, exc)
            return await self._run(page, lambda: handler(request, page, form))

        return endpoint

    async def _run(self, page: Page, call: Callable[[], Response]) -> Response:
        try:
            return finish(page, await run_in_threadpool(call))
        except ConsoleError as exc:
            return self._error(page, exc)
        except BadFilter as exc:
            return self._error(page, BadForm(str(exc)))
        except SearchRefused as exc:
            return self._error(page, NotPermitted(str(exc)))
        except RetentionError as exc:
            return self._error(page, BadForm(str(exc)) if exc.status_code == 400 else exc)
        except (AuditStoreUnavailable, StoreError):
            logger.warning("console: the audit store cannot be reached", exc_info=True)
            return self._error(page, StoreUnavailable())

    def _error(self, page: Page, exc: ConsoleError | RetentionError) -> Response:
        code = exc.code if isinstance(exc, ConsoleError) else "console_error"
        status = exc.status_code
        detail = exc.message if isinstance(exc, BadForm | NotPermitted) else None
        return self.renderer.render(
            page, "error.html", status=status, code=code, detail=detail or None
        )
