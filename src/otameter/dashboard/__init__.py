"""The web dashboard: the account home page of the seed (usage, charts, apps, bundles)."""

from .routes import routes

__all__ = ["routes"]
