"""numpy and pandas as the runner holds them: private references bound once
warm-up has imported them, which a script can't replace."""

import sys
import types

from .private import own_builtins

own_builtins(globals())


# The numpy and pandas types and functions the validator needs, taken from the
# modules warm-up imported (never imported here), before any script runs: a
# script that patches numpy or replaces sys.modules["numpy"] changes nothing.
# None when the library is not loaded.
NUMPY = None
PANDAS = None


def bind():
    """Take the private references to numpy and pandas (called by warm_up)."""
    global NUMPY, PANDAS
    numpy, pandas = sys.modules.get("numpy"), sys.modules.get("pandas")
    if numpy is not None:
        NUMPY = types.SimpleNamespace(
            name="numpy",
            namespace=dict(vars(numpy)),
            generic=numpy.generic,
            ndarray=numpy.ndarray,
            # The scalars that convert: their .item() is a bool, int or float.
            json_scalars=(numpy.bool_, numpy.integer, numpy.floating),
            datetime64=numpy.datetime64,
            complexfloating=numpy.complexfloating,
            # Unbound methods of the base types, so a subclass's override never runs.
            item=numpy.generic.item,
            tolist=numpy.ndarray.tolist,
            # Module functions can be replaced by a script; numpy's types can't.
            isfinite=numpy.isfinite,
        )
    if pandas is not None:
        PANDAS = types.SimpleNamespace(
            name="pandas",
            namespace=dict(vars(pandas)),
            DataFrame=pandas.DataFrame,
            Series=pandas.Series,
            Index=pandas.Index,
            Timestamp=pandas.Timestamp,
            Timedelta=pandas.Timedelta,
            NaT=pandas.NaT,
            NA=pandas.NA,
        )
