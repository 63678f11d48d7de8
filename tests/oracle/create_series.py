#!/usr/bin/env python3
"""Creates many archives in one borg repository, fast: borg's own `borg create --timestamp`,
run through its Archiver in one process (a `borg create` process per archive would spend about
half a second each on start-up).

    <python with borg> create_series.py REPO LIST.json

LIST.json: [[name, "YYYY-MM-DDTHH:MM:SS"], ...] (UTC). Each archive holds the current directory
(`.`); run it in an empty one. The environment (BORG_BASE_DIR, ...) is borg's usual.
Exits with borg's return code of the first create that fails.
"""
import json
import sys

from borg.archiver import Archiver
from borg.logger import setup_logging


def main():
    repo, listing = sys.argv[1], sys.argv[2]
    with open(listing) as f:
        series = json.load(f)
    setup_logging(level='warning')
    for name, timestamp in series:
        archiver = Archiver()
        args = archiver.get_args(['borg', 'create', '--timestamp', timestamp, f'{repo}::{name}', '.'], None)
        rc = archiver.run(args)
        if rc:
            print(f'create_series: borg create {name} failed with rc {rc}', file=sys.stderr)
            sys.exit(rc)


if __name__ == '__main__':
    main()
