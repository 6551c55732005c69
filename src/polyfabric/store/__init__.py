"""The SQL adapter: SQLAlchemy Core tables, engine setup, migrations and the unit of work.

Implements the ports of `polyfabric.services.ports` on SQLite (embedded, WAL) and PostgreSQL
(production, several coordinators). One table definition serves both; Alembic migrates both.
"""
