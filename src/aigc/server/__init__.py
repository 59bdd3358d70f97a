"""The HTTP surface: ``create_app(workspace, Settings(...))`` builds the FastAPI app."""

from aigc.server.app import Settings, create_app

__all__ = ["Settings", "create_app"]
