"""The ``otameter`` command line, assembled from one module per command group.

Server commands open the database themselves (``--db``, ``--data-dir``): ``serve``,
``migrate``, ``import``, ``backup``, ``restore``, ``google-ranges`` (``server.py``), ``user``
(``users.py``), ``plan`` (``plans.py``), ``org set-plan`` (``orgs.py``), ``bundles``
(``bundle_storage.py``). Client commands talk to a running server through ``otameter.client``
(``--server``, ``--apikey``): ``bundle`` (``bundles.py``), ``stats`` and ``usage``
(``stats.py``), ``key`` (``keys.py``), ``org create|list`` (``orgs.py``), ``app`` (``apps.py``),
``channel`` (``channels.py``).
"""

from __future__ import annotations

import gc

import typer

from . import apps, bundle_storage, bundles, channels, keys, orgs, plans, server, stats, users
from .errors import EXIT_HELP

app = typer.Typer(
    help="Usage metering and statistics for Capacitor live updates.",
    no_args_is_help=True,
)

# --help lists the commands in this order, then the groups in theirs.
app.command()(server.serve)
app.command()(server.migrate)
app.command("import")(server.import_events)
app.command("backup")(server.backup_command)
app.command("restore")(server.restore_command)
app.command("usage", epilog=EXIT_HELP)(stats.usage)

app.add_typer(users.user_app, name="user")
app.add_typer(server.ranges_app, name="google-ranges")
app.add_typer(plans.plan_app, name="plan")
app.add_typer(orgs.org_app, name="org")
app.add_typer(bundle_storage.bundles_app, name="bundles")
app.add_typer(keys.key_app, name="key")
app.add_typer(bundles.bundle_app, name="bundle")
app.add_typer(stats.stats_app, name="stats")
app.add_typer(apps.app_app, name="app")
app.add_typer(channels.channel_app, name="channel")


def main() -> None:
    try:
        app()
    finally:
        # The interpreter's last collection at exit would walk every object only to find
        # them all alive: frozen, they are skipped (a tenth of a second of each command).
        gc.freeze()
