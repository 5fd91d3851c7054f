"""The control plane's durable state: SQLAlchemy 2 (async) over SQLite or PostgreSQL.

``db`` owns the engine, sessions and migrations; ``tables`` owns the schema; one module per
aggregate (``keys``, ``workers``, ``usage``, ``admin``, ``installs``) owns the service functions
over it. Service functions take an ``AsyncSession`` and flush but never commit: the caller owns the
transaction.
"""
