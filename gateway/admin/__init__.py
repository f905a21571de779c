"""The admin API: its own listener, token, problem+json errors and OpenAPI document."""

from gateway.admin.app import create_admin_app

__all__ = ["create_admin_app"]
