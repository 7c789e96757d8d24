"""The text interpolation metrics: the non-trivial check, pair sampling, and the scores on a model whose decodings
we control."""

import pytest
import torch

from hf_ae.evaluation.interpolation import python_is_nontrivial, sample_pairs, text_interpolation_metrics


@pytest.mark.parametrize(
    "line, expected",
    [
        ("terrrrr", False),  # parses: a bare name
        ("42", False),
        ("'a string'", False),
        ("# a comment", False),
        ("", False),
        ("x = (", False),  # does not parse
        ("x = 1", True),
        ("foo(bar)", True),
        ("return x", True),
        ("a.b", True),
    ],
)
def test_nontrivial_python(line, expected):
    assert python_is_nontrivial(line) is expected


def test_sample_pairs_are_distinct_ordered_and_seeded():
    pairs = sample_pairs(50, 30, seed=1)
    assert len(pairs) == len(set(pairs)) == 30
    assert all(i < j < 50 for i, j in pairs)
    assert pairs == sample_pairs(50, 30, seed=1) != sample_pairs(50, 30, seed=2)
    assert len(sample_pairs(3, 100)) == 3  # only 3 pairs exist


class ScriptedModel:
    """Encodes text i to a latent whose first value is i; `generate` decodes a latent by the script below, so the
    expected metrics are known."""

    device = torch.device("cpu")

    def __init__(self, script):
        self.script = script  # (latent value rounded) -> text

    def eval(self):
        return self

    def encode(self, input_ids, attention_mask):
        class Output:
            latents = input_ids[:, :1, None].float()  # (B, 1, 1): the first token id

        return Output()

    @staticmethod
    def interpolate_latents(start, end, ratios, method):
        return start[None] + ratios.view(-1, 1, 1) * (end - start)[None]

    def generate(self, latents):
        return latents[:, 0, 0].round().long()[:, None]


class IdTokenizer:
    def __init__(self, texts, script):
        self.texts, self.script = texts, script

    def __call__(self, texts, padding=True, return_tensors="pt"):
        ids = torch.tensor([[self.texts.index(t) * 10] for t in texts])
        return type("Batch", (dict,), {"to": lambda self, device: self})(input_ids=ids, attention_mask=torch.ones_like(ids))

    def batch_decode(self, ids, skip_special_tokens=True):
        return [self.script[row[0]] for row in ids]


def test_metrics_count_valid_novel_and_nontrivial_interior_points():
    texts = ["a = 1", "b = 2"]  # encoded as 0 and 10; the path 0, 1, ..., 10 decodes by the script
    script = {0: "a = 1", 10: "b = 2", 1: "a = 1", 2: "x = (", 3: "terrrrr", 4: "# note", 5: "c = 3", 6: "c = 3",
              7: "d(e)", 8: "b = 2", 9: "oops("}
    metrics = text_interpolation_metrics(ScriptedModel(script), IdTokenizer(texts, script), texts, [(0, 1)],
                                         num_points=11)
    # interior 1..9: valid = a=1, terrrrr, #note, c=3, c=3, d(e), b=2 -> 7; novel among them (not an end): terrrrr,
    # #note, c=3, c=3, d(e) -> 5; non-trivial among those: c=3, c=3, d(e) -> 3
    assert metrics["interior_points"] == 9
    assert metrics["valid"] == pytest.approx(7 / 9)
    assert metrics["valid_novel"] == pytest.approx(5 / 9)
    assert metrics["valid_novel_nontrivial"] == pytest.approx(3 / 9)
    assert metrics["examples"][0]["path"][0]["text"] == "a = 1"
    assert metrics["valid_stderr"] is None  # one pair: no spread to measure


def test_metrics_standard_error_is_over_pairs():
    texts = ["a = 1", "b = 2", "z = 9"]  # encoded as 0, 10 and 20
    script = {0: "a = 1", 10: "b = 2", 1: "a = 1", 2: "x = (", 3: "terrrrr", 4: "# note", 5: "c = 3", 6: "c = 3",
              7: "d(e)", 8: "b = 2", 9: "oops(", 12: "oops(", 14: "oops(", 16: "oops(", 18: "oops(", 20: "z = 9"}
    metrics = text_interpolation_metrics(ScriptedModel(script), IdTokenizer(texts, script), texts,
                                         [(0, 1), (0, 2)], num_points=11)
    # pair (0, 1): 7 of 9 valid, as above; pair (0, 2) decodes 2, 4, ..., 18: '# note', 'c = 3', 'b = 2', 'b = 2'
    # valid -> 4 of 9, all novel ('b = 2' is no end of this pair), 3 non-trivial
    assert metrics["valid"] == pytest.approx(11 / 18)
    assert metrics["valid_novel"] == pytest.approx((5 + 4) / 18)
    # two pairs: the sample standard deviation of the two shares over sqrt(2) is half their difference
    assert metrics["valid_stderr"] == pytest.approx((7 / 9 - 4 / 9) / 2)
    assert metrics["valid_novel_stderr"] == pytest.approx((5 / 9 - 4 / 9) / 2)
    assert metrics["valid_novel_nontrivial_stderr"] == pytest.approx(0.0)
