"""Tests of ``pendra.server.store``; a package, so its conftest and module names are its own."""
