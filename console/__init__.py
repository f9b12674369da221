"""The security console: server-rendered pages under ``/_gateway/console`` for security staff,
incident responders, school administrators and compliance reviewers.

The gateway wires it (``gateway/_wiring.py``) when OIDC login is configured::

    console = Console(events=store, sink=pipeline, holds=holds, policy=policy_store,
                      revocations=oidc.revocations, session_lifetime=..., session_keys=[...])
    routes = [..., *console.routes]

Pages call the audit, retention and policy services directly; the policy decides every route
(policies/policy.csv), state changes are CSRF-protected POSTs and audit events, and every page
carries a strict Content-Security-Policy (no script, no inline style, no other origin).
"""

from console._app import CONSOLE_PATH, PAGES, STYLESHEET_PATH, Console
from console._csrf import CSRF_FIELD, CsrfTokens
from console._render import CONSOLE_CSP

__all__ = [
    "CONSOLE_CSP",
    "CONSOLE_PATH",
    "CSRF_FIELD",
    "PAGES",
    "STYLESHEET_PATH",
    "Console",
    "CsrfTokens",
]
