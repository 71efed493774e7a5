"""Models in and out: loading causal LMs and tokenizers, adapters, and exporting a trained policy.

- :mod:`~lightpref.models.pretrained`: :class:`ModelSource` (a Hub name, a local directory or a GGUF file, an
  adapter, load settings) and the loaders.
- :mod:`~lightpref.models.paths`: where a model comes from, checked before transformers is asked.
- :mod:`~lightpref.models.adapters`: PEFT LoRA adapters on a frozen base.
- :mod:`~lightpref.models.export`: a checkpoint's policy as a Hugging Face model directory (``lightpref export``).
"""
