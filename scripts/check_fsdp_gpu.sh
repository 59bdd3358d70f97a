#!/usr/bin/env bash
# FSDP on the GPUs of this machine (1 or 2 of them): see tests/test_fsdp_gpu.py. Skips without CUDA.
cd "$(dirname "$0")/.." && exec "${PYTHON:-.venv/bin/python}" -m pytest -q -rs tests/test_fsdp_gpu.py "$@"
