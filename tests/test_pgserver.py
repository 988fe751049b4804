"""The PostgreSQL test fixtures give real, isolated databases."""

from __future__ import annotations

import psycopg
import sqlalchemy as sa

from tests.pgserver import PostgresServer, fresh_database


def _engine_url(url: str) -> str:
    # The app selects the psycopg 3 driver itself; do the same here.
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def test_server_answers(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.url()) as conn:
        row = conn.execute("select version()").fetchone()
    assert row is not None
    assert row[0].startswith("PostgreSQL ")


def test_postgres_url_is_a_fresh_writable_database(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://postgres@127.0.0.1:")
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute(
            "select count(*) from pg_tables where schemaname = 'public'"
        ).fetchone() == (0,)
        conn.execute("create table t (id integer primary key, name text not null)")
        conn.execute("insert into t values (1, 'one'), (2, 'two')")
        assert conn.execute("select name from t order by id").fetchall() == [("one",), ("two",)]


def test_fresh_databases_are_distinct_and_dropped(postgres_server: PostgresServer) -> None:
    # postgres_url is a thin wrapper over fresh_database; two of them must not share state.
    with fresh_database(postgres_server) as first, fresh_database(postgres_server) as second:
        assert first != second
        with psycopg.connect(first) as conn:
            conn.execute("create table only_here (x integer)")
        with psycopg.connect(second) as conn:
            row = conn.execute("select to_regclass('public.only_here')").fetchone()
        assert row == (None,)
    with psycopg.connect(postgres_server.url()) as conn:
        names = {r[0] for r in conn.execute("select datname from pg_database").fetchall()}
    assert first.rsplit("/", 1)[1] not in names
    assert second.rsplit("/", 1)[1] not in names


def test_db_url_is_usable(db_url: str) -> None:
    engine = sa.create_engine(_engine_url(db_url))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("create table t (id integer primary key)"))
            conn.execute(sa.text("insert into t (id) values (1), (2)"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("select count(*) from t")).scalar_one() == 2
    finally:
        engine.dispose()
