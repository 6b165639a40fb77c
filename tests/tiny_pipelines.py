"""Tiny random-weight diffusers pipelines, built offline and saved with ``save_pretrained``.

Each builder writes a complete model directory (``model_index.json`` + components) that loads through
``DiffusionPipeline.from_pretrained`` exactly like a real checkpoint, so the engine is tested on the code
path users take. Weights are random and layers few (32-64 channels), so a 64x64 image takes tens of
milliseconds on a CPU. Tokenizers are built in memory: byte-level vocabularies with no merges (every
byte is a token), written out by the tokenizer's own ``save_pretrained``. Nothing is downloaded.

Builders: :func:`build_sdxl`, :func:`build_sd`, :func:`build_flux1`, :func:`build_flux_kontext`,
:func:`build_flux2_klein`, :func:`build_qwen_image`, :func:`build_qwen_image_edit_plus`; :data:`BUILDERS`
maps a family name to its builder. FLUX.1's T5 tokenizer is a Unigram model over single characters.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# a chat template that renders messages the way Qwen's does, enough for the pipelines' prompts
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@lru_cache(maxsize=1)
def byte_alphabet() -> tuple[str, ...]:
    """The 256 printable stand-ins of byte-level BPE (GPT-2's ``bytes_to_unicode``), in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return tuple(chars[b] for b in range(256))


def clip_tokenizer(max_length: int = 77) -> Any:
    """A CLIP tokenizer whose vocabulary is every byte, alone and as a word end (``</w>``)."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in byte_alphabet():
        vocab[char] = len(vocab)
    for char in byte_alphabet():
        vocab[char + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def qwen_tokenizer() -> Any:
    """A byte-level Qwen2 tokenizer: 256 byte tokens, then Qwen's special tokens, with a chat template."""
    from transformers import Qwen2Tokenizer

    vocab = {char: i for i, char in enumerate(byte_alphabet())}
    for token in QWEN_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], additional_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]))
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


QWEN_VOCAB_SIZE = 256 + len(QWEN_SPECIAL_TOKENS)


def _qwen_id(token: str) -> int:
    return 256 + QWEN_SPECIAL_TOKENS.index(token)


def _save(pipe: Any, path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(path))
    return path


def _clip_text_config(hidden: int = 32) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=hidden,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=2 + 2 * 256,
        hidden_act="gelu",
        projection_dim=32,
    )


def _sd_vae(latent_channels: int = 4) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[8, 16, 16, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=latent_channels,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
    )


def build_sdxl(path: Path) -> Path:
    """A tiny Stable Diffusion XL pipeline (two CLIP text encoders, text-time UNet, VAE factor 8)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,  # 6 * 8 + 32
        cross_attention_dim=64,
        norm_num_groups=8,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    torch.manual_seed(0)
    pipe = StableDiffusionXLPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=_sd_vae(),
        text_encoder=CLIPTextModel(_clip_text_config()),
        tokenizer=clip_tokenizer(),
        text_encoder_2=CLIPTextModelWithProjection(_clip_text_config()),
        tokenizer_2=clip_tokenizer(),
    )
    return _save(pipe, path)


def build_sd(path: Path) -> Path:
    """A tiny Stable Diffusion 1.x-style pipeline (one CLIP text encoder, no safety checker)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=8,
    )
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        unet=unet,
        scheduler=DDIMScheduler(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
        ),
        vae=_sd_vae(),
        text_encoder=CLIPTextModel(_clip_text_config()),
        tokenizer=clip_tokenizer(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return _save(pipe, path)


T5_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")


def t5_tokenizer() -> Any:
    """A T5 (Unigram) tokenizer whose pieces are the word-start marker and every printable ASCII character."""
    from transformers import T5Tokenizer

    pieces = [(token, 0.0) for token in T5_SPECIAL_TOKENS] + [("\u2581", -2.0)]
    pieces += [(chr(c), -5.0) for c in range(ord("!"), ord("~") + 1)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


T5_VOCAB_SIZE = len(T5_SPECIAL_TOKENS) + 1 + (ord("~") - ord("!") + 1)


def _flux1_vae() -> Any:
    """FLUX.1's VAE layout (no quant convs, a latent shift) at the tiny SD VAE's size: factor 8, 4 channels."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[8, 16, 16, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def _flux1_components() -> dict[str, Any]:
    """Components of a tiny FLUX.1 pipeline: CLIP + T5 text encoders, a 2x2-packed transformer, VAE factor 8."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels x 2x2 packing
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,  # the T5 width
        pooled_projection_dim=32,  # the CLIP width
        axes_dims_rope=[4, 4, 8],
        guidance_embeds=True,  # FLUX.1 dev-like: guidance distilled into an embedding
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_clip_text_config())
    torch.manual_seed(0)
    text_encoder_2 = T5EncoderModel(
        T5Config(
            d_model=32,
            d_ff=37,
            d_kv=8,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            vocab_size=T5_VOCAB_SIZE,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    torch.manual_seed(0)
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "vae": _flux1_vae(),
        "text_encoder": text_encoder,
        "tokenizer": clip_tokenizer(),
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": t5_tokenizer(),
        "transformer": transformer,
    }


def build_flux1(path: Path) -> Path:
    """A tiny FLUX.1 [dev]-style text-to-image pipeline (img2img comes from ``from_pipe``)."""
    from diffusers import FluxPipeline

    return _save(FluxPipeline(**_flux1_components()), path)


def build_flux_kontext(path: Path) -> Path:
    """A tiny FLUX.1 Kontext pipeline: FLUX.1's components, the edit image packed beside the latents."""
    from diffusers import FluxKontextPipeline

    return _save(FluxKontextPipeline(**_flux1_components()), path)


def build_flux2_klein(path: Path) -> Path:
    """A tiny FLUX.2 [klein] pipeline: Qwen3 text encoder (28 layers so the default layers 9/18/27 exist)."""
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels x 2x2 patch
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=3 * 16,  # three stacked hidden layers of the text encoder
        timestep_guidance_channels=256,
        axes_dims_rope=[4, 4, 4, 4],
        guidance_embeds=False,
    )
    config = Qwen3Config(
        intermediate_size=16,
        hidden_size=16,
        num_hidden_layers=28,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        vocab_size=QWEN_VOCAB_SIZE,
        max_position_embeddings=1024,
        pad_token_id=_qwen_id("<|endoftext|>"),
    )
    torch.manual_seed(0)
    text_encoder = Qwen3ForCausalLM(config)
    torch.manual_seed(0)
    vae = AutoencoderKLFlux2(
        sample_size=64,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    pipe = Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=qwen_tokenizer(),
        transformer=transformer,
        is_distilled=True,
    )
    return _save(pipe, path)


def _qwen_vae() -> Any:
    from diffusers import AutoencoderKLQwenImage

    z_dim = 4
    return AutoencoderKLQwenImage(
        base_dim=4,
        z_dim=z_dim,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )


def _qwen_transformer() -> Any:
    from diffusers import QwenImageTransformer2DModel

    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )


