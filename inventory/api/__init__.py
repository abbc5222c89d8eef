"""The REST API under ``/api/v1`` (``kgm serve`` mounts it): GPU devices, allocations, overview, cost.

``api_paths(...)`` gives the paths and their handlers (``kgm.web.routes.build_api_routes`` serves
them); an :class:`Authenticator` (``TokenStore.load(path)``, or the Kubernetes and OIDC ones of
``inventory.api.auth``) who calls and what they may do.
"""

from inventory.api.auth import Authenticator, Caller, Role, TokenFileError, TokenStore
from inventory.api.handlers import ApiPath, api_paths

__all__ = ["ApiPath", "Authenticator", "Caller", "Role", "TokenFileError", "TokenStore", "api_paths"]
