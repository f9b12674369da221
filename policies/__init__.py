"""Casbin model and policies for the platform's roles and tenants, and their review tools."""

from policies._types import Authorizer

__all__ = ["Authorizer"]
