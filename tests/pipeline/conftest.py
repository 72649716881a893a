import pytest


@pytest.fixture(scope="session")
def tiny_captioner():
    from lavis_ext.pipeline.captioner import load_captioner

    captioner = load_captioner("exp_blip:tiny")
    captioner.generation.update(num_beams=1, max_length=20)
    return captioner
