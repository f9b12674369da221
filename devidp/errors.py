"""Errors of the dev identity provider.

DevIdPError            base
└── ModeNotEnabled     started without demo or test mode explicitly on
"""

from __future__ import annotations


class DevIdPError(Exception):
    """Base of the dev identity provider's errors."""


class ModeNotEnabled(DevIdPError):
    """The dev identity provider refuses to run outside demo or test mode."""
