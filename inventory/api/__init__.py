"""The REST API under ``/api/v1`` (``kgm serve`` mounts it): GPU devices, allocations, overview, cost.

``api_paths(...)`` gives the paths and their handlers (``kgm.web.routes.build_api_routes`` serves
them); ``TokenStore.load(path)`` the bearer tokens they check.
"""

from inventory.api.auth import Caller, Role, TokenFileError, TokenStore
from inventory.api.handlers import ApiPath, api_paths

__all__ = ["ApiPath", "Caller", "Role", "TokenFileError", "TokenStore", "api_paths"]
