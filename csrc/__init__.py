"""CUDA sources of the GPU Gram engine (tiles.cuh, gram.cu, the host harness harness.cu); see README.md."""
