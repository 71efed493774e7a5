"""The preference data pipeline: normalise a record → tokenise a pair → collate a batch, wired by a DataModule.

Each step is a small pure function usable on its own; :class:`PreferenceDataModule` reads the sources, caches the
tokenised pairs in ``prepare_data()`` and splits them in ``setup()``. See ``docs/data.md``.
"""

from lightpref.data.collate import collate_pairs, collate_rows, pair_from_row, pair_to_row
from lightpref.data.datamodule import PreferenceDataModule
from lightpref.data.formats import FORMATS, Format, InvalidRecord, PreferenceExample, normalise_record, normalise_rows
from lightpref.data.mixture import DataSource
from lightpref.data.tokenize import TokenizedPair, TokenizeStats, check_lengths, tokenize_pair, tokenize_pairs

__all__ = [
    "FORMATS",
    "DataSource",
    "Format",
    "InvalidRecord",
    "PreferenceDataModule",
    "PreferenceExample",
    "TokenizeStats",
    "TokenizedPair",
    "check_lengths",
    "collate_pairs",
    "collate_rows",
    "normalise_record",
    "normalise_rows",
    "pair_from_row",
    "pair_to_row",
    "tokenize_pair",
    "tokenize_pairs",
]

