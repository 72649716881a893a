import pytest
import torch


@pytest.fixture(scope="session")
def tiny_stage2():
    import lavis_ext  # noqa: F401
    from lavis.models import load_model_and_preprocess

    torch.manual_seed(0)
    model, vis, txt = load_model_and_preprocess("exp_blip", "tiny", is_eval=True)
    return model, vis, txt


@pytest.fixture()
def images():
    return torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(1))
