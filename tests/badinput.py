"""The shape shared by the bad-input catalogues (`tests/test_bad_input_*.py`).

Every case of bad input or fault gets exactly one of these behaviours, and its test says which:
- `refused`: an error of the right type whose message names the bad value, path, row or column;
- `warned`: a warning naming the file or value, the work going on;
- `skipped`: the item left out and listed (e.g. in a dataset's `.skipped`), the rest kept.
Nothing silently wrong, nothing lost: a case whose call returns quietly fails its test."""
from __future__ import annotations

import warnings

import pytest


def _names(message: str, named) -> None:
    for n in named:
        assert str(n) in message, f"the message does not name {str(n)!r}:\n{message}"


def refused(call, exc, *named) -> str:
    "`call()` must raise `exc`, and its message must name every item of `named`; returns the message."
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    _names(message, named)
    return message


def warned(call, category, *named):
    "`call()` must warn with `category`, one of its warnings naming every item of `named`; returns call's result."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", category)
        result = call()
    texts = [str(w.message) for w in caught if issubclass(w.category, category)]
    assert texts, f"no {category.__name__} was raised"
    assert any(all(str(n) in t for n in named) for t in texts), f"no {category.__name__} names {named}: {texts}"
    return result


def skipped(dataset, *paths) -> None:
    "`dataset.skipped` lists every path in `paths` (by file name), and none of them is still served."
    listed = " ".join(map(str, dataset.skipped["path"]))
    _names(listed, [getattr(p, "name", p) for p in paths])
    served = " ".join(map(str, getattr(dataset, "paths", [])))
    for p in paths:
        assert str(p) not in served, f"{p} was skipped but is still served"
