"""`drift-cpp serve`: an OpenAI-compatible HTTP server that personalizes each end user's answers.

types: the request bodies; app: the shared state, the endpoints and the serving loop."""

from .app import Server, create_app, serve

__all__ = ["Server", "create_app", "serve"]
