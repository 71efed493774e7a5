"""The training step, read top to bottom: a batch in, a loss value out.

1. :mod:`~lightpref.training.module` — :class:`PreferenceModule`, the LightningModule that runs each step.
2. :mod:`~lightpref.training.reference` and :mod:`~lightpref.training.reference_cache` — the frozen reference π_ref,
   one object per way of holding it (a copy, the adapter-free base, precomputed log-probs on disk, none).
3. :mod:`~lightpref.training.packing` over :mod:`~lightpref.training.forward` — the per-token log-probs of the
   completions, prompts shared and sequences packed, exactly as the plain forward gives them.
4. :mod:`~lightpref.training.records` and :mod:`~lightpref.training.group_pairs` — those log-probs as the records a
   loss consumes (pairs, pairs formed inside ranked groups, whole groups).
5. :mod:`~lightpref.training.metrics` — the batch's metrics, under the names users know.
6. :mod:`~lightpref.training.schedules` and :mod:`~lightpref.training.callbacks` — the learning-rate schedule and
   the callbacks that change training itself (TR-DPO's reference update).
7. :mod:`~lightpref.training.checkpoint_state` — what a checkpoint leaves out (the reference, frozen policy weights),
   since the model source rebuilds it.

The batch layout (:mod:`lightpref.batch`) and the prompt views (:mod:`lightpref.views`) are shared with the data
pipeline and the losses, so they sit below all three at the package's top.
"""
