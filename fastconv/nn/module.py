"""Module: the base of every layer and model, holding its parameters, buffers and children."""
from collections import OrderedDict, namedtuple

import numpy as np

from .parameter import Parameter

IncompatibleKeys = namedtuple("IncompatibleKeys", "missing_keys unexpected_keys")


class Module:
    """Base class of every layer and model, like ``torch.nn.Module`` without autograd.

    A subclass sets its :class:`Parameter` s, buffers (:meth:`register_buffer`) and child
    modules as attributes, implements ``forward(x)`` and ``backward(grad_output)``, and
    caches in ``forward`` whatever ``backward`` needs. ``backward`` returns d loss / d input
    and *adds* the parameter gradients into their ``.grad`` (torch's accumulation).

    Attributes
    ----------
    training : bool
        Train mode (the default) or eval mode; see :meth:`train` and :meth:`eval`.
    requires_input_grad : bool
        When False, ``backward`` skips d loss / d input and returns None. :class:`Sequential`
        sets it False on its first layer: nothing consumes the gradient of the images.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "requires_input_grad", True)

    # -- attributes: parameters, buffers and children are registered by assignment ----------

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"call Module.__init__() before assigning {name!r} in "
                                 f"{type(self).__name__}.__init__")
        # A plain attribute set again (what forward caches for backward, every call): a name
        # in __dict__ is in no registry (registering one pops it), so only a Parameter or a
        # Module needs the registries
        if name in self.__dict__ and not isinstance(value, (Parameter, Module)):
            object.__setattr__(self, name, value)
            return
        params, buffers, modules = self._parameters, self._buffers, self._modules
        if isinstance(value, Parameter):
            self._forget(name)
            params[name] = value
        elif isinstance(value, Module):
            self._forget(name)
            modules[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as parameter {name!r} "
                                f"(a Parameter or None is required)")
            params[name] = None
        elif name in buffers:
            buffers[name] = None if value is None else np.asarray(value)
        elif name in modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as child module {name!r}")
            modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Only called when normal lookup fails: parameters, buffers and children.
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                return
        object.__delattr__(self, name)

    def _forget(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        self.__dict__.pop(name, None)

    def register_buffer(self, name, array):
        """Register state that is saved with the model but not learned (running statistics)."""
        self._forget(name)
        self._buffers[name] = None if array is None else np.asarray(array)

    # -- computation ------------------------------------------------------------------------

    def forward(self, x):
        """Compute the output for ``x``; subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_output):
        """Given d loss / d output of the last ``forward``, accumulate parameter gradients and
        return d loss / d input (None when ``requires_input_grad`` is False)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def __call__(self, x):
        return self.forward(x)

    # -- traversal --------------------------------------------------------------------------

    def children(self):
        """The direct child modules, in registration order."""
        return (m for m in self._modules.values() if m is not None)

    def named_modules(self, prefix=""):
        """Yield ``(name, module)`` for this module ("") and every descendant ("0", "block.1" ...)."""
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self, prefix=""):
        """Yield ``(name, Parameter)`` with torch's dotted names ("0.weight", "3.bias")."""
        for module_name, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                if param is not None:
                    yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self):
        """Every :class:`Parameter` of this module and its descendants (what optimizers take)."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        for module_name, module in self.named_modules(prefix):
            for name, buf in module._buffers.items():
                if buf is not None:
                    yield (f"{module_name}.{name}" if module_name else name), buf

    def zero_grad(self, set_to_none=True):
        """Reset every parameter's ``.grad``: to None (torch's default) or to zeros."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad[...] = 0

    def train(self, mode=True):
        """Set train mode (dropout active, batch statistics) on this module and its children."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        """Set eval mode (dropout off, running statistics); same as ``train(False)``."""
        return self.train(False)

    def to(self, dtype):
        """Cast every parameter and floating-point buffer to ``dtype`` (gradients are dropped)."""
        dtype = np.dtype(dtype)
        for module in self.modules():
            for p in module._parameters.values():
                if p is not None:
                    p.data = p.data.astype(dtype)
                    p.grad = None
            for name, buf in module._buffers.items():
                if buf is not None and np.issubdtype(buf.dtype, np.floating):
                    module._buffers[name] = buf.astype(dtype)
        return self

    def float(self):
        """Cast to float32."""
        return self.to(np.float32)

    def double(self):
        """Cast to float64 (what gradient checks use)."""
        return self.to(np.float64)

    # -- state ------------------------------------------------------------------------------

    def state_dict(self):
        """An OrderedDict of every parameter and buffer by torch's dotted name.

        The values are the arrays themselves, not copies (as torch returns references).
        """
        state = OrderedDict()
        for module_name, module in self.named_modules():
            for registry in (module._parameters, module._buffers):
                for name, value in registry.items():
                    if value is not None:
                        key = f"{module_name}.{name}" if module_name else name
                        state[key] = value.data if isinstance(value, Parameter) else value
        return state

    def _state_slots(self):
        """``{key: (registry dict, name)}`` for every entry :meth:`state_dict` returns."""
        slots = OrderedDict()
        for module_name, module in self.named_modules():
            for registry in (module._parameters, module._buffers):
                for name, value in registry.items():
                    if value is not None:
                        slots[f"{module_name}.{name}" if module_name else name] = (registry, name)
        return slots

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays (numpy, or anything ``np.asarray`` takes) into the parameters and buffers.

        Keys are torch's ("0.weight", "3.bias", "1.running_mean" ...): a torch model's
        ``{k: v.numpy() for k, v in model.state_dict().items()}`` loads unchanged. Values are
        cast to each parameter's dtype and copied in place, so optimizers keep working.

        Parameters
        ----------
        state_dict : mapping of str to array_like
        strict : bool, default True
            Refuse missing and unexpected keys. Shapes must match either way.

        Returns
        -------
        IncompatibleKeys
            ``(missing_keys, unexpected_keys)``, both empty when ``strict``.

        Raises
        ------
        TypeError
            ``state_dict`` is not a mapping.
        RuntimeError
            Listing every missing or unexpected key (when ``strict``), every shape mismatch
            and every non-numeric value; nothing is copied then.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict).__name__}")
        slots = self._state_slots()
        values = {key: np.asarray(value) for key, value in state_dict.items()}
        missing = [key for key in slots if key not in values]
        unexpected = [key for key in values if key not in slots]
        errors = []
        if strict and unexpected:
            errors.append("Unexpected key(s) in state_dict: " + ", ".join(map(repr, unexpected)))
        if strict and missing:
            errors.append("Missing key(s) in state_dict: " + ", ".join(map(repr, missing)))
        for key, (registry, name) in slots.items():
            if key in values:
                current = registry[name].shape
                if values[key].shape != current:
                    errors.append(f"size mismatch for {key}: copying a param with shape "
                                  f"{values[key].shape} from checkpoint, the shape in current "
                                  f"model is {current}")
                # checked here, not left to the copy: a failing copy would leave the
                # entries before it overwritten (and None in an object array becomes NaN)
                if values[key].dtype.kind not in "biufc":
                    errors.append(f"dtype mismatch for {key}: cannot copy an array of dtype "
                                  f"{values[key].dtype} into one of dtype {registry[name].dtype}")
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(errors))
        for key, (registry, name) in slots.items():
            if key in values:
                target = registry[name]
                np.copyto(target.data if isinstance(target, Parameter) else target, values[key],
                          casting="unsafe")
        return IncompatibleKeys(missing, unexpected)

    # -- printing ---------------------------------------------------------------------------

    def extra_repr(self):
        """The arguments shown inside ``Name(...)``; layers override it."""
        return ""

    def __repr__(self):
        children = [(name, m) for name, m in self._modules.items() if m is not None]
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({name}): " + repr(m).replace("\n", "\n  ") for name, m in children]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"
