"""Echo stdin to stdout unchanged, then print argv as JSON on stderr (test_run)."""

import json
import sys

data = sys.stdin.buffer.read()
sys.stdout.buffer.write(data)
sys.stdout.flush()
sys.stderr.write(json.dumps(sys.argv) + "\n")
