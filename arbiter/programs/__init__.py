"""Programs: supervise any command, as Supervisor does.

- `states`: Supervisor's process states and the pure state machine.
- `config`: `ProgramConfig` / `ProcessSpec`, the TOML loader; `ini`: the supervisord.conf loader.
- `process`: spawning and signalling one process; `capture`, `logfile`: its output.
- `manager`: `ProgramManager`, the one object the master talks to; `update`: applying a
  changed configuration at runtime (reread/update/add/remove).
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
