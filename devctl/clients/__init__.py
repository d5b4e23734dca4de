"""Client factories: the one place that turns settings + endpoints into clients."""

from devctl.clients.endpoints import Endpoints

__all__ = ["Endpoints"]
