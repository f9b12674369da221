"""The Onderwijs & Regio access gateway: an HTTPS reverse proxy that authenticates,
authorizes and audits every request before forwarding it."""

from gateway.app import create_app

__all__ = ["create_app"]
