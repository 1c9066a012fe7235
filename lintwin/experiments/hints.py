"""Checks whose error says what to do next: a missing evaluation split, heads given the wrong way round."""

from __future__ import annotations

from ..errors import ModelError, StoreError
from ..networks.onnx_models import Head
from ..storage.store import FeatureStore

__all__ = ["require_eval_split", "refuse_swapped_heads"]


def require_eval_split(store: FeatureStore, eval_split: str, fit_split: str, *, in_sample_option: bool) -> None:
    """Refuse a missing evaluation split, naming the options that choose another one."""
    splits = store.splits()
    if eval_split in splits:
        return
    others = [s for s in splits if s != fit_split]
    choose = (f"give one of {', '.join(repr(s) for s in others)} with --eval-split" if others
              else "extract or import a held-out split (e.g. --split val)")
    in_sample = (f", or score on the fitting images with --eval-split {fit_split} --in-sample (an in-sample figure, "
                 "not a held-out loss)") if in_sample_option else ""
    raise StoreError(f"split {eval_split!r} not in store {store.path} (splits: {', '.join(splits) or 'none'}): the "
                     f"maps are scored on held-out images; {choose}{in_sample}")


def refuse_swapped_heads(store: FeatureStore, split: str, a: str, b: str, head_a: Head, head_b: Head) -> None:
    """Refuse heads that fit the other network (by feature width, or by the head hash the store records)."""
    dim_a, dim_b = (int(store.info(split, n)["dim"]) for n in (a, b))
    widths_swapped = (dim_a != dim_b and head_a.feature_dim == dim_b and head_b.feature_dim == dim_a)
    recorded = {n: store.info(split, n).get("head_sha256") for n in (a, b)}
    hashes_swapped = (recorded[a] is not None and recorded[b] is not None and head_a.sha256 == recorded[b]
                      and head_b.sha256 == recorded[a])
    if widths_swapped or hashes_swapped:
        why = (f"--head-a takes {head_a.feature_dim}-dim features ({b!r} has {dim_b}) and --head-b "
               f"{head_b.feature_dim}-dim ({a!r} has {dim_a})" if widths_swapped
               else f"--head-a is the head the store records for {b!r} and --head-b the one for {a!r}")
        raise ModelError(f"the heads fit the other networks: {why}; did you swap --head-a and --head-b?")
