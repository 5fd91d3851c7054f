"""Tests of ``pendra.server.console`` over HTTP; a package, so its conftest and module names are its own."""
