#!/usr/bin/env python
"""Print the PostgreSQL URL `make test` runs the database tests against, if a server answers.

TEST_POSTGRES_URL overrides the default (the local server, trust auth). Exit status 1 and no
output when none answers: the suite then runs on SQLite only.
"""

import os
import sys

import psycopg

url = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/runboard")
try:
    # Connect to the maintenance database: the test database is created by the test run.
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", connect_timeout=2):
        pass
except Exception:
    sys.exit(1)
print(url)
