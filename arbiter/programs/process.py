"""Spawning one program process, and signalling it. The only module here that forks.

The child is started with `subprocess.Popen` (fork + exec in C, no Python in between) in a
session of its own, so it is its own process group: a Ctrl-C at the master's terminal does not
reach it, and `stopasgroup` can signal everything it started. The master reaps every child
itself (`os.waitpid(-1, WNOHANG)`), so nothing here ever waits for or polls a child.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import signal
import stat
import subprocess
from collections.abc import Mapping

from arbiter.programs.capture import READ_SIZE
from arbiter.programs.config import ProcessSpec
from arbiter.programs.states import signame

# They describe descriptors the master was given (systemd socket activation); a child does not
# have them, so it must not believe it does.
_NOT_INHERITED = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


class CannotSpawn(Exception):
    """The process could not be started; the message is a sentence a person can act on."""


def make_pipe() -> tuple[int, int]:
    """(read end, write end): the read end non-blocking and as large as we may make it."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(read_end, False)
    try:
        # Fewer, larger reads for a chatty child; refused past the system limit, which is fine.
        fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, READ_SIZE)
    except OSError:
        pass
    return read_end, write_end


def environment(spec: ProcessSpec, base: Mapping[str, str] | None = None,
                extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The master's environment, Supervisor's variables (and `extra`: where the control API is,
    SUPERVISOR_SERVER_URL and its credentials), then the program's `environment`."""
    env = {k: val for k, val in (os.environ if base is None else base).items() if k not in _NOT_INHERITED}
    env.update(extra or {})
    env["SUPERVISOR_ENABLED"] = "1"
    env["SUPERVISOR_PROCESS_NAME"] = spec.name
    env["SUPERVISOR_GROUP_NAME"] = spec.group
    if spec.program.user is not None:
        # Unlike Supervisor, a program run as another user gets that user's HOME: leaving
        # root's is the surprise its users most often report.
        entry = _passwd(spec.program.user)
        env.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)
    env.update(spec.environment)
    return env


def resolve_command(argv0: str, env: Mapping[str, str], cwd: str | None) -> str:
    """The file to execute, searched on the program's PATH as Supervisor does.

    Raises:
        CannotSpawn: not found, a directory, or not executable.
    """
    # Relative paths (`./run`, a PATH entry `bin`) mean relative to the child's directory,
    # where it will be exec'd; absolute ones stay right after its chdir.
    base = os.path.abspath(cwd or os.getcwd())
    if "/" in argv0:
        candidates = [os.path.join(base, argv0)]
    else:
        folders = env.get("PATH", os.defpath).split(os.pathsep)
        candidates = [os.path.join(base, folder, argv0) for folder in folders]
    first_found = None
    for candidate in candidates:
        try:
            mode = os.stat(candidate).st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode) and os.access(candidate, os.X_OK):
            return candidate
        first_found = first_found or (candidate, mode)
    if first_found is None:
        raise CannotSpawn(f"can't find command {argv0!r}")
    path, mode = first_found
    if stat.S_ISDIR(mode):
        raise CannotSpawn(f"command at {path!r} is a directory")
    if not mode & 0o111:
        raise CannotSpawn(f"command at {path!r} is not executable")
    raise CannotSpawn(f"no permission to run command {path!r}")


def spawn(spec: ProcessSpec, stdout: int, stderr: int, env: Mapping[str, str],
          stdin: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """Start `spec` with stdin/stdout/stderr on the given descriptors (or subprocess.DEVNULL).

    Raises:
        CannotSpawn: anything that stops the exec, resolved before the fork where it can be.
    """
    program = spec.program
    executable = resolve_command(spec.argv[0], env, spec.directory)
    if spec.directory is not None and not os.path.isdir(spec.directory):
        raise CannotSpawn(f"couldn't chdir to {spec.directory}: no such directory")
    uid, gid, groups = _identity(program.user) if program.user is not None else (None, None, None)
    # exec keeps the signal mask: a program started while the master blocks its signals (as
    # it does around a fork) would never see its stopsignal. So start it with none blocked.
    mask = signal.pthread_sigmask(signal.SIG_SETMASK, ())
    try:
        return subprocess.Popen(
            list(spec.argv),
            executable=executable,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=spec.directory,
            env=env,
            umask=-1 if program.umask is None else program.umask,
            start_new_session=True,
            close_fds=True,
            restore_signals=True,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
    except OSError as exc:
        if spec.directory is not None and exc.filename == spec.directory:
            raise CannotSpawn(f"couldn't chdir to {spec.directory}: {exc.strerror}") from None
        raise CannotSpawn(f"couldn't exec {spec.argv[0]}: {exc.strerror}") from None
    except subprocess.SubprocessError as exc:
        raise CannotSpawn(f"couldn't exec {spec.argv[0]}: {exc}") from None
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def send_signal(pid: int, sig: int, to_group: bool) -> str | None:
    """Signal the process (or its whole process group); None, or what went wrong.

    A process that is already gone is not an error: its exit is about to be reaped.
    """
    try:
        if to_group:
            os.killpg(pid, sig)  # the child leads its own session, so its group id is its pid
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        return None
    except OSError as exc:
        return f"{signame(sig)} to pid {pid}: {exc.strerror}"
    return None


def set_returncode(popen: subprocess.Popen[bytes], status: int) -> None:
    """Record an exit the master reaped, as Popen would have, so it never waits itself."""
    try:
        popen.returncode = os.waitstatus_to_exitcode(status)
    except ValueError:  # not an exit status (a stop); keep it as a number anyway
        popen.returncode = -1


def _passwd(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise CannotSpawn(f"couldn't setuid to {user}: no such user") from None


def _identity(user: str) -> tuple[int | None, int | None, list[int] | None]:
    """Popen's user, group and extra_groups; it applies them setgroups -> setgid -> setuid."""
    entry = _passwd(user)
    if entry.pw_uid == os.getuid():
        return None, None, None  # already that user, as when Arbiter itself runs as it
    if os.getuid() != 0:
        raise CannotSpawn(f"couldn't setuid to {user}: Arbiter is not running as root")
    return entry.pw_uid, entry.pw_gid, os.getgrouplist(entry.pw_name, entry.pw_gid)
