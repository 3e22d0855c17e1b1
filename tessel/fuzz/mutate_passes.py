"""Pass mutators: pipelines are data (tessel.compiler.pipeline), so they evolve like programs.

A pipeline is a list of `{"name": ..., "params": {...}}` entries. Mutations start from the real
pipelines (`cpu_pipeline()` / `cuda_pipeline()`) and insert a registered pass, delete one,
reorder two, repeat one, or change one parameter (drawn from the registry's declared type and
range: `PASSES[name].params`). Every mutant is a valid pipeline (`as_pipeline` accepts it).
`drop_passes` removes the passes that reached no new coverage when a seed joined the corpus.

Example:
    >>> import random
    >>> from tessel.compiler.pipeline import as_pipeline
    >>> p = base_pipeline("cuda")
    >>> q, how = mutate_pipeline(p, random.Random(1))
    >>> len(as_pipeline(q)) >= 0
    True
"""

from __future__ import annotations

import random

MAX_PASSES = 16


def base_pipeline(target: str) -> list:
    """The target's real pipeline, as JSON-able data."""
    from tessel.compiler.pipeline import cpu_pipeline, cuda_pipeline

    return [p.to_json() for p in (cpu_pipeline() if target == "cpu" else cuda_pipeline())]


def random_params(name: str, rng: random.Random) -> dict:
    """Random values for some of a registered pass's parameters, within their declared ranges."""
    from tessel.compiler.pipeline import PASSES

    out = {}
    for k, p in PASSES[name].params.items():
        if rng.random() < 0.5:
            continue
        if p.choices:
            out[k] = rng.choice(p.choices)
        elif p.type is bool:
            out[k] = rng.random() < 0.5
        elif p.type is int:
            lo = p.lo if p.lo is not None else 0
            hi = p.hi if p.hi is not None else 64
            out[k] = rng.choice((lo, min(hi, lo + 1), min(hi, max(lo, int(p.default))), rng.randint(lo, min(hi, 64))))
    return out


def _entry(name: str, params: dict) -> dict:
    return {"name": name, "params": params} if params else {"name": name}


def mutate_pipeline(pipeline: list, rng: random.Random, passes=None) -> tuple[list, str]:
    """One mutation: insert / delete / swap / repeat / param; `passes`: the pass names to draw
    from (default: every registered pass). Returns (new pipeline, mutation name)."""
    from tessel.compiler.pipeline import PASSES

    names = list(passes) if passes is not None else sorted(PASSES)
    p = [dict(x) for x in pipeline]
    ops = ["insert", "param"] + (["delete", "swap", "repeat"] if p else [])
    if len(p) >= MAX_PASSES:
        ops = [o for o in ops if o not in ("insert", "repeat")] or ["delete"]
    how = rng.choice(ops)
    if how == "insert":
        name = rng.choice(names)
        p.insert(rng.randrange(len(p) + 1), _entry(name, random_params(name, rng)))
    elif how == "delete":
        del p[rng.randrange(len(p))]
    elif how == "swap":
        pairs = [(i, j) for i in range(len(p)) for j in range(i + 1, len(p)) if p[i] != p[j]]
        if pairs:
            i, j = rng.choice(pairs)
            p[i], p[j] = p[j], p[i]
        else:  # nothing to reorder: repeat instead
            p.insert(0, dict(p[0]))
            how = "repeat"
    elif how == "repeat":
        i = rng.randrange(len(p))
        p.insert(i + 1, dict(p[i]))
    else:
        with_params = [i for i, x in enumerate(p) if PASSES[x["name"]].params]
        if not with_params:
            name = rng.choice(names)
            p.insert(rng.randrange(len(p) + 1), _entry(name, random_params(name, rng)))
            how = "insert"
        else:
            i = rng.choice(with_params)
            p[i] = _entry(p[i]["name"], random_params(p[i]["name"], rng) or random_params(p[i]["name"], rng))
    return p, how


def drop_passes(pipeline: list, useless: set) -> list:
    """The pipeline without the entries at positions `useless` (passes that added no coverage)."""
    return [x for i, x in enumerate(pipeline) if i not in useless]


__all__ = ["MAX_PASSES", "base_pipeline", "drop_passes", "mutate_pipeline", "random_params"]
