#!/usr/bin/env python3
"""A throwaway PostgreSQL server with pgvector, for tests and benchmarks.

Uses the binaries of the `pgserver` PyPI wheel (PostgreSQL 16 + pgvector,
pinned in scripts/requirements-test.txt): initdb in a new temporary
directory, the server listening only on a unix socket in that directory
(no TCP port, so parallel runs cannot collide), trust authentication, user
postgres. Stopped and deleted when the process exits (pgserver's
cleanup_mode='delete'). As root, pgserver runs the server as a system user
"pgserver" it creates (PostgreSQL refuses to run as root).

In Python:
    from pg_fixture import PgServer
    with PgServer() as pg:          # raises PgUnavailable when it cannot start
        url = pg.new_database("t1")  # postgresql://postgres@/t1?host=/tmp/...
        pg.sql("t1", "SELECT 1")

As a command (benchmarks): pg_fixture.py run CMD ARGS... runs CMD with
EMBD_PG_URL set to a fresh database's URL, then stops the server; exits 77
when the server cannot start.
"""
import os
import shutil
import subprocess
import sys
import tempfile


class PgUnavailable(Exception):
    pass


class PgServer:
    def __init__(self):
        self.server = None
        self.dir = None

    def __enter__(self):
        try:
            import logging
            import warnings

            warnings.filterwarnings("ignore")
            logging.getLogger("pgserver").setLevel(logging.CRITICAL)
            import pgserver
        except Exception as e:  # noqa: BLE001
            raise PgUnavailable("cannot import pgserver (scripts/setup-deps installs it): %s" % e)
        self.dir = tempfile.mkdtemp(prefix="embd-pg-")
        try:
            self.server = pgserver.get_server(self.dir, cleanup_mode="delete")
        except Exception as e:  # noqa: BLE001
            shutil.rmtree(self.dir, ignore_errors=True)
            raise PgUnavailable("pgserver could not start PostgreSQL in %s: %s" % (self.dir, e))
        return self

    def __exit__(self, *exc):
        if self.server is not None:
            try:
                self.server.cleanup()
            except Exception:  # noqa: BLE001
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
        return False

    @property
    def socket_dir(self):
        return str(self.server.get_postmaster_info().socket_dir)

    def url(self, db="postgres"):
        return "postgresql://postgres@/%s?host=%s" % (db, self.socket_dir)

    def sql(self, db, statement):
        """Runs SQL with the server's psql; returns its output; raises on error."""
        psql = os.path.join(os.path.dirname(self._pg_bin()), "psql")
        p = subprocess.run([psql, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.url(db),
                            "-c", statement], capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("psql failed: %s" % p.stderr.strip())
        return p.stdout

    def new_database(self, name):
        self.sql("postgres", 'CREATE DATABASE "%s"' % name)
        return self.url(name)

    @staticmethod
    def _pg_bin():
        from pgserver._commands import POSTGRES_BIN_PATH

        return os.path.join(str(POSTGRES_BIN_PATH), "postgres")


def main():
    if len(sys.argv) < 3 or sys.argv[1] != "run":
        print("usage: pg_fixture.py run CMD [ARGS...]", file=sys.stderr)
        return 2
    try:
        with PgServer() as pg:
            env = dict(os.environ, EMBD_PG_URL=pg.new_database("embd_run"))
            return subprocess.call(sys.argv[2:], env=env)
    except PgUnavailable as e:
        print("skip: %s" % e, file=sys.stderr)
        return 77


if __name__ == "__main__":
    sys.exit(main())
