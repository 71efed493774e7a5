"""Sharding the policy and the frozen reference the same way: FSDP2 (``fully_shard``) and FSDP1 wrap policies.

Under FSDP2 (:class:`lightpref.run.strategies.FSDP2Strategy`, or Lightning's ``ModelParallelStrategy``) the module's
``configure_model()`` calls :func:`shard_models` once both models are built. Each model is cut into the same groups:

- one group per decoder layer (the model's ``_no_split_modules`` classes);
- one group of everything outside the layers that holds parameters (embeddings, final norm, output head), grouped
  together so tied input/output embeddings stay one parameter. ``forward.completion_logprobs`` calls the decoder
  and then the head chunk by chunk, never the model's own ``forward``, so this group is a list of modules
  (``fully_shard([embed, norm, head])``) that FSDP all-gathers whenever any of them runs;
- the LightningModule itself as the FSDP root, so one ``module(batch)`` call is one FSDP iteration, and the loss's
  own parameters (if any) are sharded too.

The reference's parameters become DTensor shards exactly like the policy's; they keep ``requires_grad=False``, so
they get no gradients, and the module's ``configure_optimizers`` only ever sees the policy's parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The outermost decoder layers of a transformers model: instances of its ``_no_split_modules`` classes.

    >>> from lightpref.testing import tiny_model
    >>> [type(layer).__name__ for layer in decoder_layers(tiny_model())]
    ['LlamaDecoderLayer', 'LlamaDecoderLayer']
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    names = set(getattr(model, "_no_split_modules", None) or ())
    layers: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if not (type(module).__name__ in names or isinstance(module, GradientCheckpointingLayer)):
            continue
        if any(name.startswith(f"{outer}.") for outer, _ in layers):
            continue  # a layer nested in a layer already chosen
        layers.append((name, module))
    if not layers:
        raise TypeError(
            f"found no decoder layers to shard in {type(model).__name__}: FSDP shards the classes named in the "
            "model's `_no_split_modules` (transformers causal LMs declare them); use `--trainer.strategy ddp` for "
            "this model"
        )
    return [module for _, module in layers]


def outer_modules(model: nn.Module, layers: Iterable[nn.Module]) -> list[nn.Module]:
    """The modules of ``model`` outside ``layers`` that hold parameters of their own (embeddings, norm, head)."""
    inside = {id(sub) for layer in layers for sub in layer.modules()}
    return [
        module for module in model.modules()
        if id(module) not in inside and next(module.parameters(recurse=False), None) is not None
    ]


def data_parallel_mesh(mesh: DeviceMesh) -> DeviceMesh:
    """The data-parallel dimension of Lightning's 2-D ``(data_parallel, tensor_parallel)`` mesh."""
    names = mesh.mesh_dim_names or ()
    if "tensor_parallel" in names and mesh["tensor_parallel"].size() > 1:
        raise ValueError(
            f"lightpref shards with FSDP2 over data-parallel ranks only, but the device mesh has "
            f"tensor_parallel_size={mesh['tensor_parallel'].size()}; use `--trainer.strategy fsdp2` "
            "(lightpref.run.strategies.FSDP2Strategy), or set `trainer.strategy.init_args.tensor_parallel_size: 1` and "
            "`data_parallel_size` to the number of processes"
        )
    return mesh["data_parallel"] if "data_parallel" in names else mesh


def shard_models(root: nn.Module, models: Sequence[nn.Module | None], mesh: DeviceMesh | None) -> None:
    """Apply FSDP2 to each model in ``models`` (decoder layers, then the rest) and to ``root``; no-op without mesh.

    Args:
        root: the LightningModule holding the models; it becomes the FSDP root.
        models: the policy and the reference (``None`` entries are skipped), sharded identically.
        mesh: ``LightningModule.device_mesh``, set by ``ModelParallelStrategy``; ``None`` under other strategies.
    """
    if mesh is None or is_sharded(root):
        return
    from torch.distributed.fsdp import fully_shard

    dp_mesh = data_parallel_mesh(mesh)
    for model in models:
        if model is None:
            continue
        layers = decoder_layers(model)
        for layer in layers:
            fully_shard(layer, mesh=dp_mesh)
        outer = outer_modules(model, layers)
        if outer:
            fully_shard(outer, mesh=dp_mesh)
    fully_shard(root, mesh=dp_mesh)


def is_sharded(module: nn.Module) -> bool:
    """Whether ``module`` holds FSDP-managed parameters (FSDP2 DTensors or FSDP1 wrappers)."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    return any(isinstance(sub, (FSDPModule, FullyShardedDataParallel)) for sub in module.modules())


def full_state_dict(root: nn.Module, prefix: str) -> dict[str, torch.Tensor] | None:
    """The unsharded weights under ``prefix`` (e.g. ``"policy."``) of a sharded ``root``, gathered on rank 0.

    Collective: every rank must call it. Returns ``None`` when ``root`` is not sharded (read the module directly),
    an empty dict on ranks other than 0, and CPU tensors keyed without ``prefix`` on rank 0.
    """
    if not is_sharded(root):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(root, options=options)
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def unsharded_copy(root: nn.Module, prefix: str, build: Callable[[], nn.Module]) -> nn.Module | None:
    """An unsharded copy, on rank 0, of the model under ``prefix`` in a sharded ``root`` (for exporting it).

    Collective: every rank gathers its shards; rank 0 then calls ``build()`` for a fresh model of the same structure
    and loads the full weights into it. Other ranks get ``None``.
    """
    weights = full_state_dict(root, prefix)
    if not weights:  # ranks other than 0 receive nothing
        return None
    model = build()
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"the gathered weights do not fit the rebuilt model: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    return model


def decoder_layer_policy(module: nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
    """FSDP1 ``auto_wrap_policy``: a unit per decoder layer and per whole model, for the policy and the reference.

    Pass it as ``trainer.strategy.init_args.auto_wrap_policy: lightpref.run.sharding.decoder_layer_policy`` (the
    default of :class:`lightpref.run.strategies.FSDPStrategy`).
    """
    if recurse:
        return True
    from transformers import PreTrainedModel
    from transformers.modeling_layers import GradientCheckpointingLayer

    return isinstance(module, (PreTrainedModel, GradientCheckpointingLayer))
