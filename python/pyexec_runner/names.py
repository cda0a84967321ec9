"""How the runner names things to the user: the file and module the script
runs as, types by their public names, values by a short repr."""

from . import libraries
from .private import own_builtins

own_builtins(globals())


SCRIPT_FILENAME = "<script>"
SCRIPT_MODULE_NAME = "script"


def module_name(tp):
    try:
        # Via type's own descriptor: a class can't lie about it with a property.
        module = type.__dict__["__module__"].__get__(tp, type)
    except Exception:
        return None
    return module if type(module) is str else None


def type_name(tp):
    """Fully qualified type name, with numpy/pandas types under their public names."""
    name = tp.__qualname__
    module = module_name(tp)
    if module is None or module in ("builtins", "__main__", SCRIPT_MODULE_NAME):
        return name
    for library in (libraries.NUMPY, libraries.PANDAS):
        if library is None:
            continue
        public = library.name
        if module == public or module.startswith(public + "."):
            if library.namespace.get(name) is tp:
                return f"{public}.{name}"
    return f"{module}.{name}"


def short_repr(value, limit=60):
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[:limit - 3] + "..."
