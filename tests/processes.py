"""Running a test's worker processes together (multi-process and multi-host tests)."""

import subprocess


def communicate_all(procs: list[subprocess.Popen], timeout: float) -> list[str]:
  """Each process's combined output, in order; on a timeout every process is killed first."""
  logs = []
  for p in procs:
    try:
      logs.append(p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  return logs
