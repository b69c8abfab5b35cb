"""ember: run quantized GGUF language models on CPUs and NVIDIA GPUs.

This early package exposes the GGUF reader and reference dequantization:

    import ember
    f = ember.GGUFFile("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    f.metadata["llama.block_count"]          # 30
    w = f.dequantize("blk.0.attn_q.weight")  # numpy float32, shape (576, 576)
"""
from ._ember import Error, GGUFFile, build_info, version

__all__ = ["Error", "GGUFFile", "build_info", "version"]
__version__ = version()
