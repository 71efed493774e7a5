"""On-policy preference rounds (``lightpref iterate``): sample from the current policy, score, pair, train, repeat.

This package's top level stays light (the pairing rules, which live in :mod:`lightpref.evaluation.pairing` beside
the data building that shares them); the command line is :mod:`lightpref.iterate.command`, the rounds
:mod:`lightpref.iterate.workflow`.
See ``docs/iterate.md``.
"""

from lightpref.evaluation.pairing import AllPairs, BestVsWorst, PairingRule, WholeGroup

__all__ = ["AllPairs", "BestVsWorst", "PairingRule", "WholeGroup"]
