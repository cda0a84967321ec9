"""How the runner keeps its tools out of the script's reach.

The script runs in the runner's own process and can do anything Python can:
close fds, monkeypatch modules and builtins, replace sys.stdout, write to fds.
So every tool the runner needs after the script starts is bound privately,
before the script runs, and the reporting path never trusts shared mutable
state: each module of this package takes its own references to the functions
it calls when it is imported (before warm-up, long before any script), and
gives itself its own copy of every builtin with `own_builtins`.
"""

import builtins

_BUILTINS = {name: value for name, value in vars(builtins).items()
             if not name.startswith("_")}


def own_builtins(namespace):
    """Give a module its own copy of every builtin: its global lookups find
    these before the builtins module, which the script is free to patch."""
    for name, value in _BUILTINS.items():
        namespace.setdefault(name, value)
