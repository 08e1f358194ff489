"""Run one command and print its wall time and peak RSS as JSON (the only child of this process)."""

import json
import resource
import subprocess
import sys
import time

start = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=False).returncode
wall = time.perf_counter() - start
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
if rc != 0:
    sys.exit(rc)
print(json.dumps({"wall_s": wall, "peak_mb": peak_kb / 1024}))
