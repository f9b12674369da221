"""Audit events for the Onderwijs & Regio gateway and their shipping to OpenSearch."""
