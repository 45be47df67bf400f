"""Arbiter: one master process for pre-forked web workers and supervised programs."""

__version__ = "0.1.0"
