"""The store tests run every test on SQLite and on PostgreSQL: see store_targets.py."""

from suite_env import POSTGRES_URL
from store_targets import Target, pg_schema, store, target

__all__ = ["POSTGRES_URL", "Target", "pg_schema", "store", "target"]
