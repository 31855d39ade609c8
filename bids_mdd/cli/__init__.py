"""Command-line entry points: argument parsing and dispatch only.

Importing this package makes ``$HOME`` usable first (:mod:`bids_mdd.cli.home`): every entry
point imports libraries that read it at import time.
"""

import sys
from pathlib import Path

from bids_mdd.cli.home import ensure_usable_home

_home_warning = ensure_usable_home()
if _home_warning:  # named as the command's own errors are (python -m: bids_mdd)
    _command = Path(sys.argv[0]).name
    print(f"{_command if _command.startswith('bids_mdd') else 'bids_mdd'}: "
          f"{_home_warning}", file=sys.stderr)
