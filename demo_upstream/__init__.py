"""The demo platform behind the gateway: the reference route map of DESIGN.md §1 with plausible
JSON, for ``make run`` and for tests. It is a small app of its own; it imports nothing from the
gateway, as a real upstream would not.

Every answer carries ``_gateway``: the identity headers the request arrived with, and whether
the gateway's signed assertion (``X-Gateway-Assertion``) verified against the JWKS it was given.
"""

from demo_upstream._app import create_app
from demo_upstream._identity import AssertionChecker

__all__ = ["AssertionChecker", "create_app"]
