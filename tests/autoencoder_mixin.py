"""Tests every hf_ae image autoencoder must pass, through the common API only.

A test module subclasses `AutoencoderTesterMixin` and provides `tiny_config()`, `model_class` and
`make_inputs(batch_size)`; parametrize the class (or the fixture) over option combinations.
"""

import inspect
import json
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file
from subprocess_env import isolated_env, run_python

from hf_ae import AutoencoderImageProcessor


class AutoencoderTesterMixin:
    model_class = None

    def tiny_config(self, **overrides):
        raise NotImplementedError

    def make_inputs(self, config, batch_size=3, seed=0):
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(batch_size, config.num_channels, config.image_size, config.image_size, generator=generator)

    def make_model(self, **overrides):
        torch.manual_seed(0)
        return self.model_class(self.tiny_config(**overrides)).eval()

    def noise(self, model, seed: int) -> dict:
        """The `generator` keyword for a forward pass, when the model's forward takes one (a model whose loss draws
        no noise does not), as the training loop passes it."""
        takes = "generator" in inspect.signature(model.forward).parameters
        return {"generator": torch.Generator().manual_seed(seed)} if takes else {}

    # ------------------------------------------------------------------ API shapes and losses
    def test_declares_that_it_reads_images(self):
        """input_modalities, as transformers' image models declare it (the default says "text")."""
        assert "image" in self.model_class.input_modalities

    def test_declares_how_it_generates(self):
        """The capabilities the library reads directly (no getattr with a default): the named generation methods,
        each one `sample(method=...)` accepts, and whether `sample()` draws from a prior."""
        model = self.make_model()
        assert isinstance(self.model_class.generation_methods, tuple)
        assert isinstance(model.can_sample_prior, bool)
        assert model.modality == "image" and isinstance(model.can_interpolate, bool)

    def test_encode_decode_forward_shapes(self):
        model = self.make_model()
        pixel_values = self.make_inputs(model.config)
        latents = model.encode(pixel_values=pixel_values).latents
        assert latents.shape[0] == 3
        reconstruction = model.decode(latents).reconstruction
        assert reconstruction.shape == pixel_values.shape
        outputs = model(pixel_values=pixel_values)
        assert outputs.loss.ndim == 0 and torch.isfinite(outputs.loss)
        assert torch.allclose(outputs.reconstruction, reconstruction, atol=1e-6)

    def test_return_dict_false_gives_tuple_with_loss_first(self):
        model = self.make_model()
        pixel_values = self.make_inputs(model.config)
        as_dict = model(pixel_values=pixel_values)
        as_tuple = model(pixel_values=pixel_values, return_dict=False)
        assert isinstance(as_tuple, tuple)
        assert torch.equal(as_tuple[0], as_dict.loss)

    def test_generator_makes_training_forward_deterministic(self):
        model = self.make_model().train()
        pixel_values = self.make_inputs(model.config)
        first = model(pixel_values=pixel_values, **self.noise(model, 1)).loss
        second = model(pixel_values=pixel_values, **self.noise(model, 1)).loss
        assert torch.equal(first, second)

    def test_loss_decreases_when_overfitting_one_batch(self):
        model = self.make_model().train()
        pixel_values = self.make_inputs(model.config, batch_size=8)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        losses = []
        for step in range(40):
            loss = model(pixel_values=pixel_values, **self.noise(model, step)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        assert losses[-1] < 0.5 * losses[0], losses

    def test_gradient_checkpointing_gives_same_loss_and_gradients(self):
        model = self.make_model().train()
        pixel_values = self.make_inputs(model.config)
        loss = model(pixel_values=pixel_values, **self.noise(model, 0)).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        model.activation_checkpointing_enable()
        assert model.is_activation_checkpointing
        loss_checkpointed = model(pixel_values=pixel_values, **self.noise(model, 0)).loss
        loss_checkpointed.backward()
        assert torch.allclose(loss, loss_checkpointed)
        for name, parameter in model.named_parameters():
            if name in grads:
                assert torch.allclose(grads[name], parameter.grad, atol=1e-6), name

    # ------------------------------------------------------------------ saving and loading
    def test_save_load_round_trip_is_safetensors_and_exact(self, tmp_path):
        model = self.make_model()
        pixel_values = self.make_inputs(model.config)
        model.save_pretrained(tmp_path)
        files = {p.name for p in tmp_path.iterdir()}
        assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
        assert {"config.json", f"configuration_{model.config.model_type}.py", f"modeling_{model.config.model_type}.py"} <= files
        reloaded = self.model_class.from_pretrained(tmp_path).eval()
        assert torch.equal(model(pixel_values=pixel_values).reconstruction, reloaded(pixel_values=pixel_values).reconstruction)

    def test_remote_code_loads_and_runs_pipelines_without_hf_ae(self, tmp_path):
        """Save, then in a fresh process where `import hf_ae` fails: AutoModel + the three pipelines."""
        model = self.make_model()
        pixel_values = self.make_inputs(model.config, batch_size=2)
        model.save_pretrained(tmp_path / "model")
        AutoencoderImageProcessor.from_model_config(model.config).save_pretrained(tmp_path / "model")
        with torch.no_grad():
            expected = model(pixel_values=pixel_values).reconstruction
        save_file({"pixel_values": pixel_values, "expected": expected}, tmp_path / "io.safetensors")
        code = textwrap.dedent(
            f"""
            import sys, json
            sys.modules["hf_ae"] = None  # the package is not importable here
            try:
                import hf_ae
                raise SystemExit("hf_ae should not be importable")
            except ImportError:
                pass
            import torch
            from safetensors.torch import load_file, save_file
            from transformers import AutoModel, pipeline
            folder = {str(tmp_path / "model")!r}
            model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
            io = load_file({str(tmp_path / "io.safetensors")!r})
            with torch.no_grad():
                got = model(pixel_values=io["pixel_values"]).reconstruction
            save_file({{"got": got}}, {str(tmp_path / "got.safetensors")!r})
            report = {{"module": type(model).__module__}}
            if model.continuous_latents:  # diffusers' interface: latent_dist.sample(generator), decode(...)[0]
                with torch.no_grad():
                    dist = model.encode(pixel_values=io["pixel_values"]).latent_dist
                    report["latent_dist"] = list(dist.sample(torch.Generator().manual_seed(0)).shape)
                    report["decoded"] = list(model.decode(dist.mode(), return_dict=False)[0].shape)
            generator = torch.Generator().manual_seed(0)
            images = [torch.rand({model.config.num_channels}, {model.config.image_size}, {model.config.image_size},
                                 generator=generator) for _ in range(2)]
            reconstruct = pipeline("image-reconstruction", model=folder, trust_remote_code=True)
            report["reconstruction"] = reconstruct(images[0]).size
            # the saved image processor loads as remote code, and with it the pipeline batches (3 images, batches of 2)
            from transformers import AutoImageProcessor
            import numpy as np
            report["processor"] = type(AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)).__module__
            three = images + [torch.rand(*images[0].shape, generator=generator)]
            one_by_one = [np.asarray(reconstruct(image)) for image in three]
            batched = [np.asarray(image) for image in reconstruct(three, batch_size=2)]
            report["batched_equals_one_by_one"] = len(batched) == 3 and all(
                (a == b).all() for a, b in zip(one_by_one, batched))
            frames = pipeline("latent-interpolation", model=folder, trust_remote_code=True)(images, num_steps=5)
            report["ratios"] = [f["ratio"] for f in frames]
            if getattr(model, "can_sample_prior", False):
                samples = pipeline("autoencoder-generation", model=folder, trust_remote_code=True)(3, seed=0)
                report["samples"] = [s.size for s in samples]
            print(json.dumps(report))
            """
        )
        result = run_python(["-c", code], isolated_env(tmp_path))
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["module"].startswith("transformers_modules"), report
        assert report["processor"].startswith("transformers_modules") and report["batched_equals_one_by_one"], report
        if model.continuous_latents:
            assert report["latent_dist"][0] == 2 and report["decoded"] == list(pixel_values.shape), report
        # the same weights, batch and thread count (isolated_env) as here: equal up to rounding
        assert torch.allclose(load_file(tmp_path / "got.safetensors")["got"], expected, atol=1e-6)
        size = model.config.image_size
        assert tuple(report["reconstruction"]) == (size, size)
        assert report["ratios"] == [0.0, 0.25, 0.5, 0.75, 1.0]
        if getattr(model, "can_sample_prior", False):
            assert [tuple(s) for s in report["samples"]] == [(size, size)] * 3

    # ------------------------------------------------------------------ bad input
    @pytest.mark.parametrize(
        "make_bad, message",
        [
            (lambda c: torch.rand(2, c.num_channels, c.image_size + 1, c.image_size + 1), "must have shape"),
            (lambda c: torch.rand(2, c.num_channels + 1, c.image_size, c.image_size), "must have shape"),
            (lambda c: torch.rand(2, c.image_size, c.image_size), "must have shape"),
            (lambda c: torch.randint(0, 255, (2, c.num_channels, c.image_size, c.image_size), dtype=torch.uint8), "floating-point"),
            (lambda c: torch.full((2, c.num_channels, c.image_size, c.image_size), float("nan")), "NaN"),
            (lambda c: torch.full((2, c.num_channels, c.image_size, c.image_size), float("inf")), "infinite"),
            (lambda c: torch.rand(0, c.num_channels, c.image_size, c.image_size), "empty batch"),
            (lambda c: [[0.5]], "torch.Tensor"),
        ],
        ids=["size", "channels", "ndim", "uint8", "nan", "inf", "empty", "list"],
    )
    def test_bad_pixel_values_raise_clear_errors(self, make_bad, message):
        model = self.make_model()
        bad = make_bad(model.config)
        for call in (model, model.encode):
            with pytest.raises(ValueError, match=message) as error:
                call(pixel_values=bad)
            if message == "must have shape":
                # the message says both what was expected and what came
                assert str(model.config.image_size) in str(error.value) and str(tuple(bad.shape)) in str(error.value)

    def test_config_that_does_not_fit_checkpoint_is_rejected(self, tmp_path):
        model = self.make_model()
        model.save_pretrained(tmp_path)
        with pytest.raises((ValueError, RuntimeError), match="(?i)size|shape|mismatch"):
            self.model_class.from_pretrained(tmp_path, hidden_size=model.config.hidden_size * 2)

    def test_config_round_trips_through_json(self, tmp_path):
        config = self.tiny_config()
        config.save_pretrained(tmp_path)
        loaded = type(config).from_pretrained(tmp_path)
        saved = json.loads((tmp_path / "config.json").read_text())
        assert saved["model_type"] == config.model_type
        assert loaded.to_dict() == config.to_dict()
