"""The typed REST client (rest.py) and the `kgm devices/allocate/release/overview/cost` commands."""
