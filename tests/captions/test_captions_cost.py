import pytest

from lavis_ext.captions.cost import PriceTable, format_usd, parse_price


def test_known_unknown_and_batch_prices(tmp_path):
    table = PriceTable.load()
    assert table.cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert table.cost("gpt-4o-mini", 1_000_000, 0, batch=True) == pytest.approx(0.075)
    assert table.cost("my-local-llama", 10, 10) is None
    assert "unknown" in format_usd(None)
    extra = tmp_path / "p.yaml"
    extra.write_text("models:\n  my-local-llama: {input: 0, output: 0}\n")
    assert PriceTable.load(extra).cost("my-local-llama", 10, 10) == 0.0
    assert PriceTable.load(overrides={"x": (1.0, 2.0)}).cost("x", 1e6, 1e6) == 3.0


def test_bad_prices_are_reported(tmp_path):
    assert parse_price("m=1,2") == ("m", (1.0, 2.0))
    with pytest.raises(ValueError, match="MODEL=IN,OUT"):
        parse_price("m=1")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  m: {input: cheap}\n")
    with pytest.raises(ValueError, match="models.m"):
        PriceTable.load(bad)