def _qwen_vl_encoder() -> Any:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "vocab_size": QWEN_VOCAB_SIZE,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 16,
            "fullatt_block_indexes": [1],
        },
        hidden_size=16,
        vocab_size=QWEN_VOCAB_SIZE,
        image_token_id=_qwen_id("<|image_pad|>"),
        video_token_id=_qwen_id("<|video_pad|>"),
        vision_start_token_id=_qwen_id("<|vision_start|>"),
        vision_end_token_id=_qwen_id("<|vision_end|>"),
    )
    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration(config)


def build_qwen_image(path: Path) -> Path:
    """A tiny Qwen-Image text-to-image pipeline (Qwen2.5-VL text encoder, 3D-conv VAE factor 8)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline

    torch.manual_seed(0)
    pipe = QwenImagePipeline(
        transformer=_qwen_transformer(),
        vae=_qwen_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=_qwen_vl_encoder(),
        tokenizer=qwen_tokenizer(),
    )
    return _save(pipe, path)


def build_qwen_image_edit_plus(path: Path) -> Path:
    """A tiny Qwen-Image-Edit Plus (2509/2511) pipeline: Qwen2.5-VL with its vision tower and processor.

    The ``processor/`` folder is written the way the real checkpoints ship it (image processor config,
    tokenizer files), component by component: ``Qwen2VLProcessor`` itself cannot be instantiated where
    torchvision is missing (its video processor needs it), which is the engine's problem to solve at load.
    """

    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImageEditPlusPipeline

    tokenizer = qwen_tokenizer()
    torch.manual_seed(0)
    pipe = QwenImageEditPlusPipeline(
        transformer=_qwen_transformer(),
        vae=_qwen_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=_qwen_vl_encoder(),
        tokenizer=tokenizer,
        processor=None,
    )
    return save_with_processor(pipe, tokenizer, path)


def save_with_processor(pipe: Any, tokenizer: Any, path: Path) -> Path:
    """Save a Qwen-Image edit-style pipeline with the VL processor it loads by itself (built offline)."""
    import json

    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    _save(pipe, path)
    processor_dir = path / "processor"
    Qwen2VLImageProcessorPil().save_pretrained(str(processor_dir))
    tokenizer.save_pretrained(str(processor_dir))
    (processor_dir / "chat_template.jinja").write_text(QWEN_CHAT_TEMPLATE)
    index_file = path / "model_index.json"
    index = json.loads(index_file.read_text())
    index["processor"] = ["transformers", "Qwen2VLProcessor"]
    index_file.write_text(json.dumps(index, indent=2))
    return path


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "sdxl": build_sdxl,
    "sd": build_sd,
    "flux1": build_flux1,
    "flux-kontext": build_flux_kontext,
    "flux2-klein": build_flux2_klein,
    "qwen-image": build_qwen_image,
    "qwen-image-edit-plus": build_qwen_image_edit_plus,
}
