"""Run with ``-m run_module ARGS``: prints its name and argv as JSON, exits with 4."""

import json
import sys

print(json.dumps({"name": __name__, "argv": sys.argv}))
sys.exit(4)
