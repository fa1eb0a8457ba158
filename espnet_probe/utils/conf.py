"""``--<name>_conf`` option dicts: their defaults read from what they configure, unknown keys refused."""

from __future__ import annotations

from typing import Callable, Iterable, Optional

from espnet2.utils.get_default_kwargs import get_default_kwargs


def conf_defaults(target: Callable, set_elsewhere: Iterable[str] = ()) -> dict:
    """``target``'s keyword defaults as ESPnet's tasks take them (``get_default_kwargs``: YAML
    values, tuples as lists; arguments without a default left out), less the arguments its
    caller sets from options of their own."""
    skip = set(set_elsewhere)
    return {k: v for k, v in get_default_kwargs(target).items() if k not in skip}


def checked_conf(name: str, given: Optional[dict], defaults: dict) -> dict:
    """``defaults`` updated by ``given``; an unknown key is an error naming the option group
    (a constructor's TypeError would not say which option it came from)."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"--{name}: unknown option(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **given}
