# Copied from hf_ae.models.configuration_autoencoder
"""What every hf_ae model configuration shares, written once.

Every model folder holds a copy of this file (`configuration_autoencoder.py`, checked by utils/check_copies.py,
rewritten by `make fix-copies`) because a folder on the Hub may import only its siblings.

* Renamed fields: one name per idea across the models (`bottleneck`, `reg_weight`, `reg_warmup_steps`,
  `decoder_num_hidden_layers`). A config saved before a rename still loads: `translate_renamed_fields` reads the old
  name, says once that it changed, and refuses a config that gives the old and the new name different values.
* `custom_pipelines`: each config starts with its own copy of its class's `default_custom_pipelines` (the pipelines
  saved next to the weights, so that `pipeline(task, model=repo, trust_remote_code=True)` works without hf_ae), and
  `to_dict` keeps them JSON after transformers' pipeline() has put classes in them.
"""

import copy
import functools
import math

from transformers.utils import logging

logger = logging.get_logger(__name__)

# How a scheduled loss weight rises over its warm-up steps (modeling_autoencoder.scheduled_weight).
WEIGHT_SCHEDULES = ("constant", "linear", "sigmoid")


def check_latent_scale(config) -> None:
    """`scaling_factor` None or a finite number > 0, `shift_factor` None or finite (a ValueError naming the field)."""
    for name, positive in (("scaling_factor", True), ("shift_factor", False)):
        value = getattr(config, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
                positive and value <= 0):
            raise ValueError(f"{name} must be None or a finite number{' > 0' if positive else ''}, got {value!r}")


class RenamedField:
    """A config field saved under `old_name` by an earlier release, now `new_name`; `convert` maps an old value to
    the new field's value (None: the value is unchanged)."""

    def __init__(self, old_name: str, new_name: str, convert=None, reason: str = ""):
        self.old_name, self.new_name, self.convert, self.reason = old_name, new_name, convert, reason

    def new_value(self, old_value):
        return old_value if self.convert is None else self.convert(old_value)


class AutoencoderConfigMixin:
    """Listed before `PretrainedConfig` by every hf_ae config."""

    # The fields this config renamed (a tuple of RenamedField); their old names are read on load.
    renamed_fields: tuple = ()
    # task -> {"impl": "pipeline_autoencoder.<Class>", "pt": ["AutoModel"], "tf": [], "type": ...}
    default_custom_pipelines: dict = {}

    def __init_subclass__(cls, **kwargs):
        """Wrap a subclass's `__init__`: old field names are translated before it binds its arguments (so that an
        old name given alongside the new one is caught, and a value read under the old name is not overwritten by
        the new one's default), and `custom_pipelines` defaults to a copy of `default_custom_pipelines` (a copy per
        config: transformers' pipeline() rewrites its "pt" entries in place). config.json reaches `__init__` as
        keywords: `from_dict` calls `cls(**config_dict)`."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def __init__(self, *args, **config_kwargs):
            config_kwargs = type(self).translate_renamed_fields(config_kwargs)
            if type(self).default_custom_pipelines:
                config_kwargs.setdefault("custom_pipelines", copy.deepcopy(type(self).default_custom_pipelines))
            init(self, *args, **config_kwargs)

        cls.__init__ = __init__

    @classmethod
    def translate_renamed_fields(cls, kwargs: dict) -> dict:
        """Move the values of old field names in `kwargs` (a saved config.json, or a caller's keywords) to their new
        names, with one warning per name; a ValueError when both names are given with different values."""
        for field in cls.renamed_fields:
            if field.old_name not in kwargs:
                continue
            value = field.new_value(kwargs.pop(field.old_name))
            if field.new_name in kwargs and kwargs[field.new_name] != value:
                raise ValueError(
                    f"{cls.__name__} got both {field.old_name!r} (the name before it changed) and {field.new_name!r} "
                    f"with different values ({value!r} vs {kwargs[field.new_name]!r}); give only {field.new_name!r}"
                )
            kwargs[field.new_name] = value
            logger.warning_once(
                f"{cls.__name__}: the field {field.old_name!r} is now called {field.new_name!r}"
                + (f" ({field.reason})" if field.reason else "")
                + "; its value was read under the old name. Saving the config writes the new name."
            )
        return kwargs

    def to_dict(self):
        output = super().to_dict()
        # transformers' pipeline() (clean_custom_task) replaces the class names under "pt" with the classes
        # themselves, in this config's dict; turn them back into names so the config stays JSON.
        pipelines = output.get("custom_pipelines") or {}
        for task, info in pipelines.items():
            names = [c if isinstance(c, str) else c.__name__ for c in info.get("pt", ())]
            pipelines[task] = {**info, "pt": names}
        return output
