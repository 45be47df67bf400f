"""Programs: supervise any command, as Supervisor does.

- `states`: Supervisor's process states and the pure state machine; `intent`: what is wanted of
  a process (start, remove, replace) and the pure rule for when to act on it.
- `config`: `ProgramConfig` / `ProcessSpec`, the TOML loader; `ini`: the supervisord.conf loader.
- `child`: one process's life (its one record, fed to the machine); `process`: spawning and
  signalling it (the OS side); `output`, `capture`, `logfile`: its output.
- `processes`: the set of processes and their order (priority, depends_on, groups, names).
- `update`: applying a changed configuration at runtime (reread/update/add/remove).
- `manager`: `ProgramManager`, the one object the master talks to.
"""

from arbiter.programs.config import ProcessSpec, ProgramConfig, load_supervisor_ini, programs_from_mapping
from arbiter.programs.ini import SupervisordOptions
from arbiter.programs.manager import ProgramManager
from arbiter.programs.states import ProcessStates
from arbiter.programs.update import Diff

__all__ = [
    "Diff", "ProcessSpec", "ProcessStates", "ProgramConfig", "ProgramManager", "SupervisordOptions",
    "load_supervisor_ini", "programs_from_mapping",
]
