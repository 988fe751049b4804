"""Storage: the tables, the engines (SQLite and PostgreSQL), migrations, dialect helpers."""
