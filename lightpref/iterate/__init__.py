"""On-policy preference rounds (``lightpref iterate``): sample from the current policy, score, pair, train, repeat.

This package's top level stays light (pairing rules only); the workflow lives in :mod:`lightpref.iterate.workflow`.
See ``docs/iterate.md``.
"""

from lightpref.iterate.pairing import AllPairs, BestVsWorst, PairingRule, WholeGroup

__all__ = ["AllPairs", "BestVsWorst", "PairingRule", "WholeGroup"]
