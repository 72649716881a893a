import pytest
import torch

from lavis_ext.models.vision import TinyVisionEncoder, TokenViT, build_vision_encoder, load_mae_weights


def test_tiny_stem_keeps_the_image_signal():
    """Without a norm after each conv the stem's output is dwarfed by the positions and the
    captioner learns one caption for every face (measured); with BatchNorm it is not."""
    torch.manual_seed(0)
    images = torch.rand(16, 3, 112, 112)

    def image_share(norm):
        encoder = TinyVisionEncoder(norm=norm).train()  # as at the start of training
        with torch.no_grad():
            tokens = torch.nn.functional.layer_norm(encoder(images), (128,))
        return (tokens.std(0).mean() / tokens.std()).item()

    assert image_share("batch") > 0.8  # measured 0.96
    assert image_share("none") < 0.3  # measured 0.13
    with pytest.raises(ValueError, match="norm"):
        TinyVisionEncoder(norm="layer")


def test_mae_checkpoint_loads_with_prefixes_decoder_and_resized_positions(tmp_path):
    torch.manual_seed(0)
    source = TokenViT(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2)
    state = {f"module.encoder.{k}": v for k, v in source.vit.state_dict().items()}
    state["decoder_embed.weight"] = torch.randn(16, 32)
    state["mask_token"] = torch.zeros(1, 1, 32)
    path = tmp_path / "mae_checkpoint.pth"
    torch.save({"model": state, "epoch": 199}, path)

    target = TokenViT(img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2)
    report = load_mae_weights(target, str(path))
    assert report["missing"] == [] and report["unexpected"] == []
    loaded = target.vit.state_dict()
    assert torch.equal(loaded["blocks.1.attn.qkv.weight"],
                       source.vit.state_dict()["blocks.1.attn.qkv.weight"])
    assert loaded["pos_embed"].shape == (1, 1 + 4, 32)  # 4x4 grid resized to 2x2
    assert torch.equal(loaded["pos_embed"][:, 0], source.vit.pos_embed[:, 0].detach())

    partial = {k: v for k, v in state.items() if "blocks.1." not in k}
    torch.save({"model": partial}, path)
    report = load_mae_weights(TokenViT(img_size=32, patch_size=16, embed_dim=32, depth=2,
                                       num_heads=2), str(path))
    assert report["missing"] and all("blocks.1." in k for k in report["missing"])


def test_random_eva_weights_need_no_file(monkeypatch):
    monkeypatch.delenv("LAVIS_EXT_EVA_VIT_G", raising=False)
    with pytest.raises(FileNotFoundError, match="LAVIS_EXT_EVA_VIT_G"):
        build_vision_encoder("eva_clip_g", 224)
    with pytest.raises(ValueError, match="vit_model"):
        build_vision_encoder("resnet50", 224)
