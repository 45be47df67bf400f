"""`python -m arbiter` and the `arbiter` command.

Start-up runs without the cyclic collector. Importing Arbiter and the servers it runs creates
tens of thousands of long-lived objects and almost no garbage, and the collections those
allocations set off cost the master about a tenth of its start-up before the first fork
(benchmarks/README.md, "Boot"). This is the pattern the `gc.freeze` documentation recommends:
off early in the parent, frozen before forking, on again. Here the collector is off while the
CLI is imported; serving keeps it off until `Master.run` freezes and re-enables it, and every
other subcommand (`ctl`, `fleet`) gets it back at once.
"""

import gc

gc.disable()

from arbiter.cli import main  # noqa: E402

gc.enable()

__all__ = ["main"]

if __name__ == "__main__":
    main()
