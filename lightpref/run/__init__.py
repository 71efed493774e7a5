"""Keeping a run safe and leaving a result, whatever happens to it.

- :mod:`~lightpref.run.checkpointing`: checkpoints never half-written, one more on SIGTERM, the run-safety callbacks.
- :mod:`~lightpref.run.resume`: what ``--ckpt_path last`` finds and the checks that a resumed run is the same run.
- :mod:`~lightpref.run.safe_load`: reading checkpoint files without running code from them.
- :mod:`~lightpref.run.guards`: non-finite losses and gradients skipped, counted, and a run that has too many failed.
- :mod:`~lightpref.run.strategies` and :mod:`~lightpref.run.sharding`: FSDP2/FSDP1 with atomic sharded checkpoints,
  the policy and the reference sharded alike.
- :mod:`~lightpref.run.directory`: a run owns its ``version_N`` and checkpoint directories.
- :mod:`~lightpref.run.callbacks` and :mod:`~lightpref.run.summary`: what every run leaves and prints.
"""
