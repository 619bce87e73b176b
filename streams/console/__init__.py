"""The safety managers' web console: FastAPI with server-rendered pages and a JSON API (see `app.py`)."""
