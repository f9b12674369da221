"""A dev identity provider (OIDC) for demo mode and tests; refuses to run anywhere else."""

from devidp._people import PEOPLE, Person
from devidp._server import API_AUDIENCE, DevClient, create_app, for_gateway
from devidp.errors import DevIdPError, ModeNotEnabled

__all__ = [
    "API_AUDIENCE",
    "PEOPLE",
    "DevClient",
    "DevIdPError",
    "ModeNotEnabled",
    "Person",
    "create_app",
    "for_gateway",
]
