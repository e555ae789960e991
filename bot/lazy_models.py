"""Import aiogram with its Telegram types' validators built on first use, not at import.

aiogram declares every type with pydantic's `defer_build=True` and then, at the end of
`aiogram.types`, calls `model_rebuild()` on all of them, so importing aiogram builds about
450 validators (Bot API types and methods) whether a bot uses them or not: here 2.9 s of
start-up and ~100 MB of resident memory, most of the bot's footprint. The bot needs a few
dozen of them (an update, a message, a button, the methods it calls).

`import_aiogram()` lets that loop only record the namespace aiogram hands it (the names
its modules import under TYPE_CHECKING) and puts those names where pydantic resolves a
model's forward references when it builds the model later: the module of each type and
method. pydantic then builds each validator the first time it is used, exactly as the
eager loop would have (`tests/test_lazy_models.py` builds every one and compares).

It must run before anything else imports aiogram; `bot/__init__.py` calls it, so every
entry point that goes through the `bot` package gets it. Should aiogram stop calling the
loop this way, nothing is deferred and the import is simply eager again.
"""

from __future__ import annotations

import sys
from typing import Any

from pydantic import BaseModel
from pydantic._internal import _config

_TYPES_NAMESPACE: dict[str, Any] = {}
_KEPT_RESPONSES: set[type[BaseModel]] = set()


def import_aiogram() -> bool:
    """Import aiogram with deferred validators; True when the deferral took effect."""
    if "aiogram" in sys.modules:
        return bool(_TYPES_NAMESPACE)
    eager_rebuild = BaseModel.__dict__["model_rebuild"]
    eager = eager_rebuild.__func__

    def record_namespace(
        cls: type[BaseModel],
        *,
        force: bool = False,
        raise_errors: bool = True,
        _parent_namespace_depth: int = 2,
        _types_namespace: Any = None,
    ) -> bool | None:
        if _types_namespace is not None and not force and cls.__module__.startswith("aiogram."):
            _TYPES_NAMESPACE.update(_types_namespace)
            return None
        return eager(
            cls,
            force=force,
            raise_errors=raise_errors,
            _parent_namespace_depth=_parent_namespace_depth + 1,
            _types_namespace=_types_namespace,
        )

    BaseModel.model_rebuild = classmethod(record_namespace)  # type: ignore[method-assign,assignment]
    # The methods (SendMessage, ...) are not deferred by aiogram: each would try to build
    # at its class statement and fail on the types' names, a waste; they are marked
    # deferred too. pydantic's private config hook: without it they are built as before.
    config_wrapper = getattr(_config, "ConfigWrapper", None)
    eager_for_model = getattr(config_wrapper, "for_model", None)
    for_model_attribute = vars(config_wrapper).get("for_model") if config_wrapper else None
    if config_wrapper is not None and eager_for_model is not None:

        def defer_methods(bases: Any, namespace: Any, *args: Any, **kwargs: Any) -> Any:
            wrapper = eager_for_model(bases, namespace, *args, **kwargs)
            if str(namespace.get("__module__", "")).startswith("aiogram.methods."):
                wrapper.config_dict["defer_build"] = True
            return wrapper

        config_wrapper.for_model = defer_methods
    try:
        import aiogram  # noqa: F401
    finally:
        BaseModel.model_rebuild = eager_rebuild  # type: ignore[method-assign]
        if config_wrapper is not None and for_model_attribute is not None:
            config_wrapper.for_model = for_model_attribute
    if not _TYPES_NAMESPACE:
        return False
    from aiogram.methods.base import Response

    # aiogram reads every answer as `Response[<the method's result type>]`. pydantic caches
    # generic classes weakly, so one was built again after nearly every garbage collection,
    # each time inlining the result type's whole schema (0.3 s for Message, 10% of the CPU
    # per update): each is kept once built (a few dozen result types in all).
    Response.__pydantic_on_complete__ = classmethod(_KEPT_RESPONSES.add)  # type: ignore[method-assign,assignment]
    for name, module in list(sys.modules.items()):
        if name.startswith(("aiogram.types.", "aiogram.methods.")) and module is not None:
            # The names a module imports only under TYPE_CHECKING: pydantic looks a forward
            # reference up in the globals of the model's module, nested models included.
            namespace = vars(module)
            for key, value in _TYPES_NAMESPACE.items():
                namespace.setdefault(key, value)
    return True


def aiogram_models() -> list[type[BaseModel]]:
    """Every pydantic model aiogram defines (its Bot API types and methods)."""
    found: list[type[BaseModel]] = []
    pending: list[type[BaseModel]] = [BaseModel]
    seen: set[type[BaseModel]] = set()
    while pending:
        for sub in pending.pop().__subclasses__():
            if sub in seen:
                continue
            seen.add(sub)
            pending.append(sub)
            if sub.__module__.startswith("aiogram."):
                found.append(sub)
    return found
