"""Alembic migrations for the store (``env.py``, ``versions/``); run by ``pendra.server.store.db``.

This directory is a package only so that ``env.py`` ships inside the wheel beside ``versions/``.
"""
