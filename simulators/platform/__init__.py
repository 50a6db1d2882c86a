"""The bundled case platform: a small 数字城管 workflow API (FastAPI + SQLite)."""
