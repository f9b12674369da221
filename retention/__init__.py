"""Retention of audit events: pruning and minimisation, never past an incident hold."""
