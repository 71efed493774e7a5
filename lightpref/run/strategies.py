"""Sharded strategies whose checkpoints are written atomically: FSDP2 (also on CPU) and FSDP1 (GPU).

Use them by class path, e.g. ``--trainer.strategy lightpref.run.strategies.FSDP2Strategy``
(``configs/fsdp2.yaml``, ``configs/fsdp.yaml``). A sharded checkpoint is a directory (one file per rank plus
metadata); these strategies write it under a hidden name and rename it into place once every rank has finished,
and check it (:func:`lightpref.run.checkpointing.validate_checkpoint`) before loading it. Plain single-file
checkpoints go through the strategy's ``CheckpointIO`` as usual.
"""

from __future__ import annotations

import pickle
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.strategies import FSDPStrategy as LightningFSDPStrategy
from lightning.pytorch.strategies import ModelParallelStrategy

from lightpref.run.checkpointing import (
    SHARDED_METADATA,
    remove_path,
    replace_atomically,
    staging_path,
    validate_checkpoint,
)
from lightpref.run.safe_load import SafeFileSystemReader, refusal, torch_load, unsafe
from lightpref.run.sharding import decoder_layer_policy

EXTRA_STATES = "lightpref_extra_states"  # modules' get_extra_state() values, kept beside the shards
EXTRA_SUFFIX = "_extra_state"


class _AtomicShardedCheckpoints:
    """Mixin for a Lightning strategy that writes sharded checkpoints straight into their directory."""

    def _writes_directories(self) -> bool:
        raise NotImplementedError

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any | None = None) -> None:
        path = Path(self.broadcast(str(filepath)))
        if not self._writes_directories():
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        staging = staging_path(path)
        if self.global_rank == 0:
            remove_path(staging)  # left over from a save that crashed
        self.barrier("lightpref_staging_clean")
        super().save_checkpoint(checkpoint, staging, storage_options)
        self.barrier("lightpref_shards_written")  # every rank's shard is on disk before the rename
        if self.global_rank == 0:
            replace_atomically(staging, path)
        self.barrier("lightpref_checkpoint_in_place")

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        """Validate (reading the shards' metadata safely), then load with ``weights_only=True`` unless the
        caller passed ``False`` itself."""
        path = Path(self.broadcast(str(checkpoint_path)))
        validate_checkpoint(path)
        try:
            return super().load_checkpoint(path, weights_only=True if weights_only is None else weights_only)
        except pickle.UnpicklingError as error:
            raise unsafe(path, refusal(error)) from None


class FSDP2Strategy(_AtomicShardedCheckpoints, ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` used as plain FSDP2: every process in one data-parallel dimension.

    ``PreferenceModule.configure_model`` applies ``fully_shard`` to each decoder layer and the rest of both the
    policy and the reference (:func:`lightpref.run.sharding.shard_models`). Runs on GPUs (NCCL) and on CPUs (gloo).

    Args:
        data_parallel_size: processes that shard the models; ``"auto"`` is all of them (nodes × devices).
        tensor_parallel_size: must stay 1 (lightpref does not apply tensor parallelism).
        save_distributed_checkpoint: save a directory of shards (``True``) or gather one file on rank 0.
        process_group_backend: ``nccl``/``gloo``; ``None`` picks the one for the device.
        timeout: timeout of collective operations.
    """

    def __init__(
        self,
        data_parallel_size: Literal["auto"] | int = "auto",
        tensor_parallel_size: int = 1,
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
    ) -> None:
        if tensor_parallel_size != 1:
            raise ValueError(
                f"`trainer.strategy.init_args.tensor_parallel_size` must be 1 for FSDP2Strategy, got "
                f"{tensor_parallel_size}; lightpref shards over data-parallel ranks only"
            )
        super().__init__(data_parallel_size, tensor_parallel_size, save_distributed_checkpoint,
                         process_group_backend, timeout)

    def setup_environment(self) -> None:
        if self._data_parallel_size == "auto":
            self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    def _writes_directories(self) -> bool:
        return self._save_distributed_checkpoint

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any | None = None) -> None:
        if self._save_distributed_checkpoint:  # extra states are pickled with the metadata, not as DCP entries
            state = checkpoint["state_dict"]
            checkpoint[EXTRA_STATES] = {key: state.pop(key) for key in [k for k in state if k.endswith(EXTRA_SUFFIX)]}
        super().save_checkpoint(checkpoint, filepath, storage_options)

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        path = Path(self.broadcast(str(checkpoint_path)))
        if not path.is_dir():
            return super().load_checkpoint(path, weights_only=weights_only)
        validate_checkpoint(path)
        return self._load_sharded(path, weights_only)

    def _load_sharded(self, path: Path, weights_only: bool | None) -> dict[str, Any]:
        """Lightning's sharded load, except that modules' extra states (a loss's RNG state, which may be ``None``
        in a fresh module but a tensor in the checkpoint) come from the pickled metadata, not from DCP."""
        from torch.distributed.checkpoint import load
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
            set_optimizer_state_dict,
        )

        meta_file = path / SHARDED_METADATA
        # a full unpickle only when the caller asked for it in so many words (`weights_only=False`); else tensors and
        # plain values only
        metadata = torch.load(meta_file, weights_only=False) if weights_only is False else torch_load(meta_file)
        extra_states = metadata.pop(EXTRA_STATES, {})
        state = {key: value for key, value in get_model_state_dict(self.model).items()
                 if not key.endswith(EXTRA_SUFFIX)}
        load({"state_dict": state}, storage_reader=SafeFileSystemReader(path))
        self.model.load_state_dict({**state, **extra_states}, strict=self.lightning_module.strict_loading)
        for index, optimizer in enumerate(self.optimizers):
            key = f"optimizer_{index}"
            optimizer_state = {key: get_optimizer_state_dict(self.model, optimizer)}
            load(optimizer_state, storage_reader=SafeFileSystemReader(path))
            options = StateDictOptions(cpu_offload=True)
            set_optimizer_state_dict(self.model, optimizer, optimizer_state[key], options=options)
        return metadata


class FSDPStrategy(_AtomicShardedCheckpoints, LightningFSDPStrategy):
    """Lightning's FSDP (FSDP1) with lightpref's defaults: a unit per decoder layer and per model (policy and
    reference alike, :func:`lightpref.run.sharding.decoder_layer_policy`) and sharded checkpoints, written atomically.

    Takes every argument of ``lightning.pytorch.strategies.FSDPStrategy``.
    """

    def __init__(
        self,
        auto_wrap_policy: Any = decoder_layer_policy,
        state_dict_type: Literal["full", "sharded"] = "sharded",
        **kwargs: Any,
    ) -> None:
        super().__init__(auto_wrap_policy=auto_wrap_policy, state_dict_type=state_dict_type, **kwargs)

    def _writes_directories(self) -> bool:
        return self._state_dict_type == "sharded"


def register_strategies() -> None:
    """Let ``--trainer.strategy fsdp2`` name :class:`FSDP2Strategy` (the CLI calls this; importing does not)."""
    from lightning.pytorch.strategies import StrategyRegistry

    if "fsdp2" not in StrategyRegistry:
        StrategyRegistry.register("fsdp2", FSDP2Strategy, description="lightpref: FSDP2 over every process")
