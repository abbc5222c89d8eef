"""The HTTP edge of kgm serve: one bounded JSON endpoint (endpoint.py) behind /mutate, /extender/* and
/api/v1 (routes.py), the body read and JSON answers it uses (asgi.py), and their metrics (metrics.py)."""
