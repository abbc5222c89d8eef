"""Throughput and latency of ``POST /mutate`` next to a no-op endpoint on the same HTTPS server.

The server is a subprocess assembled like ``kgm serve`` (``kgm.server.build_app`` over the demo
inventory, uvicorn, one worker, TLS from ``ReloadingTLS``), plus ``POST /noop``: it reads the same
body and answers a fixed allow, so ``noop`` is the floor (TLS, HTTP parsing, routing, body read) and
the gap between the two rows is what admission itself costs.

Run from the repository root: ``.venv/bin/python -m benchmarks.webhook`` (``--help`` for the flags).

Modules, one concept each: ``server`` (the subprocess: the production app plus ``/noop``), ``process``
(starting and stopping it from the parent), ``payload`` (the review sent), ``load`` (the client's
closed and open loops, and the rounds), ``report`` (the table and the JSON), ``__main__`` (the flags).
"""
