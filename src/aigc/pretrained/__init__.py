"""Pretrained language models: bases read from a local folder or a GGUF file, never downloaded.

- :mod:`aigc.pretrained.bases`: what a base is (a transformers causal-LM folder), registering one
  (a folder in place, a GGUF de-quantized once into the workspace), the bases that ship inside
  PyPI packages, and loading one.

This package knows transformers, gguf and the workspace's catalog; nothing about surfaces.
"""
