"""What a model saw in training: a recording wrapper around its forward, for tests that run train()."""

import torch


def record_training_forwards(monkeypatch, model_class) -> list[dict]:
    """Wrap model_class.forward: for every training-mode call, its tensor keyword inputs and tensor outputs
    (detached copies) and whether gradient checkpointing was on."""
    calls = []
    original = model_class.forward

    def recording_forward(self, *args, **kwargs):
        outputs = original(self, *args, **kwargs)
        if self.training:
            calls.append({
                "inputs": {k: v.detach().clone() for k, v in kwargs.items() if isinstance(v, torch.Tensor)},
                "outputs": {k: v.detach().clone() for k, v in outputs.items() if isinstance(v, torch.Tensor)},
                "checkpointing": self.is_activation_checkpointing,
            })
        return outputs

    monkeypatch.setattr(model_class, "forward", recording_forward)
    return calls
