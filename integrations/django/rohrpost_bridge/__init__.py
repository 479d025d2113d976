"""Serves a Django app's rohrpost handlers (``@rohrpost_handler``) to the
rohrpost host's proxy plugin: each request the host POSTs is handled by
the registered handler with a stand-in consumer, and what the handler did
is answered as the proxy's effects document (contract version 1)."""

from .consumer import BridgeConsumer, connection_data

__all__ = ["BridgeConsumer", "connection_data"]
