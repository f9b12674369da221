"""Casbin model and policies for the platform's roles and tenants, and their review tools."""
