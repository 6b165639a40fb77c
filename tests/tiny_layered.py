"""A tiny random-weight ``QwenImageLayeredPipeline``, built offline and saved with ``save_pretrained``.

Apart from ``tiny_pipelines.py`` (already past the house's module size): it reuses that module's byte-level
Qwen tokenizer and Qwen2.5-VL encoder. The VAE takes and gives RGBA (``input_channels=4``, as the real
checkpoint) and its latent has 8 channels: with 4, the pipeline would take the RGBA input image for a latent.
The ``processor/`` folder is written as the real checkpoint ships it (the engine builds the processor
without torchvision); the pipeline only uses it to caption an image sent without a prompt.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tiny_pipelines import _qwen_vl_encoder, qwen_tokenizer, save_with_processor

_Z_DIM = 8


def build_qwen_image_layered(path: Path) -> Path:
    """A tiny Qwen-Image-Layered pipeline: RGBA VAE (factor 8), one-block transformer, tiny Qwen2.5-VL."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageLayeredPipeline,
        QwenImageTransformer2DModel,
    )

    torch.manual_seed(0)
    vae = AutoencoderKLQwenImage(
        base_dim=4,
        z_dim=_Z_DIM,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        input_channels=4,
        latents_mean=[0.0] * _Z_DIM,
        latents_std=[1.0] * _Z_DIM,
    )
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=4 * _Z_DIM,
        out_channels=_Z_DIM,
        num_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    tokenizer = qwen_tokenizer()
    pipe = QwenImageLayeredPipeline(
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=_qwen_vl_encoder(),
        tokenizer=tokenizer,
        processor=None,
    )
    return save_with_processor(pipe, tokenizer, path)
