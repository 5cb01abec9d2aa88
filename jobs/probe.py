"""The linear probe: multinomial logistic regression on a frozen model's features (scikit-learn's
L-BFGS, as the CLIP paper's protocol), its inverse regularisation C swept over
kbench.methods.PROBE_C and the one with the best validation top-1 kept (ties: the stronger
regularisation, the smaller C), fitted on the training split alone (the validation split stays
out, as it chose). Its head is a linear layer over what the model's head sees, so LP-FT starts
fine-tuning from it as it is."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from kbench.errors import ConfigError
from kbench.methods import PROBE_C

MAX_ITER = 1000


@dataclass
class Probe:
    c: float  # the chosen inverse regularisation strength
    weight: np.ndarray  # classes x features
    bias: np.ndarray  # classes
    val_top1: dict[float, float]  # every C tried -> its validation top-1

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight.T + self.bias


def fit_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    classes: int,
    cs: tuple[float, ...] = PROBE_C,
) -> Probe:
    scores, fitted = {}, {}
    for c in cs:
        weight, bias = fit(train_x, train_y, classes, c)
        fitted[c] = weight, bias
        predicted = (val_x @ weight.T + bias).argmax(axis=1)
        scores[c] = float((predicted == val_y).mean())
    best = max(cs, key=lambda c: (scores[c], -c))
    return Probe(best, *fitted[best], val_top1=scores)


def fit(x: np.ndarray, y: np.ndarray, classes: int, c: float) -> tuple[np.ndarray, np.ndarray]:
    """One fit, as a (classes x features) weight and a bias over every class of the dataset: a
    class the training split lacks is never predicted."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=MAX_ITER)
    with warnings.catch_warnings():  # a weakly regularised fit of separable data runs long
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # scikit-learn's binary form: one row, for the second class
        coef = np.concatenate([np.zeros_like(coef), coef])
        intercept = np.concatenate([np.zeros_like(intercept), intercept])
    weight = np.zeros((classes, x.shape[1]), dtype=np.float32)
    bias = np.full(classes, intercept.min() - 1e4, dtype=np.float32)
    weight[model.classes_] = coef
    bias[model.classes_] = intercept
    return weight, bias


# ------------------------------------------------------------------- in the training job


def probe_of(job, config, info, model, place, weights, log) -> tuple[Probe, dict] | None:
    """The pair's probe, fitted by rank 0 on the cached features, and those features (None on
    the other ranks)."""
    from kbench.jobs.features import cached_features, feature_splits

    if job.rank != 0:
        return None
    splits = feature_splits(config, info, job.store)
    features = cached_features(job.store, config, model, info, splits, place, weights, log)
    if "val_x" not in features:
        raise ConfigError("a linear probe chooses its regularisation on validation: select_on: val")
    probe = fit_probe(
        features["train_x"],
        features["train_y"],
        features["val_x"],
        features["val_y"],
        len(splits.classes),
    )
    tried = ", ".join(f"C={c:g} {100 * v:.1f}%" for c, v in probe.val_top1.items())
    log(f"linear probe: validation top-1 {tried}; chose C={probe.c:g}")
    return probe, features


def start_from_probe(job, config, info, model, place, weights, log) -> None:
    """LP-FT: the head becomes the probe's (rank 0 fits it; every process gets it)."""
    import torch
    import torch.distributed as dist

    fitted = probe_of(job, config, info, model, place, weights, log)
    weight, bias = model.head.weight, model.head.bias
    with torch.no_grad():
        if fitted is not None:
            probe, _ = fitted
            weight.copy_(torch.from_numpy(probe.weight))
            bias.copy_(torch.from_numpy(probe.bias))
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(weight.data, src=0)
            dist.broadcast(bias.data, src=0)


def run_probe(
    job, config, info, model, place, weights, recorder, groups, log, result_classes, **result
) -> None:
    """A linear-probe pair: its one evaluation (epoch 1) and its result (`result`: the rest of
    it, environment and start), by rank 0."""
    import time

    import torch.distributed as dist

    from kbench.jobs.metrics import Evaluation

    started = time.perf_counter()
    fitted = probe_of(job, config, info, model, place, weights, log)
    if fitted is not None:
        probe, features = fitted
        classes = probe.weight.shape[0]
        test, predictions = scored(probe, features, "test", classes, groups)
        val, _ = scored(probe, features, "val", classes, groups)
        seconds = time.perf_counter() - started
        recorder.epoch(1, Evaluation(test, predictions, val), seconds=seconds)
        # The frozen model with the probe as its head: what `kbench export` hands out.
        import torch

        from kbench.jobs.checkpoint import write_chosen

        with torch.no_grad():
            model.head.weight.copy_(torch.from_numpy(probe.weight))
            model.head.bias.copy_(torch.from_numpy(probe.bias))
        chosen = {"epoch": 1, "classes": list(result_classes), "select_on": config.select_on}
        write_chosen(job.store, job.run_id, job.pair, dict(model.state_dict()), chosen)
        recorder.finish(parameters=probe.weight.size + probe.bias.size, wise_ft=None, **result)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def scored(probe: Probe, features: dict, split: str, classes: int, groups: tuple):
    """A split's metrics and every sample's prediction, from the probe's logits."""
    import torch

    from kbench.jobs.metrics import EvalAccumulator
    from kbench.stats import Predictions

    x, y = features[f"{split}_x"], features[f"{split}_y"]
    g = features.get(f"{split}_g") if groups else None
    logits = torch.from_numpy(probe.logits(x))
    accumulator = EvalAccumulator(classes, torch.device("cpu"), groups)
    accumulator.update(logits, torch.from_numpy(y), None if g is None else torch.from_numpy(g))
    predicted = logits.argmax(dim=1).numpy()
    return accumulator.compute(), Predictions(y, predicted, g)
