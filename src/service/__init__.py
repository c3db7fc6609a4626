"""Conduit: a production-grade async implementation of the RealWorld API."""

__version__ = "0.1.0"
