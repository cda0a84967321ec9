"""Warm-up: numpy, pandas and matplotlib imported and exercised once, before
any job, so that the first script pays none of it (and fork mode's children
share it)."""

import gc
import io
import platform

from . import figures, libraries
from .private import own_builtins
from .protocol import ready_message

own_builtins(globals())


def warm_up(matplotlib=True):
    """Import numpy/pandas (and matplotlib unless told not to: spawn mode
    leaves it to the scripts that plot) and exercise their lazily-loaded
    parts once."""
    import numpy
    import pandas

    frame = pandas.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "x"], "c": [0.5, 1.5, 2.5]})
    frame.groupby("b").agg({"a": "sum", "c": "mean"}).reset_index().to_dict(orient="records")
    repr(frame)
    frame.describe()
    pandas.read_csv(io.StringIO("a,b\n1,2\n"))
    pandas.to_datetime(["2024-01-01"])
    frame["b"].str.upper()
    frame.merge(frame, on="a")
    frame.sort_values("c").pivot_table(index="b", values="a")
    numpy.linalg.inv(numpy.eye(3))
    numpy.random.default_rng().random(3)
    if matplotlib:
        figures.warm_up()
    else:
        figures.warm_on_import()
    # Everything alive now is long-lived library state: keep the script's
    # garbage collections from scanning it over and over.
    gc.collect()
    gc.freeze()
    libraries.bind()
    return ready_message(platform.python_version(), numpy.__version__, pandas.__version__)
