"""certauth's admin, one module per concern: registry, trusted authorities, audit."""

from . import audit, authorities, registry

__all__ = ["audit", "authorities", "registry"]
