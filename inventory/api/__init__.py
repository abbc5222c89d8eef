"""The REST API under ``/api/v1`` (``kgm serve`` mounts it): GPU devices, allocations, overview, cost.

``build_api_routes(...)`` gives the routes; ``TokenStore.load(path)`` the bearer tokens they check.
"""

from inventory.api.auth import Caller, Role, TokenFileError, TokenStore
from inventory.api.handlers import build_api_routes

__all__ = ["Caller", "Role", "TokenFileError", "TokenStore", "build_api_routes"]
