"""How a pair adapts its model: fine-tuning (the default; CLIP's zero-shot head is its epoch 0),
a linear probe on the frozen model's features (the CLIP paper's transfer protocol: logistic
regression, its regularisation chosen on the validation split), or LP-FT (Kumar et al., ICLR
2022: the probe's head, then fine-tuning from it). A grid asks for them with `methods:`, for
every model or under one; a pair of a method other than fine-tuning is named with its suffix,
`<dataset>_<model>_lp` or `_lpft` (before a seed's)."""

from __future__ import annotations

from typing import Any

from kbench.errors import ConfigError

FINE_TUNE, LINEAR_PROBE, LP_FT = "fine-tune", "linear-probe", "lp-ft"
METHODS = (FINE_TUNE, LINEAR_PROBE, LP_FT)
SUFFIX = {FINE_TUNE: "", LINEAR_PROBE: "_lp", LP_FT: "_lpft"}
# The probe's inverse regularisation strengths, log-spaced as CLIP's sweep (which then refines
# around the best); the one best on the validation split is kept.
PROBE_C = tuple(10.0**k for k in range(-3, 5))


def suffix(method: str) -> str:
    return SUFFIX[method]


def take_methods(layers: list[tuple[Any, str]], given: Any) -> tuple[list, list[str]]:
    """The layers without `methods`, and the methods they ask for (the last that says wins;
    `given`: the grid's own, for every model)."""
    methods, where = given, "methods"
    plain = []
    for layer, at in layers:
        if isinstance(layer, dict) and "methods" in layer:
            methods, where = layer["methods"], f"{at}: methods"
            layer = {k: v for k, v in layer.items() if k != "methods"}
        plain.append((layer, at))
    if methods is None:
        return plain, [FINE_TUNE]
    if (
        not isinstance(methods, list)
        or not methods
        or not all(m in METHODS for m in methods)
        or len(set(methods)) != len(methods)
    ):
        raise ConfigError(f"{where}: expected a list of distinct methods of {', '.join(METHODS)}")
    return plain, methods
