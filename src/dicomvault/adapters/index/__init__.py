"""SQL index adapter (SQLAlchemy 2 Core): one schema and one Alembic history for SQLite and PostgreSQL."""
