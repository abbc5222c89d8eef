"""The kgm program: command line, settings, logs, certificates and TLS, the HTTP edge (web/), the
assembly of kgm serve (its lifespan owns the background work), the REST client and the simulator."""
