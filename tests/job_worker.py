"""The batch job (scripts/score.py) in this process, with faults injected.

Usage: python tests/job_worker.py KILL_AT[@PROCESS] [score.py flags...]

The process sends itself SIGKILL when the job reports its KILL_AT-th step (0: never),
i.e. after that step was accumulated and before the checkpoint of that step, if any,
is written; with ``@PROCESS``, only the process of that ``jax.process_index()`` does.
Used by tests/test_jobs.py and tests/test_job_faults.py; not collected by pytest.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from absl import app  # noqa: E402

from face_jax import jobs  # noqa: E402
from scripts import score  # noqa: E402

_kill, _, _kill_process = sys.argv[1].partition('@')
KILL_AT = int(_kill)
_report = jobs.Progress.__call__
_steps = [0]


def _call(self, p):
  if not p.done:
    _steps[0] += 1
    mine = not _kill_process or jax.process_index() == int(_kill_process)
    if _steps[0] == KILL_AT and mine:
      os.kill(os.getpid(), signal.SIGKILL)
  return _report(self, p)


jobs.Progress.__call__ = _call

if __name__ == '__main__':
  app.run(score.main, argv=[score.__file__] + sys.argv[2:])
