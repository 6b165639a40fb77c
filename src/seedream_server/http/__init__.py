"""The HTTP layer: ``create_app`` composes middlewares, error handlers, routers and rendering over the
service. Nothing below this package knows about HTTP."""

from .app import create_app

__all__ = ["create_app"]
