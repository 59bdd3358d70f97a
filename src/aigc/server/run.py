"""Running the app under uvicorn (used by `aigc serve` and the demo)."""

from __future__ import annotations

from collections.abc import Callable

from aigc.server.app import Settings, create_app
from aigc.workspace import Workspace


def run_server(ws: Workspace, settings: Settings, host: str = "127.0.0.1", port: int = 8000,
               announce: Callable[[str], None] | None = None) -> None:
    """Serve until Ctrl-C / SIGTERM. ``announce(url)`` is called once the socket is listening."""
    import uvicorn

    app = create_app(ws, settings)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    if announce is not None:
        startup = server.startup

        async def announced_startup(sockets=None):
            await startup(sockets=sockets)
            if server.started:
                bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
                shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
                announce(f"http://{shown}:{bound}")

        server.startup = announced_startup
    server.run()
