"""Outbound notifications: the endpoints' formats, the bounded, retried, deduplicated sender, and the
watchdog that turns inventory and ledger state into events."""
