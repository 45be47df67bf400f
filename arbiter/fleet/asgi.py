"""`arbiter.fleet.asgi:create_app()`: the fleet app built from the environment, for the Arbiter
master that `arbiter fleet` starts (each worker process builds its own app)."""

from __future__ import annotations

import os

from starlette.applications import Starlette

from arbiter.errors import ConfigError
from arbiter.fleet import app

CONFIG_ENV = "FLEET_CONFIG"
DB_ENV = "FLEET_DB"


def create_app() -> Starlette:
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"${CONFIG_ENV} is not set: start the fleet server with `arbiter fleet -c fleet.toml`")
    return app.create_app(path, os.environ.get(DB_ENV) or None)
